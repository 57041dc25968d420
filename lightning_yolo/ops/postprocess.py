"""Raw head maps -> decoded boxes and probabilities -> per-image detections, and the inference defaults.

``decode_outputs`` is pure tensor code (no data-dependent Python branches) and exports to ONNX with dynamic batch,
height and width. ``postprocess`` (score filter, top-k, NMS, ``max_det``) produces data-dependent shapes and
runs eagerly. Its pieces, :func:`select_candidates` (score and the ``max_nms`` best per image), :func:`nms_groups`
with :func:`~lightning_yolo.ops.nms.group_offset_boxes` (the class offset) and :func:`cap_per_image` (the
``max_det`` best kept per image), are traceable and build the exported graph as well
(:func:`lightning_yolo.inference.export.postprocess_padded`), so export and eager inference cannot drift apart.

Inference settings: :class:`InferenceCfg`, the one list of the knobs (and :data:`DEFAULTS`, its default instance,
which every other default in the package reads). ``YOLOModule(inference=...)`` holds one; on the command line it is
the nested group ``--model.inference.*``, in YAML ``model: inference: {...}``:

=====================  ========  =================================================================================
setting                default   used by
=====================  ========  =================================================================================
``score_thresh``       0.25      predict (``YOLOPredictor``, ``load_predictor``, ``lightning-yolo predict``), export
``max_det``            300       detections per image for predict and export
``val_score_thresh``   0.001     validation / test mAP (COCO protocol)
``val_max_det``        100       detections per image for validation / test (COCO ``maxDets``)
``nms_iou_thresh``     0.6       NMS everywhere (IoU for greedy, ``IoU - R_diou^beta`` for DIoU-NMS)
``nms_kind``           diou      eager NMS (darknet ``diounms``); the exported graph is always greedy
``beta_nms``           0.6       DIoU-NMS distance exponent (darknet ``beta_nms``)
``max_nms``            3000      candidates per image entering NMS (best by score), eager and export
=====================  ========  =================================================================================

A threshold the user sets is passed through as given (never floored at the default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..settings import Settings
from .boxes import cxcywh_to_xyxy, decode_boxes_cxcywh, make_grid, scale_boxes_to_original
from .nms import batched_nms, diou_nms

__all__ = [
    "DEFAULTS",
    "DEFAULT_IMG_SIZE",
    "InferenceCfg",
    "NMS_KINDS",
    "cap_per_image",
    "decode_outputs",
    "detections_to_original",
    "nms_groups",
    "postprocess",
    "select_candidates",
]

#: ``postprocess(nms_kind=...)`` values: ``"diou"`` (darknet ``nms_kind=diounms``) or ``"greedy"`` (IoU NMS).
NMS_KINDS: tuple[str, ...] = ("diou", "greedy")


@dataclass(frozen=True)
class InferenceCfg(Settings):
    """The inference settings of a model: thresholds, NMS, detection caps (table in the module docstring).

    Each threshold has one name everywhere: the predict threshold is ``score_thresh``
    (``--model.inference.score_thresh``, ``YOLOPredictor(score_thresh=)``, ``load_predictor(path, score_thresh=)``,
    ``lightning-yolo export --score_thresh``),
    the validation / test threshold ``val_score_thresh`` (``--model.inference.val_score_thresh``); likewise
    ``max_det`` and ``val_max_det``. A :class:`~lightning_yolo.models.predictor.YOLOPredictor` runs one of the two
    sets: :meth:`predictor_settings` gives its arguments. NMS settings are shared: validation measures the NMS that
    predict runs.

    Attributes:
        score_thresh: smallest ``objectness * class probability`` reported by predict and export.
        max_det: detections per image, predict and export.
        val_score_thresh: smallest score entering the mAP of validation / test (COCO protocol: 0.001).
        val_max_det: detections per image, validation / test (COCO scores 100).
        nms_iou_thresh: NMS threshold.
        nms_kind: eager NMS kind, one of :data:`NMS_KINDS` (``"diou"``: darknet ``nms_kind=diounms``).
        beta_nms: DIoU-NMS exponent on the centre-distance penalty (darknet ``beta_nms``).
        max_nms: candidates per image entering NMS, the best by score.
    """

    _what = "inference setting"  # in the error for an unknown name (not a field: no annotation)

    score_thresh: float = 0.25
    max_det: int = 300
    val_score_thresh: float = 0.001
    val_max_det: int = 100
    nms_iou_thresh: float = 0.6
    nms_kind: str = "diou"
    beta_nms: float = 0.6
    max_nms: int = 3000

    def __post_init__(self) -> None:
        if self.nms_kind not in NMS_KINDS:
            raise ValueError(f"nms_kind must be one of {NMS_KINDS}, got {self.nms_kind!r}")
        for name in ("score_thresh", "val_score_thresh", "nms_iou_thresh"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        for name in ("max_det", "val_max_det", "max_nms"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    def predictor_settings(self, stage: str = "predict") -> dict[str, float | int | str]:
        """``YOLOPredictor`` arguments of ``stage``: ``"predict"`` (``score_thresh``, ``max_det``) or ``"val"``
        (``val_score_thresh``, ``val_max_det``), with the shared NMS settings."""
        if stage not in ("predict", "val"):
            raise ValueError(f"stage must be 'predict' or 'val', got {stage!r}")
        prefix = "val_" if stage == "val" else ""
        return {
            "score_thresh": getattr(self, f"{prefix}score_thresh"),
            "max_det": getattr(self, f"{prefix}max_det"),
            "nms_iou_thresh": self.nms_iou_thresh,
            "nms_kind": self.nms_kind,
            "beta_nms": self.beta_nms,
            "max_nms": self.max_nms,
        }


#: The default settings, read by every default in the package.
DEFAULTS = InferenceCfg()

#: The default network input side (the DataModule's ``img_size``, the predictor's letterbox, export's example input,
#: ``lightning-yolo anchors --img_size``), as YOLOv5's.
DEFAULT_IMG_SIZE = 640


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


def select_candidates(
    decoded: torch.Tensor, max_nms: int, multi_label: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate selection: ``score = objectness * class probability``, the ``max_nms`` best per image.

    Args:
        decoded: ``[B, N, 5+C]`` from :func:`decode_outputs`.
        max_nms: candidates kept per image (fewer when the image has fewer).
        multi_label: every (box, class) pair is a candidate, not only each box's best class.

    Returns:
        ``(scores, box_index, label)``, each ``[B, K]``, by decreasing score per image; ``box_index`` indexes ``N``.
    """
    num_boxes, num_classes = decoded.shape[1], decoded.shape[2] - 5
    class_scores = decoded[..., 4:5] * decoded[..., 5:]  # [B, N, C]
    if multi_label:
        flat = class_scores.flatten(1)  # [B, N*C], index = box * C + class
        scores, top_flat = flat.topk(min(int(max_nms), num_boxes * num_classes), dim=1)
        box_index = torch.div(top_flat, num_classes, rounding_mode="floor")
        return scores, box_index, top_flat - box_index * num_classes
    best_scores, best_labels = class_scores.max(-1)  # [B, N]
    scores, box_index = best_scores.topk(min(int(max_nms), num_boxes), dim=1)
    return scores, box_index, best_labels.gather(1, box_index)


