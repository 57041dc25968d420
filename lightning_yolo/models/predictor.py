"""YOLOPredictor: network + decode + NMS, the unit for inference and export."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.postprocess import decode_outputs, postprocess
from .yolo import YOLOv4

__all__ = ["YOLOPredictor"]


class YOLOPredictor(nn.Module):
    """Wraps a :class:`YOLOv4` with box decoding and NMS.

    Args:
        model: the network.
        score_thresh: minimum ``objectness * class probability`` kept.
        nms_iou_thresh: IoU above which a lower-scored box is suppressed.
        nms_kind: ``"diou"`` (DIoU-NMS, darknet ``nms_kind=diounms``) or ``"greedy"``.
        beta_nms: DIoU-NMS exponent on the centre-distance penalty (darknet ``beta_nms``).
        max_det: detections kept per image.
        class_agnostic: NMS across classes instead of per class.
        multi_label: a box may be reported for every class above ``score_thresh``.
        class_names: optional names for the labels.

    ``forward(images: [B, 3, H, W] float in [0, 1]) -> list[dict(boxes [K, 4] xyxy input pixels, scores [K],
    labels [K] int64)]``.
    """

    def __init__(
        self,
        model: YOLOv4,
        score_thresh: float = 0.25,
        nms_iou_thresh: float = 0.45,
        nms_kind: str = "diou",
        beta_nms: float = 0.6,
        max_det: int = 300,
        class_agnostic: bool = False,
        multi_label: bool = False,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if nms_kind not in ("diou", "greedy"):
            raise ValueError(f"nms_kind must be 'diou' or 'greedy', got {nms_kind!r}")
        self.model = model
        self.score_thresh = float(score_thresh)
        self.nms_iou_thresh = float(nms_iou_thresh)
        self.nms_kind = nms_kind
        self.beta_nms = float(beta_nms)
        self.max_det = int(max_det)
        self.class_agnostic = bool(class_agnostic)
        self.multi_label = bool(multi_label)
        self.class_names = list(class_names) if class_names is not None else None

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw network output decoded: ``[B, N, 5 + C]`` = (x1, y1, x2, y2 input px, objectness, class probs)."""
        a = self.model.anchors
        return decode_outputs(self.model(images), a.anchors, a.strides, a.scale_x_y, self.model.num_classes)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return postprocess(
            self.decode(images),
            score_thresh=self.score_thresh,
            nms_iou_thresh=self.nms_iou_thresh,
            nms_kind=self.nms_kind,
            beta_nms=self.beta_nms,
            class_agnostic=self.class_agnostic,
            multi_label=self.multi_label,
            max_det=self.max_det,
        )
