"""Loss settings as data: :class:`LossCfg`, the one list of the loss knobs.

:class:`~lightning_yolo.training.loss.YOLOLoss` takes a ``LossCfg`` (keyword overrides replace its fields), and
:class:`~lightning_yolo.module.YOLOModule` takes one as ``loss`` — on the command line the nested group
``--model.loss.box_loss diou --model.loss.label_smoothing 0.1``, in YAML ``model: loss: {box_loss: diou}``. The
module stores it in checkpoints as a plain dict (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from ..ops.iou import IOU_KINDS

__all__ = ["LossCfg", "BOX_LOSSES"]

#: ``box_loss`` choices (darknet ``iou_loss=``): the IoU kinds and YOLOv3's coordinate ``"mse"``.
BOX_LOSSES: tuple[str, ...] = (*IOU_KINDS, "mse")


@dataclass(frozen=True)
class LossCfg(Settings):
    """Everything that defines the YOLOv4 loss besides the model's anchors and class count.

    Attributes:
        box_loss: ``"ciou"`` (darknet yolov4.cfg ``iou_loss=ciou``), ``"diou"``, ``"giou"``, ``"iou"`` or ``"mse"``
            (YOLOv3's coordinate loss on the ``(t_x, t_y, t_w, t_h)`` offsets, darknet ``iou_loss=mse``).
        iou_thresh: multiple anchors per ground truth: every anchor whose shape IoU with the box exceeds this is
            assigned too (darknet ``iou_thresh=0.213``); ``1.0`` assigns the single best anchor only.
        ignore_thresh: unassigned predictions overlapping a ground truth above this IoU get no objectness penalty
            (darknet ``ignore_thresh=0.7``).
        label_smoothing: ``eps`` of class label smoothing; class targets become ``1 - eps/2`` and ``eps/2``
            (darknet ``label_smooth_eps``).
        focal_gamma: focal-loss ``gamma`` on objectness (Lin et al. 2017); ``0`` is plain BCE (darknet default).
        focal_alpha: focal-loss ``alpha`` (weight of positives) when ``focal_gamma > 0``; ``None`` disables it.
        obj_iou_ratio: objectness target of an assigned prediction is ``(1 - r) + r * IoU(pred, gt)``; ``0`` is
            darknet's target 1, ``1`` pure IoU-aware objectness (Scaled-YOLOv4 / YOLOv5 ``gr=1``).
        box_weight: weight of the box term (darknet ``iou_normalizer``, for mean reductions; see YOLOLoss).
        obj_weight: weight of the objectness term (darknet ``obj_normalizer``).
        cls_weight: weight of the class term (darknet ``cls_normalizer``, for mean reductions; see YOLOLoss).
        level_obj_weights: objectness weight per level, finest first; ``None``: equal; ``"stride"``: YOLOv5's
            balance by stride (4.0 / 1.0 / 0.4 for strides 8 / 16 / 32).
        neighbour_cells: also assign the adjacent cells that the grid-sensitive decode can reach (YOLOv5 /
            Scaled-YOLOv4; with ``scale_x_y: 2`` each ground truth gets about 3x the cells).
        obj_ref_size: objectness weight relative to this input side: scaled by ``(input side / obj_ref_size)^2``
            so a positive cell weighs the same at every size (YOLOv5's ``(imgsz / 640)^2``); ``None``: unscaled.
        hard_negative_ratio: hard negative mining for objectness (SSD's OHEM): ``r > 0`` keeps, per image, only the
            ``ceil(r * P)`` negatives with the largest loss, ``P`` being its assigned predictions; ``0``: all count.
    """

    _what = "loss setting"  # in the error for an unknown name (not a field: no annotation)

    box_loss: str = "ciou"
    iou_thresh: float = 0.213
    ignore_thresh: float = 0.7
    label_smoothing: float = 0.0
    focal_gamma: float = 0.0
    focal_alpha: float | None = 0.25
    obj_iou_ratio: float = 0.5
    box_weight: float = 0.05
    obj_weight: float = 1.0
    cls_weight: float = 0.02
    level_obj_weights: tuple[float, ...] | str | None = "stride"
    neighbour_cells: bool = False
    obj_ref_size: float | None = None
    hard_negative_ratio: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.level_obj_weights, list | tuple):
            object.__setattr__(self, "level_obj_weights", tuple(float(w) for w in self.level_obj_weights))
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"loss.box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}")
        checks = (
            ("iou_thresh", 0.0 <= self.iou_thresh <= 1.0, "in [0, 1]"),
            ("ignore_thresh", 0.0 <= self.ignore_thresh <= 1.0, "in [0, 1]"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0, "in [0, 1)"),
            ("focal_gamma", self.focal_gamma >= 0, ">= 0"),
            ("focal_alpha", self.focal_alpha is None or 0.0 < self.focal_alpha < 1.0, "in (0, 1) or null"),
            ("obj_iou_ratio", 0.0 <= self.obj_iou_ratio <= 1.0, "in [0, 1]"),
            ("box_weight", self.box_weight >= 0, ">= 0"),
            ("obj_weight", self.obj_weight >= 0, ">= 0"),
            ("cls_weight", self.cls_weight >= 0, ">= 0"),
            ("obj_ref_size", self.obj_ref_size is None or self.obj_ref_size >= 0, ">= 0 or null"),
            ("hard_negative_ratio", self.hard_negative_ratio >= 0, ">= 0"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"loss.{name} must be {allowed}, got {getattr(self, name)!r}")
        weights = self.level_obj_weights
        if isinstance(weights, str) and weights != "stride":
            raise ValueError(f"loss.level_obj_weights must be a list of weights, null or 'stride', got {weights!r}")
