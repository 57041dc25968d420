"""Callbacks for what Lightning's own callbacks do not cover."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["CloseMosaic"]


class CloseMosaic(pl.Callback):
    """Turn Mosaic, MixUp and CutMix off for the last ``last_n_epochs`` epochs (YOLOX ``no_aug_epochs``,
    ultralytics ``close_mosaic``), so the network finishes on images that look like the test images.

    Sets ``close_mosaic_epochs`` on the :class:`~lightning_yolo.data.datamodule.YOLODataModule`, whose training
    sampler sends the switch with every index: it takes effect at the first closed epoch, persistent workers
    included. Needs ``Trainer(max_epochs=...)``.

    Args:
        last_n_epochs: number of final epochs without multi-image augmentation.
    """

    def __init__(self, last_n_epochs: int = 10) -> None:
        if last_n_epochs < 0:
            raise ValueError(f"last_n_epochs must be >= 0, got {last_n_epochs}")
        self.last_n_epochs = int(last_n_epochs)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "close_mosaic_epochs"):
            raise ValueError(
                f"CloseMosaic needs a datamodule with a close_mosaic_epochs attribute (YOLODataModule), "
                f"got {type(dm).__name__ if dm is not None else None}"
            )
        dm.close_mosaic_epochs = self.last_n_epochs

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        max_epochs = trainer.max_epochs
        if self.last_n_epochs and max_epochs is not None and trainer.current_epoch == max_epochs - self.last_n_epochs:
            rank_zero_info(f"CloseMosaic: Mosaic/MixUp/CutMix off for the last {self.last_n_epochs} epochs")
