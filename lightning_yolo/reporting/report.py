"""What a validation prints: a per-class table (images, instances, P, R, mAP50, mAP50-95) and the speed per image.

The numbers come from the COCO evaluation behind the logged ``val/map`` (torchmetrics ``MeanAveragePrecision`` with
``extended_summary=True``): ``precision[T, R, K, A, M]`` holds COCOeval's interpolated precision per IoU threshold
``T``, recall point ``R``, class ``K``, area range ``A`` (all, small, medium, large) and detection cap ``M``
(1, 10, 100). Per class, mAP50 is the mean over recall points at IoU 0.5 and mAP50-95 the mean over all IoU
thresholds (area "all", 100 detections), so the "all" row equals ``map_50`` and ``map``. P and R are the precision and
recall of the best-F1 point of the IoU-0.5 precision-recall curve. Values that do not apply (no ground truth of a
class, no small objects) print as ``-``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "PER_BATCH_KEYS",
    "ClassRow",
    "EvalReport",
    "build_report",
    "count_instances",
    "format_metric",
    "results_row",
]

#: Logged values that describe a batch, not the run (the progress bar's input size and box count): no column of
#: results.csv, no curve of results.png.
PER_BATCH_KEYS = ("img_size", "instances")


@dataclass
class ClassRow:
    """One line of the table; ``nan`` where a value does not apply."""

    name: str
    images: int
    instances: int
    precision: float
    recall: float
    map50: float
    map50_95: float


@dataclass
class EvalReport:
    """Per-class results of one evaluation and the time per image of its stages (milliseconds)."""

    stage: str
    rows: list[ClassRow]
    speed_ms: dict[str, float] = field(default_factory=dict)
    img_size: int | None = None

    def format(self) -> str:
        """The table as text, ``all`` first, then the classes with ground truth or detections."""
        width = max([len("class"), *(len(r.name) for r in self.rows)])
        head = f"{'class':>{width}} {'images':>8} {'instances':>10} {'P':>7} {'R':>7} {'mAP50':>7} {'mAP50-95':>9}"
        lines = [head]
        for r in self.rows:
            lines.append(
                f"{r.name:>{width}} {r.images:>8d} {r.instances:>10d} {_fmt(r.precision):>7} {_fmt(r.recall):>7} "
                f"{_fmt(r.map50):>7} {_fmt(r.map50_95):>9}"
            )
        if self.speed_ms:
            parts = ", ".join(f"{v:.1f} ms {k}" for k, v in self.speed_ms.items())
            size = f" at {self.img_size}x{self.img_size}" if self.img_size else ""
            lines.append(f"Speed: {parts} per image{size}")
        return "\n".join(lines)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The table as rows (``class``, ``images``, ``instances``, ``P``, ``R``, ``mAP50``, ``mAP50-95``; blank where a
        value does not apply), for a CSV file."""
        def value(v: float) -> float | str:
            return round(v, 6) if v is not None and math.isfinite(v) else ""

        return [
            {"class": r.name, "images": r.images, "instances": r.instances, "P": value(r.precision),
             "R": value(r.recall), "mAP50": value(r.map50), "mAP50-95": value(r.map50_95)}
            for r in self.rows
        ]  # fmt: skip


def results_row(metrics: Mapping[str, Any], prefixes: Sequence[str] = ("train/", "val/")) -> dict[str, Any]:
    """One row of ``results.csv`` from logged metrics (``trainer.callback_metrics``): the epoch values of the keys
    under ``prefixes`` (``_step`` copies and :data:`PER_BATCH_KEYS` left out, ``_epoch`` suffixes dropped), rounded;
    blank where a value is not finite or, for mAP / mAR, COCO's -1 (does not apply)."""
    row: dict[str, Any] = {}
    for key, value in sorted(metrics.items()):
        if key.endswith("_step") or key.rsplit("/", 1)[-1] in PER_BATCH_KEYS:
            continue
        name = key[: -len("_epoch")] if key.endswith("_epoch") else key
        if not name.startswith(tuple(prefixes)):
            continue
        number = float(value)
        not_applicable = number < 0 and ("map" in name or "mar" in name)
        row[name] = "" if not math.isfinite(number) or not_applicable else round(number, 6)
    return row


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_metric(value: float) -> str:
    """A logged metric for printing: ``-`` for COCO's ``-1`` (does not apply, e.g. no small objects)."""
    return "-" if value is None or not math.isfinite(value) or value < 0 else f"{value:.6f}"


