"""Validation pictures: a detection confusion matrix, per-class precision-recall curves, and their matplotlib figures.

Figures are built with ``matplotlib.figure.Figure`` (no ``pyplot``), so nothing depends on a GUI backend or on
pyplot's global figure list; Jupyter shows a returned figure inline, TensorBoard takes it through ``add_figure``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou
from ..ops.postprocess import DEFAULTS

__all__ = [
    "FIGURE_DPI",
    "DetectionFigures",
    "confusion_matrix",
    "detection_figures",
    "labels_figure",
    "plot_confusion_matrix",
    "plot_labels",
    "plot_precision_recall",
    "plot_results",
    "precision_recall_curves",
    "save_figure",
]

#: Resolution of every figure written as PNG.
FIGURE_DPI = 100


def _match_image(
    pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, iou_thresh: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one matches between predictions and ground truth of one image, highest IoU first.

    Returns:
        ``(pred_idx [M], gt_idx [M])`` of the matched pairs (each prediction and each ground truth at most once).
    """
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    iou = box_iou(gt_boxes.float(), pred_boxes.float())  # [G, P]
    gt_idx, pred_idx = torch.nonzero(iou > iou_thresh, as_tuple=True)
    if len(gt_idx) == 0:
        return pred_idx, gt_idx
    # Greedy one-to-one assignment in decreasing IoU (ultralytics ConfusionMatrix.process_batch): sort the candidate
    # pairs, keep the first pair of each prediction, then the first remaining pair of each ground truth.
    order = iou[gt_idx, pred_idx].argsort(descending=True, stable=True)
    gt_idx, pred_idx = gt_idx[order], pred_idx[order]
    keep = _first_occurrence(pred_idx)
    gt_idx, pred_idx = gt_idx[keep], pred_idx[keep]
    keep = _first_occurrence(gt_idx)
    return pred_idx[keep], gt_idx[keep]


def _first_occurrence(values: torch.Tensor) -> torch.Tensor:
    """Indices of the first occurrence of each distinct value, in their original order (vectorised)."""
    uniq, inverse = torch.unique(values, return_inverse=True)
    positions = torch.arange(len(values), device=values.device)
    first = torch.full((len(uniq),), len(values), dtype=torch.long, device=values.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return first.sort().values


def confusion_matrix(
    preds: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    num_classes: int,
    iou_thresh: float = 0.5,
    score_thresh: float = DEFAULTS.score_thresh,
) -> torch.Tensor:
    """Detection confusion matrix with a background row and column.

    Predictions with ``score >= score_thresh`` are matched one-to-one to ground-truth boxes of any class with
    ``IoU > iou_thresh``, highest IoU first. A matched pair counts at ``[true class, predicted class]``; an unmatched
    ground truth (a miss) at ``[true class, C]``; an unmatched prediction (a false detection) at ``[C, predicted
    class]``. ``[C, C]`` stays 0. Crowd ground truth (``iscrowd``) is left out.

    Args:
        preds: per image ``dict(boxes [P, 4] xyxy, scores [P], labels [P])`` (the torchmetrics convention).
        targets: per image ``dict(boxes [G, 4] xyxy, labels [G])``, optionally ``iscrowd [G]``; same pixels as
            ``preds``.
        num_classes: ``C``.
        iou_thresh: a prediction and a ground truth match above this IoU.
        score_thresh: predictions below this score are ignored.

    Returns:
        ``[C + 1, C + 1]`` int64: rows are the true class (last row: background, i.e. false detections), columns
        the predicted class (last column: background, i.e. missed objects).
    """
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} prediction dicts for {len(targets)} target dicts")
    size = num_classes + 1
    flat_index: list[torch.Tensor] = []
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        p_boxes = pred["boxes"].detach().cpu().reshape(-1, 4)
        p_labels = pred["labels"].detach().cpu().long().reshape(-1)
        keep = pred["scores"].detach().cpu().reshape(-1) >= score_thresh
        p_boxes, p_labels = p_boxes[keep], p_labels[keep]
        g_boxes = target["boxes"].detach().cpu().reshape(-1, 4)
        g_labels = target["labels"].detach().cpu().long().reshape(-1)
        if "iscrowd" in target:
            not_crowd = ~target["iscrowd"].detach().cpu().bool().reshape(-1)
            g_boxes, g_labels = g_boxes[not_crowd], g_labels[not_crowd]
        for name, labels in (("prediction", p_labels), ("target", g_labels)):
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise ValueError(f"image {i}: {name} label {labels.tolist()} outside 0..{num_classes - 1}")
        pred_idx, gt_idx = _match_image(p_boxes, g_boxes, iou_thresh)
        pred_free = torch.ones(len(p_labels), dtype=torch.bool)
        pred_free[pred_idx] = False
        gt_free = torch.ones(len(g_labels), dtype=torch.bool)
        gt_free[gt_idx] = False
        flat_index += [
            g_labels[gt_idx] * size + p_labels[pred_idx],  # matched: [true, predicted]
            g_labels[gt_free] * size + num_classes,  # missed: [true, background]
            num_classes * size + p_labels[pred_free],  # false detection: [background, predicted]
        ]
    counts = torch.bincount(torch.cat(flat_index), minlength=size * size) if flat_index else torch.zeros(size * size)
    return counts.long().reshape(size, size)


