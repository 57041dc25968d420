"""The two forms of a detection sample.

* The public form (DESIGN section 2), returned by every dataset's ``__getitem__``: ``(tv_tensors.Image uint8
  [3, H, W] RGB, target)`` with ``target["boxes"]`` a ``tv_tensors.BoundingBoxes`` (XYXY, absolute pixels,
  ``canvas_size=(H, W)``), ``labels`` int64 ``[N]``, ``iscrowd`` bool ``[N]``, ``image_id`` int64 scalar,
  ``orig_size`` int64 ``[2]`` (H, W), ``ratio`` float32 scalar and ``pad`` float32 ``[2]``.
* :class:`RawSample`, the working form inside the augmentation pipeline: a HWC numpy image, because OpenCV
  works on HWC and a CHW <-> HWC copy of an image costs more than the resize that places a Mosaic tile (figures in
  benchmarks/README.md, "Data pipeline figures"). Each pipeline converts once, at its end, in
  :func:`raw_to_sample`, which applies the rule of ``torchvision.transforms.v2.SanitizeBoundingBoxes``
  (:func:`sanitize_mask`); the CHW image is a zero-copy view of the HWC array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors

__all__ = ["RawSample", "raw_to_sample", "sanitize_mask", "Sample"]

Sample = tuple[tv_tensors.Image, dict[str, Any]]


class RawSample:
    """A sample inside the pipeline.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB, C-contiguous.
        boxes: ``[N, 4]`` float32 xyxy in pixels of ``image``.
        labels: ``[N]`` int64 contiguous class indices.
        iscrowd: ``[N]`` bool (crowd / VOC ``difficult``).
        image_id: id of the (primary) source image.
        orig_size: ``(H, W)`` of the displayed original image.
        ratio: scale from original to ``image`` pixels (``image = original * ratio + pad``).
        pad: ``(pad_x, pad_y)`` offset of the original's origin in ``image`` pixels.
    """

    __slots__ = ("image", "boxes", "labels", "iscrowd", "image_id", "orig_size", "ratio", "pad")

    def __init__(
        self,
        image: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        iscrowd: np.ndarray | None = None,
        image_id: int = 0,
        orig_size: tuple[int, int] | None = None,
        ratio: float = 1.0,
        pad: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        self.image = image
        self.boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.iscrowd = (
            np.zeros(len(self.labels), dtype=bool) if iscrowd is None else np.asarray(iscrowd, dtype=bool).reshape(-1)
        )
        self.image_id = int(image_id)
        self.orig_size = tuple(orig_size) if orig_size is not None else (image.shape[0], image.shape[1])
        self.ratio = float(ratio)
        self.pad = (float(pad[0]), float(pad[1]))

    def select(self, keep: np.ndarray) -> None:
        """Keep only the boxes where ``keep`` (bool ``[N]`` or indices) is set, in place."""
        self.boxes, self.labels, self.iscrowd = self.boxes[keep], self.labels[keep], self.iscrowd[keep]

    def copy(self) -> RawSample:
        return RawSample(
            self.image.copy(),
            self.boxes.copy(),
            self.labels.copy(),
            self.iscrowd.copy(),
            self.image_id,
            self.orig_size,
            self.ratio,
            self.pad,
        )

    def __repr__(self) -> str:
        return (
            f"RawSample(image={tuple(self.image.shape)}, boxes={len(self.boxes)}, image_id={self.image_id}, "
            f"orig_size={self.orig_size}, ratio={self.ratio:.4g}, pad={self.pad})"
        )


# torchvision's defaults; the augmentations already drop boxes under 2 px in a warp.
SANITIZE_MIN_SIZE = 1.0
SANITIZE_MIN_AREA = 1.0


def sanitize_mask(
    boxes: np.ndarray,
    canvas_size: tuple[int, int],
    min_size: float = SANITIZE_MIN_SIZE,
    min_area: float = SANITIZE_MIN_AREA,
) -> np.ndarray:
    """The boxes ``torchvision.transforms.v2.SanitizeBoundingBoxes`` keeps (XYXY), computed on the numpy array.

    Same rule as torchvision's ``_get_sanitize_bounding_boxes_mask``: width and height ``>= min_size``, area
    ``>= min_area``, every coordinate ``>= 0``, x ``<= W`` and y ``<= H`` (NaN boxes fail). On plain numpy it
    avoids the ``tv_tensors`` dispatch of torchvision's transform, which costs more than the rule itself.

    Args:
        boxes: ``[N, 4]`` xyxy pixels.
        canvas_size: ``(H, W)`` of the image.
        min_size: smallest width and height kept.
        min_area: smallest area kept.

    Returns:
        ``[N]`` bool.
    """
    height, width = canvas_size
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return (
        (w >= min_size)
        & (h >= min_size)
        & (w * h >= min_area)
        & (boxes >= 0).all(1)
        & (boxes[:, 0::2] <= width).all(1)
        & (boxes[:, 1::2] <= height).all(1)
    )


def raw_to_sample(raw: RawSample, sanitize: bool = True) -> Sample:
    """Convert a :class:`RawSample` to the public sample, ending with ``SanitizeBoundingBoxes``.

    Args:
        raw: the working sample; its image array is shared, not copied.
        sanitize: drop boxes under 1 px and their labels / crowd flags, by the rule of
            ``v2.SanitizeBoundingBoxes(min_size=1, min_area=1)`` (:func:`sanitize_mask`). Boxes, labels and crowd
            flags are then copies, as torchvision's indexing makes them.

    Returns:
        ``(image, target)`` as described in the module docstring.
    """
    height, width = raw.image.shape[:2]
    boxes, labels, iscrowd = raw.boxes, raw.labels, raw.iscrowd
    if sanitize:
        keep = sanitize_mask(boxes, (height, width))
        boxes, labels, iscrowd = boxes[keep], labels[keep], iscrowd[keep]
    image = tv_tensors.Image(torch.from_numpy(raw.image).permute(2, 0, 1))
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(height, width)),
        "labels": torch.from_numpy(labels),
        "iscrowd": torch.from_numpy(iscrowd),
        "image_id": torch.tensor(raw.image_id, dtype=torch.int64),
        "orig_size": torch.tensor(raw.orig_size, dtype=torch.int64),
        "ratio": torch.tensor(raw.ratio, dtype=torch.float32),
        "pad": torch.tensor(raw.pad, dtype=torch.float32),
    }
    return image, target

