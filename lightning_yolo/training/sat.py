"""Self-adversarial training (SAT), stage 1: alter the images, never the weights.

YOLOv4 (paper section 3.3; darknet ``[net] adversarial_lr``, ``train_network_datum_gpu``): on about half of the
steps after burn-in, darknet runs a forward/backward pass with the ground truth emptied ("force the network to
remove objects") and lets the backward pass change the *input* instead of the weights; the normal pass (stage 2)
then trains on the altered images with the original labels.

Here stage 1 is an L-infinity bounded sign-gradient attack (FGSM / PGD, Goodfellow et al. 2015, Madry et al.
2018) on the loss with empty targets: each step moves the image *down* that loss, so the network sees fewer
objects, and the result stays within ``max_delta`` of the original and inside ``[0, 1]``. darknet moves along
the raw gradient with a rate that grows with training progress (``adversarial_lr * iteration / max_batches``);
the sign step and explicit bound make the pixel change independent of the loss scale. The probability, the
first epoch and the schedule are the caller's (the DataModule's) switches.

Parameters, their ``requires_grad`` flags, their ``.grad`` (including ``None``) and every buffer (BatchNorm
running statistics and ``num_batches_tracked``) are bit-identical afterwards; the model stays in the mode it was
in (train mode: BatchNorm uses batch statistics, as darknet's stage 1 does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["self_adversarial_step", "empty_targets"]

#: Default L-infinity step and bound: 8/255 of the [0, 1] pixel range, the usual one-step FGSM budget.
DEFAULT_STEP_SIZE = 8.0 / 255.0
DEFAULT_MAX_DELTA = 8.0 / 255.0


def empty_targets(num_images: int, device: torch.device | str | None = None) -> list[dict[str, torch.Tensor]]:
    """``num_images`` target dicts without objects (``boxes [0, 4]``, ``labels [0]``, ``iscrowd [0]``)."""
    return [
        {
            "boxes": torch.zeros(0, 4, device=device),
            "labels": torch.zeros(0, dtype=torch.long, device=device),
            "iscrowd": torch.zeros(0, dtype=torch.bool, device=device),
        }
        for _ in range(num_images)
    ]


def self_adversarial_step(
    model: nn.Module,
    loss_fn: Callable[[list[torch.Tensor], Sequence[Mapping[str, torch.Tensor]]], Mapping[str, torch.Tensor]],
    images: torch.Tensor,
    targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    step_size: float = DEFAULT_STEP_SIZE,
    max_delta: float = DEFAULT_MAX_DELTA,
    steps: int = 1,
    objective: str = "remove_objects",
) -> torch.Tensor:
    """SAT stage 1: return images altered to deceive ``model``; the model's state is left untouched.

    Args:
        model: maps ``[B, 3, H, W]`` images in ``[0, 1]`` to the raw head maps. Pass the bare network, not a
            ``DistributedDataParallel`` wrapper: stage 1 must not take part in gradient synchronisation.
        loss_fn: e.g. :class:`~lightning_yolo.training.loss.YOLOLoss`; called as ``loss_fn(model(x), targets)``
            and its ``"loss"`` entry is differentiated with respect to ``x``.
        images: ``[B, 3, H, W]`` float in ``[0, 1]``.
        targets: the true targets; used only with ``objective="true_targets"`` (may be ``None`` otherwise).
        step_size: L-infinity size of each sign-gradient step (pixel units of the ``[0, 1]`` range).
        max_delta: L-infinity bound on the total change per pixel.
        steps: number of sign-gradient steps (darknet does one pass; with several, ``step_size`` is usually
            ``max_delta / steps`` or a little more).
        objective: ``"remove_objects"`` (darknet: empty ground truth, descend the loss so the network sees no
            objects) or ``"true_targets"`` (ascend the loss with the true targets: classic FGSM/PGD).

    Returns:
        ``[B, 3, H, W]`` detached images, ``|result - images| <= max_delta`` and in ``[0, 1]``, same dtype.

    Raises:
        ValueError: bad ``step_size`` / ``max_delta`` / ``steps`` / ``objective``, non-4D images, or missing targets
            for ``"true_targets"``.
    """
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if not max_delta >= 0:
        raise ValueError(f"max_delta must be >= 0, got {max_delta!r}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    if objective not in ("remove_objects", "true_targets"):
        raise ValueError(f"objective must be 'remove_objects' or 'true_targets', got {objective!r}")
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor [B, 3, H, W] in [0, 1], got {images.dtype} {list(images.shape)}"
        )
    if objective == "true_targets":
        if targets is None or len(targets) != images.shape[0]:
            got = None if targets is None else len(targets)
            raise ValueError(f"objective='true_targets' needs {images.shape[0]} target dicts, got {got}")
        stage_targets = targets
        direction = 1.0  # ascend the loss of the true targets
    else:
        stage_targets = empty_targets(images.shape[0], images.device)
        direction = -1.0  # descend the loss of "no objects": suppress what the network sees

    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    # Clones, not references: a train-mode forward updates BatchNorm buffers in place.
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    x0 = images.detach().clone()
    x = x0.clone()
    try:
        # Weight gradients are neither needed nor wanted: freezing skips their computation and guarantees
        # that no .grad is created or accumulated.
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            for _ in range(int(steps)):
                x.requires_grad_(True)
                loss = loss_fn(model(x), stage_targets)["loss"]
                (grad,) = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    x = x + direction * step_size * grad.sign()
                    x = (x0 + (x - x0).clamp(-max_delta, max_delta)).clamp(0.0, 1.0)
    finally:
        for p, flag in zip(params, requires_grad, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    return x.detach()
