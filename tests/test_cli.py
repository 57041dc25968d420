"""The command line end to end: YAML configs, fit + validate, the demo default, DDP on two CPU processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_yolo.commands.cli import demo_config_path, with_demo_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def run_cli(args: list[str], cwd: Path, timeout: int = 600) -> str:
    env = dict(os.environ, PYTHONWARNINGS="ignore", LIGHTNING_YOLO_CACHE=str(cwd / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_yolo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def parse_metrics(out: str, stage: str) -> dict[str, float]:
    """The metrics a run prints once: mAP50 and mAP50-95 in the per-class table's "all" row (3 decimals), the other
    COCO metrics on the line after it."""
    lines = out.splitlines()
    line = [ln for ln in lines if ln.startswith(f"[lightning-yolo {stage}]") and "map" in ln][-1]
    metrics = {k: float(v) for k, v in re.findall(r"(\S+/\w+)=(-?[0-9.]+)", line)}
    prefix = line.split("]", 1)[1].split()[0].split("/")[0]  # val or test
    row = [ln.split() for ln in lines[: lines.index(line)] if ln.split()[:1] == ["all"]][-1]
    metrics[f"{prefix}/map_50"], metrics[f"{prefix}/map"] = float(row[5]), float(row[6])
    return metrics


def test_demo_config_is_default_base():
    assert Path(demo_config_path()).is_file()
    assert with_demo_config(["fit"]) == ["fit", "--config", demo_config_path()]
    assert with_demo_config(["fit", "--trainer.max_epochs", "1"])[:3] == ["fit", "--config", demo_config_path()]
    assert with_demo_config(["fit", "--config", "x.yaml"]) == ["fit", "--config", "x.yaml"]
    assert with_demo_config(["fit", "--help"]) == ["fit", "--help"]
    assert with_demo_config(["export", "x"]) == ["export", "x"]


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_parses(config, tmp_path):
    out = run_cli(["fit", "--config", str(config), "--print_config"], tmp_path)
    assert "model_name:" in out and "img_size:" in out


def test_fit_then_validate_debug_config(tmp_path):
    out = run_cli(["fit", "--config", str(ROOT / "configs" / "debug.yaml")], tmp_path)
    fit_metrics = parse_metrics(out, "fit")
    assert {"val/map", "val/map_50", "val/mar_100"} <= set(fit_metrics)
    ckpt = tmp_path / "runs" / "detect" / "train" / "checkpoints" / "last.ckpt"  # runs/<task>/<name>/checkpoints
    assert ckpt.is_file()
    out = run_cli(["validate", "--config", str(ROOT / "configs" / "debug.yaml"), "--ckpt_path", str(ckpt)], tmp_path)
    assert "val/map_50" in parse_metrics(out, "validate")
    assert (tmp_path / "runs" / "detect" / "val" / "config.yaml").is_file()  # next to the run, not inside it


def test_ddp_two_cpu_processes_matches_single_process(tmp_path):
    """fit + validate under DDP (gloo, 2 processes); the validation mAP equals the single-process one."""
    cfg = str(ROOT / "configs" / "debug.yaml")
    ddp = ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    # 7 validation images: an uneven split that a padding sampler would count twice.
    data = ["--data.synthetic_num_val", "7", "--trainer.limit_val_batches", "1.0"]
    out = run_cli(["fit", "--config", cfg, *ddp, *data, "--trainer.max_epochs", "1"], tmp_path)
    assert "val/map" in parse_metrics(out, "fit")
    ckpt = tmp_path / "runs" / "detect" / "train" / "checkpoints" / "last.ckpt"
    # process 1 took process 0's run folder, not a train2 of its own (train existed when it chose)
    assert [p.name for p in (tmp_path / "runs" / "detect").iterdir()] == ["train"]
    multi = parse_metrics(run_cli(["validate", "--config", cfg, *ddp, *data, "--ckpt_path", str(ckpt)], tmp_path), "validate")
    single = parse_metrics(run_cli(["validate", "--config", cfg, *data, "--ckpt_path", str(ckpt)], tmp_path), "validate")
    assert set(multi) == set(single)
    for key in single:
        assert multi[key] == pytest.approx(single[key], abs=1e-6), key
    assert single["val/mar_100"] > 0
