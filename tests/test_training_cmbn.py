"""Cross mini-batch normalisation (issue 10, item 2): statistics over the mini-batches of one accumulated batch."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d

from lightning_yolo import YOLOModule
from lightning_yolo.training.cmbn import (
    CrossMiniBatchNorm2d,
    CrossMiniBatchNormAct2d,
    convert_cross_minibatch_norm,
    reset_cross_minibatch_norm,
)


def test_last_minibatch_sees_the_whole_batchs_statistics():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.normal_()
    cmbn = convert_cross_minibatch_norm(torch.nn.Sequential(bn))[0]
    assert isinstance(cmbn, CrossMiniBatchNorm2d) and cmbn.weight is bn.weight
    x = torch.randn(12, 3, 5, 5) * 3 + 1
    big = F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    cmbn.train()
    reset_cross_minibatch_norm(cmbn)
    first, second, third = (cmbn(x[i : i + 4]) for i in (0, 4, 8))
    # mini-batch 1: its own statistics (plain BN); 2: those of 1..2; 3: those of the whole batch of 12
    torch.testing.assert_close(first, F.batch_norm(x[:4], None, None, bn.weight, bn.bias, training=True, eps=bn.eps))
    two = F.batch_norm(x[:8], None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    torch.testing.assert_close(second, two[4:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(third, big[8:], rtol=1e-4, atol=1e-5)
    # a new batch forgets the previous one
    reset_cross_minibatch_norm(cmbn)
    torch.testing.assert_close(cmbn(x[8:]), F.batch_norm(x[8:], None, None, bn.weight, bn.bias, training=True, eps=bn.eps))
    # gradients reach the parameters through the current mini-batch
    cmbn(x[:4]).sum().backward()
    assert bn.weight.grad is not None and torch.isfinite(bn.weight.grad).all()


def test_module_switch_keeps_activations_state_dict_and_resets_per_accumulated_batch():
    torch.manual_seed(0)
    plain = YOLOModule(model_name="yolov4_pico", num_classes=2)
    cm = YOLOModule(model_name="yolov4_pico", num_classes=2, cross_minibatch_norm=True)
    assert not any(type(m) in (torch.nn.BatchNorm2d, BatchNormAct2d) for m in cm.model.modules())
    assert any(isinstance(m, CrossMiniBatchNormAct2d) for m in cm.model.modules())
    assert set(cm.state_dict()) == set(plain.state_dict())
    cm.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)
    plain.eval()
    cm.eval()
    with torch.no_grad():
        for a, b in zip(plain(x), cm(x), strict=True):
            torch.testing.assert_close(a, b)  # eval: plain BatchNorm with the activations kept

    cm.trainer = pl.Trainer(accumulate_grad_batches=3, logger=False, enable_checkpointing=False)
    cm.train()
    layer = next(m for m in cm.model.modules() if isinstance(m, CrossMiniBatchNorm2d))
    counts = []
    with torch.no_grad():
        for batch_idx in range(6):
            cm.on_train_batch_start(None, batch_idx)
            cm(x)
            counts.append(int(layer.acc_count))
    per_batch = counts[0]
    assert counts == [per_batch, 2 * per_batch, 3 * per_batch] * 2
