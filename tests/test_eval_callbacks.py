"""The hooks that left YOLOModule (issue 18, item 1): evaluation timing, the last epoch's validation, the random
states of a resume, the backbone freeze. Real Trainer runs on the synthetic dataset."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_yolo import YOLODataModule, YOLOModule
from lightning_yolo.callbacks import DetectionImageLogger
from lightning_yolo.callbacks.evaluation import EvalSpeed, FusedEvaluation, ValidateLastEpoch
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


class _SeeEvalModel(pl.Callback):
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.net = pl_module.eval_model


def test_validation_runs_a_fused_copy_and_leaves_the_trained_network_alone(tmp_path, cli_env, monkeypatch):
    dm = _dm(num_val=8)
    torch.manual_seed(0)
    model = YOLOModule(num_classes=dm.num_classes, class_names=dm.class_names)
    keys = list(model.state_dict())
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    seen = _SeeEvalModel()
    fused = _trainer(tmp_path, callbacks=[seen]).validate(model, dm, verbose=False)[0]
    net = seen.net
    assert net is not model.model
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())  # Conv+BN folded
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.model.modules())
    assert model.eval_model is model.model  # the copy is dropped when the evaluation ends
    assert list(model.state_dict()) == keys  # never a submodule: not in the state_dict or a checkpoint
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert not net._forward_hooks and not net._forward_pre_hooks  # EvalSpeed's hooks removed from the copy
    # the unfused network gives the same loss and mAP (to float rounding)
    monkeypatch.setattr(FusedEvaluation, "on_validation_epoch_start", lambda self, trainer, pl_module: None)
    plain = _trainer(tmp_path, callbacks=[seen]).validate(model, dm, verbose=False)[0]
    assert seen.net is model.model
    assert abs(fused["val/loss"] - plain["val/loss"]) <= 1e-4 * abs(plain["val/loss"])
    assert abs(fused["val/map_50"] - plain["val/map_50"]) <= 1e-3


def test_fused_mirror_follows_the_network_it_mirrors():
    from lightning_yolo.models import create_model
    from lightning_yolo.models.layers import FusedMirror

    torch.manual_seed(0)
    net = create_model("yolov4_pico", num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    mirror = FusedMirror()
    first = mirror(net)
    with torch.no_grad():
        for a, b in zip(first(x), net(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        # new weights and BatchNorm statistics (a training step, an EMA swap): the same copy, refreshed
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(0.1)
                m.running_var.mul_(1.5)
    again = mirror(net)
    assert again is first
    with torch.no_grad():
        for a, b in zip(again(x), net(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    net.reset_head(5)  # another class count: copied anew
    other = mirror(net.eval())
    assert other is not first and other(x)[0].shape == net(x)[0].shape
