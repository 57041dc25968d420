"""Hooks around evaluation: the time per image of each evaluation stage (:class:`EvalSpeed`), the network it runs
(:class:`FusedEvaluation`) and the last epoch's validation (:class:`ValidateLastEpoch`).
:class:`~lightning_yolo.YOLOModule` adds all three (``configure_callbacks``)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from ..models.layers import FusedMirror

__all__ = ["EvalSpeed", "FusedEvaluation", "ValidateLastEpoch"]


class EvalSpeed(pl.Callback):
    """Milliseconds per image of each stage of validation and test, in ``pl_module.eval_report.speed_ms``.

    - ``pre-process``: from the end of one batch to the start of the next (loading, collating, the host-to-device
      copy and ``on_after_batch_transfer``); the first batch, which also starts the workers, is not counted.
    - ``inference``: the network's forward (``pl_module.eval_model``, else ``pl_module.model``), timed by forward hooks.
    - ``post-process``: from the end of the forward to the start of the loss (``pl_module.loss``): decode, NMS and
      the mapping back to original-image pixels, which the evaluation step runs between the two.

    On CUDA each mark synchronises the device, so the figures are the device time. Calls of the network outside the
    evaluation step (a picture callback's own forward) are not counted: only the first forward after a batch starts
    is. The report is the module's :class:`~lightning_yolo.reporting.report.EvalReport`, built at the epoch's end.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._handles: list[Any] = []
        self._state = "idle"  # idle -> armed (batch started) -> forward -> post (forward done) -> idle (loss starts)
        self._t = 0.0
        self._cuda = False
        self._batch_size = 0
        self._last_end: float | None = None
        self._hooked = False

    def _now(self) -> float:
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    # ---------------------------------------------------------------------------------------------- forward hooks
    def _forward_start(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self._state == "armed":
            images = args[0] if args else None
            self._cuda = isinstance(images, torch.Tensor) and images.is_cuda
            self._batch_size = int(images.shape[0]) if isinstance(images, torch.Tensor) else 0
            self._state, self._t = "forward", self._now()

    def _forward_end(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._state == "forward":
            now = self._now()
            self.totals["inference"] += now - self._t
            self._state, self._t = "post", now

    def _loss_start(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self._state == "post":
            self.totals["post-process"] += self._now() - self._t
            self.totals["images"] += self._batch_size
            self._state = "idle"

    # ---------------------------------------------------------------------------------------------- Lightning hooks
    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()
        self.totals = dict.fromkeys(("pre-process", "inference", "post-process", "images", "pre_images"), 0.0)
        self._state, self._last_end, self._hooked = "idle", None, False

    def _hook(self, pl_module: pl.LightningModule) -> None:
        # at the first batch, not at the epoch's start: the network evaluated (``eval_model``, FusedEvaluation's
        # fused copy) is set in an epoch-start hook, and the order of the callbacks' hooks is not ours to rely on
        self._hooked = True
        model = getattr(pl_module, "eval_model", getattr(pl_module, "model", None))
        loss = getattr(pl_module, "loss", None)
        if isinstance(model, torch.nn.Module) and isinstance(loss, torch.nn.Module):
            self._handles = [
                model.register_forward_pre_hook(self._forward_start),
                model.register_forward_hook(self._forward_end),
                loss.register_forward_pre_hook(self._loss_start),
            ]

    def _stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _batch_start(self, pl_module: pl.LightningModule, batch: Any) -> None:
        if not self._hooked:
            self._hook(pl_module)
        images = batch.get("images") if isinstance(batch, dict) else None
        if self._last_end is not None and isinstance(images, torch.Tensor):
            self.totals["pre-process"] += time.perf_counter() - self._last_end
            self.totals["pre_images"] += images.shape[0]
        self._state = "armed"

    def _batch_end(self) -> None:
        self._state = "idle"
        self._last_end = time.perf_counter()

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()
        report = getattr(pl_module, "eval_report", None)
        totals = self.totals
        if report is None or not totals.get("images"):
            return
        if totals["pre_images"]:  # not measured with a single batch
            report.speed_ms["pre-process"] = 1000 * totals["pre-process"] / totals["pre_images"]
        report.speed_ms["inference"] = 1000 * totals["inference"] / totals["images"]
        report.speed_ms["post-process"] = 1000 * totals["post-process"] / totals["images"]

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._batch_start(pl_module, batch)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self._batch_end()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module)  # after the module's epoch end, which builds the report

    on_test_epoch_start = on_validation_epoch_start
    on_test_batch_start = on_validation_batch_start
    on_test_batch_end = on_validation_batch_end
    on_test_end = on_validation_end

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop()


class FusedEvaluation(pl.Callback):
    """Validation and test run a Conv+BN-fused copy of the module's network (``pl_module.eval_model``).

    The copy (:class:`~lightning_yolo.models.layers.FusedMirror`) is refreshed in place from ``pl_module.model`` at
    each evaluation's start, so it holds the weights being evaluated (the averaged ones: the module lists this
    callback after its EMA callback, which swaps them in at the same hook) and is released from
    ``eval_model`` at the end. It gives the same outputs to float rounding and a 1.15-1.25x faster forward on a
    CPU (benchmarks/README.md, validation). It is never a submodule: not in the state_dict, the optimizer or a
    checkpoint, and the trained network is never modified.
    """

    def __init__(self) -> None:
        self.mirror = FusedMirror()

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        if isinstance(model, torch.nn.Module) and not model.training:
            pl_module.__dict__["_eval_net"] = self.mirror(model)  # a plain attribute: no submodule registration

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.__dict__.pop("_eval_net", None)

    on_validation_epoch_start = on_test_epoch_start = _start
    on_validation_epoch_end = on_test_epoch_end = _end

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._end(trainer, pl_module)


class ValidateLastEpoch(pl.Callback):
    """Every fit ends with a validation: with ``check_val_every_n_epoch=6`` a 3-epoch run would print no metric and
    write no best checkpoint. The last epoch (of ``max_epochs``, also when :class:`~lightning_yolo.callbacks.TimeBudget`
    moves it during the run) validates whatever the period; a run that goes on afterwards keeps its period."""

    def __init__(self) -> None:
        self._period: int | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        # checked at every batch, not once per epoch: a time budget can make the running epoch the last one
        period, max_epochs = trainer.check_val_every_n_epoch, trainer.max_epochs
        if self._period is not None or period is None or period <= 1 or max_epochs is None or max_epochs < 1:
            return
        if trainer.current_epoch == max_epochs - 1 and (trainer.current_epoch + 1) % period:
            self._period = period
            trainer.check_val_every_n_epoch = 1
            rank_zero_info(f"validating the last epoch ({max_epochs}) too (check_val_every_n_epoch={period})")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a run that goes on past the forced epoch (a longer time budget) keeps its period; restored here, not at
        # that epoch's end, where ModelCheckpoint still reads the period to decide when it saves
        if self._period is not None:
            trainer.check_val_every_n_epoch, self._period = self._period, None
