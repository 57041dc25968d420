"""Self-adversarial training stage 1: images change within bounds, the model does not change at all."""

from __future__ import annotations

import copy

import pytest
import torch

from lightning_yolo.models import create_model
from lightning_yolo.training.loss import YOLOLoss
from lightning_yolo.training.sat import empty_targets, self_adversarial_step


def _scene(batch: int = 2, size: int = 64, seed: int = 0):
    """Bright rectangles on a grey background with their boxes."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((batch, 3, size, size), 0.45)
    images += 0.05 * torch.rand(images.shape, generator=g)
    targets = []
    for b in range(batch):
        boxes = torch.tensor([[6.0, 8.0, 30.0, 28.0], [34.0, 30.0, 58.0, 60.0]]) + 2 * b
        labels = torch.tensor([0, 1 + b % 2])
        for (x1, y1, x2, y2), c in zip(boxes.long().tolist(), labels.tolist(), strict=True):
            images[b, c, y1:y2, x1:x2] = 0.95
        targets.append({"boxes": boxes, "labels": labels})
    return images.clamp(0, 1), targets


@pytest.fixture(scope="module")
def trained():
    """A tiny model that has learnt the scene a little (stage 1 has something to remove)."""
    torch.manual_seed(0)
    model = create_model("yolov4_pico", num_classes=3)
    loss_fn = YOLOLoss(3, model.anchors)
    images, targets = _scene()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(25):
        opt.zero_grad()
        loss_fn(model(images), targets)["loss"].backward()
        opt.step()
    return model, loss_fn, images, targets


def _true_loss(model, loss_fn, images, targets) -> float:
    probe = copy.deepcopy(model)  # train-mode forward on a copy: the original's buffers stay as they are
    with torch.no_grad():
        return float(loss_fn(probe(images), targets)["loss"])


def test_stage_one_raises_true_loss_within_bounds(trained):
    model, loss_fn, images, targets = trained
    max_delta = 8 / 255
    altered = self_adversarial_step(model, loss_fn, images, targets, step_size=max_delta, max_delta=max_delta)
    assert altered.shape == images.shape and altered.dtype == images.dtype and not altered.requires_grad
    assert float(altered.min()) >= 0.0 and float(altered.max()) <= 1.0
    assert float((altered - images).abs().max()) <= max_delta + 1e-6
    assert float((altered - images).abs().max()) > 0.5 * max_delta  # it did move
    # the detection loss with the true targets rose (measured: 0.233 -> 0.318)
    before, after = _true_loss(model, loss_fn, images, targets), _true_loss(model, loss_fn, altered, targets)
    assert after > before * 1.2, (before, after)


def test_multi_step_descends_the_no_object_loss(trained):
    # Small sign steps follow the "no objects" loss down (measured 0.305 -> 0.275 over 4 steps of 1/255) and
    # the true-target loss up (0.233 -> 0.273). A single step is a linearisation and need not lower the loss
    # it descends, but it raises the true-target loss, which is what stage 2 trains against.
    model, loss_fn, images, targets = trained
    altered = self_adversarial_step(model, loss_fn, images, targets, step_size=1 / 255, max_delta=4 / 255, steps=4)
    assert float((altered - images).abs().max()) <= 4 / 255 + 1e-6
    empty = empty_targets(images.shape[0])
    assert _true_loss(model, loss_fn, altered, empty) < _true_loss(model, loss_fn, images, empty)
    assert _true_loss(model, loss_fn, altered, targets) > _true_loss(model, loss_fn, images, targets)


def test_multi_step_and_true_target_objective(trained):
    model, loss_fn, images, targets = trained
    altered = self_adversarial_step(
        model, loss_fn, images, targets, step_size=2 / 255, max_delta=4 / 255, steps=3, objective="true_targets"
    )
    assert float((altered - images).abs().max()) <= 4 / 255 + 1e-6
    assert _true_loss(model, loss_fn, altered, targets) > _true_loss(model, loss_fn, images, targets)


def test_parameters_grads_and_buffers_are_bit_identical(trained):
    model, loss_fn, images, targets = trained
    model = copy.deepcopy(model)
    # a realistic state: some .grad tensors from a previous backward, some None, one frozen parameter
    loss_fn(model(images), targets)["loss"].backward()
    params = list(model.parameters())
    for p in params[::3]:
        p.grad = None
    params[1].requires_grad_(False)
    grads = [None if p.grad is None else p.grad.clone() for p in params]
    flags = [p.requires_grad for p in params]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert any("num_batches_tracked" in k for k in state)
    training = model.training

    self_adversarial_step(model, loss_fn, images, targets, steps=2, step_size=4 / 255)

    assert model.training == training
    assert [p.requires_grad for p in params] == flags
    for p, g in zip(params, grads, strict=True):
        assert (p.grad is None) == (g is None)
        if g is not None:
            assert torch.equal(p.grad, g)
    after = model.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(after[k], v), k


def test_bad_arguments():
    model = create_model("yolov4_pico", num_classes=3)
    loss_fn = YOLOLoss(3, model.anchors)
    images, targets = _scene(1)
    with pytest.raises(ValueError, match="step_size must be > 0, got 0"):
        self_adversarial_step(model, loss_fn, images, targets, step_size=0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        self_adversarial_step(model, loss_fn, images, targets, steps=0)
    with pytest.raises(ValueError, match="objective"):
        self_adversarial_step(model, loss_fn, images, targets, objective="up")
    with pytest.raises(ValueError, match="needs 1 target dicts, got None"):
        self_adversarial_step(model, loss_fn, images, None, objective="true_targets")
