"""The YOLOv4 detection loss: box (IoU / GIoU / DIoU / CIoU / MSE), objectness and class terms.

Matching follows darknet's ``[yolo]`` layer (see :mod:`.assigner`): best anchor plus every anchor above
``iou_thresh``, and no objectness penalty for unassigned predictions that overlap a ground truth above
``ignore_thresh``. The reductions are means, so the loss does not grow with the batch size, the image size or
the number of objects (darknet sums every delta and divides the learning rate by the batch instead):

* ``box``: mean over assigned predictions of ``1 - IoU_kind(pred, target)`` (darknet ``iou_loss=ciou``), or with
  ``box_loss="mse"`` of YOLOv3's coordinate loss (darknet ``iou_loss=mse``, the "MSE" row of the YOLOv4 paper's
  box-loss ablation): the squared errors of the offsets ``(t_x, t_y, t_w, t_h)``, summed over the four, weighted
  by ``2 - w * h`` (``w``, ``h`` of the ground truth relative to the input image, so small boxes count up to
  twice). ``t_x, t_y`` are the decoded centre's offset in its cell (``sigmoid(raw) * s - (s - 1) / 2``, with the
  grid-sensitivity ``s = scale_x_y``) against the ground truth's (``cx / stride - cell``); ``t_w, t_h`` the raw
  outputs against ``log(w_gt / w_anchor)``, ``log(h_gt / h_anchor)``. darknet's gradient is ``scale * (target -
  pred)``: this loss's, up to the factor 2. Its scale differs from ``1 - IoU`` (0 to 2), so ``box_weight``
  tuned for the IoU losses may need retuning.
* ``obj``: per level, binary cross-entropy averaged over the cells and anchors that are not ignored,
  weighted per level by ``level_obj_weights`` and summed over levels. With ``hard_negative_ratio = r > 0``
  (online hard example mining, SSD: Liu et al. 2016) only the positives and, per image, the ``ceil(r * P)``
  negatives with the largest objectness loss count, ``P`` being the image's assigned predictions over all
  levels; the per-level means are then over those cells (an image without ground truth contributes no
  negatives).
* ``cls``: per assigned prediction, binary cross-entropy summed over the ``C`` classes (darknet computes one
  delta per class), averaged over assigned predictions; the per-logit signal does not shrink as ``C`` grows.

``loss = box_weight * box + obj_weight * obj + cls_weight * cls``; the dict returned by ``forward`` holds the
three weighted terms (``loss`` is exactly their sum, so one ``backward()`` of ``loss`` equals the sum of
separate backwards of the terms).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.anchors import AnchorSet
from ..ops.boxes import cxcywh_to_xyxy, decode_boxes_cxcywh, make_grid
from ..ops.iou import elementwise_box_iou
from .assigner import assign_targets, concat_targets, ignore_mask, pad_targets
from .config import BOX_LOSSES, LossCfg

__all__ = ["YOLOLoss", "BOX_LOSSES", "LossCfg"]


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
        anchors: the network's :class:`~lightning_yolo.models.anchors.AnchorSet` (``model.anchors``), held by
            reference and read at every call: the anchors have one home, the network's buffers, so a loaded
            checkpoint, :class:`~lightning_yolo.callbacks.AutoAnchor` or ``set_anchors`` change what the loss uses
            with nothing to keep in step. Not a submodule of the loss: it stays out of the loss's ``state_dict``
            and ``.to()``, which belong to the network.
        cfg: the loss settings (:class:`~lightning_yolo.training.config.LossCfg`, one docstring per field);
            ``None``: the defaults.
        **overrides: fields of ``cfg`` to replace, e.g. ``YOLOLoss(4, model.anchors, box_loss="diou")``.

    Notes on the defaults (measured): ``obj_iou_ratio=0.5`` keeps positives' targets >= 0.5 while IoUs are still
    low early in training, and ranks the better-fitting of the several anchors a ground truth gets first, so NMS
    keeps it: overfitting one synthetic batch (``cls_weight=0.5``, AdamW 2e-3), the worst recovered box had IoU
    0.54 / 0.84 / 0.82 (3 seeds) with ``r = 0``, 0.89 / 0.89 / 0.88 with ``r = 0.5`` and 0.88 / 0.88 / 0.90 with
    ``r = 1``. ``level_obj_weights="stride"`` offsets the mean over the many cells of the fine maps, where a
    positive would otherwise weigh 16x less on stride 8 than on stride 32.

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

    anchor_set: AnchorSet

    def __init__(self, num_classes: int, anchors: AnchorSet, cfg: LossCfg | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = LossCfg.coerce(cfg).replace(**overrides)  # validates every field
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        if not isinstance(anchors, AnchorSet):
            raise TypeError(f"anchors must be an AnchorSet (model.anchors), got {type(anchors).__name__}")
        num_levels = anchors.num_levels
        level_obj_weights = cfg.level_obj_weights
        if level_obj_weights is None:
            level_obj_weights = (1.0,) * num_levels
        elif isinstance(level_obj_weights, str):
            level_obj_weights = _stride_obj_weights(level_obj_weights, anchors.strides.tolist())
        level_obj_weights = tuple(float(w) for w in level_obj_weights)
        if len(level_obj_weights) != num_levels:
            raise ValueError(f"level_obj_weights needs {num_levels} values (one per level), got {level_obj_weights}")

        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.box_loss = cfg.box_loss
        self.iou_thresh = float(cfg.iou_thresh)
        self.ignore_thresh = float(cfg.ignore_thresh)
        self.label_smoothing = float(cfg.label_smoothing)
        self.focal_gamma = float(cfg.focal_gamma)
        self.focal_alpha = cfg.focal_alpha
        self.obj_iou_ratio = float(cfg.obj_iou_ratio)
        self.box_weight = float(cfg.box_weight)
        self.obj_weight = float(cfg.obj_weight)
        self.cls_weight = float(cfg.cls_weight)
        self.level_obj_weights = level_obj_weights
        self.neighbour_cells = bool(cfg.neighbour_cells)
        self.obj_ref_size = None if cfg.obj_ref_size in (None, 0) else float(cfg.obj_ref_size)
        self.hard_negative_ratio = float(cfg.hard_negative_ratio)
        self._level_strides = tuple(float(s) for s in anchors.strides.tolist())  # Python numbers: no device sync
        # a plain attribute, not nn.Module.__setattr__: no submodule registration (see the class docstring)
        object.__setattr__(self, "anchor_set", anchors)

    @property
    def anchors(self) -> torch.Tensor:
        """``[L, A, 2]`` anchor ``(w, h)`` in input pixels: the network's buffer itself."""
        return self.anchor_set.anchors

    @property
    def strides(self) -> torch.Tensor:
        """``[L]`` level strides (the network's buffer)."""
        return self.anchor_set.strides

    @property
    def scale_x_y(self) -> torch.Tensor:
        """``[L]`` grid-sensitivity factors (the network's buffer)."""
        return self.anchor_set.scale_x_y

    @property
    def num_levels(self) -> int:
        """Output levels of the network (its ``AnchorSet``)."""
        return self.anchor_set.num_levels

    @property
    def anchors_per_level(self) -> int:
        """Anchors per level of the network (its ``AnchorSet``)."""
        return self.anchor_set.anchors_per_level

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, box_loss={self.box_loss!r}, iou_thresh={self.iou_thresh}, "
            f"ignore_thresh={self.ignore_thresh}, label_smoothing={self.label_smoothing}, "
            f"focal_gamma={self.focal_gamma}, obj_iou_ratio={self.obj_iou_ratio}, box_weight={self.box_weight}, "
            f"obj_weight={self.obj_weight}, cls_weight={self.cls_weight}, level_obj_weights={self.level_obj_weights}, "
            f"hard_negative_ratio={self.hard_negative_ratio}"
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

    def _mse_box(
        self,
        raw: torch.Tensor,
        grid: torch.Tensor,
        anchor_wh: torch.Tensor,
        scale_x_y: torch.Tensor,
        target_xyxy: torch.Tensor,
        stride: float,
        image_hw: tuple[float, float],
    ) -> torch.Tensor:
        """YOLOv3's coordinate loss per assigned prediction (``[K]``); see the module docstring."""
        xy = raw[:, :2].sigmoid() * scale_x_y - 0.5 * (scale_x_y - 1.0)
        target_wh = (target_xyxy[:, 2:] - target_xyxy[:, :2]).clamp(min=1e-6)
        target_xy = (target_xyxy[:, :2] + 0.5 * target_wh) / stride - grid
        target_twh = (target_wh / anchor_wh).log()
        err = (xy - target_xy).square().sum(1) + (raw[:, 2:4] - target_twh).square().sum(1)
        return (2.0 - target_wh.prod(1) / (image_hw[0] * image_hw[1])) * err

    def _hard_negatives(
        self, obj_bce: list[torch.Tensor], keep: list[torch.Tensor], pos: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per level ``keep`` masks holding the positives and each image's ``ceil(r * P)`` hardest negatives.

        All levels of an image are ranked together by their (detached) objectness loss: one sort per batch.
        """
        batch = int(obj_bce[0].shape[0])
        flat_keep = torch.cat([k.reshape(batch, -1) for k in keep], 1) > 0
        flat_pos = torch.cat([p.reshape(batch, -1) for p in pos], 1)
        negative = flat_keep & ~flat_pos
        score = torch.cat([b.detach().reshape(batch, -1) for b in obj_bce], 1).masked_fill(~negative, -float("inf"))
        order = score.sort(dim=1, descending=True, stable=True).indices
        positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(1, order, positions)  # rank[i, j]: place of cell j in image i
        quota = (flat_pos.sum(1, keepdim=True) * self.hard_negative_ratio).ceil()
        chosen = (flat_pos | (negative & (rank < quota))).to(keep[0].dtype)
        return [c.view_as(k) for c, k in zip(chosen.split([k[0].numel() for k in keep], 1), keep)]

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
            assign = assign_targets(flat, anchors, strides, scale_x_y, sizes, self.iou_thresh, self.neighbour_cells)
            gt_boxes, gt_valid = pad_targets(flat)

            pred_boxes, target_boxes, cls_logits, cls_labels = [], [], [], []
            mse_terms: list[torch.Tensor] = []
            obj_bces, obj_keeps, obj_pos = [], [], []
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
                if self.box_loss == "mse":
                    stride = self._level_strides[level]
                    hw = (height * stride, width * stride)
                    mse_terms.append(
                        self._mse_box(
                            assigned[:, :4], grid, anchors[level][a], scale_x_y[level], target_boxes[-1], stride, hw
                        )
                    )
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
                    if self.hard_negative_ratio > 0:
                        is_pos = torch.zeros_like(ignored)
                        is_pos[b, a, gy, gx] = True
                        obj_pos.append(is_pos)
                obj_bces.append(self._obj_bce(obj_logits, obj_target))
                obj_keeps.append(keep)

            if self.hard_negative_ratio > 0:
                with torch.no_grad():
                    obj_keeps = self._hard_negatives(obj_bces, obj_keeps, obj_pos)
            obj_terms = []
            for level, (obj_bce, keep) in enumerate(zip(obj_bces, obj_keeps)):
                obj_mean = (obj_bce * keep).sum() / keep.sum().clamp(min=1.0)
                if self.obj_ref_size:
                    # a mean over the cells of this input size, as if over the cells of a ref_size x ref_size input:
                    # a positive weighs the same at every image size (YOLOv5 scales its gain by (imgsz / 640)^2)
                    height, width = sizes[level]
                    obj_mean = obj_mean * (height * width * self._level_strides[level] ** 2 / self.obj_ref_size**2)
                obj_terms.append(self.level_obj_weights[level] * obj_mean)

            pred_xyxy = torch.cat(pred_boxes)
            num_assigned = max(int(pred_xyxy.shape[0]), 1)
            if self.box_loss == "mse":
                box = torch.cat(mse_terms).sum() / num_assigned
            else:
                iou = elementwise_box_iou(pred_xyxy, torch.cat(target_boxes), self.box_loss)
                box = (1.0 - iou).sum() / num_assigned

            logits = torch.cat(cls_logits)
            eps = self.label_smoothing
            cls_target = F.one_hot(torch.cat(cls_labels), num_classes).to(logits.dtype) * (1.0 - eps) + 0.5 * eps
            cls = F.binary_cross_entropy_with_logits(logits, cls_target, reduction="sum") / num_assigned

            box = self.box_weight * box
            # 3 / levels: two-level models (yolov4_tiny) weigh objectness like three-level ones (YOLOv5: obj *= 3 / nl)
            obj = self.obj_weight * (3.0 / len(obj_terms)) * torch.stack(obj_terms).sum()
            cls = self.cls_weight * cls
            return {"box": box, "obj": obj, "cls": cls, "loss": box + obj + cls}
