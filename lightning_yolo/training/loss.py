"""The YOLOv4 detection loss: box (IoU / GIoU / DIoU / CIoU), objectness and class terms.

Matching follows darknet's ``[yolo]`` layer (see :mod:`.assigner`): best anchor plus every anchor above
``iou_thresh``, and no objectness penalty for unassigned predictions that overlap a ground truth above
``ignore_thresh``. The reductions are means, so the loss does not grow with the batch size, the image size or
the number of objects (darknet sums every delta and divides the learning rate by the batch instead):

* ``box``: mean over assigned predictions of ``1 - IoU_kind(pred, target)`` (darknet ``iou_loss=ciou``).
* ``obj``: per level, binary cross-entropy averaged over the cells and anchors that are not ignored,
  weighted per level by ``level_obj_weights`` and summed over levels.
* ``cls``: per assigned prediction, binary cross-entropy summed over the ``C`` classes (darknet computes one
  delta per class), averaged over assigned predictions; the per-logit signal does not shrink as ``C`` grows.

``loss = box_weight * box + obj_weight * obj + cls_weight * cls``; the dict returned by ``forward`` holds the
three weighted terms (``loss`` is exactly their sum, so one ``backward()`` of ``loss`` equals the sum of
separate backwards of the terms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.anchors import AnchorSet
from ..ops.boxes import cxcywh_to_xyxy, decode_boxes_cxcywh, make_grid
from ..ops.iou import IOU_KINDS, elementwise_box_iou
from .assigner import _assign_flat, _pad_flat, concat_targets, ignore_mask

__all__ = ["YOLOLoss", "BOX_LOSSES"]

#: ``box_loss`` choices (darknet ``iou_loss=``).
BOX_LOSSES: tuple[str, ...] = IOU_KINDS



#: YOLOv5's objectness ``balance`` by level stride (its 3-level (4.0, 1.0, 0.4) and 4-level extension).
STRIDE_OBJ_WEIGHTS = {8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1}


def _stride_obj_weights(mode: str, strides: Sequence[float]) -> tuple[float, ...]:
    if mode != "stride":
        raise ValueError(f"level_obj_weights must be a sequence, None or 'stride', got {mode!r}")
    missing = [int(s) for s in strides if int(s) not in STRIDE_OBJ_WEIGHTS]
    if missing:
        raise ValueError(
            f"level_obj_weights='stride' knows strides {sorted(STRIDE_OBJ_WEIGHTS)}, not {missing}; pass one weight "
            "per level"
        )
    return tuple(STRIDE_OBJ_WEIGHTS[int(s)] for s in strides)


class YOLOLoss(nn.Module):
    """YOLOv4 loss on the raw head maps.

    Args:
        num_classes: number of classes ``C``.
        anchors: the model's :class:`~lightning_yolo.models.anchors.AnchorSet`; its anchors, strides and
            ``scale_x_y`` are copied into non-persistent buffers (they move with ``.to()`` and stay out of
            ``state_dict``, where the model already stores them).
        box_loss: ``"ciou"`` (darknet yolov4.cfg ``iou_loss=ciou``), ``"diou"``, ``"giou"`` or ``"iou"``.
        iou_thresh: extra anchors per ground truth above this shape IoU (darknet ``iou_thresh=0.213``).
        ignore_thresh: unassigned predictions overlapping a ground truth above this IoU get no objectness
            penalty (darknet ``ignore_thresh=0.7``).
        label_smoothing: ``eps`` of class label smoothing; class targets become ``1 - eps/2`` and ``eps/2``
            (darknet ``label_smooth_eps``: ``y * (1 - eps) + eps / 2``, i.e. the paper's ``y(1-eps) + eps/K`` with
            ``K = 2`` outcomes per sigmoid class).
        focal_gamma: focal-loss ``gamma`` on objectness (Lin et al. 2017); ``0`` is plain BCE (darknet default).
        focal_alpha: focal-loss ``alpha`` (weight of positives) when ``focal_gamma > 0``; ``None`` disables it.
        obj_iou_ratio: objectness target of an assigned prediction is ``(1 - r) + r * IoU(pred, gt).detach()``;
            ``0`` gives darknet's target 1, ``1`` pure IoU-aware objectness (Scaled-YOLOv4 / YOLOv5 ``gr=1``).
            The default 0.5 keeps positives' targets >= 0.5 while IoUs are still low early in training, and ranks
            the better-fitting of the several anchors a ground truth gets (``iou_thresh``) first, so NMS keeps
            it: overfitting one synthetic batch (``cls_weight=0.5``, AdamW 2e-3), the worst recovered box had IoU
            0.54 / 0.84 / 0.82 (3 seeds) with ``r = 0``, 0.89 / 0.89 / 0.88 with ``r = 0.5`` and 0.88 / 0.88 / 0.90
            with ``r = 1``.
        box_weight: weight of ``box`` (darknet ``iou_normalizer=0.07`` for summed deltas; see the note below).
        obj_weight: weight of ``obj`` (darknet ``obj_normalizer=1.0``).
        cls_weight: weight of ``cls`` (darknet ``cls_normalizer=1.0`` on summed deltas; see the note below).
        level_obj_weights: per level multipliers of the objectness term, finest first; ``None`` weighs the
            levels equally. The default ``"stride"`` gives each level the weight of its stride in YOLOv5's
            ``balance`` (stride 8: 4.0, 16: 1.0, 32: 0.4, 64: 0.1), so (4.0, 1.0, 0.4) for strides 8/16/32 and
            (1.0, 0.4) for yolov4-tiny's 16/32; it offsets the mean over the many cells of the fine maps, where a
            positive would otherwise weigh 16x less on stride 8 than on stride 32.
        neighbour_cells: also assign the neighbouring cells that can reach the centre (see :mod:`.assigner`).
        obj_ref_size: when set, each level's objectness mean is scaled by ``input area / obj_ref_size**2`` so a
            positive cell weighs the same at every input size (YOLOv5's ``obj *= (imgsz / 640) ** 2``); ``None``: a
            plain mean over cells.

    Note on the weights: darknet sums every delta (``iou_normalizer=0.07`` per box, ``cls_normalizer=1.0`` per
    class logit, 1.0 per objectness cell) and divides the learning rate by the batch. With mean reductions the
    objectness term is already divided by the number of cells, so those normalisers cannot be used as they
    are. ``box_weight=0.05`` and ``obj_weight=1.0`` with the level balance (4.0, 1.0, 0.4) are the gains
    YOLOv5 evolved for these mean reductions (its ``hyp.scratch``, shared by the Scaled-YOLOv4 PyTorch code); its
    class gain (0.5 on a mean over classes, times ``C / 80``) is ``0.5 / 80 = 0.006`` in this file's
    sum-over-classes form. Measured by overfitting one synthetic batch (4 images of 128 px, ``yolov4_pico``, AdamW 6e-3, warmup
    + cosine, 200 steps, 4 seeds), the mean worst-box IoU for ``cls_weight`` 0.5 / 0.1 / 0.02 / 0.006 was
    0.895 / 0.893 / 0.936 / 0.908 (every box correctly classified at all four), and ``box_weight`` 0.1 gave
    0.902; hence 0.02.

    The loss is a mean over the batch, not a sum: with SGD the learning rate that matches a loss summed over
    the batch (darknet; YOLOv5 multiplies by the batch size) is that rate times the batch size. In the same
    overfitting run (``cls_weight=0.5``, constant rates) SGD with momentum 0.937 needed lr 0.2 where AdamW needed
    2e-3; SGD at lr 0.01 left the loss at 11% of its start and missed boxes.

    ``forward(raw_maps, targets) -> dict(box, obj, cls, loss)`` with scalar float32 tensors.
    """

    anchors: torch.Tensor
    strides: torch.Tensor
    scale_x_y: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        anchors: AnchorSet,
        box_loss: str = "ciou",
        iou_thresh: float = 0.213,
        ignore_thresh: float = 0.7,
        label_smoothing: float = 0.0,
        focal_gamma: float = 0.0,
        focal_alpha: float | None = 0.25,
        obj_iou_ratio: float = 0.5,
        box_weight: float = 0.05,
        obj_weight: float = 1.0,
        cls_weight: float = 0.02,
        level_obj_weights: Sequence[float] | str | None = "stride",
        neighbour_cells: bool = False,
        obj_ref_size: float | None = None,
    ) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if not isinstance(anchors, AnchorSet):
            raise TypeError(f"anchors must be an AnchorSet (model.anchors), got {type(anchors).__name__}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma!r}")
        if focal_alpha is not None and not 0.0 < focal_alpha < 1.0:
            raise ValueError(f"focal_alpha must be in (0, 1) or None, got {focal_alpha!r}")
        if not 0.0 <= obj_iou_ratio <= 1.0:
            raise ValueError(f"obj_iou_ratio must be in [0, 1], got {obj_iou_ratio!r}")
        for name, w in (("box_weight", box_weight), ("obj_weight", obj_weight), ("cls_weight", cls_weight)):
            if w < 0:
                raise ValueError(f"{name} must be >= 0, got {w!r}")
        num_levels = anchors.num_levels
        if level_obj_weights is None:
            level_obj_weights = (1.0,) * num_levels
        elif isinstance(level_obj_weights, str):
            level_obj_weights = _stride_obj_weights(level_obj_weights, anchors.strides.tolist())
        level_obj_weights = tuple(float(w) for w in level_obj_weights)
        if len(level_obj_weights) != num_levels:
            raise ValueError(f"level_obj_weights needs {num_levels} values (one per level), got {level_obj_weights}")

        self.num_classes = int(num_classes)
        self.box_loss = box_loss
        self.iou_thresh = float(iou_thresh)
        self.ignore_thresh = float(ignore_thresh)
        self.label_smoothing = float(label_smoothing)
        self.focal_gamma = float(focal_gamma)
        self.focal_alpha = focal_alpha
        self.obj_iou_ratio = float(obj_iou_ratio)
        self.box_weight = float(box_weight)
        self.obj_weight = float(obj_weight)
        self.cls_weight = float(cls_weight)
        self.level_obj_weights = level_obj_weights
        self.neighbour_cells = bool(neighbour_cells)
        self.obj_ref_size = None if obj_ref_size in (None, 0) else float(obj_ref_size)
        self._level_strides = tuple(float(s) for s in anchors.strides.tolist())  # Python numbers: no device sync
        self.register_buffer("anchors", anchors.anchors.detach().clone().float(), persistent=False)
        self.register_buffer("strides", anchors.strides.detach().clone().float(), persistent=False)
        self.register_buffer("scale_x_y", anchors.scale_x_y.detach().clone().float(), persistent=False)

    @property
    def num_levels(self) -> int:
        return int(self.anchors.shape[0])

    @property
    def anchors_per_level(self) -> int:
        return int(self.anchors.shape[1])

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, box_loss={self.box_loss!r}, iou_thresh={self.iou_thresh}, "
            f"ignore_thresh={self.ignore_thresh}, label_smoothing={self.label_smoothing}, "
            f"focal_gamma={self.focal_gamma}, obj_iou_ratio={self.obj_iou_ratio}, box_weight={self.box_weight}, "
            f"obj_weight={self.obj_weight}, cls_weight={self.cls_weight}, level_obj_weights={self.level_obj_weights}"
        )

    def _check_maps(self, raw_maps: Sequence[torch.Tensor]) -> int:
        if not isinstance(raw_maps, list | tuple) or len(raw_maps) != self.num_levels:
            got = len(raw_maps) if isinstance(raw_maps, list | tuple) else type(raw_maps).__name__
            raise ValueError(f"raw_maps must be a list of {self.num_levels} level maps, got {got}")
        channels = self.anchors_per_level * (5 + self.num_classes)
        batch = None
        for level, m in enumerate(raw_maps):
            if not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[1] != channels:
                got = list(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(
                    f"raw_maps[{level}] must have shape [B, {self.anchors_per_level}*(5+{self.num_classes})="
                    f"{channels}, H, W], got {got}"
                )
            if batch is None:
                batch = int(m.shape[0])
            elif m.shape[0] != batch:
                raise ValueError(f"raw_maps[{level}] has batch size {m.shape[0]}, raw_maps[0] has {batch}")
        return int(batch)

    def _obj_bce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Element-wise objectness loss: BCE, optionally focal (``(1 - p_t)^gamma``, ``alpha_t``)."""
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.focal_gamma > 0:
            p = logits.sigmoid()
            p_t = target * p + (1 - target) * (1 - p)
            bce = bce * (1.0 - p_t).clamp(min=0).pow(self.focal_gamma)
            if self.focal_alpha is not None:
                bce = bce * (target * self.focal_alpha + (1 - target) * (1 - self.focal_alpha))
        return bce

    def forward(
        self, raw_maps: Sequence[torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            raw_maps: ``L`` tensors ``[B, A*(5+C), H_l, W_l]`` (``YOLOv4.forward`` output; any float dtype).
            targets: ``B`` dicts with ``"boxes"`` ``[N, 4]`` float xyxy input px, ``"labels"`` ``[N]`` int64 in
                ``0..C-1`` and optional ``"iscrowd"`` ``[N]`` bool (crowd boxes are not assigned; they still
                exempt overlapping predictions from the objectness penalty).

        Returns:
            ``{"box", "obj", "cls", "loss"}`` float32 scalars (float64 for float64 maps); ``loss = box + obj + cls``
            (the terms are already weighted).

        Raises:
            ValueError: wrong number or shape of maps, wrong number of targets, a target lacking ``"boxes"`` /
                ``"labels"``, wrong box / label shapes, or a label outside ``0..C-1``.
        """
        batch = self._check_maps(raw_maps)
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} target dicts for a batch of {batch} images")
        device = raw_maps[0].device
        num_anchors, num_classes = self.anchors_per_level, self.num_classes
        # float32, or float64 when the maps are (gradient checks); never a half type
        dtype = torch.float64 if raw_maps[0].dtype == torch.float64 else torch.float32
        anchors = self.anchors.to(device=device, dtype=dtype)
        strides = self.strides.to(device=device, dtype=dtype)
        scale_x_y = self.scale_x_y.to(device=device, dtype=dtype)

        flat = concat_targets(targets, device)
        bad = ((flat.labels < 0) | (flat.labels >= num_classes)) & ~flat.crowd
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"targets[{int(flat.batch_idx[i])}]['labels'][{int(flat.gt_index[i])}] = {int(flat.labels[i])} "
                f"is outside 0..{num_classes - 1} (num_classes={num_classes})"
            )

        # The loss runs in float32 even under bf16/fp16 autocast: exp/log/atan and grid offsets lose precision
        # in half types.
        with torch.autocast(device_type=device.type, enabled=False):
            maps = [m.to(dtype) for m in raw_maps]
            sizes = [(int(m.shape[2]), int(m.shape[3])) for m in maps]
            assign = _assign_flat(flat, anchors, strides, scale_x_y, sizes, self.iou_thresh, self.neighbour_cells)
            gt_boxes, gt_valid = _pad_flat(flat, batch)

            pred_boxes, target_boxes, cls_logits, cls_labels = [], [], [], []
            obj_terms = []
            for level, m in enumerate(maps):
                height, width = sizes[level]
                pred = m.view(batch, num_anchors, 5 + num_classes, height, width)
                at = assign.level == level
                b, a, gy, gx = assign.batch_idx[at], assign.anchor_idx[at], assign.grid_y[at], assign.grid_x[at]
                assigned = pred[b, a, :, gy, gx]  # [K_l, 5+C]
                grid = torch.stack((gx, gy), dim=1).to(dtype)
                boxes_cxcywh = decode_boxes_cxcywh(
                    assigned[:, :4], grid, anchors[level][a], strides[level], scale_x_y[level]
                )
                pred_boxes.append(cxcywh_to_xyxy(boxes_cxcywh))
                target_boxes.append(assign.boxes_xyxy[at])
                cls_logits.append(assigned[:, 5:])
                cls_labels.append(assign.labels[at])

                # Objectness target and the ignore mask over every anchor and cell of the level.
                obj_logits = pred[:, :, 4]  # [B, A, H, W]
                with torch.no_grad():
                    all_cxcywh = decode_boxes_cxcywh(
                        pred[:, :, :4].permute(0, 1, 3, 4, 2),
                        make_grid(height, width, device=device, dtype=dtype),
                        anchors[level].view(1, num_anchors, 1, 1, 2),
                        strides[level],
                        scale_x_y[level],
                    )
                    ignored = ignore_mask(
                        cxcywh_to_xyxy(all_cxcywh).reshape(batch, -1, 4), gt_boxes, gt_valid, self.ignore_thresh
                    ).view(batch, num_anchors, height, width)
                    obj_target = torch.zeros_like(obj_logits)
                    if self.obj_iou_ratio > 0:
                        iou = elementwise_box_iou(pred_boxes[-1], target_boxes[-1], "iou").clamp(min=0)
                        positive = ((1.0 - self.obj_iou_ratio) + self.obj_iou_ratio * iou).to(dtype)
                    else:
                        positive = torch.ones_like(gx, dtype=obj_target.dtype)
                    obj_target[b, a, gy, gx] = positive
                    ignored[b, a, gy, gx] = False
                    keep = (~ignored).to(obj_logits.dtype)
                obj_bce = self._obj_bce(obj_logits, obj_target)
                obj_mean = (obj_bce * keep).sum() / keep.sum().clamp(min=1.0)
                if self.obj_ref_size:
                    # a mean over the cells of this input size, as if over the cells of a ref_size x ref_size input:
                    # a positive weighs the same at every image size (YOLOv5 scales its gain by (imgsz / 640)^2)
                    obj_mean = obj_mean * (height * width * self._level_strides[level] ** 2 / self.obj_ref_size**2)
                obj_terms.append(self.level_obj_weights[level] * obj_mean)

            pred_xyxy = torch.cat(pred_boxes)
            num_assigned = max(int(pred_xyxy.shape[0]), 1)
            box = (1.0 - elementwise_box_iou(pred_xyxy, torch.cat(target_boxes), self.box_loss)).sum() / num_assigned

            logits = torch.cat(cls_logits)
            eps = self.label_smoothing
            cls_target = F.one_hot(torch.cat(cls_labels), num_classes).to(logits.dtype) * (1.0 - eps) + 0.5 * eps
            cls = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / num_assigned

            box = self.box_weight * box
            # 3 / levels: two-level models (yolov4_tiny) weigh objectness like three-level ones (YOLOv5: obj *= 3 / nl)
            obj = self.obj_weight * (3.0 / len(obj_terms)) * torch.stack(obj_terms).sum()
            cls = self.cls_weight * cls
            return {"box": box, "obj": obj, "cls": cls, "loss": box + obj + cls}
