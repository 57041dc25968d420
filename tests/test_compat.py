"""Private parts of other libraries are used in one module, lightning_yolo/compat.py (issue 18, item 6). These tests
fail when a library version changes what that module relies on, and when a private reach-in appears elsewhere."""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI

from lightning_yolo.callbacks.recipe import max_time_seconds
from lightning_yolo.commands.args import parse_args
from lightning_yolo.commands.cli import YOLOCLI
from lightning_yolo.compat import LIGHTNING_CLI_OVERRIDES, option_strings, set_max_epochs

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_yolo"


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **kwargs)  # fmt: skip


def test_option_strings_are_argparses_own_table():
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument("--img_size", type=int)
    parser.add_argument("-o", "--output")
    expected = {"-h", "--help", "--img_size", "-o", "--output"}
    assert option_strings(parser) == set(parser._option_string_actions) == expected
    # what it serves: both spellings of an option
    assert parse_args(parser, ["--img-size", "64", "--output=a"]).img_size == 64


def test_set_max_epochs_changes_the_running_fits_max_epochs():
    trainer = _trainer(max_epochs=10)
    set_max_epochs(trainer, 3)
    assert trainer.max_epochs == 3 and trainer.fit_loop.max_epochs == 3


def test_max_time_budget_comes_from_the_timers_public_api():
    assert max_time_seconds(_trainer(max_time={"minutes": 1, "seconds": 30})) == 90.0
    assert max_time_seconds(_trainer(max_time="00:00:02:00")) == 120.0
    assert max_time_seconds(_trainer(max_epochs=1)) is None


def test_private_lightning_cli_methods_that_yolocli_overrides_still_exist():
    for name, params in LIGHTNING_CLI_OVERRIDES.items():
        method = getattr(LightningCLI, name, None)
        assert callable(method), f"LightningCLI.{name} is gone: lightning_yolo/compat.py and YOLOCLI need a new hook"
        assert tuple(inspect.signature(method).parameters)[1:] == params, name
    # every private LightningCLI method YOLOCLI overrides is listed (and so checked above)
    overridden = {n for n in vars(YOLOCLI) if n.startswith("_") and not n.startswith("__") and hasattr(LightningCLI, n)}
    assert overridden <= set(LIGHTNING_CLI_OVERRIDES), overridden - set(LIGHTNING_CLI_OVERRIDES)


#: Private names of other libraries that the package once used outside compat.py; each has a public replacement
#: or lives in compat.py now.
REPLACED = re.compile(r"\._duration\b|_TENSORBOARD(X)?_AVAILABLE|\bfit_loop\b|_option_string_actions|\._layer_sync\b")


def test_no_private_reach_in_outside_compat():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "compat.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if REPLACED.search(line.split("#", 1)[0]):
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
