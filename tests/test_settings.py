"""Settings as data: LossCfg reaches the CLI field by field, and the module's recipe switches change what they name."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from lightning_yolo import YOLOModule
from lightning_yolo.callbacks import EMA, AutoAnchor
from lightning_yolo.commands.cli import build_cli
from lightning_yolo.models import create_model
from lightning_yolo.training import LossCfg, YOLOLoss
from lightning_yolo.training.optim import WarmupCosineLR

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


@pytest.fixture(scope="module")
def printed_config(cli_session):
    """``fit --config debug --print_config`` with two loss fields changed on the command line."""
    import contextlib
    import io

    out = io.StringIO()
    with cli_session(), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", "--config", DEBUG, "--model.loss.box_loss", "diou", "--model.loss.label_smoothing", "0.1",
                   "--print_config"])  # fmt: skip
    return yaml.safe_load(out.getvalue())


def test_every_loss_field_is_a_cli_key(printed_config):
    loss = printed_config["model"]["loss"]
    names = [f.name for f in dataclasses.fields(LossCfg)]
    assert sorted(loss) == sorted(names)
    assert loss["box_loss"] == "diou" and loss["label_smoothing"] == 0.1
    defaults = LossCfg()
    for name in names:
        if name not in ("box_loss", "label_smoothing"):
            expected = getattr(defaults, name)
            assert loss[name] == (list(expected) if isinstance(expected, tuple) else expected), name


def test_module_switches_are_cli_keys(printed_config):
    model = printed_config["model"]
    for key in ("optimizer_name", "lr_schedule", "ema", "ema_decay", "ema_tau", "auto_anchor", "auto_anchor_bpr",
                "freeze_backbone_epochs", "cross_minibatch_norm", "inference"):  # fmt: skip
        assert key in model, key
    assert model["inference"]["nms_kind"] == "diou" and model["inference"]["val_score_thresh"] == 0.001
    assert "optimizer" not in model and "lr_scheduler" not in model  # one way to set each


def test_loss_cfg_validates_and_round_trips():
    cfg = LossCfg(box_loss="giou", level_obj_weights=[1.0, 2.0, 3.0])
    assert cfg.level_obj_weights == (1.0, 2.0, 3.0)
    assert LossCfg.from_dict(cfg.to_dict()) == cfg
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict())) == cfg.to_dict()  # plain data
    with pytest.raises(ValueError, match="loss.box_loss"):
        LossCfg(box_loss="l1")
    with pytest.raises(ValueError, match="loss.label_smoothing"):
        LossCfg(label_smoothing=1.0)
    with pytest.raises(TypeError, match="bogus"):
        LossCfg.from_dict({"bogus": 1})


def test_loss_takes_the_cfg_and_overrides():
    model = create_model("yolov4_pico", num_classes=3)
    loss = YOLOLoss(3, model.anchors, LossCfg(box_loss="diou"), label_smoothing=0.2)
    assert loss.cfg == LossCfg(box_loss="diou", label_smoothing=0.2)
    assert loss.box_loss == "diou" and loss.label_smoothing == 0.2


def test_module_stores_the_loss_as_a_dict_and_builds_the_loss_from_it(tmp_path):
    module = YOLOModule(num_classes=2, loss=LossCfg(box_loss="giou", iou_thresh=1.0))
    assert module.hparams.loss == LossCfg(box_loss="giou", iou_thresh=1.0).to_dict()
    assert module.loss.box_loss == "giou" and module.loss.iou_thresh == 1.0
    again = YOLOModule(**module.hparams)  # what load_from_checkpoint does with the stored hyperparameters
    assert again.loss.cfg == module.loss.cfg


def test_steps_schedule_is_darknets():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=1.0)
    sched = WarmupCosineLR(opt, total_steps=100, warmup_steps=10, decay="steps")
    factors = [sched.factor(s) for s in range(100)]
    assert factors[9] == 1.0 and factors[10] == 1.0 and factors[79] == 1.0
    assert factors[80] == pytest.approx(0.1) and factors[89] == pytest.approx(0.1)
    assert factors[90] == pytest.approx(0.01) and factors[99] == pytest.approx(0.01)
    cosine = WarmupCosineLR(torch.optim.SGD(params, lr=1.0), total_steps=100, warmup_steps=10, min_lr_ratio=0.0)
    assert cosine.factor(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    with pytest.raises(ValueError, match="decay"):
        WarmupCosineLR(opt, total_steps=10, decay="linear")
    with pytest.raises(ValueError, match="lr_schedule"):
        YOLOModule(num_classes=2, lr_schedule="linear")


def test_optimizer_by_name():
    module = YOLOModule(num_classes=2, optimizer_name="NAdam", momentum=0.8)
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))]}]
    from lightning_yolo.training.optim import make_optimizer

    opt = make_optimizer(module.hparams.optimizer_name, groups, lr=0.01, momentum=0.8)
    assert type(opt) is torch.optim.NAdam and opt.defaults["betas"] == (0.8, 0.999)
    sgd = make_optimizer("sgd", [{"params": [torch.nn.Parameter(torch.zeros(1))]}], lr=0.1, momentum=0.9)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="optimizer_name.*Adam"):
        YOLOModule(num_classes=2, optimizer_name="Lion")


def test_ema_and_auto_anchor_switches_add_their_callbacks():
    always = ["EvalSpeed", "FusedEvaluation", "ResumeRandomState", "ValidateLastEpoch"]  # the module's own hooks
    assert sorted(type(cb).__name__ for cb in YOLOModule(num_classes=2).configure_callbacks()) == always
    callbacks = YOLOModule(num_classes=2, ema=True, ema_decay=0.99, ema_tau=50, auto_anchor=True,
                           auto_anchor_bpr=0.9).configure_callbacks()  # fmt: skip
    ema = next(cb for cb in callbacks if isinstance(cb, EMA))
    anchor = next(cb for cb in callbacks if isinstance(cb, AutoAnchor))
    assert ema.ema_fn.decay == 0.99 and ema.ema_fn.tau == 50
    assert anchor.bpr_thresh == 0.9
    names = [type(cb).__name__ for cb in callbacks]
    assert names.index("EMA") < names.index("FusedEvaluation")  # the fused copy is made after the EMA swap
