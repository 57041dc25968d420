"""A callback for the benchmarks: wall time of every training epoch and every validation, as json lines.

Used by ``benchmarks/train_step.py`` (thread / worker splits, the validation share of an epoch) and
``benchmarks/accuracy.py`` through ``--trainer.callbacks+=epoch_clock.EpochClock`` with ``benchmarks/`` on
``PYTHONPATH``. Rows go to the file named by ``$EPOCH_CLOCK``::

    {"event": "train", "epoch": 0, "seconds": 9.41, "steps": 10, "images": 160}
    {"event": "val", "epoch": 0, "seconds": 0.92}
"""

from __future__ import annotations

import json
import os
import time

import pytorch_lightning as pl


class EpochClock(pl.Callback):
    """Times training epochs (first batch fetch to the last optimizer step) and validations (sanity check excluded)."""

    def __init__(self) -> None:
        self.path = os.environ.get("EPOCH_CLOCK")
        self._t_train = self._t_val = 0.0
        self._val_in_epoch = 0.0  # validation time inside the current training epoch
        self._images = 0
        self._steps = 0

    def _write(self, row: dict) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_train = time.perf_counter()
        self._images = self._steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._steps += 1
        self._images += int(batch["images"].shape[0]) if isinstance(batch, dict) else 0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs the epoch's validation before on_train_epoch_end: subtract it (recorded below)
        seconds = time.perf_counter() - self._t_train - self._val_in_epoch
        self._val_in_epoch = 0.0
        if trainer.is_global_zero:
            self._write({"event": "train", "epoch": trainer.current_epoch, "seconds": round(seconds, 3),
                         "steps": self._steps, "images": self._images})  # fmt: skip

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t_val = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.perf_counter() - self._t_val
        if trainer.sanity_checking:
            return
        self._val_in_epoch += seconds
        if trainer.is_global_zero:
            self._write({"event": "val", "epoch": trainer.current_epoch, "seconds": round(seconds, 3)})
