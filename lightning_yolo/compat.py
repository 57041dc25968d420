"""The package's only uses of other libraries' private parts, each where no public API does the job.

Everything else uses public APIs: the ``max_time`` budget comes from ``Timer.time_remaining`` / ``time_elapsed``
(:func:`lightning_yolo.callbacks.recipe.max_time_seconds`), TensorBoard's presence from ``importlib.util.find_spec``,
the batch count in an epoch from the hooks' ``batch_idx``. What is left lives here, and ``tests/test_compat.py`` fails
when a library version changes any of it:

- :func:`option_strings`: argparse has no public list of a parser's option strings (``parser._actions``).
- :func:`set_max_epochs`: ``Trainer.max_epochs`` is read-only; a wall-time budget re-plans the run by changing the
  fit loop's ``max_epochs`` (``trainer.fit_loop``, a Lightning internal) while it runs.
- :data:`LIGHTNING_CLI_OVERRIDES`: ``LightningCLI`` methods without a public hook that
  :class:`~lightning_yolo.commands.cli.YOLOCLI` overrides: ``_parse_ckpt_path`` (check a ``--ckpt_path`` before
  Lightning reads its hyperparameters, name the file when it cannot be read, keep the typed ``--model.*`` flags) and
  ``_run_subcommand`` (silence warnings that the package's own settings cause, around the run only).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["LIGHTNING_CLI_OVERRIDES", "option_strings", "set_max_epochs"]

#: Private ``LightningCLI`` methods that ``YOLOCLI`` overrides, with the parameters it relies on (besides ``self``).
LIGHTNING_CLI_OVERRIDES: dict[str, tuple[str, ...]] = {
    "_parse_ckpt_path": (),
    "_run_subcommand": ("subcommand",),
}


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` (``{"-h", "--help", "--img_size", ...}``)."""
    return {option for action in parser._actions for option in action.option_strings}


def set_max_epochs(trainer: Any, epochs: int) -> None:
    """Make ``epochs`` the ``max_epochs`` of the running ``fit`` (``trainer.max_epochs`` reads it back)."""
    trainer.fit_loop.max_epochs = int(epochs)
