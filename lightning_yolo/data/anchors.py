"""Anchor shapes from data: k-means over the training boxes with the IoU distance (darknet ``calc_anchors``).

Boxes are taken at the network scale (each image's long side resized to ``img_size``, as the loader does), the
distance between a box and a centroid is ``1 - IoU`` of their shapes aligned at a common centre (YOLOv2 paper
section 2), centroids are the mean shape of their cluster, and the result is sorted by area and split into the
detection levels (smallest anchors on stride 8). Fitness is the mean over boxes of the best shape IoU with any
anchor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..models.anchors import COCO_ANCHORS
from ..ops.iou import shape_iou

if TYPE_CHECKING:  # pragma: no cover
    from .datamodule import YOLODataModule

__all__ = ["kmeans_anchors", "anchor_fitness", "compute_anchors_for_datamodule"]


def _as_wh(boxes_wh: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    wh = torch.as_tensor(np.asarray(boxes_wh, dtype=np.float64)).reshape(-1, 2)
    return wh[(wh > 0).all(1) & torch.isfinite(wh).all(1)]


def anchor_fitness(boxes_wh: torch.Tensor | np.ndarray, anchors: torch.Tensor | np.ndarray | Sequence) -> float:
    """Mean over boxes of the best shape IoU with any anchor.

    Args:
        boxes_wh: ``[N, 2]`` box widths and heights (pixels at the network scale).
        anchors: ``[..., 2]`` anchor widths and heights in the same pixels (any nesting, e.g. ``[L, A, 2]``).

    Returns:
        Fitness in ``[0, 1]`` (0 for no boxes).
    """
    wh = _as_wh(boxes_wh)
    if len(wh) == 0:
        return 0.0
    a = torch.as_tensor(np.asarray(anchors, dtype=np.float64)).reshape(-1, 2)
    return float(shape_iou(wh, a).max(1).values.mean())


def kmeans_anchors(
    boxes_wh: torch.Tensor | np.ndarray,
    num_anchors: int = 9,
    iters: int = 300,
    seed: int = 0,
    num_levels: int = 3,
    restarts: int = 3,
) -> torch.Tensor:
    """k-means with ``1 - IoU`` distance, k-means++ initialisation, best of ``restarts`` by fitness.

    Args:
        boxes_wh: ``[N, 2]`` box widths and heights (pixels at the network scale).
        num_anchors: total anchors ``K`` (a multiple of ``num_levels``).
        iters: most Lloyd iterations per restart (stops early when assignments settle).
        seed: random seed.
        num_levels: detection levels the anchors are split into.
        restarts: independent runs; the one with the best fitness is returned.

    Returns:
        ``[num_levels, K / num_levels, 2]`` float32 anchors sorted by area (smallest level first).

    Raises:
        ValueError: ``K`` not a multiple of ``num_levels``, or fewer valid boxes than ``K``.
    """
    if num_anchors % num_levels:
        raise ValueError(f"num_anchors {num_anchors} must be a multiple of num_levels {num_levels}")
    wh = _as_wh(boxes_wh)
    if len(wh) < num_anchors:
        raise ValueError(f"k-means needs at least num_anchors={num_anchors} boxes with positive size, got {len(wh)}")
    gen = torch.Generator().manual_seed(seed)
    best, best_fit = None, -1.0
    for _ in range(max(1, restarts)):
        # k-means++: each next centroid drawn with probability ~ distance^2 to the nearest chosen one
        centroids = wh[torch.randint(len(wh), (1,), generator=gen)]
        for _ in range(num_anchors - 1):
            d = 1.0 - shape_iou(wh, centroids).max(1).values
            p = d.square()
            idx = (
                torch.multinomial(p / p.sum(), 1, generator=gen)
                if p.sum() > 0
                else torch.randint(len(wh), (1,), generator=gen)
            )
            centroids = torch.cat([centroids, wh[idx]])
        assign = None
        for _ in range(iters):
            iou = shape_iou(wh, centroids)
            new_assign = iou.argmax(1)
            if assign is not None and torch.equal(new_assign, assign):
                break
            assign = new_assign
            counts = torch.bincount(assign, minlength=num_anchors).to(wh.dtype)
            sums = torch.zeros_like(centroids).index_add_(0, assign, wh)
            empty = counts == 0
            centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
            if empty.any():  # re-seed empty clusters at the worst-fitted boxes
                worst = iou.max(1).values.argsort()[: int(empty.sum())]
                centroids[empty] = wh[worst]
        fit = anchor_fitness(wh, centroids)
        if fit > best_fit:
            best, best_fit = centroids, fit
    order = best.prod(1).argsort()
    return best[order].reshape(num_levels, num_anchors // num_levels, 2).float()


def compute_anchors_for_datamodule(
    dm: YOLODataModule, num_anchors: int = 9, iters: int = 300, seed: int = 0, num_levels: int = 3
) -> tuple[list[list[list[float]]], float, float]:
    """k-means anchors for a DataModule's training boxes at its ``img_size``.

    Args:
        dm: the DataModule (its train split is scanned if it was not yet).
        num_anchors: total anchors, split evenly over ``num_levels`` levels.
        iters: k-means iterations.
        seed: random seed.
        num_levels: detection levels (3; yolov4_tiny: 2).

    Returns:
        ``(anchors, fitness_default, fitness_new)``: anchors as ``[3][K/3][w, h]`` pixels (1 decimal) ready for
        ``create_model(..., anchors=...)``, and the mean best IoU of the COCO default anchors and of the new ones.
    """
    wh = dm.train_boxes_wh()
    anchors = kmeans_anchors(wh, num_anchors=num_anchors, iters=iters, seed=seed, num_levels=num_levels)
    rounded = [[[round(float(v), 1) for v in a] for a in level] for level in anchors.tolist()]
    return rounded, anchor_fitness(wh, COCO_ANCHORS), anchor_fitness(wh, rounded)
