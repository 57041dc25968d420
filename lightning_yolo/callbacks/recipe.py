"""Training-recipe callbacks: ramped EMA of the weights, the anchor check at fit start, and training by time.

* :class:`EMA` — exponential moving average of the weights with the YOLOv5 / ultralytics warm-up ramp
  ``decay_n = decay * (1 - exp(-n / tau))``: the first updates follow the model closely, so the validated and
  saved (averaged) weights are useful from the first epoch on, also in runs of a few hundred steps.
* :class:`AutoAnchor` — at the start of ``fit``, the best possible recall of the model's anchors on the training
  boxes at the training size; below ``bpr_thresh`` k-means anchors from the data replace them.
* :class:`FreezeBackbone` — the backbone (weights and BatchNorm statistics) frozen for the first epochs of a
  fine-tune.
* :class:`TimeBudget` — plans the run over a wall-time budget: after each epoch it sets the number of epochs that
  fit in the remaining time, so the cosine schedule, close-mosaic and the last validation all happen within it.

Close-mosaic itself is no callback: it is ``AugmentCfg.close_mosaic_epochs``, applied by the DataModule's training
sampler against ``trainer.max_epochs`` (:meth:`~lightning_yolo.data.datamodule.YOLODataModule.multi_image_enabled`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.callbacks.weight_averaging import WeightAveraging
from pytorch_lightning.utilities import rank_zero_info

from ..compat import set_max_epochs

__all__ = [
    "EMA",
    "AutoAnchor",
    "FreezeBackbone",
    "TimeBudget",
    "best_possible_recall",
    "max_time_seconds",
    "set_frozen",
]


# ----------------------------------------------------------------------------------------------------------- EMA


class _RampedEMAFn:
    """``multi_avg_fn`` of :class:`torch.optim.swa_utils.AveragedModel`: ramped exponential moving average."""

    def __init__(self, decay: float, tau: float) -> None:
        self.decay = float(decay)
        self.tau = float(tau)

    def decay_at(self, num_updates: int) -> float:
        """Decay applied at the ``num_updates``-th update after the first copy (1, 2, ...)."""
        if self.tau <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-float(num_updates) / self.tau))

    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Any) -> None:
        d = self.decay_at(int(num_averaged))
        if averaged[0].is_floating_point():
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # integer buffers (BatchNorm's num_batches_tracked): the current value
            for a, c in zip(averaged, current):
                a.copy_(c)


class EMA(WeightAveraging):
    """Exponential moving average of the weights and buffers, with a warm-up ramp of the decay.

    The ``n``-th update uses ``decay * (1 - exp(-n / tau))`` (YOLOv5 / ultralytics ``ModelEMA``; darknet has no
    EMA). Lightning's ``EMAWeightAveraging`` uses a fixed decay, so with ``decay=0.999`` the average of a run of
    a few hundred steps still holds mostly the random initial weights. As with Lightning's averaging callbacks,
    validation runs on the averaged weights, checkpoints store them as ``state_dict`` (the raw weights under
    ``current_model_state`` for resuming) and the averaged weights replace the model's when ``fit`` ends.

    Args:
        decay: the decay the ramp approaches (ultralytics 0.9999).
        tau: ramp length in updates (ultralytics 2000); ``0`` disables the ramp.
        update_every_n_steps: update after every n-th optimizer step.
        start_epoch: first epoch whose steps update the average. Before it, nothing is averaged and validation
            and checkpoints use the raw weights.
        use_buffers: average the buffers too (BatchNorm statistics), as ultralytics does.
        device: where the averaged copy lives (``None``: the model's device).
    """

    def __init__(
        self,
        decay: float = 0.9999,
        tau: float = 2000.0,
        update_every_n_steps: int = 1,
        start_epoch: int = 0,
        use_buffers: bool = True,
        device: str | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        if tau < 0:
            raise ValueError(f"EMA tau must be >= 0, got {tau!r}")
        if update_every_n_steps < 1:
            raise ValueError(f"EMA update_every_n_steps must be >= 1, got {update_every_n_steps!r}")
        self.ema_fn = _RampedEMAFn(decay, tau)
        super().__init__(device=device, use_buffers=use_buffers, multi_avg_fn=self.ema_fn)
        self.decay = float(decay)
        self.tau = float(tau)
        self.update_every_n_steps = int(update_every_n_steps)
        self.start_epoch = int(start_epoch)
        self._epoch = 0

    @property
    def num_updates(self) -> int:
        """Updates applied so far (0 before the first)."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    def _has_average(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # The averaged copy is taken here: anything that changes the model at fit start (the anchor check) runs first.
        if stage == "fit":
            for cb in trainer.callbacks:
                if isinstance(cb, AutoAnchor):
                    cb.check(trainer, pl_module)
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch = trainer.current_epoch

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None or self._epoch < self.start_epoch:
            return False
        return step_idx % self.update_every_n_steps == 0

    # Until the first update the average holds the initial weights: validate, save and finish with the raw ones.
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._has_average():
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._has_average():
            self._swap_models(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._has_average():
            self._copy_average_to_current(pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._has_average():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is None:
            # validate / test / predict: the checkpoint's state_dict already holds the averaged weights, which is
            # what evaluation wants; Lightning's warning about not restoring the averaging state says nothing here
            return
        if "current_model_state" not in checkpoint:
            # a checkpoint saved before the first update (or without EMA): start averaging afresh from it
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)


# ---------------------------------------------------------------------------------------------------- anchors


def best_possible_recall(boxes_wh: torch.Tensor, anchors: torch.Tensor, ratio_thresh: float = 4.0) -> float:
    """Fraction of boxes that some anchor can fit: width and height within ``ratio_thresh`` of the anchor's.

    The YOLOv5 ``check_anchors`` criterion (``anchor_t=4``): a box ``(w, h)`` fits an anchor ``(aw, ah)`` when
    ``max(w/aw, aw/w, h/ah, ah/h) < ratio_thresh``.

    Args:
        boxes_wh: ``[N, 2]`` box sizes in pixels at the training size.
        anchors: ``[..., 2]`` anchor sizes in the same pixels.
    """
    wh = torch.as_tensor(boxes_wh, dtype=torch.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(1)]
    if len(wh) == 0:
        return 1.0
    a = torch.as_tensor(anchors, dtype=torch.float64).reshape(-1, 2)
    r = wh[:, None, :] / a[None]  # [N, K, 2]
    worst = torch.maximum(r, 1.0 / r).amax(-1)  # [N, K]
    return float((worst.amin(1) < ratio_thresh).double().mean())


class AutoAnchor(pl.Callback):
    """Checks the model's anchors against the training boxes when ``fit`` starts; replaces poor ones.

    The boxes are taken at the training scale (each image's long side at ``img_size``, as the loader resizes).
    If the best possible recall (:func:`best_possible_recall`) of the current anchors is below ``bpr_thresh``,
    k-means anchors (IoU distance, :func:`lightning_yolo.data.anchors.kmeans_anchors`) are computed and used when
    they fit better; the change is logged and travels in the checkpoint (the anchors are buffers of the model and
    ``lightning_yolo.model_cfg`` records them). Not run when resuming (``fit --ckpt_path``): the checkpoint's
    anchors are kept.

    Args:
        bpr_thresh: replace anchors whose best possible recall is below this.
        ratio_thresh: width / height ratio limit of :func:`best_possible_recall`.
        seed: k-means seed.
    """

    def __init__(self, bpr_thresh: float = 0.98, ratio_thresh: float = 4.0, seed: int = 0) -> None:
        if not 0.0 <= bpr_thresh <= 1.0:
            raise ValueError(f"bpr_thresh must be in [0, 1], got {bpr_thresh!r}")
        self.bpr_thresh = float(bpr_thresh)
        self.ratio_thresh = float(ratio_thresh)
        self.seed = int(seed)
        self.result: dict[str, Any] | None = None
        self._checked = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
        """Run the check once per fit (idempotent); returns what was found and done."""
        if self._checked:
            return self.result
        self._checked = True
        if trainer.ckpt_path:
            return None
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "train_boxes_wh"):
            warnings.warn("AutoAnchor needs a YOLODataModule (train_boxes_wh); anchors left unchanged", stacklevel=2)
            return None
        from ..data.anchors import anchor_fitness, kmeans_anchors

        model = pl_module.model
        current = model.anchors.anchors.detach().cpu()
        wh = torch.as_tensor(dm.train_boxes_wh(), dtype=torch.float64)
        bpr = best_possible_recall(wh, current, self.ratio_thresh)
        fit = anchor_fitness(wh, current)
        result: dict[str, Any] = {"bpr": bpr, "fitness": fit, "replaced": False, "num_boxes": len(wh)}
        msg = f"anchor check: best possible recall {bpr:.4f}, mean best IoU {fit:.3f} on {len(wh)} training boxes"
        levels, per_level = current.shape[:2]
        if bpr < self.bpr_thresh and len(wh) >= levels * per_level:
            new = kmeans_anchors(wh, num_anchors=levels * per_level, num_levels=levels, seed=self.seed)
            new_bpr = best_possible_recall(wh, new, self.ratio_thresh)
            new_fit = anchor_fitness(wh, new)
            if (new_bpr, new_fit) > (bpr, fit):
                new = torch.round(new * 10) / 10
                pl_module.set_anchors(new.tolist())
                result.update(replaced=True, anchors=new.tolist(), new_bpr=new_bpr, new_fitness=new_fit)
                msg += (
                    f" < {self.bpr_thresh}: k-means anchors used (best possible recall {new_bpr:.4f}, mean best IoU "
                    f"{new_fit:.3f}): {new.tolist()}"
                )
            else:
                msg += f" < {self.bpr_thresh}, but k-means found no better anchors; kept"
        elif bpr < self.bpr_thresh:
            msg += f" < {self.bpr_thresh}, but too few boxes for k-means; kept"
        else:
            msg += ": anchors kept"
        rank_zero_info(msg)
        self.result = result
        return result


# ------------------------------------------------------------------------------------------------------- freezing


def set_frozen(module: torch.nn.Module, frozen: bool, training: bool = True) -> None:
    """Freeze or unfreeze ``module``: ``requires_grad`` of its parameters, and its BatchNorm layers in eval mode
    while frozen (a frozen BatchNorm keeps its statistics), else in the ``training`` mode."""
    for p in module.parameters():
        p.requires_grad_(not frozen)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.train(not frozen and training)


class FreezeBackbone(pl.Callback):
    """Keep ``pl_module.model.backbone`` frozen (weights and BatchNorm statistics) for the first ``epochs`` epochs.

    Frozen parameters stay in the optimizer (SGD and Adam skip parameters whose grad is ``None``), so unfreezing
    needs no new optimizer. :class:`~lightning_yolo.YOLOModule` adds it for ``freeze_backbone_epochs``.
    """

    def __init__(self, epochs: int) -> None:
        self.epochs = int(epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.epochs > 0:
            set_frozen(pl_module.model.backbone, trainer.current_epoch < self.epochs, pl_module.training)
            if trainer.current_epoch == self.epochs:
                logging.getLogger(__name__).info("unfreezing the backbone at epoch %d", self.epochs)


# ------------------------------------------------------------------------------------------------------- time


class TimeBudget(pl.Callback):
    """Plans ``fit`` over a wall-time budget: epochs, the learning-rate schedule and close-mosaic.

    ``max_epochs`` stays an upper bound; after the first few steps and after every epoch, the epochs that fit in
    the remaining time (measured epoch cost, validation included) become the run's ``max_epochs``. The
    warmup + cosine schedule of :class:`~lightning_yolo.module.YOLOModule` is re-planned over the new total, and
    the DataModule's close-mosaic and the last validation follow ``max_epochs``. Lightning's
    ``Trainer(max_time=...)`` stays as the hard stop; this callback aims to finish just before it.

    A plan shorter than the configured ``max_epochs`` scales the recipe's epoch counts with it, and the plan line says
    so: the warmup is at most a third of the planned run (``warmup_epochs: 3`` against 4 planned epochs would peak the
    learning rate at epoch 3 and leave one epoch for the whole cosine), and ``close_mosaic_epochs`` at most a quarter
    (10 against 4 planned epochs would switch Mosaic off for the whole run: 1).

    Args:
        seconds: the budget; ``None`` reads it from ``Trainer(max_time=...)``. Counted from the start of ``fit``;
            a resumed run (``fit --ckpt_path``) continues the budget where the checkpoint left it.
        margin: seconds kept free for what follows the last epoch (saving, the final print).
    """

    def __init__(self, seconds: float | None = None, margin: float = 5.0) -> None:
        self.seconds = None if seconds is None else float(seconds)
        self.margin = float(margin)
        self._t0 = 0.0
        self._epoch_t0 = 0.0
        self._probe_t0 = 0.0  # start of the step-time probe in epoch 0
        self._epoch_costs: list[float] = []
        self._max_epochs_cfg: int | None = None
        self._close_mosaic_cfg: int | None = None  # the DataModule's configured close_mosaic_epochs
        self._used_before = 0.0  # seconds of the budget spent before a resume (from the checkpoint)
        self.plans: list[tuple[int, int]] = []  # (epoch planned at, max_epochs)
        self.plan_line = ""  # the last plan, as printed

    def state_dict(self) -> dict[str, Any]:
        # a resumed run continues the same budget (as Lightning's Timer does)
        return {"used_s": self._used_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._used_before = float(state_dict.get("used_s", 0.0))

    def _budget(self, trainer: pl.Trainer) -> float | None:
        return self.seconds if self.seconds is not None else max_time_seconds(trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._max_epochs_cfg = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        augment = getattr(trainer.datamodule, "augment", None)
        self._close_mosaic_cfg = getattr(augment, "close_mosaic_epochs", None)
        if self._budget(trainer) is None:
            warnings.warn("TimeBudget: no budget (set seconds= or Trainer(max_time=...)); not planning", stacklevel=2)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_t0 = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # first plan inside epoch 0, from the step time (the first steps include start-up costs: skip them)
        if trainer.current_epoch != 0 or self._epoch_costs:
            return
        n = batch_idx  # batches completed before this one
        steps = int(trainer.num_training_batches) if math.isfinite(trainer.num_training_batches) else 0
        probe = min(max(3, steps // 4), max(steps - 1, 1))
        if n == 2:
            self._probe_t0 = time.perf_counter()
        elif n == probe and n > 2 and steps > 0:
            per_step = (time.perf_counter() - self._probe_t0) / (n - 2)
            self._replan(trainer, pl_module, per_step * steps * 1.15)  # + ~15% for validation until measured

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._epoch_t0 == 0.0:
            return
        self._epoch_costs.append(time.perf_counter() - self._epoch_t0)
        self._epoch_t0 = 0.0
        recent = sorted(self._epoch_costs[-5:])
        self._replan(trainer, pl_module, recent[len(recent) // 2], done=trainer.current_epoch + 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # epochs without validation: their cost is the training time alone
        if self._epoch_t0 and not _validates_this_epoch(trainer):
            self._epoch_costs.append(time.perf_counter() - self._epoch_t0)
            self._epoch_t0 = 0.0
            recent = sorted(self._epoch_costs[-5:])
            self._replan(trainer, pl_module, recent[len(recent) // 2], done=trainer.current_epoch + 1)

    def _replan(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch_cost: float, done: int = 0) -> None:
        budget = self._budget(trainer)
        if budget is None or epoch_cost <= 0:
            return
        elapsed = self._used_before + time.perf_counter() - self._t0
        if done == 0:  # inside epoch 0: the rest of it is still to come
            remaining_epochs = (budget - self.margin) / epoch_cost
        else:
            remaining_epochs = done + max(0.0, budget - self.margin - elapsed) / epoch_cost
        planned = max(done, 1, int(math.floor(remaining_epochs)))
        if self._max_epochs_cfg is not None:
            planned = min(planned, self._max_epochs_cfg)
        if planned == trainer.max_epochs:
            return
        set_max_epochs(trainer, planned)
        self.plans.append((trainer.current_epoch, planned))
        scaled = self._scale_close_mosaic(trainer, planned)
        replan = getattr(pl_module, "replan_schedule", None)
        if callable(replan):
            replan()
        scaled = [*self._warmup_note(trainer, pl_module, planned), *scaled]
        self.plan_line = (
            f"time budget {budget:.0f} s: {elapsed:.0f} s used, {epoch_cost:.1f} s per epoch -> {planned} epochs"
            + (f" ({'; '.join(scaled)})" if scaled else "")
        )
        rank_zero_info(self.plan_line)

    def _scale_close_mosaic(self, trainer: pl.Trainer, planned: int) -> list[str]:
        """Cap the DataModule's ``close_mosaic_epochs`` at a quarter of the planned epochs; the words for the plan
        line."""
        datamodule = trainer.datamodule
        augment = getattr(datamodule, "augment", None)
        configured = self._close_mosaic_cfg
        if augment is None or not configured or not hasattr(augment, "replace"):
            return []
        n = min(configured, planned // 4)
        if n != augment.close_mosaic_epochs:
            datamodule.augment = augment.replace(close_mosaic_epochs=n)
        if n == configured:
            return []
        return [f"close-mosaic the last {n} of {planned} epochs, a quarter (configured {configured})"]

    @staticmethod
    def _warmup_note(trainer: pl.Trainer, pl_module: pl.LightningModule, planned: int) -> list[str]:
        """``warmup 1.3 epochs (configured 3)`` when the re-planned schedule shortened the warmup."""
        hparams = getattr(pl_module, "hparams", None) or {}
        configured = float(hparams.get("warmup_epochs", 0.0) or 0.0)
        configs = trainer.lr_scheduler_configs
        scheduler = configs[0].scheduler if configs else None
        total, warmup = getattr(scheduler, "total_steps", 0), getattr(scheduler, "warmup_steps", None)
        if not configured or warmup is None or total <= 0:
            return []
        epochs = warmup * planned / total
        if epochs >= configured - 1e-6:
            return []
        return [f"warmup {epochs:.2g} epochs, a third of the run (configured {configured:g})"]


def max_time_seconds(trainer: pl.Trainer) -> float | None:
    """The wall-time budget of ``Trainer(max_time=...)`` in seconds (Lightning's ``Timer``), or ``None``."""
    for cb in trainer.callbacks:
        if isinstance(cb, Timer):
            remaining = cb.time_remaining("train")
            if remaining is not None:
                return round(remaining + cb.time_elapsed("train"), 3)
    return None


def _validates_this_epoch(trainer: pl.Trainer) -> bool:
    n = trainer.check_val_every_n_epoch
    if not trainer.enable_validation or n is None:
        return False
    return (trainer.current_epoch + 1) % n == 0
