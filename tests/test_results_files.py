"""A run's folder holds results.csv / results.png and, by default, the pictures (issue 10, item 11)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lightning_yolo.callbacks import ResultsFiles
from lightning_yolo.commands.cli import build_cli, main

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")

pytestmark = pytest.mark.usefixtures("cli_env")

PICTURES = {"labels.png", "train_batch0.png", "val_batch0_labels.png", "val_batch0_pred.png", "confusion_matrix.png",
            "pr_curves.png"}  # fmt: skip


@pytest.mark.parametrize("plots", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_fit_writes_results_and_pictures_by_default(tmp_path, plots, capsys):
    cli = build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--plots", str(plots).lower(),
                     "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"])  # fmt: skip
    callback = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ResultsFiles))
    folder = Path(cli.trainer.log_dir)
    assert callback.folder(cli.trainer) == folder
    with open(folder / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("train/loss", "train/box", "train/obj", "train/cls", "val/loss", "val/map_50", "val/map", "lr"):
        assert rows[-1][key] != "", key
    assert rows[-1]["val/map_large"] == ""  # COCO's -1 (no large objects in the debug set) is left blank
    # issue 20, item 8: what describes a batch (its boxes, its input size) is no column and no curve
    assert not [k for k in rows[-1] if k.endswith(("/instances", "/img_size"))], list(rows[-1])
    assert (folder / "results.png").stat().st_size > 1000
    written = {p.name for p in folder.glob("*.png")}
    assert PICTURES <= written if plots else not (PICTURES & written)
    # item 12: the dataset summary at fit start; item 13: loss components, input size and instances in the bar
    out = capsys.readouterr().out
    assert "[lightning-yolo fit] dataset: synthetic shapes" in out and "(4 classes: circle, square" in out
    assert "  train: 32 images, " in out and "  val: 8 images, " in out
    bar = cli.trainer.progress_bar_metrics
    for key in ("train/box", "train/obj", "train/cls", "train/loss"):
        assert any(k.startswith(key) for k in bar), key
    assert bar["train/img_size"] == 128 and bar["train/instances"] > 0


def test_the_last_validation_writes_its_pictures_when_a_time_budget_ends_the_run_after_it(tmp_path, capsys):
    """Issue 19, item 11: the budget's re-plan after epoch 0's validation makes it the last one (max_epochs 3 -> 1)
    after the pictures step saw epoch 0 of 3. TimeBudget(seconds=5, margin=5) plans exactly that: no time is left
    after the first epoch; two training batches keep its in-epoch probe from planning earlier."""
    cli = build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "3",
                     "--trainer.check_val_every_n_epoch", "1", "--trainer.limit_train_batches", "2",
                     "--trainer.limit_val_batches", "1", "--trainer.callbacks+=lightning_yolo.callbacks.TimeBudget",
                     "--trainer.callbacks.seconds", "5", "--trainer.callbacks.margin", "5"])  # fmt: skip
    assert cli.trainer.current_epoch == 1 and cli.trainer.max_epochs == 1  # the budget ended the run after epoch 0
    folder = Path(cli.trainer.log_dir)
    assert PICTURES <= {p.name for p in folder.glob("*.png")}
    ckpt = folder / "checkpoints" / "last.ckpt"

    # issue 19, item 12: validate --ckpt_path writes results.csv (its one row) and the per-class table in runs/.../val
    main(["validate", "--ckpt_path", str(ckpt), "--trainer.limit_val_batches", "1"])
    val = tmp_path / "val"
    with open(val / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["val/map_50"] != "" and row["val/loss"] != "" and "epoch" not in row
    with open(val / "per_class.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["class", "images", "instances", "P", "R", "mAP50", "mAP50-95"]
    assert table[0]["class"] == "all" and float(table[0]["mAP50"]) == pytest.approx(float(row["val/map_50"]), abs=1e-6)
    assert {"val_batch0_pred.png", "confusion_matrix.png", "pr_curves.png"} <= {p.name for p in val.glob("*.png")}
