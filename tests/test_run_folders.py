"""Runs land where a user looks (issue 10 item 14): ``<trainer.default_root_dir>/<name>/`` with ``--name`` (default
train / val / test / predict, numbered train2, train3 ... unless ``--exist_ok``), checkpoints and pictures inside;
fit --ckpt_path resumes in its run; validate / predict with a checkpoint write next to its run; no warnings about
callbacks or dirpaths the user did not touch."""

from __future__ import annotations

import csv
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from lightning_yolo.commands.cli import RUN_DIR_ENV, build_cli, checkpoint_data_args, main, next_run_dir

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")
TINY = ["--data.img_size", "96", "--data.synthetic_num_train", "8", "--data.synthetic_num_val", "6",
        "--trainer.limit_train_batches", "2"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, cli_session) -> Path:
    """One epoch of the debug config in <root>/train (the run folder a plain fit chooses)."""
    root = tmp_path_factory.mktemp("runs") / "detect"
    with cli_session():
        build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1",
                   *TINY])  # fmt: skip
    return root / "train"


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "detect" / run.name
    shutil.copytree(run, copy)
    return copy


def test_fit_writes_checkpoints_results_and_pictures_into_root_train(first_run):
    assert (first_run / "checkpoints" / "best.ckpt").is_file() and (first_run / "checkpoints" / "last.ckpt").is_file()
    for name in ("results.csv", "results.png", "confusion_matrix.png", "config.yaml", "hparams.yaml"):
        assert (first_run / name).is_file(), name
    assert not (first_run / "lightning_logs").exists()
    assert [p.name for p in first_run.parent.iterdir()] == ["train"]


def test_existing_names_get_a_number_unless_exist_ok(tmp_path):
    root = tmp_path / "detect"
    (root / "train").mkdir(parents=True)
    assert next_run_dir(root, "train") == root / "train2"
    (root / "train2").mkdir()
    assert next_run_dir(root, "train") == root / "train3"
    assert next_run_dir(root, "train", exist_ok=True) == root / "train"
    assert next_run_dir(root, "exp") == root / "exp"

    def run_folder(*extra: str) -> Path:
        cli = build_cli(["--config", DEBUG, "--trainer.default_root_dir", str(root), *extra], run=False)
        assert Path(cli.trainer.log_dir) == Path(cli.trainer.default_root_dir)  # logs, checkpoints/, pictures
        return Path(cli.trainer.log_dir)

    assert run_folder() == root / "train3"
    (root / "exp").mkdir()
    assert run_folder("--name", "exp") == root / "exp2"
    assert run_folder("--name", "exp", "--exist_ok", "true") == root / "exp"


def test_ddp_processes_take_the_launching_process_run_folder(tmp_path, monkeypatch):
    root = tmp_path / "detect"
    (root / "train").mkdir(parents=True)  # process 0 already made it: process 1 must not choose train2
    monkeypatch.setenv(RUN_DIR_ENV, str(root / "train"))
    monkeypatch.setenv("LOCAL_RANK", "1")
    cli = build_cli(["--config", DEBUG, "--trainer.default_root_dir", str(root)], run=False)
    assert Path(cli.trainer.log_dir) == root / "train"


def test_name_with_a_configured_logger_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--name exp: names the run folder of the default logger"):
        build_cli(["--config", DEBUG, "--name", "exp", "--trainer.logger", "pytorch_lightning.loggers.CSVLogger",
                   "--trainer.logger.save_dir", str(tmp_path)], run=False)  # fmt: skip


def test_resume_continues_in_its_run_without_warnings(tmp_path):
    # its own run, not a copy: a moved run folder rightly warns that the checkpoint callbacks' dirpath changed
    build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(tmp_path / "detect"),
               "--trainer.max_epochs", "1", *TINY])  # fmt: skip
    run = tmp_path / "detect" / "train"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_cli(["fit", "--config", DEBUG, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"),
                   "--trainer.max_epochs", "2", *TINY])  # fmt: skip
    assert [p.name for p in run.parent.iterdir()] == ["train"]  # no train2
    with open(run / "results.csv", encoding="utf-8") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]  # the first epoch's row is kept
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == 1
    messages = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]  # hidden by Python
    assert not [m for m in messages if "exists and is not empty" in m or "dirpath" in m or "callbacks" in m], messages


def test_validate_and_predict_with_a_checkpoint_write_next_to_its_run_without_warnings(first_run, tmp_path, capsys):
    run = copy_run(first_run, tmp_path)
    ckpt = run / "checkpoints" / "best.ckpt"
    assert f"--trainer.default_root_dir={run.parent}" in checkpoint_data_args(str(ckpt))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["validate", "--ckpt_path", str(ckpt)])  # demo config + the checkpoint's data and run
    # every warning Python shows by default (jsonargparse's DeprecationWarnings are hidden outside tests)
    messages = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    assert not messages, messages  # not "callbacks ... need to be provided", "dirpath has changed", LeafSpec
    assert (run.parent / "val" / "confusion_matrix.png").is_file()
    assert f"results saved to {run.parent / 'val'}" in capsys.readouterr().out
    val_images = sorted(Path(os.environ["LIGHTNING_YOLO_CACHE"]).glob("synthetic-*/images/val/*.*"))
    assert val_images
    main(["predict", "--ckpt_path", str(ckpt), "--data.predict_path", str(val_images[0])])
    assert (run.parent / "predict" / "predictions.json").is_file()
    assert sorted(p.name for p in run.parent.iterdir()) == ["predict", "train", "val"]


def test_checkpoints_of_lightning_logs_runs_map_to_their_root(first_run, tmp_path):
    old = tmp_path / "runs" / "demo" / "lightning_logs" / "version_3" / "checkpoints" / "best.ckpt"
    old.parent.mkdir(parents=True)
    shutil.copy(first_run / "checkpoints" / "best.ckpt", old)
    assert f"--trainer.default_root_dir={tmp_path / 'runs' / 'demo'}" in checkpoint_data_args(str(old))