def precision_recall_curves(
    preds: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    num_classes: int,
    iou_thresh: float = 0.5,
) -> dict[str, torch.Tensor]:
    """COCO-style interpolated precision at 101 recall points per class, at one IoU threshold (pycocotools).

    Runs torchmetrics ``MeanAveragePrecision(extended_summary=True)`` on the given detections, so the curves are the
    ones behind the reported AP (all areas, 100 detections per image).

    Args:
        preds: per image ``dict(boxes, scores, labels)``.
        targets: per image ``dict(boxes, labels)``, optionally ``iscrowd``.
        num_classes: ``C``.
        iou_thresh: IoU threshold of the curves (0.5: the AP50 curves).

    Returns:
        ``recall``: ``[101]`` recall points; ``precision``: ``[C, 101]`` precision (NaN for classes without ground
        truth); ``ap``: ``[C]`` area under each curve (NaN without ground truth).
    """
    from torchmetrics.detection import MeanAveragePrecision

    recall = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    metric = MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        backend="pycocotools",
        iou_thresholds=[float(iou_thresh)],
        rec_thresholds=np.linspace(0.0, 1.0, 101).tolist(),
        extended_summary=True,
        # the curves of the detections given, also under DDP: a sync would need every process to call this (and
        # to hold as many images), so one process plotting its share would wait forever
        sync_on_compute=False,
    )
    clean_targets = []
    for t in targets:
        item = {"boxes": t["boxes"].detach().float().cpu(), "labels": t["labels"].detach().long().cpu()}
        if "iscrowd" in t:
            item["iscrowd"] = t["iscrowd"].detach().long().cpu()
        clean_targets.append(item)
    clean_preds = [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in preds]
    precision = torch.full((num_classes, 101), float("nan"), dtype=torch.float64)
    if clean_preds:
        metric.update(clean_preds, clean_targets)
        result = metric.compute()
        classes = result["classes"].reshape(-1).long()
        # precision: [T=1, R=101, K, A (all, small, medium, large), M (1, 10, 100 dets)]; -1 marks "no ground truth"
        curves = result["precision"][0, :, :, 0, -1].to(torch.float64).T  # [K, 101]
        curves = torch.where(curves < 0, torch.full_like(curves, float("nan")), curves)
        valid = (classes >= 0) & (classes < num_classes)
        precision[classes[valid]] = curves[valid]
    return {"recall": recall, "precision": precision, "ap": precision.mean(dim=1)}


def _class_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    return list(class_names)


