"""The README's ``lightning-yolo ... --config X`` commands work outside a checkout: every config they name resolves
from an empty folder, and the debug one runs there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_yolo.commands.cli import main, with_shipped_configs

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_config_commands() -> list[list[str]]:
    """The ``lightning-yolo <sub> ... --config X`` commands of the README's code blocks, as argument lists."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("lightning-yolo ") and re.search(r"(--config|-c)[ =]", line):
                commands.append(line.split()[1:])
    return commands


def test_readme_names_configs_that_resolve_from_an_empty_folder(tmp_path, monkeypatch):
    commands = _readme_config_commands()
    assert len(commands) >= 5  # fit (debug, custom, coco), ablate, evolve, ...
    monkeypatch.chdir(tmp_path)  # an empty folder: no configs/ next to it
    for argv in commands:
        resolved = with_shipped_configs(argv)
        value = resolved[resolved.index("--config") + 1]
        assert Path(value).is_file(), f"README: lightning-yolo {' '.join(argv)}: --config {value} does not resolve"
        assert not value.startswith("configs/"), argv  # a checkout's path, not the packaged name


def test_a_checkout_path_outside_the_checkout_names_the_packaged_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as err:
        main(["fit", "--config", "configs/custom_yolo_format.yaml"])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: --config configs/custom_yolo_format.yaml: no such file here")
    assert "--config custom_yolo_format works from any folder" in line


def test_the_readme_debug_command_runs_in_an_empty_folder(tmp_path):
    argv = next(a for a in _readme_config_commands() if a[:3] == ["fit", "--config", "debug"])
    env = dict(os.environ, LIGHTNING_YOLO_CACHE=str(tmp_path / "cache"))
    run = tmp_path / "empty"
    run.mkdir()
    proc = subprocess.run([sys.executable, "-m", "lightning_yolo", *argv], cwd=run, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert (run / "runs" / "detect" / "train" / "checkpoints" / "best.ckpt").is_file()
