"""Non-maximum suppression: greedy (torchvision) and DIoU-NMS (YOLOv4 bag of specials).

Both are class-aware through ``idxs`` (boxes with different ``idxs`` never suppress each other, as in
``torchvision.ops.batched_nms``) and return the kept indices sorted by decreasing score.
"""

from __future__ import annotations

import torch
from torchvision import ops as tv_ops

__all__ = ["batched_nms", "diou_nms", "diou_nms_suppression", "group_offset_boxes"]

# diou_nms resolves the greedy pass block by block in score order; a block's rows are compared with the rest of
# their groups only, so memory is O(block * group size) and never O(N^2).
_BLOCK = 256


def group_offset_boxes(boxes: torch.Tensor, groups: torch.Tensor, span: torch.Tensor | float) -> torch.Tensor:
    """The class-offset trick: shift each group's boxes to their own region so that one NMS never lets groups meet.

    Group ``g`` moves by ``g * span``; ``span`` must exceed the extent of all boxes (``max - min + 1`` over every
    coordinate). torchvision spaces by ``max + 1``, which lets groups overlap when boxes reach negative coordinates
    (unclipped decoded boxes do). IoU does not change under a shift. Pure tensor code: used by eager greedy NMS
    (:func:`batched_nms`) and inside the exported graph (:func:`lightning_yolo.inference.export.postprocess_padded`).

    Args:
        boxes: ``[N, 4]`` xyxy.
        groups: ``[N]`` int group ids (:func:`lightning_yolo.ops.postprocess.nms_groups`).
        span: scalar spacing between groups.

    Returns:
        ``[N, 4]`` shifted boxes.
    """
    return boxes + (groups.to(boxes.dtype) * span)[:, None]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_thresh: float) -> torch.Tensor:
    """Greedy class-aware NMS (as ``torchvision.ops.batched_nms``): drops a box whose IoU with a kept box > thresh.

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        idxs: ``[N]`` int group (class, or image * num_classes + class); only boxes of one group suppress each other.
        iou_thresh: suppress when IoU > ``iou_thresh``.

    Returns:
        ``[K]`` int64 indices into ``boxes`` of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 20000):
        # many boxes: torchvision's loop over groups (one nms over 20k boxes of 80 classes compares every pair)
        return tv_ops.batched_nms(boxes, scores, idxs, iou_thresh)
    # few boxes: one nms over group-shifted boxes, the same trick as the exported graph
    span = boxes.max() - boxes.min() + 1
    return tv_ops.nms(group_offset_boxes(boxes, idxs, span), scores, iou_thresh)


def diou_nms_suppression(boxes1: torch.Tensor, boxes2: torch.Tensor, beta: float = 0.6) -> torch.Tensor:
    """The DIoU-NMS criterion ``IoU - (rho^2 / c^2) ** beta`` between two sets of boxes.

    darknet (AlexeyAB) ``src/box.c`` ``box_diounms(a, b, beta1)``: ``c`` = squared diagonal of the enclosing box,
    ``d`` = squared centre distance, result ``box_iou(a, b) - pow(d / c, beta1)`` (plain IoU when ``c == 0``);
    ``box_iou`` returns 0 when the intersection or the union is 0. The branches become clamps here (``d`` is 0
    whenever ``c`` is 0, so the results agree).

    Args:
        boxes1: ``[N, 4]`` xyxy.
        boxes2: ``[M, 4]`` xyxy.
        beta: exponent of the distance penalty (darknet ``beta_nms``, 0.6 in the YOLOv4 cfgs).

    Returns:
        ``[N, M]`` criterion; a box is suppressed when it exceeds the NMS threshold.
    """
    iou = torch.nan_to_num(tv_ops.box_iou(boxes1, boxes2), nan=0.0)
    return iou - _distance_ratio(boxes1[:, None, :], boxes2[None, :, :]).pow(beta)


def _greedy_keep(suppress: torch.Tensor) -> torch.Tensor:
    """Exact greedy NMS outcome from a strictly upper-triangular suppression matrix.

    ``suppress[i, j]`` (``i < j``, score order) means "box i, if kept, suppresses box j". Greedy NMS keeps j iff no
    kept i < j suppresses it. Instead of one Python step per box this iterates the vectorised map
    ``keep <- not any_i(keep[i] and suppress[i, :])`` from ``keep = all``: after t steps the first t entries are
    final (induction over the score order), so it reaches the unique fixed point, the greedy result, in at most
    n steps, in practice in about as many as the longest chain of suppressions.

    Args:
        suppress: ``[n, n]`` bool, strictly upper triangular.

    Returns:
        ``[n]`` bool keep mask.
    """
    n = suppress.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=suppress.device)
    for _ in range(n):
        new_keep = ~(suppress & keep[:, None]).any(0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _suppression_matrix(
    boxes: torch.Tensor, idxs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, iou_thresh: float, beta: float
) -> torch.Tensor:
    """``[r, c]`` bool: box ``rows[a]`` suppresses box ``cols[b]`` (same group, later in order, criterion > thresh).

    The criterion is at most the IoU, so only pairs with IoU > thresh get the distance term (a sparse step).
    """
    b1, b2 = boxes[rows], boxes[cols]
    x1 = torch.maximum(b1[:, None, 0], b2[None, :, 0])
    y1 = torch.maximum(b1[:, None, 1], b2[None, :, 1])
    x2 = torch.minimum(b1[:, None, 2], b2[None, :, 2])
    y2 = torch.minimum(b1[:, None, 3], b2[None, :, 3])
    inter = (x2 - x1).clamp_(min=0) * (y2 - y1).clamp_(min=0)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    iou = inter / (area1[:, None] + area2[None, :] - inter).clamp_(min=1e-12)
    candidate = (iou > iou_thresh) & (idxs[rows, None] == idxs[None, cols]) & (cols[None, :] > rows[:, None])
    i, j = candidate.nonzero(as_tuple=True)
    pair_crit = iou[i, j] - _distance_ratio(boxes[rows[i]], boxes[cols[j]]).pow(beta)
    suppress = torch.zeros_like(candidate)
    suppress[i, j] = pair_crit > iou_thresh
    return suppress


def _distance_ratio(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """``rho^2 / c^2`` of corresponding boxes ``[..., 4]`` -> ``[...]`` (0 when both are the same point)."""
    enclose_wh = torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - torch.minimum(boxes1[..., :2], boxes2[..., :2])
    c2 = enclose_wh.square().sum(-1).clamp(min=1e-12)
    rho2 = ((boxes1[..., :2] + boxes1[..., 2:] - boxes2[..., :2] - boxes2[..., 2:]) / 2).square().sum(-1)
    return rho2 / c2


def diou_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_thresh: float,
    beta: float = 0.6,
    segments: torch.Tensor | None = None,
    max_per_segment: int | None = None,
) -> torch.Tensor:
    """Class-aware DIoU-NMS (YOLOv4 bag of specials; darknet ``nms_kind=diounms``, ``beta_nms``).

    Greedy in score order like ``torchvision.ops.batched_nms``, but box j is suppressed by a kept, higher-scoring
    box i of the same group when ``IoU(i, j) - (rho^2 / c^2) ** beta > iou_thresh`` (darknet ``src/box.c``
    ``diounms_sort`` with ``nms_kind == DIOU_NMS``, criterion ``box_diounms``; see :func:`diou_nms_suppression`).
    Overlapping boxes whose centres are far apart (neighbouring objects) survive where greedy IoU-NMS drops them.

    Boxes are sorted by segment (default: the group), then by decreasing score, and processed in blocks of 256 that
    never cross a segment: the greedy pass among the block's rows not yet suppressed is resolved by a vectorised
    fixed-point iteration on their ``[rows, rows]`` criterion matrix (:func:`_greedy_keep`; pairs of different
    groups never suppress), and the block's kept boxes then suppress the alive later boxes of their segment in one
    ``[kept, later]`` step. The loop runs once per block, never once per box; memory is
    O(256 * largest segment).

    ``max_per_segment`` stops a segment once that many of its boxes are kept: a caller that keeps only the best
    ``max_det`` detections per image (``segments`` = image index) gets the same result without resolving the
    thousands of low-score candidates behind them (greedy NMS in score order never revisits a kept box, so the
    first ``max_det`` kept are the ``max_det`` best kept).

    The step count depends on the data, so this runs eagerly and does not trace to a static graph (export greedy
    NMS, or decode only).

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        idxs: ``[N]`` int group (class, or image * num_classes + class).
        iou_thresh: suppression threshold on the DIoU-NMS criterion.
        beta: exponent of the centre-distance penalty (darknet ``beta_nms=0.6``).
        segments: ``[N]`` int, a coarser partition than ``idxs`` (each group inside one segment), e.g. the image
            index; default ``idxs``.
        max_per_segment: keep at most this many boxes per segment, the best by score (``None``: no cap).

    Returns:
        ``[K]`` int64 indices into ``boxes`` of the kept boxes, by decreasing score.
    """
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    if segments is None or max_per_segment is None:
        segments, cap = idxs, None  # no cap: blocks may span several small groups (fewer Python steps)
    else:
        cap = int(max_per_segment)
    # sort by segment, then by decreasing score inside a segment: segments become contiguous and score-ordered
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(segments[order], stable=True).indices]
    boxes_sorted = boxes[order].float()
    idxs_sorted = idxs[order]
    _, counts = torch.unique_consecutive(segments[order], return_counts=True)
    seg_end = counts.cumsum(0).repeat_interleave(counts)  # one past the last box of each box's segment

    removed = torch.zeros(n, dtype=torch.bool, device=device)
    keep = torch.zeros(n, dtype=torch.bool, device=device)

    def resolve(start: int, stop: int, col_end: int) -> torch.Tensor:
        """Greedy pass of the block ``[start, stop)`` against the alive boxes up to ``col_end``: its kept rows."""
        # only boxes not suppressed yet take part: alive rows of this block vs alive boxes up to col_end
        cols = start + (~removed[start:col_end]).nonzero().squeeze(1)  # score order within each segment
        rows = cols[cols < stop]
        if rows.numel() == 0:
            return rows
        # the block's own greedy pass first ([r, r], strictly upper triangular), then only the boxes it keeps
        # against the later ones ([kept, c - r]): most of a block is suppressed, so this is a fraction of [r, c]
        block_keep = _greedy_keep(_suppression_matrix(boxes_sorted, idxs_sorted, rows, rows, iou_thresh, beta))
        kept = rows[block_keep]
        later = cols[rows.numel() :]  # rows are the first r of cols
        if kept.numel() and later.numel():
            hit = _suppression_matrix(boxes_sorted, idxs_sorted, kept, later, iou_thresh, beta).any(0)
            removed[later[hit]] = True
        return kept

    if cap is None:
        # blocks of _BLOCK boxes in sorted order; a block's columns run to the end of its last segment
        starts = list(range(0, n, _BLOCK))
        ends = seg_end[[min(s + _BLOCK, n) - 1 for s in starts]].tolist()
        for start, col_end in zip(starts, ends, strict=True):
            keep[resolve(start, min(start + _BLOCK, n), col_end)] = True
    else:
        # blocks inside one segment, in score order, until the segment has ``cap`` kept boxes
        seg_start = 0
        for end in counts.cumsum(0).tolist():
            kept_here = 0
            for start in range(seg_start, end, _BLOCK):
                if kept_here >= cap:
                    break
                kept_rows = resolve(start, min(start + _BLOCK, end), end)[: cap - kept_here]  # the best of them
                keep[kept_rows] = True
                kept_here += kept_rows.numel()
            seg_start = end

    kept = order[keep]
    # torchvision convention: all kept boxes by decreasing score
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
