"""Checkpoints of the versions before the settings groups (flat loss knobs, flat thresholds) keep their settings.

One policy in both paths: ``YOLOModule.load_from_checkpoint`` and the command line upgrade such a checkpoint on load
and say so in one line naming the file."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

from pathlib import Path

from lightning_yolo import InferenceCfg, LossCfg, YOLOModule, load_predictor
from lightning_yolo.commands.cli import build_cli
from lightning_yolo.inference.checkpoint import load_checkpoint_dict, upgrade_checkpoint, upgrade_module_hparams

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


def _old_checkpoint(tmp_path):
    module = YOLOModule(num_classes=4, class_names=["circle", "square", "triangle", "cross"])  # the synthetic set
    hparams = {k: v for k, v in module.hparams.items() if k not in ("loss", "inference")}
    hparams.update(box_loss="giou", label_smoothing=0.1, iou_thresh=1.0, optimizer=None, lr_scheduler=None)
    hparams.update(score_thresh=0.01, max_det=50, nms_iou_thresh=0.5, nms_kind="greedy", predict_score_thresh=0.4,
                   predict_max_det=20)  # fmt: skip
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    return path


def test_upgrade_folds_flat_loss_knobs_and_thresholds():
    upgraded, moved = upgrade_module_hparams({"model_name": "yolov4_pico", "box_loss": "diou", "optimizer": None})
    assert moved == ["box_loss", "optimizer"]
    assert upgraded == {"model_name": "yolov4_pico", "loss": LossCfg(box_loss="diou").to_dict()}
    upgraded, moved = upgrade_module_hparams({"score_thresh": 0.01, "predict_score_thresh": 0.4, "max_det": 50})
    # the old score_thresh was the validation threshold, predict_score_thresh the predict one
    assert upgraded == {"inference": InferenceCfg(val_score_thresh=0.01, score_thresh=0.4, val_max_det=50).to_dict()}
    current = {"loss": {"box_loss": "iou"}, "inference": {"score_thresh": 0.3}}
    assert upgrade_module_hparams(current)[1] == []  # current checkpoints: nothing to do


EXPECTED_LOSS = LossCfg(box_loss="giou", label_smoothing=0.1, iou_thresh=1.0)
EXPECTED_INFERENCE = InferenceCfg(val_score_thresh=0.01, val_max_det=50, nms_iou_thresh=0.5, nms_kind="greedy",
                                  score_thresh=0.4, max_det=20)  # fmt: skip


def test_old_checkpoint_loads_with_its_settings_and_one_line(tmp_path, caplog):
    path = _old_checkpoint(tmp_path)
    with caplog.at_level(logging.INFO):
        module = YOLOModule.load_from_checkpoint(path)
    assert module.loss.cfg == EXPECTED_LOSS and module.hparams.loss["box_loss"] == "giou"
    assert module.inference == EXPECTED_INFERENCE
    assert module.predictor().score_thresh == 0.4 and module.predictor("val").max_det == 50
    notices = [r.getMessage() for r in caplog.records if "upgraded on load" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith(f"{path}: checkpoint of an older lightning-yolo")
    assert "score_thresh -> model.inference.val_score_thresh" in notices[0]
    # load_predictor: the checkpoint's predict settings, by the same names
    predictor = load_predictor(path)
    assert (predictor.score_thresh, predictor.max_det, predictor.nms_kind) == (0.4, 20, "greedy")
    assert load_predictor(path, score_thresh=0.7).score_thresh == 0.7
    # the caller's arguments still win over the checkpoint's
    assert YOLOModule.load_from_checkpoint(path, inference={"score_thresh": 0.9}).inference.score_thresh == 0.9


def test_cli_upgrades_the_old_checkpoint_on_load_with_one_line(tmp_path, cli_env, caplog):
    path = _old_checkpoint(tmp_path)
    with caplog.at_level(logging.INFO):
        cli = build_cli(["validate", "--config", DEBUG, "--ckpt_path", str(path), "--trainer.default_root_dir",
                         str(tmp_path)])  # fmt: skip
    assert cli.model.loss.cfg == EXPECTED_LOSS and cli.model.inference == EXPECTED_INFERENCE
    notices = [r.getMessage() for r in caplog.records if "upgraded on load" in r.getMessage()]
    assert len(notices) == 1 and notices[0].startswith(f"{path}: checkpoint of an older lightning-yolo")
    assert "val/map" in cli.trainer.callback_metrics  # the validation ran
    moved = ["box_loss", "iou_thresh", "label_smoothing", "score_thresh", "max_det", "predict_score_thresh",
             "predict_max_det", "nms_iou_thresh", "nms_kind", "optimizer", "lr_scheduler"]  # fmt: skip
    assert sorted(upgrade_checkpoint(path)) == sorted(moved)
    assert load_checkpoint_dict(path)["hyper_parameters"]["loss"]["box_loss"] == "giou"
    assert upgrade_checkpoint(path) == []  # already current
