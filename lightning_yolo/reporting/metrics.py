"""COCO mAP through torchmetrics: the metric as this package configures it, and its DDP synchronisation guard.

:func:`make_map_metric` builds ``MeanAveragePrecision`` with pycocotools' own thresholds. :func:`pad_for_sync` is
the one place that depends on how torchmetrics stores the metric's state: ``MeanAveragePrecision`` keeps list
states with one entry per image (``groundtruth_labels`` among them, read through the public ``metric_state``)
and gathers them entry by entry across processes, so processes holding different image counts issue different
collectives and crash or hang. ``tests/test_module_map.py`` checks that layout and fails on a torchmetrics
version that changes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision

from ..ops.boxes import scale_boxes_to_original
from .report import EvalReport, build_report, count_instances

__all__ = [
    "MAP_BACKENDS",
    "MAP_KEYS",
    "PER_IMAGE_STATE",
    "compute_and_report",
    "make_map_metric",
    "pad_for_sync",
    "per_image_targets",
    "resolve_map_backend",
    "targets_in_original_pixels",
]

#: ``map_backend`` choices: ``auto`` (faster_coco_eval when installed, else pycocotools), pycocotools (the
#: reference) or faster_coco_eval (the same numbers, about 4x faster to compute: benchmarks/README.md, validation).
MAP_BACKENDS = ("auto", "pycocotools", "faster_coco_eval")

#: A list state of ``MeanAveragePrecision`` with one entry per image (its length is the image count).
PER_IMAGE_STATE = "groundtruth_labels"


def resolve_map_backend(backend: str) -> str:
    """The COCO evaluation backend ``backend`` names: ``"auto"`` is ``"faster_coco_eval"`` when that package is
    installed (a dependency of this package), else ``"pycocotools"``. Unknown names raise ``ValueError``,
    ``"faster_coco_eval"`` without its package ``ImportError``."""
    import importlib.util

    if backend not in MAP_BACKENDS:
        raise ValueError(f"map_backend must be one of {MAP_BACKENDS}, got {backend!r}")
    available = importlib.util.find_spec("faster_coco_eval") is not None
    if backend == "auto":
        return "faster_coco_eval" if available else "pycocotools"
    if backend == "faster_coco_eval" and not available:
        raise ImportError("map_backend='faster_coco_eval' needs the faster-coco-eval package: "
                          "pip install faster-coco-eval")
    return backend


def make_map_metric(backend: str = "auto") -> MeanAveragePrecision:
    """COCO box mAP (``xyxy`` boxes) with pycocotools' float64 IoU and recall thresholds.

    torchmetrics' defaults come from a float32 ``torch.linspace`` (0.3 -> 0.30000001), which shifts recall lookups
    that land exactly on a threshold and moves mAP by ~1e-3 against COCOeval. ``extended_summary`` keeps COCOeval's
    per-class precision array for the per-class table (:mod:`lightning_yolo.reporting.report`) at no extra cost.
    ``backend``: see :func:`resolve_map_backend`.
    """
    backend = resolve_map_backend(backend)
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


#: Keys of the torchmetrics COCO result that are logged (scalars only: ``classes`` is a tensor of ids).
MAP_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


def targets_in_original_pixels(targets: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Ground truth for the metric in original-image pixels: the annotations as written (``eval_*`` keys of the
    evaluation pipeline) when present, else the network-size boxes mapped back through the letterbox
    (``ratio``, ``pad``, ``orig_size``). Returns per image ``boxes [G, 4]`` xyxy, ``labels [G]`` and, when known,
    ``iscrowd [G]`` (int64)."""
    out = []
    for t in targets:
        if "eval_boxes" in t:
            out.append({"boxes": t["eval_boxes"].float().reshape(-1, 4), "labels": t["eval_labels"].long(),
                        "iscrowd": t["eval_iscrowd"].long()})  # fmt: skip
            continue
        boxes = t["boxes"].float()
        if "ratio" in t:
            boxes = scale_boxes_to_original(boxes, t["ratio"], t["pad"], t["orig_size"])
        item = {"boxes": boxes, "labels": t["labels"].long()}
        if "iscrowd" in t:
            item["iscrowd"] = t["iscrowd"].long()
        out.append(item)
    return out


def compute_and_report(
    metric: MeanAveragePrecision, class_names: Sequence[str], stage: str, device: torch.device | str
) -> tuple[dict[str, float], EvalReport]:
    """End of an evaluation: ``({"<stage>/map": ..., ...}, per-class report)``, and the metric reset.

    Under DDP every process calls it: the per-image states are padded to one length (:func:`pad_for_sync`) before
    ``compute()`` syncs them, and the report's image and instance counts are summed over the processes.
    """
    held = len(metric.metric_state[PER_IMAGE_STATE])  # images this process evaluated, before any padding
    pad_for_sync(metric, device)
    result = metric.compute()
    images, instances = count_instances(*per_image_targets(metric), len(class_names))
    totals = torch.tensor([float(held), *images.tolist(), *instances.tolist()], dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        totals = totals.to(device)
        torch.distributed.all_reduce(totals)
        totals = totals.cpu()
    n = len(class_names)
    report = build_report(result, totals[1 : 1 + n].long(), totals[1 + n :].long(), int(totals[0]), class_names, stage)
    metric.reset()
    return {f"{stage}/{k}": float(result[k]) for k in MAP_KEYS if k in result}, report