def plot_confusion_matrix(
    matrix: torch.Tensor | np.ndarray,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
    title: str | None = None,
) -> Any:
    """Heat map of :func:`confusion_matrix` output.

    Args:
        matrix: ``[C + 1, C + 1]`` counts (rows true, columns predicted; the last of each is background).
        class_names: ``C`` names.
        normalize: show each row as fractions of its total (recall per true class); counts are written in the cells.
        title: figure title.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    size = counts.shape[0]
    names = [*_class_names(size - 1, class_names), "background"]
    shown = counts / np.maximum(counts.sum(1, keepdims=True), 1) if normalize else counts
    side = min(3.0 + 0.45 * size, 14.0)
    fig = Figure(figsize=(side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(1.0, float(shown.max())))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(size), names, rotation=45, ha="right")
    ax.set_yticks(range(size), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if size <= 30:  # numbers stay readable up to ~30 classes
        for (r, c), n in np.ndenumerate(counts):
            if n:
                ax.text(c, r, f"{int(n)}", ha="center", va="center", fontsize=8,
                        color="white" if shown[r, c] > 0.5 * (1.0 if normalize else shown.max()) else "black")  # fmt: skip
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    fig.tight_layout()
    return fig


def plot_precision_recall(
    curves: dict[str, torch.Tensor],
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Any:
    """Per-class precision-recall curves from :func:`precision_recall_curves`, with AP in the legend.

    Args:
        curves: ``recall [101]``, ``precision [C, 101]``, ``ap [C]``.
        class_names: ``C`` names.
        title: figure title.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    precision = curves["precision"].numpy()
    recall = curves["recall"].numpy()
    ap = curves["ap"].numpy()
    names = _class_names(precision.shape[0], class_names)
    fig = Figure(figsize=(6.5, 5.0))
    ax = fig.add_subplot()
    for k, name in enumerate(names):
        if np.isfinite(ap[k]):
            ax.plot(recall, precision[k], linewidth=1.2, label=f"{name} {ap[k]:.3f}")
    if np.isfinite(ap).any():
        ax.plot(recall, np.nanmean(precision, axis=0), color="black", linewidth=2.5,
                label=f"all classes {np.nanmean(ap):.3f}")  # fmt: skip
        ax.legend(loc="lower left", fontsize=8, title="AP")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "precision-recall")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_results(rows: Sequence[dict[str, float]], title: str | None = None) -> Any:
    """Training curves from ``results.csv`` rows: one panel per column (losses, mAP, learning rate) against epoch.

    Args:
        rows: dicts with ``epoch`` and any number of metric columns (missing or non-finite values are gaps).
        title: figure title.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    columns = sorted({k for row in rows for k in row if k != "epoch"}, key=lambda k: (not k.startswith("train"),
                     not k.startswith("val/") or "map" in k or "mar" in k, k))  # fmt: skip
    count = max(len(columns), 1)
    ncols = min(5, count)
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows))
    epochs = np.array([float(row.get("epoch", i)) for i, row in enumerate(rows)])
    for i, column in enumerate(columns):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        values = np.array([float(row.get(column, np.nan)) if row.get(column) not in (None, "") else np.nan
                           for row in rows])  # fmt: skip
        values[values < 0] = np.nan  # COCO's -1: does not apply
        ok = np.isfinite(values)
        ax.plot(epochs[ok], values[ok], marker=".", linewidth=1.5)
        ax.set_title(column, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_labels(
    boxes_wh: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str | None = None
) -> Any:
    """Labels overview: instances per class and the box sizes (width against height, relative to the image).

    Args:
        boxes_wh: ``[N, 2]`` box width and height divided by the image's width and height.
        labels: ``[N]`` class of each box.
        class_names: ``C`` names.
        title: figure title.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    names = list(class_names)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))[: len(names)]
    fig = Figure(figsize=(10.0, 4.0))
    ax = fig.add_subplot(1, 2, 1)
    bars = ax.bar(range(len(names)), counts, color="tab:blue")
    if len(names) <= 40:  # the count on each bar, while the labels stay readable
        ax.bar_label(bars, labels=[str(int(c)) for c in counts], fontsize=7 if len(names) > 20 else 8, padding=1)
        ax.margins(y=0.1)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90 if len(names) > 8 else 0, fontsize=7 if len(names) > 20 else 9)
    ax.set_ylabel("instances")
    ax.set_title(f"{int(counts.sum())} boxes, {len(names)} classes")
    ax = fig.add_subplot(1, 2, 2)
    wh = np.asarray(boxes_wh, dtype=np.float64).reshape(-1, 2)
    if len(wh) > 20000:  # a readable scatter: a fixed random sample
        wh = wh[np.random.default_rng(0).choice(len(wh), 20000, replace=False)]
    ax.scatter(wh[:, 0], wh[:, 1], s=3, alpha=0.3, color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("width / image width")
    ax.set_ylabel("height / image height")
    ax.set_title("box sizes")
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG at :data:`FIGURE_DPI` (folders are created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    return path


@dataclass
class DetectionFigures:
    """The evaluation pictures of one set of detections: the numbers and their figures (``name -> Figure``)."""

    confusion: torch.Tensor | None = None
    curves: dict[str, torch.Tensor] | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def detection_figures(
    preds: Sequence[dict[str, torch.Tensor]],
    targets: Sequence[dict[str, torch.Tensor]],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    iou_thresh: float = 0.5,
    score_thresh: float = DEFAULTS.score_thresh,
    stage: str = "val",
    epoch: int | None = None,
    confusion: bool = True,
    pr_curves: bool = True,
) -> DetectionFigures:
    """Confusion matrix (``figures["confusion_matrix"]``) and per-class precision-recall curves
    (``figures["pr_curves"]``) of an evaluation's detections and ground truth, both at ``iou_thresh``; the matrix
    counts detections scoring at least ``score_thresh``, the curves use every detection."""
    out = DetectionFigures()
    when = f", epoch {epoch}" if epoch is not None else ""
    if confusion:
        out.confusion = confusion_matrix(preds, targets, num_classes, iou_thresh, score_thresh)
        out.figures["confusion_matrix"] = plot_confusion_matrix(
            out.confusion, class_names,
            title=f"{stage} confusion matrix (IoU {iou_thresh:g}, score >= {score_thresh:g}{when})",
        )  # fmt: skip
    if pr_curves:
        out.curves = precision_recall_curves(preds, targets, num_classes, iou_thresh)
        out.figures["pr_curves"] = plot_precision_recall(
            out.curves, class_names, title=f"{stage} precision-recall (IoU {iou_thresh:g}{when})"
        )
    return out


def labels_figure(records: Sequence[Any], class_names: Sequence[str], title: str | None = None) -> Any:
    """:func:`plot_labels` of a dataset split's records (``ImageRecord``: ``boxes`` xyxy pixels, ``labels``,
    ``iscrowd``, ``width``, ``height``); crowd boxes are left out."""
    wh, labels = [], []
    for rec in records:
        keep = ~np.asarray(rec.iscrowd, dtype=bool)
        if keep.any():
            b = np.asarray(rec.boxes)[keep]
            wh.append((b[:, 2:] - b[:, :2]) / np.array([rec.width, rec.height], np.float32))
            labels.append(np.asarray(rec.labels)[keep])
    wh_all = np.concatenate(wh) if wh else np.zeros((0, 2), np.float32)
    labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return plot_labels(wh_all, labels_all, class_names, title=title or f"training labels ({len(records)} images)")
