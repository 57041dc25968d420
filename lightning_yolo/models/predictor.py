"""YOLOPredictor: network + decode + NMS on letterboxed float batches, the unit of validation, predict and export.

``predictor(images)`` takes float ``[B, 3, H, W]`` in ``[0, 1]`` (already letterboxed, ``H, W`` multiples of the
model's largest stride) and returns detections in those input pixels. Everything around it lives above the models
layer, in :mod:`lightning_yolo.inference`:

* :func:`lightning_yolo.load_predictor` (:func:`lightning_yolo.inference.checkpoint.load_predictor`): a predictor
  rebuilt from a ``YOLOModule`` checkpoint or a plain ``state_dict``, without Lightning;
* :func:`lightning_yolo.predict` (:func:`lightning_yolo.inference.predict.predict`): image files, folders, globs,
  PIL images, numpy arrays or tensors of any size -> letterboxed, batched, mapped back to original pixels;
* :mod:`lightning_yolo.inference.export`: ONNX / TorchScript graphs of a predictor.

Defaults: :data:`lightning_yolo.ops.postprocess.DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..ops.postprocess import DEFAULT_IMG_SIZE, DEFAULTS, NMS_KINDS, decode_outputs, postprocess
from .yolo import YOLOv4

__all__ = ["YOLOPredictor", "check_img_size"]


class YOLOPredictor(nn.Module):
    """Wraps a :class:`YOLOv4` with box decoding and NMS.

    Args:
        model: the network.
        score_thresh: minimum ``objectness * class probability`` kept.
        nms_iou_thresh: IoU above which a lower-scored box is suppressed.
        nms_kind: ``"diou"`` (DIoU-NMS, darknet ``nms_kind=diounms``) or ``"greedy"``.
        beta_nms: DIoU-NMS exponent on the centre-distance penalty (darknet ``beta_nms``).
        max_det: detections kept per image.
        max_nms: candidates per image entering NMS, the best by score (as YOLOv5's ``max_nms`` and mmdetection's
            ``nms_pre``). An untrained model passes ``score_thresh=0.001`` with every box (6,300 per image at 320 px
            for one class); capping keeps early validations about as fast as later ones
            (``benchmarks/validation_speed.py``).
        class_agnostic: NMS across classes instead of per class.
        multi_label: a box may be reported for every class above ``score_thresh``.
        class_names: optional names for the labels (:func:`lightning_yolo.predict` then adds ``names`` to each
            result).
        img_size: default letterbox size of :func:`lightning_yolo.predict` (long side, or ``(H, W)``).

    Defaults are :data:`lightning_yolo.ops.postprocess.DEFAULTS` (score 0.25, NMS IoU 0.6, DIoU-NMS, 300
    detections, 3000 candidates).

    ``forward(images: [B, 3, H, W] float in [0, 1]) -> list[dict(boxes [K, 4] xyxy input pixels, scores [K],
    labels [K] int64)]``.
    """

    def __init__(
        self,
        model: YOLOv4,
        score_thresh: float = DEFAULTS.score_thresh,
        nms_iou_thresh: float = DEFAULTS.nms_iou_thresh,
        nms_kind: str = DEFAULTS.nms_kind,
        beta_nms: float = DEFAULTS.beta_nms,
        max_det: int = DEFAULTS.max_det,
        max_nms: int = DEFAULTS.max_nms,
        class_agnostic: bool = False,
        multi_label: bool = False,
        class_names: Sequence[str] | None = None,
        img_size: int | tuple[int, int] = DEFAULT_IMG_SIZE,
    ) -> None:
        super().__init__()
        if nms_kind not in NMS_KINDS:
            raise ValueError(f"nms_kind must be one of {NMS_KINDS}, got {nms_kind!r}")
        if class_names is not None and len(class_names) != model.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the model has {model.num_classes} classes")
        self.model = model
        self.score_thresh = float(score_thresh)
        self.nms_iou_thresh = float(nms_iou_thresh)
        self.nms_kind = nms_kind
        self.beta_nms = float(beta_nms)
        self.max_det = int(max_det)
        if max_nms < 1:
            raise ValueError(f"max_nms must be >= 1, got {max_nms}")
        self.max_nms = int(max_nms)
        self.class_agnostic = bool(class_agnostic)
        self.multi_label = bool(multi_label)
        self.class_names = list(class_names) if class_names is not None else None
        self.img_size = check_img_size(img_size)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw network output decoded: ``[B, N, 5 + C]`` = (x1, y1, x2, y2 input px, objectness, class probs)."""
        return self.decode_raw(self.model(images))

    def decode_raw(self, raw_maps: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`decode` for head maps already computed (e.g. by a validation step that also needs the loss)."""
        a = self.model.anchors
        return decode_outputs(raw_maps, a.anchors, a.strides, a.scale_x_y, self.model.num_classes)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.select(self.decode(images))

    def detect_raw(self, raw_maps: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Decode + NMS of head maps already computed: ``list[dict(boxes, scores, labels)]`` in input pixels."""
        return self.select(self.decode_raw(raw_maps))

    def select(self, decoded: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Score threshold + NMS + top-k of decoded outputs ``[B, N, 5 + C]`` with this predictor's settings."""
        return postprocess(
            decoded,
            score_thresh=self.score_thresh,
            nms_iou_thresh=self.nms_iou_thresh,
            nms_kind=self.nms_kind,
            beta_nms=self.beta_nms,
            class_agnostic=self.class_agnostic,
            multi_label=self.multi_label,
            max_det=self.max_det,
            pre_nms_topk=self.max_nms,
        )

    @torch.no_grad()
    def fuse(self, channels_last: bool = True) -> YOLOPredictor:
        """Fold Conv+BN and (optionally) store weights ``channels_last``: the fast CPU inference form. Returns self.

        ``channels_last`` matters on CPU: the 3 -> 32 stem convolution alone is ~11x slower in NCHW (DESIGN
        section 6). The model is put in eval mode and can no longer be trained.
        """
        self.model.fuse()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        return self.eval()


def check_img_size(img_size: int | Sequence[int]) -> int | tuple[int, int]:
    """A letterbox size: a positive int ``S`` or ``(H, W)``; raises ``ValueError`` otherwise."""
    if isinstance(img_size, int | float):
        if int(img_size) <= 0:
            raise ValueError(f"img_size must be positive, got {img_size!r}")
        return int(img_size)
    size = tuple(int(s) for s in img_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"img_size must be an int or (H, W), got {img_size!r}")
    return size  # type: ignore[return-value]
