"""The hooks that left YOLOModule (issue 18, item 1): evaluation timing, the last epoch's validation, the random
states of a resume, the backbone freeze. Real Trainer runs on the synthetic dataset."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_yolo import YOLODataModule, YOLOModule
from lightning_yolo.callbacks import DetectionImageLogger
from lightning_yolo.callbacks.evaluation import EvalSpeed, ValidateLastEpoch
from lightning_yolo.compat import set_max_epochs


def _dm(num_val: int = 12) -> YOLODataModule:
    return YOLODataModule(
        path=None, img_size=64, batch_size=4, num_workers=0, synthetic_num_train=8, synthetic_num_val=num_val,
        synthetic_image_size=64,
    )  # fmt: skip


def _trainer(tmp_path, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=str(tmp_path), **kwargs)  # fmt: skip


def test_eval_speed_times_the_steps_forward_only_and_fills_the_report(tmp_path, cli_env):
    dm = _dm(num_val=12)
    model = YOLOModule(num_classes=dm.num_classes, class_names=dm.class_names)
    # a picture callback that runs the network again on the first batch: not part of the step, not timed
    trainer = _trainer(tmp_path, callbacks=[DetectionImageLogger(save_dir=tmp_path / "pics")])
    trainer.validate(model, dm, verbose=False)
    speed = next(cb for cb in trainer.callbacks if isinstance(cb, EvalSpeed))
    assert speed.totals["images"] == 12 and speed.totals["pre_images"] == 8  # 3 batches; the first is not timed
    assert list(model.eval_report.speed_ms) == ["pre-process", "inference", "post-process"]
    assert all(v > 0 for v in model.eval_report.speed_ms.values())
    assert "ms inference" in model.eval_report.format()
    # the forward hooks are gone after the evaluation
    assert not model.model._forward_hooks and not model.model._forward_pre_hooks and not model.loss._forward_pre_hooks


class _ShortenInEpochZero(pl.Callback):
    """What TimeBudget does when the first plan finds one epoch fits: max_epochs drops inside epoch 0."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == 0:
            set_max_epochs(trainer, 1)


def test_the_epoch_that_becomes_the_last_during_the_run_still_validates(tmp_path, cli_env):
    dm = _dm(num_val=4)
    model = YOLOModule(num_classes=dm.num_classes, class_names=dm.class_names)
    trainer = _trainer(tmp_path, max_epochs=3, check_val_every_n_epoch=5, num_sanity_val_steps=0,
                       callbacks=[_ShortenInEpochZero()])  # fmt: skip
    trainer.fit(model, dm)
    assert trainer.current_epoch == 1 and "val/map" in trainer.callback_metrics
    assert any(isinstance(cb, ValidateLastEpoch) for cb in trainer.callbacks)


def test_freeze_backbone_is_a_callback_of_the_module(tmp_path, cli_env):
    dm = _dm(num_val=4)
    model = YOLOModule(num_classes=dm.num_classes, class_names=dm.class_names, freeze_backbone_epochs=1)
    before = {k: v.clone() for k, v in model.model.backbone.state_dict().items()}
    head_before = [p.detach().clone() for p in model.model.head.parameters()]
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    after = model.model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    assert any(not torch.equal(a, p.detach()) for a, p in zip(head_before, model.model.head.parameters()))
