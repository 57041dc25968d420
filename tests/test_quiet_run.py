"""What a debug ``fit``, ``validate`` and ``predict`` print and write, run as a user runs them (``python -m
lightning_yolo`` in an empty folder): no noise, a progress bar of 80 columns, the metrics once, predict's per-image
report and folder, a weights-only ``best.ckpt``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

#: Lines that carry no information for a user (issue 20, item 3); none may appear in any command's output.
NOISE = (
    "litlogger",
    "Total Flops",
    "smaller than the logging interval",
    "Loading `train_dataloader` to estimate",
    "rewrites last.ckpt",
    "outside the 'fit' stage",
)


def _run(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, LIGHTNING_YOLO_CACHE=str(cwd / "cache"), COLUMNS="80")
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_yolo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """fit (EMA on, the default logging interval of 50 steps, the progress bar on), then validate and predict with
    its best.ckpt; each command's combined stdout + stderr."""
    cwd = tmp_path_factory.mktemp("quiet")
    fit = _run(
        ["fit", "--config", "debug", "--model.ema", "true", "--trainer.log_every_n_steps", "50",
         "--trainer.enable_progress_bar", "true", "--trainer.max_epochs", "3"],
        cwd,
    )  # fmt: skip
    best = cwd / "runs" / "detect" / "train" / "checkpoints" / "best.ckpt"
    validate = _run(["validate", "--ckpt_path", str(best)], cwd)
    images = next((cwd / "cache").glob("synthetic-*/images/val"))
    predict = _run(["predict", "--ckpt_path", str(best), "--data.predict_path", str(images)], cwd)
    return {"cwd": cwd, "fit": fit, "validate": validate, "predict": predict, "best": best, "images": images}


@pytest.mark.parametrize("command", ["fit", "validate", "predict"])
def test_no_noise_lines(runs, command):
    out = runs[command]
    for line in NOISE:
        assert line not in out, f"{command} printed {line!r}:\n{out[-3000:]}"
    # messages start on their own line, never glued onto the end of a progress-bar line
    assert not re.search(r"\](\[lightning-yolo|time budget)", out), out[-3000:]


def test_progress_bar_shows_the_losses_instances_and_size_in_80_columns(runs):
    out = runs["fit"]
    lines = re.split(r"[\r\n]", out)
    header = [ln for ln in lines if ln.split() == ["epoch", "box", "obj", "cls", "loss", "inst", "size"]]
    assert header, out[-3000:]
    bars = [ln for ln in lines if re.match(r"\s+\d+/3\s", ln)]  # the training bar: "   2/3  0.0318 ..."
    assert bars, out[-3000:]
    assert max(len(ln) for ln in bars) <= 80, max(bars, key=len)
    # every column filled: epoch, box, obj, cls, loss, instances, size; then the bar and batches
    assert any(re.match(r"\s+3/3(\s+[0-9.e+-]+){6}: \|.*\| 4/4 \[", ln) for ln in bars), bars[-3:]
    assert not re.search(r"train/\w+_(step|epoch)", out)  # no _step / _epoch copies of the losses
    assert not any("val/map" in ln for ln in bars)
    assert len(max(header, key=len)) <= 80


def test_validate_prints_its_metrics_once(runs):
    out = runs["validate"]
    assert "Validate metric" not in out  # Lightning's table of 16-digit floats
    assert len([ln for ln in out.splitlines() if ln.split()[:1] == ["all"]]) == 1  # the per-class table, once
    final = [ln for ln in out.splitlines() if ln.startswith("[lightning-yolo validate] val/")]
    assert len(final) == 1 and "val/map_75=" in final[0]
    assert "val/map=" not in out and "val/map_50=" not in out  # they are the table's "all" row