def nms_groups(image_idx: torch.Tensor, labels: torch.Tensor, num_classes: int, class_agnostic: bool) -> torch.Tensor:
    """NMS group of each candidate: ``image * C + class`` (images and classes never suppress each other), or
    ``image`` when ``class_agnostic``."""
    return image_idx if class_agnostic else image_idx * num_classes + labels


def cap_per_image(
    kept: torch.Tensor, scores: torch.Tensor, max_det: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``max_det`` best kept candidates of each image, in fixed-size form.

    Args:
        kept: flat indices into ``scores.flatten()`` of the candidates NMS kept.
        scores: ``[B, K]`` candidate scores (:func:`select_candidates`).
        max_det: rows per image.

    Returns:
        ``(scores [B, D], slot [B, D], valid [B, D])`` with ``D = min(max_det, K)``: per image the kept candidates by
        decreasing score first (``valid``), then the rest; ``slot`` indexes ``K``.
    """
    mask = torch.zeros_like(scores.reshape(-1)).scatter(0, kept, torch.ones_like(kept, dtype=scores.dtype))
    # kept candidates keep their score (>= 0), the rest sort below every kept one
    ranked = torch.where(mask.view_as(scores) > 0, scores, torch.full_like(scores, -1.0))
    top, slot = ranked.topk(min(int(max_det), scores.shape[1]), dim=1)
    return top, slot, top >= 0


def postprocess(
    decoded: torch.Tensor,
    score_thresh: float = DEFAULTS.score_thresh,
    nms_iou_thresh: float = DEFAULTS.nms_iou_thresh,
    nms_kind: str = DEFAULTS.nms_kind,
    beta_nms: float = DEFAULTS.beta_nms,
    class_agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = DEFAULTS.max_det,
    pre_nms_topk: int = DEFAULTS.max_nms,
) -> list[dict[str, torch.Tensor]]:
    """Score filter, top-k, NMS and ``max_det`` over a batch of decoded predictions.

    ``score = objectness * class probability``. With ``multi_label`` every (box, class) pair above ``score_thresh``
    is a candidate (COCO evaluation practice), otherwise only each box's best class. Per image the
    ``pre_nms_topk`` best candidates enter NMS (:func:`select_candidates`). NMS runs once over the whole batch:
    groups are ``image * num_classes + class`` (class-aware) or ``image`` (``class_agnostic``), so images never
    suppress each other (:func:`nms_groups`). Then the ``max_det`` best per image (:func:`cap_per_image`).

    Args:
        decoded: ``[B, N, 5+C]`` from :func:`decode_outputs` (xyxy input pixels, objectness, class probabilities).
        score_thresh: keep candidates with score > this.
        nms_iou_thresh: NMS threshold (on IoU for ``"greedy"``, on ``IoU - R_diou^beta`` for ``"diou"``).
        nms_kind: ``"diou"`` (YOLOv4, darknet ``nms_kind=diounms``) or ``"greedy"``.
        beta_nms: DIoU-NMS exponent (darknet ``beta_nms=0.6``).
        class_agnostic: one NMS across classes of an image.
        multi_label: allow several classes per box.
        max_det: detections kept per image, by decreasing score.
        pre_nms_topk: candidates per image entering NMS (``max_nms``).

    Returns:
        ``B`` dicts with ``boxes`` ``[K, 4]`` xyxy input pixels, ``scores`` ``[K]`` by decreasing score and
        ``labels`` ``[K]`` int64.
    """
    if nms_kind not in NMS_KINDS:
        raise ValueError(f"nms_kind must be one of {NMS_KINDS}, got {nms_kind!r}")
    if decoded.ndim != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded must have shape [B, N, 5+C] with C >= 1, got {list(decoded.shape)}")
    num_classes = decoded.shape[-1] - 5

    top_scores, top_box, top_label = select_candidates(decoded, pre_nms_topk, multi_label)  # [B, K]
    num_cand = top_scores.shape[1]
    all_boxes = decoded[..., :4].gather(1, top_box.unsqueeze(-1).expand(-1, -1, 4))  # [B, K, 4]
    cand = (top_scores.reshape(-1) > score_thresh).nonzero().squeeze(1)  # flat [B * K] indices, image-major
    image_idx = torch.div(cand, num_cand, rounding_mode="floor")
    boxes = all_boxes.reshape(-1, 4)[cand]
    scores = top_scores.reshape(-1)[cand]
    groups = nms_groups(image_idx, top_label.reshape(-1)[cand], num_classes, class_agnostic)
    if nms_kind == "diou":
        # only the max_det best kept boxes of each image are returned: NMS stops there (same result, less work)
        keep = diou_nms(
            boxes, scores, groups, nms_iou_thresh, beta=beta_nms, segments=image_idx, max_per_segment=max_det
        )
    else:
        keep = batched_nms(boxes, scores, groups, nms_iou_thresh)

    out_scores, slot, valid = cap_per_image(cand[keep], top_scores, max_det)
    counts = valid.sum(1).tolist()
    out_boxes = all_boxes.gather(1, slot.unsqueeze(-1).expand(-1, -1, 4))[valid].split(counts)
    out_labels = top_label.gather(1, slot)[valid].split(counts)
    per_image = zip(out_boxes, out_scores[valid].split(counts), out_labels, strict=True)
    return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in per_image]


def detections_to_original(
    det: dict[str, torch.Tensor],
    ratio: float | torch.Tensor,
    pad: tuple[float, float] | torch.Tensor,
    orig_size: tuple[int, int] | torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One image's detections mapped from the letterboxed input back to the original image, degenerate boxes dropped.

    Boxes are mapped with :func:`~lightning_yolo.ops.boxes.scale_boxes_to_original` (clipped to the image). A box
    that lies entirely in the letterbox padding clips to zero width or height: it shows nothing of the image, so
    it is dropped here, the one step that Python ``predict``, ``Trainer.predict`` (the CLI) and validation share,
    so every path returns the same boxes.

    Args:
        det: ``boxes`` ``[K, 4]`` xyxy input pixels, ``scores`` ``[K]``, ``labels`` ``[K]`` (other keys kept as
            they are).
        ratio, pad, orig_size: the letterbox of the image (see ``scale_boxes_to_original``).

    Returns:
        A new dict with ``boxes`` ``[K', 4]`` xyxy original pixels, ``scores`` ``[K']``, ``labels`` ``[K']``,
        ``K' <= K``, order kept.
    """
    boxes = scale_boxes_to_original(det["boxes"], ratio, pad, orig_size)
    visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    out = dict(det)
    out.update(boxes=boxes[visible], scores=det["scores"][visible], labels=det["labels"][visible])
    return out
