"""Ground truth -> (level, anchor, cell) matching for the YOLOv4 loss, and the objectness ignore mask.

YOLOv4 (darknet ``[yolo]`` layers of ``cfg/yolov4.cfg``) assigns each ground truth

* to its best anchor over all levels by *shape* IoU (boxes compared as if they shared a centre), and
* to every other anchor, on any level, whose shape IoU exceeds ``iou_thresh`` (darknet ``iou_thresh=0.213``,
  the paper's "multiple anchors for a single ground truth"),

each on that anchor's level, in the cell that holds the box centre (``floor(center / stride)``). With the
grid-sensitivity fix a cell decodes centres in ``(i - (s - 1) / 2, i + 1 + (s - 1) / 2)`` (``s = scale_x_y``),
so the centre cell can always reach the centre; ``neighbour_cells=True`` additionally assigns the adjacent
cell in x and in y that can reach it too (the rule Scaled-YOLOv4 / YOLOv5 use with ``s = 2``; darknet's
YOLOv4 does not, hence off by default).

Everything is vectorised over the ground truths of the whole batch; the only Python loops run over the
images of the batch (to concatenate their target dicts) and over the levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

from ..ops.iou import box_iou, shape_iou

__all__ = ["Assignment", "FlatTargets", "assign_targets", "concat_targets", "pad_targets", "ignore_mask"]


class Assignment(NamedTuple):
    """Flat result of :func:`assign_targets`; every field has the same leading length ``K``.

    Attributes:
        batch_idx: ``[K]`` int64 image index in the batch.
        level: ``[K]`` int64 level index (0 = stride 8).
        anchor_idx: ``[K]`` int64 anchor index within the level.
        grid_y: ``[K]`` int64 cell row.
        grid_x: ``[K]`` int64 cell column.
        boxes_xyxy: ``[K, 4]`` float target boxes, xyxy input-image pixels.
        labels: ``[K]`` int64 class of the target.
        gt_index: ``[K]`` int64 row of the ground truth in its image's ``targets[b]["boxes"]``.
        shape_iou: ``[K]`` float shape IoU between the ground truth and the anchor.
    """

    batch_idx: torch.Tensor
    level: torch.Tensor
    anchor_idx: torch.Tensor
    grid_y: torch.Tensor
    grid_x: torch.Tensor
    boxes_xyxy: torch.Tensor
    labels: torch.Tensor
    gt_index: torch.Tensor
    shape_iou: torch.Tensor

    @property
    def num_assigned(self) -> int:
        return int(self.batch_idx.shape[0])


class FlatTargets(NamedTuple):
    """A batch's ground truths in one flat table (:func:`concat_targets`), the form the loss validates once and
    :func:`assign_targets` / :func:`pad_targets` read without concatenating again."""

    batch_idx: torch.Tensor  # [G] int64
    boxes_xyxy: torch.Tensor  # [G, 4] float32
    labels: torch.Tensor  # [G] int64
    gt_index: torch.Tensor  # [G] int64, row within its image
    crowd: torch.Tensor  # [G] bool
    num_images: int  # B (images without boxes included)


def _check_target(i: int, t: object) -> None:
    if not isinstance(t, Mapping):
        raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels', got {type(t).__name__}")
    for key in ("boxes", "labels"):
        if key not in t:
            raise ValueError(f"targets[{i}] lacks the key {key!r} (it has {sorted(t)}); expected 'boxes' and 'labels'")
        if not isinstance(t[key], torch.Tensor):
            raise ValueError(f"targets[{i}][{key!r}] must be a torch.Tensor, got {type(t[key]).__name__}")
    boxes, labels = t["boxes"], t["labels"]
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"targets[{i}]['boxes'] must have shape [N, 4] (xyxy pixels), got {list(boxes.shape)}")
    if labels.ndim != 1 or labels.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"targets[{i}]['labels'] must have shape [N] with N = {boxes.shape[0]} boxes, got {list(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"targets[{i}]['labels'] must be an integer tensor, got {labels.dtype}")
    crowd = t.get("iscrowd")
    if crowd is not None and (not isinstance(crowd, torch.Tensor) or crowd.shape != labels.shape):
        got = list(crowd.shape) if isinstance(crowd, torch.Tensor) else type(crowd).__name__
        raise ValueError(f"targets[{i}]['iscrowd'] must be a tensor of shape [{labels.shape[0]}], got {got}")


def concat_targets(targets: Sequence[Mapping[str, torch.Tensor]], device: torch.device | None = None) -> FlatTargets:
    """Validate per-image target dicts and concatenate them into flat tensors.

    Args:
        targets: per image ``{"boxes": [N, 4] xyxy px, "labels": [N] int, "iscrowd": [N] bool (optional)}``.
        device: where the result lives (default: the first image's boxes).

    Returns:
        :class:`FlatTargets` ``(batch_idx [G], boxes_xyxy [G, 4] float32, labels [G] int64, gt_index [G],
        crowd [G] bool, num_images B)``.

    Raises:
        ValueError: a target is not a dict, lacks ``"boxes"`` / ``"labels"`` or has the wrong shapes.
    """
    for i, t in enumerate(targets):
        _check_target(i, t)
    if device is None:
        device = targets[0]["boxes"].device if len(targets) else torch.device("cpu")
    counts = [int(t["boxes"].shape[0]) for t in targets]
    if sum(counts) == 0:
        e = torch.zeros(0, dtype=torch.long, device=device)
        return FlatTargets(e, torch.zeros(0, 4, device=device), e, e, e.bool(), len(targets))
    boxes = torch.cat([t["boxes"].to(device=device, dtype=torch.float32) for t in targets])
    labels = torch.cat([t["labels"].to(device=device, dtype=torch.long) for t in targets])
    crowd = torch.cat(
        [
            t["iscrowd"].to(device=device, dtype=torch.bool)
            if t.get("iscrowd") is not None
            else torch.zeros(n, dtype=torch.bool, device=device)
            for t, n in zip(targets, counts, strict=True)
        ]
    )
    counts_t = torch.as_tensor(counts, device=device)
    batch_idx = torch.repeat_interleave(torch.arange(len(targets), device=device), counts_t)
    starts = torch.cumsum(counts_t, 0) - counts_t
    gt_index = torch.arange(boxes.shape[0], device=device) - starts[batch_idx]
    return FlatTargets(batch_idx, boxes, labels, gt_index, crowd, len(targets))


def assign_targets(
    targets: Sequence[Mapping[str, torch.Tensor]] | FlatTargets,
    anchors: torch.Tensor,
    strides: torch.Tensor | Sequence[float],
    scale_x_y: torch.Tensor | Sequence[float],
    feature_sizes: Sequence[tuple[int, int]],
    iou_thresh: float = 0.213,
    neighbour_cells: bool = False,
) -> Assignment:
    """Match ground truths to (level, anchor, cell) slots, darknet YOLOv4 style.

    Crowd boxes (``iscrowd``) and degenerate boxes (width or height <= 0) are not assigned.

    A slot ``(b, level, anchor, y, x)`` claimed by several ground truths keeps one winner: a ground
    truth whose centre lies in the cell beats a neighbour-cell claim, then the larger shape IoU wins,
    then the later ground truth (highest row; darknet's later truths likewise overwrite earlier ones).
    The output is sorted by slot, so it is deterministic.

    Args:
        targets: ``B`` dicts with ``"boxes"`` ``[N, 4]`` xyxy input px, ``"labels"`` ``[N]`` int and optional
            ``"iscrowd"`` ``[N]`` bool, or their :func:`concat_targets` table (the loss concatenates once).
        anchors: ``[L, A, 2]`` anchor ``(w, h)`` in input pixels.
        strides: ``[L]`` strides in pixels (a tensor keeps its dtype: the loss passes float64 in gradient checks).
        scale_x_y: ``[L]`` grid-sensitivity factors (used by ``neighbour_cells``).
        feature_sizes: ``L`` pairs ``(H, W)`` of the output maps.
        iou_thresh: extra anchors with shape IoU above this are assigned too (darknet ``iou_thresh=0.213``);
            ``>= 1`` keeps only the best anchor.
        neighbour_cells: also assign the adjacent cells (one in x, one in y) whose grid-sensitive decode
            range contains the centre.

    Returns:
        An :class:`Assignment` of ``K`` flat rows.
    """
    device = anchors.device
    num_levels = int(anchors.shape[0])
    strides_t, scale_t = (_float_tensor(v, device) for v in (strides, scale_x_y))
    if len(feature_sizes) != num_levels or strides_t.numel() != num_levels or scale_t.numel() != num_levels:
        raise ValueError(
            f"anchors have {num_levels} levels but got {len(feature_sizes)} feature sizes {list(feature_sizes)}, "
            f"strides {strides_t.tolist()} and scale_x_y {scale_t.tolist()}"
        )
    flat = targets if isinstance(targets, FlatTargets) else concat_targets(targets, device)
    num_levels, num_anchors = int(anchors.shape[0]), int(anchors.shape[1])
    wh = flat.boxes_xyxy[:, 2:] - flat.boxes_xyxy[:, :2]
    usable = ~flat.crowd & (wh > 0).all(dim=1)
    g_batch, g_boxes, g_labels, g_index, g_wh = (
        flat.batch_idx[usable],
        flat.boxes_xyxy[usable],
        flat.labels[usable],
        flat.gt_index[usable],
        wh[usable],
    )

    # [G, L*A] shape IoU against every anchor of every level.
    ious = shape_iou(g_wh, anchors.reshape(-1, 2).float())
    match = ious > iou_thresh
    if ious.shape[0] > 0:
        match[torch.arange(ious.shape[0], device=device), ious.argmax(dim=1)] = True
    gi, flat_anchor = match.nonzero(as_tuple=True)
    level = torch.div(flat_anchor, num_anchors, rounding_mode="floor")
    anchor_idx = flat_anchor % num_anchors
    match_iou = ious[gi, flat_anchor]

    sizes = torch.as_tensor([[h, w] for h, w in feature_sizes], dtype=torch.long, device=device)  # [L, 2]
    height, width = sizes[level, 0], sizes[level, 1]
    centre = (g_boxes[gi, :2] + g_boxes[gi, 2:]) * 0.5 / strides_t[level, None]  # [K, 2] (x, y) in cells
    grid_x = centre[:, 0].floor().long().clamp(min=0).minimum(width - 1)
    grid_y = centre[:, 1].floor().long().clamp(min=0).minimum(height - 1)
    # Own-cell claims win over neighbour claims at the same slot (priority +1 > any IoU difference).
    priority = match_iou + 1.0

    if neighbour_cells:
        # A cell j decodes centres in (j - m, j + 1 + m), m = (s - 1) / 2: the left/upper neighbour reaches
        # a centre whose fraction is < m, the right/lower one a fraction > 1 - m.
        margin = (scale_t[level] - 1.0) * 0.5
        frac = centre - torch.stack((grid_x, grid_y), dim=1).float()
        rows = [torch.arange(gi.shape[0], device=device)]
        gxs, gys = [grid_x], [grid_y]
        for axis, (g, size) in enumerate(((grid_x, width), (grid_y, height))):
            lower = (frac[:, axis] < margin) & (g > 0)
            upper = (frac[:, axis] > 1.0 - margin) & (g < size - 1)
            sel = lower | upper
            step = upper.long() - lower.long()
            rows.append(sel.nonzero(as_tuple=True)[0])
            moved = (g + step)[sel]
            gxs.append(moved if axis == 0 else grid_x[sel])
            gys.append(moved if axis == 1 else grid_y[sel])
        idx = torch.cat(rows)
        grid_x, grid_y = torch.cat(gxs), torch.cat(gys)
        own = torch.zeros(idx.shape[0], dtype=torch.bool, device=device)
        own[: rows[0].shape[0]] = True
        gi, level, anchor_idx, match_iou = gi[idx], level[idx], anchor_idx[idx], match_iou[idx]
        priority = match_iou + own.float()

    # One winner per slot: stable sorts by gt row, then priority, then slot key order each slot's claims by
    # (priority, gt row); the last claim of each run of equal keys wins.
    max_h, max_w = max(int(h) for h, _ in feature_sizes), max(int(w) for _, w in feature_sizes)
    b = g_batch[gi]
    key = (((b * num_levels + level) * num_anchors + anchor_idx) * max_h + grid_y) * max_w + grid_x
    order = torch.argsort(gi, stable=True)
    order = order[torch.argsort(priority[order], stable=True)]
    order = order[torch.argsort(key[order], stable=True)]
    key_sorted = key[order]
    last_of_run = torch.ones_like(key_sorted, dtype=torch.bool)
    last_of_run[:-1] = key_sorted[1:] != key_sorted[:-1]
    keep = order[last_of_run]
    gk = gi[keep]
    return Assignment(
        batch_idx=b[keep],
        level=level[keep],
        anchor_idx=anchor_idx[keep],
        grid_y=grid_y[keep],
        grid_x=grid_x[keep],
        boxes_xyxy=g_boxes[gk],
        labels=g_labels[gk],
        gt_index=g_index[gk],
        shape_iou=match_iou[keep],
    )


def _float_tensor(values: torch.Tensor | Sequence[float], device: torch.device) -> torch.Tensor:
    """``[L]`` on ``device``: float32 from numbers, a float tensor's own dtype kept."""
    t = torch.as_tensor(values, device=device).reshape(-1)
    return t if t.is_floating_point() else t.float()


def pad_targets(
    targets: Sequence[Mapping[str, torch.Tensor]] | FlatTargets, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image boxes into a padded batch (crowd boxes included).

    Args:
        targets: per-image target dicts, or their :func:`concat_targets` table.
        device: where the result lives for dicts (default: the first image's boxes); a table keeps its device.

    Returns:
        ``boxes_xyxy [B, G, 4]`` (zeros where padded) and ``valid [B, G]`` bool, ``G`` = most boxes in an image.
    """
    flat = targets if isinstance(targets, FlatTargets) else concat_targets(targets, device)
    dev = flat.boxes_xyxy.device
    max_boxes = int(flat.gt_index.max()) + 1 if flat.gt_index.numel() else 0
    boxes = torch.zeros(flat.num_images, max_boxes, 4, device=dev)
    valid = torch.zeros(flat.num_images, max_boxes, dtype=torch.bool, device=dev)
    boxes[flat.batch_idx, flat.gt_index] = flat.boxes_xyxy
    valid[flat.batch_idx, flat.gt_index] = True
    return boxes, valid


@torch.no_grad()
def ignore_mask(
    pred_boxes_xyxy: torch.Tensor,
    gt_boxes_xyxy: torch.Tensor,
    gt_valid: torch.Tensor,
    ignore_thresh: float = 0.7,
) -> torch.Tensor:
    """Predictions that overlap a ground truth of their image by more than ``ignore_thresh``.

    darknet ``ignore_thresh=0.7``: such predictions, when not assigned, get no objectness penalty. The
    caller removes assigned slots from the mask (they always get the positive target).

    Args:
        pred_boxes_xyxy: ``[B, P, 4]`` decoded predictions (any flattening of anchors and cells).
        gt_boxes_xyxy: ``[B, G, 4]`` padded ground truths (see :func:`pad_targets`).
        gt_valid: ``[B, G]`` bool, False for padding.
        ignore_thresh: IoU above which a prediction is ignored.

    Returns:
        ``[B, P]`` bool.
    """
    if gt_boxes_xyxy.shape[1] == 0:
        return torch.zeros(pred_boxes_xyxy.shape[:2], dtype=torch.bool, device=pred_boxes_xyxy.device)
    iou = box_iou(pred_boxes_xyxy.float(), gt_boxes_xyxy.float())  # [B, P, G]
    iou = iou.masked_fill(~gt_valid[:, None, :], 0.0)
    return iou.amax(dim=2) > ignore_thresh
