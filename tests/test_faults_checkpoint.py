"""Checkpoint writes are atomic: a fault or kill -9 in the middle of a write leaves the previous last.ckpt loadable."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import lightning_yolo.callbacks.checkpoints as checkpoint_io
from lightning_yolo.callbacks import LastCheckpoint
from lightning_yolo.callbacks.checkpoints import AtomicCheckpointIO, atomic_torch_save
from lightning_yolo.commands.cli import build_cli

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


_TORCH_SAVE = torch.save


def _half_then_fail(obj, f):
    """A torch.save that dies half-way through the file (what a crash mid-write leaves behind)."""
    import io

    buf = io.BytesIO()
    _TORCH_SAVE(obj, buf)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    raise RuntimeError("injected fault in the middle of the checkpoint write")


@pytest.mark.usefixtures("cli_env")
def test_cli_fit_keeps_last_ckpt_when_a_write_fails(tmp_path, monkeypatch):
    cli = build_cli(
        ["fit", "--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1",
         "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
    )  # fmt: skip
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    last = Path(next(cb for cb in cli.trainer.callbacks if isinstance(cb, LastCheckpoint)).best_model_path)
    before = _load(last)
    monkeypatch.setattr(checkpoint_io.torch, "save", _half_then_fail)
    with pytest.raises(RuntimeError, match="injected fault"):
        cli.trainer.save_checkpoint(last)
    after = _load(last)  # the old file, complete
    assert after["epoch"] == before["epoch"]
    for key, value in before["state_dict"].items():
        assert torch.equal(after["state_dict"][key], value), key
    assert not list(last.parent.glob(".*.tmp")), "partial file left behind"


def test_atomic_save_disk_full_names_file_and_keeps_old(tmp_path, monkeypatch):
    path = tmp_path / "run" / "last.ckpt"
    atomic_torch_save({"v": torch.ones(3)}, path)

    def full(obj, f):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", full)
    with pytest.raises(OSError, match=r"last\.ckpt: cannot write the checkpoint \(No space left on device; free some"):
        atomic_torch_save({"v": torch.zeros(3)}, path)
    assert torch.equal(_load(path)["v"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_atomic_save_read_only_folder(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(OSError, match=r"ro/last\.ckpt: cannot write the checkpoint .*choose a writable folder"):
            AtomicCheckpointIO().save_checkpoint({"v": torch.ones(1)}, folder / "last.ckpt")
    finally:
        folder.chmod(0o755)


def test_orphans_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "last.ckpt"
    orphan = tmp_path / ".last.ckpt.12345.deadbeef.tmp"
    orphan.write_bytes(b"partial")
    other = tmp_path / ".best.ckpt.1.aaaa.tmp"  # another file's orphan: not ours to remove
    other.write_bytes(b"partial")
    atomic_torch_save({"v": torch.ones(1)}, path)
    assert not orphan.exists() and other.exists()
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # umask honoured, not mkstemp's 0600


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from lightning_yolo.callbacks.checkpoints import AtomicCheckpointIO
    io, path = AtomicCheckpointIO(), sys.argv[1]
    big = torch.arange(6_000_000, dtype=torch.float32)  # 24 MB: a write takes a while
    print("ready", flush=True)
    version = 1
    while True:
        io.save_checkpoint({"version": version, "weights": big + version}, path)
        version += 1
    """
)


def test_kill_9_at_any_moment_of_a_write_leaves_a_loadable_last_ckpt(tmp_path):
    """Several kill -9 at random moments of back-to-back 24 MB writes: last.ckpt always loads, whole.

    The run folder and $TMPDIR are different folders (Lightning's default writer goes through $TMPDIR; here nothing
    may)."""
    path = tmp_path / "run" / "last.ckpt"
    atomic_torch_save({"version": 0, "weights": torch.arange(6_000_000, dtype=torch.float32)}, path)
    env = {**os.environ, "TMPDIR": str(tmp_path / "elsewhere"), "OMP_NUM_THREADS": "1"}
    (tmp_path / "elsewhere").mkdir()
    rng = random.Random(0)
    seen_versions = set()
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env, cwd=str(ROOT)
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        ckpt = _load(path)
        version = int(ckpt["version"])
        assert torch.equal(ckpt["weights"], torch.arange(6_000_000, dtype=torch.float32) + version)
        seen_versions.add(version)
    assert not list((tmp_path / "elsewhere").iterdir()), "nothing may be written to $TMPDIR"
    assert max(seen_versions) > 0  # the writer did replace the file between kills
    atomic_torch_save({"version": -1}, path)  # the next save cleans up what the kills left
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.usefixtures("cli_env")
def test_disk_full_during_fit_is_one_error_line(tmp_path, monkeypatch, capsys):
    from lightning_yolo.commands.cli import main

    def full(obj, f):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io.torch, "save", full)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "[Errno" not in lines[0]
    assert "checkpoints/best.ckpt: cannot write the checkpoint (No space left on device; free some space" in lines[0]
    assert lines[0].endswith("no file was written")
    assert not list(tmp_path.rglob("*.tmp"))
