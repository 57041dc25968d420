"""Checkpoints of the version before the settings dataclasses (flat loss knobs) keep their loss settings."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from pathlib import Path

from lightning_yolo import LossCfg, YOLOModule
from lightning_yolo.commands.cli import build_cli
from lightning_yolo.inference.checkpoint import load_checkpoint_dict, upgrade_checkpoint, upgrade_module_hparams

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


def _old_checkpoint(tmp_path):
    module = YOLOModule(num_classes=2, class_names=["a", "b"])
    hparams = {k: v for k, v in module.hparams.items() if k != "loss"}
    hparams.update(box_loss="giou", label_smoothing=0.1, iou_thresh=1.0, optimizer=None, lr_scheduler=None)
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    return path


def test_upgrade_folds_flat_loss_knobs():
    upgraded, moved = upgrade_module_hparams({"model_name": "yolov4_pico", "box_loss": "diou", "optimizer": None})
    assert moved == ["box_loss", "optimizer"]
    assert upgraded == {"model_name": "yolov4_pico", "loss": LossCfg(box_loss="diou").to_dict()}
    assert upgrade_module_hparams({"loss": {"box_loss": "iou"}})[1] == []  # current checkpoints: nothing to do


def test_old_checkpoint_loads_with_its_loss_settings(tmp_path):
    path = _old_checkpoint(tmp_path)
    module = YOLOModule.load_from_checkpoint(path)
    assert module.loss.cfg == LossCfg(box_loss="giou", label_smoothing=0.1, iou_thresh=1.0)
    assert module.hparams.loss["box_loss"] == "giou"


def test_cli_names_the_old_checkpoint_and_the_upgrade(tmp_path, cli_env):
    path = _old_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"old\.ckpt: written by an older lightning-yolo.*upgrade_checkpoint"):
        build_cli(["validate", "--config", DEBUG, "--ckpt_path", str(path)])
    assert upgrade_checkpoint(path) == ["box_loss", "iou_thresh", "label_smoothing", "optimizer", "lr_scheduler"]
    assert load_checkpoint_dict(path)["hyper_parameters"]["loss"]["box_loss"] == "giou"
    assert upgrade_checkpoint(path) == []  # already current