def test_predict_reports_per_image_and_writes_only_its_results(runs):
    out = runs["predict"]
    names = sorted(p.name for p in runs["images"].iterdir())
    per_image = [ln for ln in out.splitlines() if re.match(r"\[lightning-yolo predict\] \S+\.jpg: ", ln)]
    assert len(per_image) == len(names) == 8, out[-3000:]
    assert all(re.search(r"\.jpg: (no detections|\d+ \w+(, \d+ \w+)*)$", ln) for ln in per_image), per_image
    assert any(re.match(r"\[lightning-yolo predict\] \d+ detections in 8 images", ln) for ln in out.splitlines())
    folder = runs["cwd"] / "runs" / "detect" / "predict"
    files = {p.name for p in folder.iterdir()}
    assert "predictions.json" in files and "images" in files, files
    assert not any(f.startswith("events.out.tfevents") for f in files) and "hparams.yaml" not in files, files
    assert sorted(p.stem for p in (folder / "images").iterdir()) == sorted(Path(n).stem for n in names)


def test_predict_help_states_the_real_default_folder(capsys):
    from lightning_yolo.commands.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "runs/detect/predict" in text


def test_best_checkpoint_holds_the_weights_alone(runs, tmp_path):
    from lightning_yolo import load_predictor
    from lightning_yolo.callbacks.checkpoints import WEIGHTS_KEYS
    from lightning_yolo.commands.cli import main
    from lightning_yolo.inference.checkpoint import load_matching_weights
    from lightning_yolo.models.factory import create_model

    best, last = runs["best"], runs["best"].with_name("last.ckpt")
    best_ckpt = torch.load(best, map_location="cpu", weights_only=True)
    last_ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert set(best_ckpt) <= set(WEIGHTS_KEYS) and "optimizer_states" not in best_ckpt
    assert {"optimizer_states", "current_model_state", "callbacks"} <= set(last_ckpt)  # resuming needs them
    # EMA: last.ckpt holds the weights three times (averaged, raw, AdamW's two moments: four) and best.ckpt once
    assert best.stat().st_size < 0.35 * last.stat().st_size, (best.stat().st_size, last.stat().st_size)
    # loadable for inference, fine-tuning and (above) validate / predict
    assert load_predictor(best).num_classes == 4
    report = load_matching_weights(create_model("yolov4_pico", num_classes=4), best)
    assert not report.missing and not report.shape_mismatch
    # resuming from it is one clear error pointing at last.ckpt
    with pytest.raises(SystemExit) as err:
        main(["fit", "--config", "debug", "--ckpt_path", str(best), "--trainer.default_root_dir", str(tmp_path)])
    assert err.value.code == 2 and "last.ckpt" in str(err.value.__cause__)


def test_training_bar_fits_80_columns_at_a_long_epoch():
    """999 batches, an hour in, a diverging loss: the training line still fits an 80-column terminal."""
    import io
    from types import SimpleNamespace

    from tqdm import tqdm

    from lightning_yolo.callbacks.progress import DetectionProgressBar

    bar_cb = DetectionProgressBar()
    metrics = {"train/box_step": 0.0318, "train/obj_step": 0.436, "train/cls_step": 0.0449, "train/loss_step": 12345.6,
               "train/box_epoch": 0.03, "val/map": 0.5, "train/instances": 21.0, "train/img_size": 640.0}  # fmt: skip
    trainer = SimpleNamespace(progress_bar_metrics=metrics, max_epochs=300, current_epoch=11)
    values = bar_cb.values(trainer)
    assert values.split() == ["12/300", "0.0318", "0.436", "0.0449", "1e+04", "21", "640"]
    assert len(values) == len(bar_cb.header())  # the columns line up with the header
    bar = tqdm(total=999, file=io.StringIO(), bar_format=bar_cb.TRAIN_BAR_FORMAT, ncols=80, desc=values)
    bar.n, bar.start_t = 999, bar.start_t - 3700
    line = str(bar)
    assert len(line) <= 80 and "999/999" in line and "|" in line, line
