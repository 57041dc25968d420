"""Raw head maps -> decoded boxes and probabilities -> per-image detections.

``decode_outputs`` is pure tensor code (no data-dependent Python branches) and exports to ONNX with dynamic batch,
height and width. ``postprocess`` (score filter, top-k, NMS, ``max_det``) produces data-dependent shapes and
runs eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .boxes import cxcywh_to_xyxy, decode_boxes_cxcywh, make_grid
from .nms import batched_nms, diou_nms

__all__ = ["NMS_KINDS", "decode_outputs", "postprocess"]

#: ``postprocess(nms_kind=...)`` values: ``"diou"`` (darknet ``nms_kind=diounms``) or ``"greedy"`` (IoU NMS).
NMS_KINDS: tuple[str, ...] = ("diou", "greedy")


def decode_outputs(
    raw_maps: Sequence[torch.Tensor],
    anchors: torch.Tensor,
    strides: torch.Tensor,
    scale_x_y: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    """Decode the raw head maps of all levels into boxes and probabilities.

    Each map ``[B, A*(5+C), H, W]`` is viewed as ``[B, A, 5+C, H, W]`` with per-anchor channels
    ``(t_x, t_y, t_w, t_h, obj_logit, cls_logit_0..C-1)``; boxes follow
    :func:`~lightning_yolo.ops.boxes.decode_boxes_cxcywh` (grid-sensitivity fix ``scale_x_y``).

    Args:
        raw_maps: ``L`` tensors ``[B, A*(5+C), H_l, W_l]`` (``YOLOv4.forward`` output).
        anchors: ``[L, A, 2]`` anchor ``(w, h)`` in input pixels.
        strides: ``[L]`` level strides in pixels.
        scale_x_y: ``[L]`` grid-sensitivity factors.
        num_classes: ``C``.

    Returns:
        ``[B, N, 5+C]`` float32 with ``(x1, y1, x2, y2)`` in input pixels, objectness probability and ``C`` class
        probabilities; ``N = sum_l A*H_l*W_l``, ordered by level, then anchor, then row ``y``, then column ``x``.
    """
    num_anchors = anchors.shape[1]
    num_outputs = 5 + num_classes
    # static shape checks; skipped under the TorchScript tracer, which would record them as constants with warnings
    if not torch.jit.is_tracing():
        if len(raw_maps) != anchors.shape[0]:
            raise ValueError(f"got {len(raw_maps)} raw maps for anchors of {anchors.shape[0]} levels")
        for level, raw in enumerate(raw_maps):
            if raw.ndim != 4 or raw.shape[1] != num_anchors * num_outputs:
                raise ValueError(
                    f"raw map {level} has shape {list(raw.shape)}, expected [B, {num_anchors}*(5+{num_classes})"
                    f"={num_anchors * num_outputs}, H, W]"
                )
    decoded = []
    for level, raw in enumerate(raw_maps):
        batch, _, height, width = raw.shape
        # decode in float32: grid offsets up to ~100 cells lose whole pixels in fp16/bf16
        pred = raw.float().view(batch, num_anchors, num_outputs, height, width).permute(0, 1, 3, 4, 2)
        grid = make_grid(height, width, device=raw.device)  # [H, W, 2]
        anchor_wh = anchors[level].to(device=raw.device, dtype=torch.float32).view(1, num_anchors, 1, 1, 2)
        stride = strides[level].to(device=raw.device, dtype=torch.float32)
        scale = scale_x_y[level].to(device=raw.device, dtype=torch.float32)
        boxes = cxcywh_to_xyxy(decode_boxes_cxcywh(pred[..., :4], grid, anchor_wh, stride, scale))
        out = torch.cat((boxes, pred[..., 4:].sigmoid()), dim=-1)  # [B, A, H, W, 5+C]
        decoded.append(out.reshape(batch, -1, num_outputs))
    return torch.cat(decoded, dim=1)


def postprocess(
    decoded: torch.Tensor,
    score_thresh: float = 0.001,
    nms_iou_thresh: float = 0.6,
    nms_kind: str = "diou",
    beta_nms: float = 0.6,
    class_agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    pre_nms_topk: int = 10000,
) -> list[dict[str, torch.Tensor]]:
    """Score filter, top-k, NMS and ``max_det`` over a batch of decoded predictions.

    ``score = objectness * class probability``. With ``multi_label`` every (box, class) pair above ``score_thresh``
    is a candidate (COCO evaluation practice), otherwise only each box's best class. Per image the
    ``pre_nms_topk`` best candidates enter NMS. NMS runs once over the whole batch: groups are ``image *
    num_classes + class`` (class-aware) or ``image`` (``class_agnostic``), so images never suppress each other.

    Args:
        decoded: ``[B, N, 5+C]`` from :func:`decode_outputs` (xyxy input pixels, objectness, class probabilities).
        score_thresh: keep candidates with score > this.
        nms_iou_thresh: NMS threshold (on IoU for ``"greedy"``, on ``IoU - R_diou^beta`` for ``"diou"``).
        nms_kind: ``"diou"`` (YOLOv4, darknet ``nms_kind=diounms``) or ``"greedy"``.
        beta_nms: DIoU-NMS exponent (darknet ``beta_nms=0.6``).
        class_agnostic: one NMS across classes of an image.
        multi_label: allow several classes per box.
        max_det: detections kept per image, by decreasing score.
        pre_nms_topk: candidates per image entering NMS.

    Returns:
        ``B`` dicts with ``boxes`` ``[K, 4]`` xyxy input pixels, ``scores`` ``[K]`` by decreasing score and
        ``labels`` ``[K]`` int64.
    """
    if nms_kind not in NMS_KINDS:
        raise ValueError(f"nms_kind must be one of {NMS_KINDS}, got {nms_kind!r}")
    if decoded.ndim != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded must have shape [B, N, 5+C] with C >= 1, got {list(decoded.shape)}")
    batch, num_boxes, _ = decoded.shape
    num_classes = decoded.shape[-1] - 5
    device = decoded.device

    class_scores = decoded[..., 4:5] * decoded[..., 5:]  # [B, N, C]
    if multi_label:
        flat = class_scores.flatten(1)  # [B, N*C], index = box * C + class
        top_scores, top_flat = flat.topk(min(pre_nms_topk, flat.shape[1]), dim=1)
        top_box, top_label = top_flat // num_classes, top_flat % num_classes
    else:
        best_scores, best_labels = class_scores.max(-1)  # [B, N]
        top_scores, top_box = best_scores.topk(min(pre_nms_topk, num_boxes), dim=1)
        top_label = best_labels.gather(1, top_box)

    image_idx, slot = (top_scores > score_thresh).nonzero(as_tuple=True)  # candidates, image-major
    box_idx = top_box[image_idx, slot]
    boxes = decoded[image_idx, box_idx, :4]
    scores = top_scores[image_idx, slot]
    labels = top_label[image_idx, slot]

    groups = image_idx if class_agnostic else image_idx * num_classes + labels
    if nms_kind == "diou":
        keep = diou_nms(boxes, scores, groups, nms_iou_thresh, beta=beta_nms)
    else:
        keep = batched_nms(boxes, scores, groups, nms_iou_thresh)

    # keep is by decreasing score; a stable sort by image keeps that order inside each image
    keep = keep[torch.sort(image_idx[keep], stable=True).indices]
    kept_image = image_idx[keep]
    counts = torch.bincount(kept_image, minlength=batch)
    first_of_image = counts.cumsum(0) - counts
    rank = torch.arange(keep.numel(), device=device) - first_of_image[kept_image]
    keep = keep[rank < max_det]
    counts = counts.clamp(max=max_det)

    sizes = counts.tolist()
    per_image = zip(boxes[keep].split(sizes), scores[keep].split(sizes), labels[keep].split(sizes), strict=True)
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in per_image]
