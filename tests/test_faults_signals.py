"""SIGTERM (to the whole process group, as Slurm and systemd send it) and Ctrl-C during ``fit``: a clean shutdown
that prints the last complete checkpoint and the resume command; no DataLoader worker error, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def _start_fit(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LIGHTNING_YOLO_CACHE": str(tmp_path / "cache")}
    env.pop("LIGHTNING_YOLO_TRACEBACK", None)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_yolo", "fit", "--config", DEBUG, "--trainer.max_epochs", "500",
         "--trainer.default_root_dir", str(run), "--trainer.logger", "false", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(tmp_path), start_new_session=True,
    )  # fmt: skip
    last = run / "train" / "checkpoints" / "last.ckpt"  # <default_root_dir>/<name>: the run folder
    deadline = time.monotonic() + 240
    while not last.is_file():
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.2)
    time.sleep(0.5)  # into the next epoch
    return proc, last


def _check_notice(stderr: str, what: str, last: Path) -> None:
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if f"interrupted by {what}" in ln]
    assert len(lines) == 1, stderr[-3000:]
    assert f"last complete checkpoint: {last}" in lines[0]
    assert lines[0].rstrip().endswith(f"--ckpt_path {last}") and "resume with: lightning-yolo fit --config" in lines[0]
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # the checkpoint the command names is whole
    assert ckpt["epoch"] >= 0


def test_sigterm_to_the_process_group_is_a_clean_shutdown(tmp_path):
    proc, last = _start_fit(tmp_path, "--data.num_workers", "1")  # workers get the signal too
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()[-3000:]
    _check_notice(err.decode(), "SIGTERM", last)


@pytest.mark.slow
def test_ctrl_c_prints_the_resume_command(tmp_path):
    proc, last = _start_fit(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    _check_notice(err.decode(), "Ctrl-C", last)
