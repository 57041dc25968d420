"""Parameter groups (no decay on norms and biases) and the warmup (power 4) + cosine schedule."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from lightning_yolo.models import create_model
from lightning_yolo.training.optim import WarmupCosineLR, param_groups, warmup_cosine_factor, warmup_cosine_lambda


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_on_every_norm_kind():
    shared = nn.Conv2d(4, 4, 3)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=True),
        nn.BatchNorm2d(4),
        nn.SyncBatchNorm(4),
        nn.InstanceNorm2d(4, affine=True),
        nn.GroupNorm(2, 4),
        nn.LayerNorm(4),
        shared,
        shared,  # shared module: its parameters must appear once
        nn.Linear(4, 2),
    )
    frozen = nn.Conv2d(2, 2, 1)
    frozen.requires_grad_(False)
    model.append(frozen)
    groups = param_groups(model, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    decay, no_decay = _ids(groups[0]["params"]), _ids(groups[1]["params"])
    assert decay == _ids([model[0].weight, shared.weight, model[8].weight])
    norms = [model[i] for i in range(1, 6)]
    assert no_decay == _ids([model[0].bias, shared.bias, model[8].bias] + [p for m in norms for p in m.parameters()])
    assert sum(len(g["params"]) for g in groups) == len(decay | no_decay)  # no duplicates
    # a frozen parameter is left out unless asked for
    every = param_groups(model, 5e-4, trainable_only=False)
    assert _ids(every[0]["params"]) == decay | {id(frozen.weight)}
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # accepted by torch optimizers


def test_param_groups_cover_the_yolo_model():
    model = create_model("yolov4_pico", num_classes=3)
    groups = param_groups(model, 5e-4)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(_ids(grouped)) == len(list(model.parameters()))
    bn_params = _ids(p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert bn_params and bn_params <= _ids(groups[1]["params"])
    assert all(p.ndim == 4 for p in groups[0]["params"])  # only conv kernels decay
    with pytest.raises(ValueError, match="weight_decay must be >= 0, got -1"):
        param_groups(model, -1)


def test_warmup_is_darknet_power_four_and_cosine_ends_at_min():
    total, warmup, ratio = 100, 10, 0.05
    f = [warmup_cosine_factor(s, total, warmup, 4.0, ratio) for s in range(total + 5)]
    for s in range(warmup):
        assert f[s] == pytest.approx(((s + 1) / warmup) ** 4)  # darknet: lr * (batch / burn_in)^power
    assert f[0] == pytest.approx(1e-4) and f[4] == pytest.approx(0.0625) and f[warmup - 1] == 1.0
    assert f[warmup] == 1.0
    mid = warmup + (total - warmup) // 2
    assert f[mid] == pytest.approx(ratio + (1 - ratio) * 0.5)
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1 :], strict=False))  # monotone after warmup
    assert f[total] == pytest.approx(ratio) and f[total + 4] == pytest.approx(ratio)
    # a quarter into the cosine: (1 + cos(pi / 4)) / 2
    q = warmup + (total - warmup) // 4
    expected = ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * (q - warmup) / (total - warmup)))
    assert f[q] == pytest.approx(expected)
    assert warmup_cosine_factor(0, 10, 0) == 1.0  # no warmup


def _run(scheduler_factory, steps: int) -> list[float]:
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = scheduler_factory(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_scheduler_and_lambda_agree():
    expected = [0.2 * warmup_cosine_factor(s, 30, 5, 4.0, 0.01) for s in range(35)]
    by_class = _run(lambda o: WarmupCosineLR(o, total_steps=30, warmup_steps=5), 35)
    by_lambda = _run(lambda o: torch.optim.lr_scheduler.LambdaLR(o, warmup_cosine_lambda(30, 5)), 35)
    assert by_class == pytest.approx(expected) and by_lambda == pytest.approx(expected)
    with pytest.raises(ValueError, match="total_steps must be >= 1, got 0"):
        warmup_cosine_lambda(0, 5)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        WarmupCosineLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), 10, 2, min_lr_ratio=2.0)


def _optimizer():
    model = nn.Linear(2, 2)
    return torch.optim.SGD(param_groups(model, 1e-4), lr=0.1, momentum=0.9)


def test_state_dict_resume_is_exact_and_weights_only_safe():
    opt = _optimizer()
    sched = WarmupCosineLR(opt, total_steps=40, warmup_steps=8)
    for _ in range(13):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    opt2 = _optimizer()
    sched2 = WarmupCosineLR(opt2, total_steps=40, warmup_steps=8)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    for _ in range(30):
        assert [g["lr"] for g in opt2.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.01)


def test_extend_a_finished_run():
    opt = _optimizer()
    sched = WarmupCosineLR(opt, total_steps=20, warmup_steps=4, min_lr_ratio=0.01)
    for _ in range(20):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)
    # re-plan for 40 steps: at step 20 the new cosine is a third of the way, then it falls to the minimum at 40
    sched.set_total_steps(40)
    expected = 0.1 * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 16 / 36)))
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    assert sched.get_last_lr()[0] == pytest.approx(expected)
    assert sched.state_dict()["total_steps"] == 40
    lrs = []
    for _ in range(22):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] == pytest.approx(0.001)
