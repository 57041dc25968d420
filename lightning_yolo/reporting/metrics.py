"""COCO mAP through torchmetrics: the metric as this package configures it, and its DDP synchronisation guard.

:func:`make_map_metric` builds ``MeanAveragePrecision`` with pycocotools' own thresholds. :func:`pad_for_sync` is
the one place that depends on how torchmetrics stores the metric's state: ``MeanAveragePrecision`` keeps list
states with one entry per image (``groundtruth_labels`` among them, read through the public ``metric_state``)
and gathers them entry by entry across processes, so processes holding different image counts issue different
collectives and crash or hang. ``tests/test_module_map.py`` checks that layout and fails on a torchmetrics
version that changes it.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

__all__ = ["make_map_metric", "pad_for_sync", "per_image_targets", "PER_IMAGE_STATE"]

#: A list state of ``MeanAveragePrecision`` with one entry per image (its length is the image count).
PER_IMAGE_STATE = "groundtruth_labels"


def make_map_metric(backend: str = "pycocotools") -> MeanAveragePrecision:
    """COCO box mAP (``xyxy`` boxes) with pycocotools' float64 IoU and recall thresholds.

    torchmetrics' defaults come from a float32 ``torch.linspace`` (0.3 -> 0.30000001), which shifts recall lookups
    that land exactly on a threshold and moves mAP by ~1e-3 against COCOeval. ``extended_summary`` keeps COCOeval's
    per-class precision array for the per-class table (:mod:`lightning_yolo.reporting.report`) at no extra cost.
    """
    return MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        backend=backend,
        iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(),
        rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
        extended_summary=True,
    )


def pad_for_sync(metric: MeanAveragePrecision, device: torch.device | str) -> int:
    """Give every process the same number of per-image entries before ``metric.compute()`` syncs.

    Images with neither ground truth nor detections change no COCO statistic, so the shorter processes add such
    images through the public ``update``. A no-op outside an initialised process group of two or more.

    Returns:
        The number of empty images this process added.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return 0
    if torch.distributed.get_world_size() < 2:
        return 0
    held = len(metric.metric_state[PER_IMAGE_STATE])
    count = torch.tensor([held], device=device)
    torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
    missing = int(count.item()) - held
    if missing > 0:
        empty_boxes = torch.zeros(0, 4, device=device)
        empty_labels = torch.zeros(0, dtype=torch.long, device=device)
        preds = [{"boxes": empty_boxes, "scores": torch.zeros(0, device=device), "labels": empty_labels}]
        target = [{"boxes": empty_boxes, "labels": empty_labels, "iscrowd": empty_labels}]
        for _ in range(missing):
            metric.update(preds, target)
    return max(missing, 0)


def per_image_targets(metric: MeanAveragePrecision) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per image ``[G]`` ground-truth labels and crowd flags the metric holds (for instance counts per class)."""
    state = metric.metric_state
    return list(state[PER_IMAGE_STATE]), list(state["groundtruth_crowds"])
