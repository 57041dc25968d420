"""A diverged model stops the run with a clear error and is never written as best.ckpt / last.ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lightning_yolo import YOLODataModule, YOLOModule
from lightning_yolo.callbacks import LastCheckpoint
from lightning_yolo.callbacks.checkpoints import AtomicCheckpointIO

pytestmark = pytest.mark.usefixtures("cli_env")


class _Poison(pl.Callback):
    """Make one tensor non-finite at a chosen hook of a chosen epoch (what a diverging run does)."""

    def __init__(self, hook: str, epoch: int, what: str) -> None:
        self.epoch, self.what = epoch, what
        setattr(self, hook, self._poison)

    def _poison(self, trainer, pl_module, *args) -> None:
        if trainer.current_epoch != self.epoch or trainer.sanity_checking:
            return
        with torch.no_grad():
            if self.what == "bn_var":  # BatchNorm statistics: train-mode forward stays finite
                next(m for m in pl_module.model.modules() if isinstance(m, nn.BatchNorm2d)).running_var.fill_(
                    float("inf")
                )
            elif self.what == "huge_weights":  # finite weights whose outputs overflow
                for p in pl_module.model.parameters():
                    p.mul_(1e30)
            else:
                next(pl_module.model.parameters()).fill_(float("nan"))


def _fit(tmp_path: Path, poison: pl.Callback) -> Path:
    ckpt_dir = tmp_path / "ckpt"
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=2, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
        plugins=[AtomicCheckpointIO()],
        callbacks=[poison, ModelCheckpoint(dirpath=ckpt_dir, monitor="val/map_50", mode="max", filename="best"),
                   LastCheckpoint(dirpath=ckpt_dir)],
    )  # fmt: skip
    dm = YOLODataModule(
        path=None, img_size=128, batch_size=4, num_workers=0, synthetic_num_train=32, synthetic_num_val=8,
        synthetic_image_size=128,
    )  # fmt: skip
    model = YOLOModule(model_name="yolov4_pico", num_classes=dm.num_classes, class_names=dm.class_names)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit(model, dm)
    return ckpt_dir, str(err.value)


def _all_finite(path: Path) -> bool:
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in sd.values() if v.is_floating_point())


def test_inf_batchnorm_statistics_stop_before_validation_and_keep_previous_checkpoints(tmp_path):
    # epoch 0 trains and saves normally; in epoch 1 a BatchNorm running_var becomes inf while training
    ckpt_dir, message = _fit(tmp_path, _Poison("on_train_batch_end", 1, "bn_var"))
    assert "non-finite model before validation" in message and "running_var has" in message, message
    assert "lower the learning rate" in message
    last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0 and _all_finite(ckpt_dir / "last.ckpt")
    assert _all_finite(ckpt_dir / "best.ckpt")


def test_overflowing_outputs_give_a_nan_validation_loss_error(tmp_path):
    ckpt_dir, message = _fit(tmp_path, _Poison("on_validation_start", 0, "huge_weights"))
    assert "non-finite val loss at global step 2 (epoch 0)" in message, message
    assert not ckpt_dir.exists() or not list(ckpt_dir.iterdir())  # nothing saved from a diverged model


def test_a_nan_model_is_never_written(tmp_path):
    # poisoned after validation, just before ModelCheckpoint / LastCheckpoint write: the save itself refuses
    ckpt_dir, message = _fit(tmp_path, _Poison("on_validation_end", 0, "nan"))
    assert message.startswith("not saving a checkpoint at global step 2 (epoch 0): model.") and "nan/inf" in message
    assert not ckpt_dir.exists() or not list(ckpt_dir.iterdir())
