"""IoU, GIoU, DIoU and CIoU: pairwise (matching, NMS, metrics) and elementwise (box loss).

All boxes are ``xyxy`` in the same units (pixels). The pairwise functions wrap ``torchvision.ops`` and
replace the ``NaN`` it returns for ``0 / 0`` cases (two zero-area boxes that do not overlap) by the value darknet
uses there (``box_iou`` returns 0 when the union is 0). The elementwise function is written for the loss: it is
differentiable and keeps values and gradients finite on degenerate (zero width or height) boxes.

References:
    GIoU: Rezatofighi et al., 2019, arXiv:1902.09630. DIoU / CIoU: Zheng et al., 2020, arXiv:1911.08287.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torchvision import ops as tv_ops

__all__ = [
    "IOU_KINDS",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "elementwise_box_iou",
    "shape_iou",
]

#: The kinds accepted by :func:`elementwise_box_iou` (darknet ``iou_loss=`` values).
IOU_KINDS: tuple[str, ...] = ("iou", "giou", "diou", "ciou")

IoUKind = Literal["iou", "giou", "diou", "ciou"]


def _nan_to_zero(x: torch.Tensor) -> torch.Tensor:
    # NaN arises only from 0 / 0 (zero union / zero enclosing box); darknet box.c returns the plain IoU (0) there.
    return torch.nan_to_num(x, nan=0.0)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (``torchvision.ops.box_iou``; 0 where both boxes have zero area and do not overlap).

    Args:
        boxes1: ``[..., N, 4]`` xyxy.
        boxes2: ``[..., M, 4]`` xyxy.

    Returns:
        ``[..., N, M]`` IoU in ``[0, 1]``.
    """
    return _nan_to_zero(tv_ops.box_iou(boxes1, boxes2))


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise GIoU (``torchvision.ops.generalized_box_iou``; NaN from a zero-area enclosing box -> 0).

    Args:
        boxes1: ``[..., N, 4]`` xyxy.
        boxes2: ``[..., M, 4]`` xyxy.

    Returns:
        ``[..., N, M]`` GIoU in ``[-1, 1]``.
    """
    return _nan_to_zero(tv_ops.generalized_box_iou(boxes1, boxes2))


def distance_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise DIoU = IoU - rho^2 / c^2 (``torchvision.ops.distance_box_iou``).

    ``rho`` is the distance between the box centres and ``c`` the diagonal of the smallest enclosing box.

    Args:
        boxes1: ``[..., N, 4]`` xyxy.
        boxes2: ``[..., M, 4]`` xyxy.
        eps: added to ``c^2``.

    Returns:
        ``[..., N, M]`` DIoU in ``[-1, 1]``.
    """
    return _nan_to_zero(tv_ops.distance_box_iou(boxes1, boxes2, eps=eps))


def complete_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Pairwise CIoU = DIoU - alpha * v (``torchvision.ops.complete_box_iou``).

    ``v = 4 / pi^2 * (atan(w1 / h1) - atan(w2 / h2))^2`` and ``alpha = v / (1 - IoU + v)``.

    Args:
        boxes1: ``[..., N, 4]`` xyxy.
        boxes2: ``[..., M, 4]`` xyxy.
        eps: added to denominators.

    Returns:
        ``[..., N, M]`` CIoU.
    """
    return _nan_to_zero(tv_ops.complete_box_iou(boxes1, boxes2, eps=eps))


def elementwise_box_iou(
    boxes1: torch.Tensor,
    boxes2: torch.Tensor,
    kind: IoUKind = "iou",
    eps: float = 1e-7,
) -> torch.Tensor:
    """IoU / GIoU / DIoU / CIoU between corresponding boxes, for the box regression loss.

    Differentiable; on degenerate boxes (zero width and / or height, also both boxes) every value and every
    gradient is finite: denominators get ``eps`` and the aspect-ratio term of CIoU divides by ``max(h, eps)``.
    ``alpha`` of CIoU is a constant for the gradient, as in the CIoU paper, darknet and torchvision.

    Args:
        boxes1: ``[..., 4]`` xyxy, e.g. predictions.
        boxes2: ``[..., 4]`` xyxy broadcastable to ``boxes1``, e.g. targets.
        kind: ``"iou"``, ``"giou"``, ``"diou"`` or ``"ciou"`` (darknet ``iou_loss=``).
        eps: small number added to denominators.

    Returns:
        ``[...]`` the chosen overlap measure, e.g. ``1 - elementwise_box_iou(p, t, "ciou")`` is the CIoU loss.
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"kind must be one of {IOU_KINDS}, got {kind!r}")
    ax1, ay1, ax2, ay2 = boxes1.unbind(-1)
    bx1, by1, bx2, by2 = boxes2.unbind(-1)
    aw, ah = ax2 - ax1, ay2 - ay1
    bw, bh = bx2 - bx1, by2 - by1

    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * (
        torch.minimum(ay2, by2) - torch.maximum(ay1, by1)
    ).clamp(min=0)
    union = aw * ah + bw * bh - inter
    iou = inter / (union + eps)
    if kind == "iou":
        return iou

    # smallest enclosing box
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    if kind == "giou":
        c_area = cw * ch
        return iou - (c_area - union) / (c_area + eps)

    c2 = cw.square() + ch.square() + eps  # squared enclosing diagonal
    # squared centre distance; the factor 1/4 of the centres ((x1 + x2) / 2) is applied once
    rho2 = ((bx1 + bx2 - ax1 - ax2).square() + (by1 + by2 - ay1 - ay2).square()) / 4
    diou = iou - rho2 / c2
    if kind == "diou":
        return diou

    # max(h, eps): atan(w / 0) would give NaN values (0 / 0) or NaN gradients (inf * 0)
    v = (4 / math.pi**2) * (torch.atan(bw / bh.clamp(min=eps)) - torch.atan(aw / ah.clamp(min=eps))).square()
    alpha = (v / (1 - iou + v + eps)).detach()
    return diou - alpha * v


def shape_iou(wh1: torch.Tensor, wh2: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of box shapes aligned at a common centre (anchor matching, anchor k-means).

    Args:
        wh1: ``[N, 2]`` widths and heights.
        wh2: ``[M, 2]`` widths and heights, same units.
        eps: lower bound of the union (two zero-area shapes give 0, not NaN).

    Returns:
        ``[N, M]`` IoU in ``[0, 1]``.
    """
    inter = torch.minimum(wh1[:, None, :], wh2[None, :, :]).prod(-1)
    union = wh1.prod(-1)[:, None] + wh2.prod(-1)[None, :] - inter
    return inter / union.clamp(min=eps)