def _mean_valid(values: torch.Tensor) -> float:
    """Mean over entries >= 0 (COCOeval marks "no ground truth" with -1); ``nan`` when there is none."""
    valid = values[values >= 0]
    return float(valid.mean()) if valid.numel() else float("nan")


def count_instances(
    groundtruth_labels: Sequence[torch.Tensor], groundtruth_crowds: Sequence[torch.Tensor], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class: images holding it and its instances (crowd boxes excluded), as ``[C]`` int64 tensors.

    Args:
        groundtruth_labels: per image ``[G]`` labels (a ``MeanAveragePrecision``'s ``groundtruth_labels`` state).
        groundtruth_crowds: per image ``[G]`` crowd flags (``groundtruth_crowds``).
        num_classes: ``C``.
    """
    images = torch.zeros(num_classes, dtype=torch.long)
    instances = torch.zeros(num_classes, dtype=torch.long)
    for labels, crowds in zip(groundtruth_labels, groundtruth_crowds, strict=True):
        labels = labels.detach().long().cpu().reshape(-1)
        keep = torch.ones_like(labels, dtype=torch.bool)
        if crowds is not None and crowds.numel():
            keep = crowds.detach().cpu().reshape(-1) == 0
        labels = labels[keep & (labels >= 0) & (labels < num_classes)]
        instances += torch.bincount(labels, minlength=num_classes)
        images[labels.unique()] += 1
    return images, instances


def build_report(
    result: Mapping[str, Any],
    images: torch.Tensor,
    instances: torch.Tensor,
    num_images: int,
    class_names: Sequence[str],
    stage: str = "val",
) -> EvalReport:
    """Table rows from a ``MeanAveragePrecision(extended_summary=True).compute()`` result.

    Args:
        result: the computed metric (``precision``, ``classes``, ``map``, ``map_50``).
        images: ``[C]`` images holding each class (:func:`count_instances`).
        instances: ``[C]`` ground-truth boxes of each class, crowd excluded.
        num_images: images evaluated.
        class_names: names by label.
        stage: ``"val"`` or ``"test"``.
    """
    num_classes = len(class_names)
    images, instances = images.long().cpu(), instances.long().cpu()

    precision = result.get("precision")
    per_class: dict[int, tuple[float, float, float, float]] = {}
    if isinstance(precision, torch.Tensor) and precision.ndim == 5 and precision.numel():
        classes = result["classes"].reshape(-1).long().tolist()
        pr = precision[:, :, :, 0, -1].double().cpu()  # [T, R, K]: area all, 100 detections
        recall_points = torch.linspace(0.0, 1.0, pr.shape[1], dtype=torch.float64)
        for k, label in enumerate(classes):
            if not 0 <= label < num_classes:
                continue
            curve = pr[0, :, k]
            map50 = _mean_valid(curve)
            map50_95 = _mean_valid(pr[:, :, k])
            p, r = float("nan"), float("nan")
            if (curve >= 0).any():
                # best F1 on the interpolated IoU-0.5 curve; precision 0 past the reached recall gives F1 0 there
                c = curve.clamp(min=0)
                f1 = 2 * c * recall_points / (c + recall_points).clamp(min=1e-12)
                best = int(f1.argmax())
                p = float(c[best])
                r = float(recall_points[best]) if p > 0 else 0.0
            per_class[label] = (p, r, map50, map50_95)

    rows = []
    for label, name in enumerate(class_names):
        if label not in per_class and int(instances[label]) == 0:
            continue
        p, r, m50, m = per_class.get(label, (float("nan"),) * 4)
        rows.append(ClassRow(str(name), int(images[label]), int(instances[label]), p, r, m50, m))
    with_gt = [row for row in rows if row.instances > 0]

    def mean(attr: str) -> float:
        vals = [getattr(row, attr) for row in with_gt if math.isfinite(getattr(row, attr))]
        return sum(vals) / len(vals) if vals else float("nan")

    overall = ClassRow(
        "all",
        int(num_images),
        int(instances.sum()),
        mean("precision"),
        mean("recall"),
        float(result["map_50"]) if "map_50" in result else mean("map50"),
        float(result["map"]) if "map" in result else mean("map50_95"),
    )
    overall.map50 = overall.map50 if overall.map50 >= 0 else float("nan")
    overall.map50_95 = overall.map50_95 if overall.map50_95 >= 0 else float("nan")
    return EvalReport(stage, [overall, *rows])
