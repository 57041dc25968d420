"""YOLOModule: the LightningModule that trains and evaluates a YOLOv4 network."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics.detection import MeanAveragePrecision

from .data.collate import check_batch
from .models import create_model
from .models.predictor import YOLOPredictor
from .ops.postprocess import InferenceCfg, detections_to_original
from .reporting.metrics import MAP_KEYS, compute_and_report, make_map_metric, targets_in_original_pixels
from .reporting.report import EvalReport
from .training.config import LossCfg
from .training.divergence import DIVERGED, HINT, first_nonfinite_tensor, nonfinite_losses
from .training.loss import YOLOLoss
from .training.optim import DECAYS, WarmupCosineLR, make_optimizer, optimizer_class, param_groups, plan_steps

__all__ = ["YOLOModule", "MAP_KEYS", "LR_SCHEDULES"]

log = logging.getLogger(__name__)

#: ``lr_schedule`` choices (:data:`lightning_yolo.training.optim.DECAYS`).
LR_SCHEDULES = DECAYS


class YOLOModule(pl.LightningModule):
    """Trains a YOLOv4 detector: loss in ``training_step``, COCO mAP in validation and test.

    Args:
        model_name: a variant of :func:`lightning_yolo.list_models`.
        num_classes: number of classes (linked from the data by the CLI).
        class_names: names of the classes (linked from the data by the CLI); stored in checkpoints.
        model_overrides: :class:`~lightning_yolo.models.ModelCfg` fields to replace, e.g. ``{"sam": true}`` or
            ``{"anchors": [[[10, 13], ...], ...]}``.
        loss: the loss settings, :class:`~lightning_yolo.training.config.LossCfg` (one docstring per field); on the
            command line the nested group ``--model.loss.box_loss diou``, ``--model.loss.label_smoothing 0.1``.
        optimizer_name: ``"adamw"`` (default; ``betas=(momentum, 0.999)``), ``"sgd"`` (Nesterov, darknet's), or the
            name of another ``torch.optim`` class (``"RAdam"``, ``"torch.optim.NAdam"``), which gets ``lr``,
            ``weight_decay`` through the groups, and ``momentum`` as its momentum or first beta where it has one. All
            get parameter groups without weight decay on norms and biases and the same schedule. The loss is a mean
            over the batch, so SGD wants a rate about batch-size times darknet's per-image one (0.01 x 16 = 0.16).
        lr: peak learning rate.
        momentum: SGD momentum / Adam beta1 (darknet yolov4.cfg 0.949).
        weight_decay: L2 decay on convolution weights (darknet ``decay=0.0005``).
        lr_schedule: after the warmup (darknet ``burn_in``, power 4): ``"cosine"`` (the paper's cosine annealing,
            darknet ``policy=sgdr``) down to ``min_lr_ratio * lr``, or ``"steps"`` (darknet's default
            ``policy=steps``: x0.1 at 80% and again at 90% of the run). Stepped every optimisation step and planned
            over the trainer's total steps.
        warmup_epochs: length of the warmup in epochs (fractional allowed).
        min_lr_ratio: final learning rate of the cosine as a fraction of ``lr``.
        ema: keep an exponential moving average of the weights (:class:`~lightning_yolo.callbacks.EMA`, ramped
            decay ``ema_decay * (1 - exp(-n / ema_tau))``); validation, checkpoints and the final model use it.
        ema_decay: the decay the EMA ramp approaches.
        ema_tau: the EMA ramp length in optimizer steps.
        auto_anchor: check the anchors against the training boxes when ``fit`` starts and replace them by k-means
            anchors when their best possible recall is below ``auto_anchor_bpr``
            (:class:`~lightning_yolo.callbacks.AutoAnchor`).
        auto_anchor_bpr: the best-possible-recall threshold of ``auto_anchor``.
        inference: thresholds, NMS and detection caps, :class:`~lightning_yolo.ops.postprocess.InferenceCfg`: the
            predict ones (``score_thresh`` 0.25, ``max_det`` 300; ``predict``, :meth:`predictor`, export,
            ``load_predictor``) and the validation / test ones (``val_score_thresh`` 0.001, ``val_max_det`` 100), NMS
            shared; on the command line the nested group ``--model.inference.score_thresh 0.4``.
        init_from: fine-tune: a checkpoint of this package or a plain ``state_dict`` whose matching tensors
            initialise the model (the head is re-initialised when the class list differs), or darknet ``.weights``
            (cfg from ``darknet_cfg`` or next to the weights; :mod:`lightning_yolo.models.darknet`), which also sets
            ``bn_eps=1e-5`` (darknet's) in ``model_overrides`` unless given there.
        darknet_cfg: the darknet ``.cfg`` of ``init_from`` ``.weights`` (default: ``<weights stem>.cfg`` next to them).
        freeze_backbone_epochs: keep the backbone frozen (weights and BatchNorm statistics) for this many epochs.
        cross_minibatch_norm: CmBN (YOLOv4 paper, BoF): every BatchNorm normalises the k-th mini-batch of an
            accumulated batch (``trainer.accumulate_grad_batches``) with the statistics of mini-batches 1..k of that
            batch (:mod:`lightning_yolo.training.cmbn`). Without gradient accumulation it is plain BatchNorm.
        map_backend: torchmetrics' COCO evaluation: ``"auto"`` (``"faster_coco_eval"``, pycocotools' numbers 4x faster,
            when installed, as with this package), ``"pycocotools"`` (the reference) or ``"faster_coco_eval"``.
    """

    def __init__(
        self,
        model_name: str = "yolov4_pico",
        num_classes: int = 4,
        class_names: list[str] | None = None,
        model_overrides: dict[str, Any] | None = None,
        loss: LossCfg = LossCfg(),  # noqa: B008 (frozen: a shared default is safe; a dataclass default gives the CLI group)
        optimizer_name: str = "adamw",
        lr: float = 2e-3,
        momentum: float = 0.937,
        weight_decay: float = 5e-4,
        lr_schedule: str = "cosine",
        warmup_epochs: float = 1.0,
        min_lr_ratio: float = 0.05,
        ema: bool = False,
        ema_decay: float = 0.9999,
        ema_tau: float = 2000.0,
        auto_anchor: bool = False,
        auto_anchor_bpr: float = 0.98,
        inference: InferenceCfg = InferenceCfg(),  # noqa: B008 (frozen, as loss)
        init_from: str | None = None,
        darknet_cfg: str | None = None,
        freeze_backbone_epochs: int = 0,
        cross_minibatch_norm: bool = False,
        map_backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_arguments(num_classes, class_names, optimizer_name, lr_schedule, map_backend)
        loss = LossCfg.coerce(loss)  # a dict when loaded from a checkpoint
        self.save_hyperparameters()
        self.hparams["loss"] = loss.to_dict()  # plain data in checkpoints and hparams.yaml
        self.hparams["inference"] = InferenceCfg.coerce(inference).to_dict()
        from .inference.checkpoint import init_weights, is_darknet_weights

        if is_darknet_weights(init_from) and "bn_eps" not in (model_overrides or {}):
            # darknet normalises with eps 1e-5: keep its BatchNorm function (stored, so checkpoints rebuild it)
            model_overrides = {**(model_overrides or {}), "bn_eps": 1e-5}
            self.hparams["model_overrides"] = model_overrides
        self.model = create_model(model_name, num_classes=num_classes, **(model_overrides or {}))
        if cross_minibatch_norm:
            from .training.cmbn import convert_cross_minibatch_norm

            self.model = convert_cross_minibatch_norm(self.model)
        self.loss = self._make_loss()
        self.val_map = make_map_metric(map_backend)
        self.test_map = make_map_metric(map_backend)
        if init_from:
            report = init_weights(self.model, init_from, darknet_cfg)  # darknet's anchors come with its weights
            # rank_zero_info: the load report is shown by default (loaded / skipped / re-initialised)
            rank_zero_info(f"init_from {init_from}: {report.summary()}")

    # ------------------------------------------------------------------ construction helpers
    def _make_loss(self) -> YOLOLoss:
        return YOLOLoss(self.hparams.num_classes, self.model.anchors, LossCfg.coerce(self.hparams.loss))

    @property
    def max_stride(self) -> int:
        """The network's largest output stride (input sides must be multiples of it)."""
        return int(self.model.max_stride)

    @property
    def class_names(self) -> list[str]:
        names = self.hparams.get("class_names")
        return list(names) if names else [str(i) for i in range(self.hparams.num_classes)]

    @property
    def inference(self) -> InferenceCfg:
        """The inference settings (``hparams.inference`` as :class:`~lightning_yolo.ops.postprocess.InferenceCfg`)."""
        return InferenceCfg.coerce(self.hparams["inference"])

    def predictor(self, stage: str = "predict", **kwargs: Any) -> YOLOPredictor:
        """A :class:`YOLOPredictor` sharing this module's network with the ``stage`` settings of :attr:`inference`
        (``"predict"`` or ``"val"``); kwargs override them."""
        settings = {**self.inference.predictor_settings(stage), "class_names": self.class_names, **kwargs}
        return YOLOPredictor(self.model, **settings)

    # ------------------------------------------------------------------ forward / steps
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Raw head maps for float images ``[B, 3, H, W]`` in ``[0, 1]``."""
        return self.model(images)

    def compute_loss(self, images: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """``YOLOLoss`` of the network on a batch: ``dict(box, obj, cls, loss)``."""
        return self.loss(self.model(images), targets)

    def self_adversarial_images(
        self, images: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]], step_size: float, max_delta: float,
        steps: int = 1,
    ) -> torch.Tensor:  # fmt: skip
        """SAT stage 1 with this module's network and loss (:func:`lightning_yolo.training.sat.self_adversarial_step`).

        The seam through which the DataModule's self-adversarial training reaches the model: it calls this method
        on ``trainer.lightning_module`` and never touches the network or the loss itself. Weights, gradients and
        buffers are left as they were; gradients are enabled inside, whatever the caller's mode.
        """
        from .training.sat import self_adversarial_step

        with torch.enable_grad():
            return self_adversarial_step(
                self.model, self.loss, images, targets, step_size=step_size, max_delta=max_delta, steps=steps
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, targets = check_batch(batch)
        losses = self.compute_loss(images, targets)
        total = losses["loss"]
        if not bool(torch.isfinite(total)):
            step = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
            raise FloatingPointError(f"non-finite loss at {step}: {nonfinite_losses(losses)}; {HINT}")
        bs = images.shape[0]
        for key, value in losses.items():
            self.log(f"train/{key}", value.detach(), batch_size=bs, prog_bar=True, on_step=True, on_epoch=True)
        # the progress bar shows what a detection tool shows: loss components, input size, boxes in the batch
        self.log("train/img_size", float(images.shape[-1]), batch_size=bs, prog_bar=True, on_step=True, on_epoch=False)
        instances = float(sum(int(t["labels"].numel()) for t in targets))
        self.log("train/instances", instances, batch_size=bs, prog_bar=True, on_step=True, on_epoch=False)
        return total

    def _predict_original(
        self, raw_maps: list[torch.Tensor], targets: Sequence[dict[str, torch.Tensor]], stage: str = "val"
    ) -> list[dict[str, torch.Tensor]]:
        """Detections from a batch's head maps with the ``stage`` settings, in original-image pixels (undoing the
        letterbox of each image)."""
        dets = self.predictor(stage).detect_raw(raw_maps)
        # boxes wholly in the letterbox padding are dropped (detections_to_original), as Python predict does
        return [
            detections_to_original(det, tgt["ratio"], tgt["pad"], tgt["orig_size"]) if "ratio" in tgt else det
            for det, tgt in zip(dets, targets)
        ]

    @property
    def eval_model(self) -> torch.nn.Module:
        """Validation's network: a fused copy (:class:`~lightning_yolo.callbacks.evaluation.FusedEvaluation`)."""
        return self.__dict__.get("_eval_net") or self.model

    def _eval_step(self, batch: dict[str, Any], metric: MeanAveragePrecision, prefix: str) -> dict[str, Any]:
        images, targets = check_batch(batch)
        raw = self.eval_model(images)  # one forward serves the detections and the loss
        # detections before the loss: EvalSpeed times the stretch between the forward and the loss as post-process
        detections = self._predict_original(raw, targets)
        losses = self.loss(raw, targets)
        if not bool(torch.isfinite(losses["loss"])):
            # Training in train mode can stay finite while BatchNorm statistics or weights have diverged; evaluation
            # uses them, so a non-finite evaluation loss is the first sign. Stop before such a model is saved.
            where = first_nonfinite_tensor(self) or "weights are finite but the outputs overflow"
            raise FloatingPointError(
                f"non-finite {prefix} loss at global step {self.global_step} (epoch {self.current_epoch}): "
                f"{nonfinite_losses(losses)}; {where}; {DIVERGED}"
            )
        bs = images.shape[0]
        for key, value in losses.items():
            self.log(f"{prefix}/{key}", value, batch_size=bs, on_step=False, on_epoch=True, sync_dist=True)
        targets_original = targets_in_original_pixels(targets)
        metric.update(detections, targets_original)
        # the step's output (``outputs`` of ``on_validation_batch_end``): what callbacks plot, without reading the
        # metric's internal state
        return {"detections": detections, "targets": targets_original}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Updates the mAP metric; returns ``{"detections", "targets"}`` of the batch in original-image pixels
        (the ``outputs`` that callbacks such as :class:`~lightning_yolo.callbacks.DetectionPlots` receive)."""
        return self._eval_step(batch, self.val_map, "val")

    def on_validation_epoch_start(self) -> None:
        if where := first_nonfinite_tensor(self):
            step = f"global step {self.global_step} (epoch {self.current_epoch})"
            raise FloatingPointError(f"non-finite model before validation at {step}: {where}; {DIVERGED}")

    def _eval_epoch_end(self, metric: MeanAveragePrecision, prefix: str) -> dict[str, float]:
        scalars, report = compute_and_report(metric, self.class_names, prefix, self.device)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        report.img_size = int(getattr(datamodule, "img_size", 0) or 0) or None
        #: the per-class table of the last validation / test (printed by the CLI; its speed from EvalSpeed)
        self.eval_report: EvalReport | None = report
        for key, value in scalars.items():  # every process holds the same synced values: no further reduction
            self.log(key, value, prog_bar=key.endswith(("/map", "/map_50")), rank_zero_only=False)
        return scalars

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end(self.val_map, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """As :meth:`validation_step`, on the test split."""
        return self._eval_step(batch, self.test_map, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end(self.test_map, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Detections in original-image pixels, ``inference.score_thresh`` and ``inference.max_det`` applied."""
        images, targets = check_batch(batch)
        dets = self._predict_original(self.model(images), targets, "predict")
        for det, tgt in zip(dets, targets):
            if "image_id" in tgt:
                det["image_id"] = tgt["image_id"]
            if "path" in tgt:
                det["path"] = tgt["path"]
            if "skipped" in tgt:  # unreadable file (PredictImages): no detections; PredictionWriter reports it
                det["skipped"] = tgt["skipped"]
                det.update({k: det[k][:0] for k in ("boxes", "scores", "labels")})
        return dets

    # ------------------------------------------------------------------ training hooks
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # CmBN: the first mini-batch of every accumulated batch starts new statistics (Lightning steps the optimizer
        # after batches accumulate_grad_batches-1, 2*accumulate_grad_batches-1, ... and at the epoch's last batch)
        if self.hparams.get("cross_minibatch_norm") and batch_idx % max(1, self.trainer.accumulate_grad_batches) == 0:
            from .training.cmbn import reset_cross_minibatch_norm

            reset_cross_minibatch_norm(self.model)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        # Frozen (backbone) parameters stay in the optimizer: SGD skips them while their grad is None.
        groups = param_groups(self.model, hp.weight_decay, trainable_only=False)
        optimizer = make_optimizer(hp.optimizer_name, groups, lr=hp.lr, momentum=hp.momentum)
        total_steps, warmup_steps = self._planned_steps()
        scheduler = WarmupCosineLR(optimizer, total_steps=total_steps, warmup_steps=warmup_steps,
                                   min_lr_ratio=hp.min_lr_ratio, decay=hp.get("lr_schedule", "cosine"))  # fmt: skip
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[pl.Callback]:
        """The hooks this module relies on (evaluation speed and network, the last epoch's validation, the random states
        of a resume) and the recipe switches that are callbacks: ``ema``, ``auto_anchor``, ``freeze_backbone_epochs``.
        Lightning adds them to the Trainer's; a Trainer callback of the same type is replaced."""
        from .callbacks.evaluation import EvalSpeed, FusedEvaluation, ValidateLastEpoch
        from .callbacks.random_state import ResumeRandomState
        from .callbacks.recipe import EMA, AutoAnchor, FreezeBackbone

        hp = self.hparams
        # FusedEvaluation after EMA: its copy is made once the averaged weights are swapped in
        callbacks: list[pl.Callback] = [EMA(decay=hp.ema_decay, tau=hp.ema_tau)] if hp.get("ema") else []
        callbacks += [FusedEvaluation(), EvalSpeed(), ValidateLastEpoch(), ResumeRandomState()]
        if hp.get("auto_anchor"):
            callbacks.append(AutoAnchor(bpr_thresh=hp.auto_anchor_bpr))
        if hp.get("freeze_backbone_epochs"):
            callbacks.append(FreezeBackbone(hp.freeze_backbone_epochs))
        return callbacks

    def _planned_steps(self) -> tuple[int, int]:
        """Total optimisation steps of the run and warmup steps (``warmup_epochs`` of them)."""
        return plan_steps(self.trainer.estimated_stepping_batches, self.trainer.max_epochs, self.hparams.warmup_epochs)

    def on_train_start(self) -> None:
        # Extending a finished run (resume with a larger max_epochs) re-plans the cosine over the new total.
        scheduler = self._default_scheduler()
        if scheduler is not None:
            total, _ = self._planned_steps()
            if scheduler.total_steps != total:
                previous = scheduler.total_steps
                scheduler.set_total_steps(total)
                # rank_zero_info: shown by default, so the user sees that the schedule of the run changed
                rank_zero_info(
                    f"re-planned the learning-rate schedule over {total} steps (was {previous}): "
                    f"lr {scheduler.get_last_lr()[0]:.3g} at step {scheduler.last_epoch}"
                )

    def _default_scheduler(self) -> WarmupCosineLR | None:
        """The trainer's warmup + cosine / steps scheduler of this module, if it runs one."""
        configs = self.trainer.lr_scheduler_configs
        scheduler = configs[0].scheduler if configs else None
        return scheduler if isinstance(scheduler, WarmupCosineLR) else None

    def replan_schedule(self) -> None:
        """Re-plan the default warmup + cosine schedule over the trainer's current run length.

        Called by :class:`~lightning_yolo.callbacks.TimeBudget` when it changes ``max_epochs``; the learning rate moves
        to the re-planned curve's value at the current step.
        """
        scheduler = self._default_scheduler()
        if scheduler is not None:
            total, warmup = self._planned_steps()
            if scheduler.total_steps != total:
                # the configured warmup, but never more than a third of a short run (warmup_epochs 3 against 4 planned
                # epochs would leave one epoch for the whole cosine)
                scheduler.set_total_steps(total, min(warmup, total // 3))

    # ------------------------------------------------------------------ anchors
    def set_anchors(self, anchors: Sequence[Sequence[Sequence[float]]]) -> None:
        """Replace the anchors (``[levels][anchors][w, h]`` pixels) in the network's buffer, their one home: the loss
        and ``model.cfg`` read it."""
        from .models.anchors import anchors_tensor

        new = anchors_tensor(anchors)
        current = self.model.anchors.anchors
        if new.shape != current.shape:
            raise ValueError(f"anchors must have shape {list(current.shape)} like the model's, got {list(new.shape)}")
        with torch.no_grad():
            current.copy_(new.to(current))

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Never write a diverged model as best.ckpt / last.ckpt: the previous (finite) files stay as they are.
        where = first_nonfinite_tensor((checkpoint.get("state_dict") or {}).items())
        if where:
            raise FloatingPointError(
                f"not saving a checkpoint at global step {self.global_step} (epoch {self.current_epoch}): {where}; "
                f"{DIVERGED}"
            )
        # Plain-Python model description so inference.checkpoint.load_predictor / other tools rebuild without this class.
        checkpoint["lightning_yolo"] = {
            "model_cfg": self.model.cfg.to_dict(),
            "num_classes": self.hparams.num_classes,
            "class_names": self.class_names,
        }

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's; a checkpoint of an older version is upgraded on load with one line naming the file, as the
        command line does (:func:`~lightning_yolo.inference.checkpoint.upgraded_groups`)."""
        from .inference.checkpoint import upgraded_groups

        kwargs = {**upgraded_groups(checkpoint_path, rank_zero_info), **kwargs}
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)


def _check_arguments(
    num_classes: int, class_names: list[str] | None, optimizer_name: str, lr_schedule: str, map_backend: str
) -> None:
    """``YOLOModule``'s choices, checked before anything is built: one error naming the argument and its choices."""
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
    optimizer_class(optimizer_name)  # unknown names fail here, naming the choices
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    make_map_metric(map_backend)  # an unknown backend or a missing package fails here, before the model is built
