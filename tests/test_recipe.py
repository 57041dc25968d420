"""The training-recipe callbacks: ramped EMA, the anchor check at fit start, training by time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from lightning_yolo import load_predictor
from lightning_yolo.commands.cli import build_cli
from lightning_yolo.callbacks.recipe import EMA, AutoAnchor, TimeBudget, _RampedEMAFn, best_possible_recall

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


# ------------------------------------------------------------------------------------------------------ EMA


def test_ramped_decay_matches_the_recurrence():
    """d_n = decay * (1 - exp(-n / tau)); the averaged value follows a_n = d_n a_{n-1} + (1 - d_n) x_n."""
    fn = _RampedEMAFn(decay=0.9999, tau=2000.0)
    net = torch.nn.Linear(1, 1, bias=False)
    avg = AveragedModel(net, multi_avg_fn=fn, use_buffers=True)
    expected = None
    for n, value in enumerate([0.3, -1.0, 2.0, 0.5, 4.0]):
        with torch.no_grad():
            net.weight.fill_(value)
        avg.update_parameters(net)
        if n == 0:
            expected = value  # the first update copies
        else:
            d = 0.9999 * (1 - math.exp(-n / 2000.0))
            expected = d * expected + (1 - d) * value
        assert float(avg.module.weight.detach()) == pytest.approx(expected, rel=1e-6)
    # early on the average follows the model: after 5 updates the decay is only 0.0025
    assert fn.decay_at(5) == pytest.approx(0.9999 * (1 - math.exp(-5 / 2000)))
    assert fn.decay_at(5) < 0.003
    assert fn.decay_at(20000) > 0.9998


@pytest.mark.usefixtures("cli_env")
def test_ema_validates_and_saves_the_average_which_follows_the_model_early(tmp_path):
    ema = EMA(decay=0.9999, tau=2000)
    cli = build_cli(
        ["--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1"],
        run=False,
    )
    cli.trainer.callbacks.insert(0, ema)
    init = {k: v.clone() for k, v in cli.model.state_dict().items() if k.endswith("weight")}
    cli.trainer.fit(cli.model, cli.datamodule)
    assert ema.num_updates == 4  # debug config: 4 optimizer steps per epoch
    # at the end of fit the model holds the average
    final = cli.model.state_dict()
    key = "model.head.preds.0.weight"
    moved = (final[key] - init[key]).abs().max()
    assert moved > 0  # the averaged weights are not the initial ones
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert "current_model_state" in ckpt  # raw weights kept for resuming
    avg_w, cur_w = ckpt["state_dict"][key], ckpt["current_model_state"][key]
    assert not torch.equal(avg_w, cur_w)
    # ramped: the average sits much closer to the raw weights than to the initial ones
    assert (avg_w - cur_w).abs().mean() < 0.1 * (avg_w - init[key]).abs().mean()
    # the saved (averaged) weights are what a predictor loads
    pred = load_predictor(next(tmp_path.rglob("last.ckpt")))
    assert torch.equal(pred.model.state_dict()["head.preds.0.weight"], avg_w)


def test_ema_before_start_epoch_uses_raw_weights():
    ema = EMA(start_epoch=3)
    ema._epoch = 0
    assert not ema.should_update(step_idx=0)
    ema._epoch = 3
    assert ema.should_update(step_idx=7)
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.5)


# ------------------------------------------------------------------------------------------------- anchors


def test_best_possible_recall_hand_computed():
    anchors = torch.tensor([[10.0, 10.0], [100.0, 50.0]])
    boxes = torch.tensor([[10.0, 39.0], [10.0, 41.0], [300.0, 100.0], [500.0, 100.0]])
    # box 1: h/ah = 3.9 < 4 fits the first; box 2: 4.1 fits none (second: 100/10 = 10); box 3: 3 and 2 fit the
    # second; box 4: 5 fits none
    assert best_possible_recall(boxes, anchors) == pytest.approx(0.5)
    assert best_possible_recall(boxes, anchors, ratio_thresh=4.5) == pytest.approx(0.75)
    assert best_possible_recall(boxes, anchors, ratio_thresh=6.0) == pytest.approx(1.0)


@pytest.mark.usefixtures("cli_env")
def test_auto_anchor_replaces_bad_anchors_and_keeps_good_ones(tmp_path):
    # bad: anchors 20x too large for 128 px synthetic shapes -> replaced, stored in the checkpoint and model cfg
    bad = [[[400, 400], [420, 420], [440, 440]], [[460, 460], [480, 480], [500, 500]],
           [[520, 520], [540, 540], [560, 560]]]  # fmt: skip
    check = AutoAnchor(bpr_thresh=0.98)
    cli = build_cli(
        ["--config", DEBUG, "--trainer.default_root_dir", str(tmp_path / "bad"), "--trainer.max_epochs", "1",
         "--model.model_overrides", f"{{anchors: {bad}}}"],  # fmt: skip
        run=False,
    )
    cli.trainer.callbacks.insert(0, check)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert check.result["bpr"] < 0.5 and check.result["replaced"]
    new = torch.tensor(check.result["anchors"])
    assert check.result["new_bpr"] >= 0.98
    assert torch.allclose(cli.model.model.anchors.anchors, new)
    assert torch.allclose(cli.model.loss.anchors, new)  # the loss trains with them
    ckpt_path = next((tmp_path / "bad").rglob("last.ckpt"))
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert torch.allclose(ckpt["state_dict"]["model.anchors.anchors"], new)
    assert torch.allclose(torch.tensor(ckpt["lightning_yolo"]["model_cfg"]["anchors"]), new, atol=1e-3)
    assert torch.allclose(load_predictor(ckpt_path).model.anchors.anchors, new)

    # good: the default (small) anchors of the pico model fit the synthetic shapes -> kept
    check2 = AutoAnchor(bpr_thresh=0.98)
    cli2 = build_cli(
        ["--config", DEBUG, "--trainer.default_root_dir", str(tmp_path / "good"), "--trainer.max_epochs", "1"],
        run=False,
    )
    before = cli2.model.model.anchors.anchors.clone()
    cli2.trainer.callbacks.insert(0, check2)
    cli2.trainer.fit(cli2.model, cli2.datamodule)
    assert check2.result["bpr"] >= 0.98 and not check2.result["replaced"]
    assert torch.equal(cli2.model.model.anchors.anchors, before)


# -------------------------------------------------------------------------------------------------- by time


@pytest.mark.usefixtures("cli_env")
def test_time_budget_plans_epochs_and_finishes_the_schedule(tmp_path):
    """A budget far below max_epochs: the run stops early with the cosine finished and the last epoch validated."""
    budget = TimeBudget(seconds=6.0, margin=0.0)
    cli = build_cli(
        ["--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1000",
         "--model.min_lr_ratio", "0.05"],  # fmt: skip
        run=False,
    )
    cli.trainer.callbacks.insert(0, budget)
    cli.trainer.fit(cli.model, cli.datamodule)
    trainer = cli.trainer
    assert budget.plans, "the budget never re-planned the run"
    epochs = trainer.current_epoch
    assert 1 <= epochs < 1000
    assert trainer.max_epochs == epochs  # stopped because the planned epochs were done, not by a hard stop
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == trainer.global_step  # the schedule was planned over the steps actually run
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(cli.model.hparams.lr * 0.05, rel=0.2)  # ended at (about) the cosine minimum
    assert "val/map_50" in trainer.callback_metrics  # the last epoch validated


def test_time_budget_state_continues_after_resume():
    """The seconds spent before a checkpoint count against the budget of the resumed run."""
    first = TimeBudget(seconds=100.0)
    first._t0 = 1.0  # started
    state = first.state_dict()
    assert state["used_s"] > 0
    resumed = TimeBudget(seconds=100.0)
    resumed.load_state_dict({"used_s": 40.0})
    assert resumed.state_dict()["used_s"] == pytest.approx(40.0)
