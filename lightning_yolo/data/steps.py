"""Per-sample augmentation steps and the two small interfaces the pipelines are built from.

* A :class:`Step` maps ``(RawSample, rng) -> RawSample``: :class:`Letterbox`, :class:`RandomAffine`,
  :class:`RandomHSV`, :class:`RandomHorizontalFlip`, chained by :class:`Compose`.
* A :class:`SampleSource` hands out whole samples by index, ``get(index, ctx) -> RawSample``: the multi-image
  stages of :mod:`lightning_yolo.data.mixing` (Mosaic, MixUp, CutMix), which nest, and which the training pipeline
  starts from. ``ctx`` is an :class:`AugmentContext` (the random generator, and the close-mosaic switch).

Every step works on a :class:`~lightning_yolo.data.sample.RawSample` (HWC uint8 numpy image, boxes in its pixels);
images stay uint8 throughout. Geometry is done with OpenCV through :func:`~lightning_yolo.data.tiles.render_tiles`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from .image_io import FILL_VALUE
from .sample import RawSample
from .tiles import Tile, render_tiles

__all__ = [
    "Step",
    "SampleSource",
    "AugmentContext",
    "process_rng",
    "Letterbox",
    "RandomAffine",
    "RandomHSV",
    "RandomHorizontalFlip",
    "Compose",
]


_PROCESS_RNG: dict[str, object] = {"pid": None, "rng": None}


def process_rng() -> np.random.Generator:
    """A generator for this process, seeded from ``torch.initial_seed()`` (distinct per DataLoader worker)."""
    pid = os.getpid()
    if _PROCESS_RNG["pid"] != pid:
        _PROCESS_RNG["pid"], _PROCESS_RNG["rng"] = pid, np.random.default_rng(torch.initial_seed())
    return _PROCESS_RNG["rng"]  # type: ignore[return-value]


@dataclass
class AugmentContext:
    """What a multi-image step needs besides the index.

    Attributes:
        rng: the sample's random generator.
        multi_image: Mosaic / MixUp / CutMix allowed (False during close-mosaic epochs).
    """

    rng: np.random.Generator
    multi_image: bool = True


@runtime_checkable
class Step(Protocol):
    """A per-sample step: ``step(raw, rng) -> raw`` (it may change ``raw`` in place and return it, or return a new
    sample; it must never write into ``raw.image`` when that may be a cached source image)."""

    def __call__(self, raw: RawSample, rng: np.random.Generator) -> RawSample: ...


@runtime_checkable
class SampleSource(Protocol):
    """Whole ``S x S`` samples by index: the multi-image stages (Mosaic, MixUp, CutMix) and what they wrap.

    ``get`` returns a sample that the caller owns (freshly rendered, never a cached source array).
    """

    def __len__(self) -> int: ...

    def get(self, index: int, ctx: AugmentContext) -> RawSample: ...


class Letterbox:
    """Resize (only if larger than ``size``) and pad to ``size x size``, recording ratio and padding.

    Args:
        size: output side ``S``.
        fill: padding grey.
        center: pad equally on both sides (else bottom / right only).
    """

    def __init__(self, size: int, fill: int = FILL_VALUE, center: bool = True) -> None:
        self.size, self.fill, self.center = int(size), int(fill), center

    def __call__(self, raw: RawSample, rng: np.random.Generator | None = None) -> RawSample:
        img = raw.image
        h, w = img.shape[:2]
        s = self.size
        ratio = 1.0
        if max(h, w) > s:
            ratio = s / max(h, w)
            w, h = max(1, round(w * ratio)), max(1, round(h * ratio))
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        dx, dy = ((s - w) / 2, (s - h) / 2) if self.center else (0.0, 0.0)
        left, top = int(round(dx - 0.1)), int(round(dy - 0.1))
        right, bottom = s - w - left, s - h - top
        if left or top or right or bottom:
            img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(self.fill,) * 3)
        elif img is raw.image:
            img = img.copy()  # never hand out the (possibly cached) source array
        boxes = raw.boxes * np.float32(ratio)
        boxes[:, 0::2] += left
        boxes[:, 1::2] += top
        return RawSample(
            img,
            boxes,
            raw.labels,
            raw.iscrowd,
            raw.image_id,
            raw.orig_size,
            raw.ratio * ratio,
            (raw.pad[0] * ratio + left, raw.pad[1] * ratio + top),
        )


class RandomAffine:
    """Random scale, translation, rotation and shear into an ``out_size`` square (ultralytics
    ``random_perspective`` without perspective).

    The canvas centre maps to the output centre, moved by ``translate * out_size``; a 2S Mosaic canvas therefore
    yields its centre crop, a letterboxed S image the whole image.

    Args:
        out_size: output side ``S``.
        degrees: rotation drawn from ``U(-degrees, degrees)``.
        translate: translation fraction drawn from ``U(-translate, translate)`` per axis.
        scale: zoom drawn from ``U(1 - scale, 1 + scale)``.
        shear: shear angle in degrees from ``U(-shear, shear)`` per axis.
        fill: grey of uncovered pixels.
        min_size: boxes under this size (output pixels) after the warp are dropped.
        min_area_ratio: boxes keeping less than this fraction of their area are dropped.
        max_aspect: boxes more elongated than this are dropped.
    """

    def __init__(
        self,
        out_size: int,
        degrees: float = 0.0,
        translate: float = 0.1,
        scale: float = 0.5,
        shear: float = 0.0,
        fill: int = FILL_VALUE,
        min_size: float = 2.0,
        min_area_ratio: float = 0.1,
        max_aspect: float = 100.0,
    ) -> None:
        if not 0 <= scale < 1:
            raise ValueError(f"scale must be in [0, 1) (zoom drawn from 1 +- scale), got {scale}")
        self.out_size = int(out_size)
        self.degrees, self.translate, self.scale, self.shear = (
            float(degrees),
            float(translate),
            float(scale),
            float(shear),
        )
        self.fill, self.min_size, self.min_area_ratio, self.max_aspect = fill, min_size, min_area_ratio, max_aspect

    def sample_matrix(self, canvas_wh: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """``[3, 3]`` map from canvas to output pixels: ``T @ Shear @ Rotate-Scale @ Centre``."""
        cw, ch = canvas_wh
        s = self.out_size
        centre = np.array([[1, 0, -cw / 2], [0, 1, -ch / 2], [0, 0, 1]], np.float64)
        angle = rng.uniform(-self.degrees, self.degrees) if self.degrees else 0.0
        zoom = rng.uniform(1 - self.scale, 1 + self.scale) if self.scale else 1.0
        rot = np.eye(3)
        if angle:
            rot[:2] = cv2.getRotationMatrix2D((0, 0), angle, zoom)
        else:
            rot[0, 0] = rot[1, 1] = zoom
        shear = np.eye(3)
        if self.shear:
            shear[0, 1] = math.tan(math.radians(rng.uniform(-self.shear, self.shear)))
            shear[1, 0] = math.tan(math.radians(rng.uniform(-self.shear, self.shear)))
        trans = np.eye(3)
        tx, ty = rng.uniform(0.5 - self.translate, 0.5 + self.translate, 2) if self.translate else (0.5, 0.5)
        trans[0, 2], trans[1, 2] = tx * s, ty * s
        return trans @ shear @ rot @ centre

    def render(self, tiles: Sequence[Tile], canvas_wh: tuple[int, int], matrix: np.ndarray):
        """:func:`render_tiles` with this transform's output size and box filters."""
        return render_tiles(
            tiles, canvas_wh, matrix, self.out_size, self.fill, self.min_size, self.min_area_ratio, self.max_aspect
        )

    def __call__(self, raw: RawSample, rng: np.random.Generator) -> RawSample:
        h, w = raw.image.shape[:2]
        tile = Tile(raw.image, raw.boxes, raw.labels, raw.iscrowd, (0, 0))
        m = self.sample_matrix((w, h), rng)
        img, boxes, labels, crowd = self.render([tile], (w, h), m)
        kx, _, ox, oy = tile.mapping
        return RawSample(
            img, boxes, labels, crowd, raw.image_id, raw.orig_size, raw.ratio * kx,
            (ox + raw.pad[0] * kx, oy + raw.pad[1] * kx),
        )  # fmt: skip


class RandomHSV:
    """Hue shift and saturation / value gains through a lookup table in OpenCV's HSV space (YOLOv5 / ultralytics
    ``augment_hsv``, with an additive hue shift).

    Args:
        hue: hue shift drawn from ``U(-hue, hue)`` as a fraction of the hue circle.
        saturation: saturation gain drawn from ``1 + U(-saturation, saturation)``.
        value: value gain drawn from ``1 + U(-value, value)``.
    """

    def __init__(self, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4) -> None:
        self.hue, self.saturation, self.value = float(hue), float(saturation), float(value)
        self._x = np.arange(256, dtype=np.float32)

    def __call__(self, raw: RawSample, rng: np.random.Generator) -> RawSample:
        if not (self.hue or self.saturation or self.value):
            return raw
        dh, gs, gv = rng.uniform(-1, 1, 3) * (self.hue, self.saturation, self.value) + (0.0, 1.0, 1.0)
        x = self._x
        hsv = cv2.cvtColor(raw.image, cv2.COLOR_RGB2HSV)  # a new array: the source may be a cached image
        # One table per channel on its own plane: OpenCV's LUT with a 3-channel table walks the interleaved image
        # at about half the speed of three 1-channel lookups (split and merge included); the same bytes.
        h, s, v = cv2.split(hsv)
        cv2.LUT(h, np.mod(x + dh * 180.0, 180.0).astype(np.uint8), dst=h)  # OpenCV 8-bit hue is 0..179
        cv2.LUT(s, np.clip(x * gs, 0, 255).astype(np.uint8), dst=s)
        cv2.LUT(v, np.clip(x * gv, 0, 255).astype(np.uint8), dst=v)
        cv2.merge((h, s, v), dst=hsv)
        raw.image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=hsv)
        return raw


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, raw: RawSample, rng: np.random.Generator) -> RawSample:
        if self.p <= 0 or rng.random() >= self.p:
            return raw
        w = raw.image.shape[1]
        raw.image = cv2.flip(raw.image, 1)
        b = raw.boxes.copy()
        b[:, 0], b[:, 2] = w - raw.boxes[:, 2], w - raw.boxes[:, 0]
        raw.boxes = b  # ratio / pad no longer describe a mirrored image; they are informational in training
        return raw


class Compose:
    """Apply steps in order: ``step(raw, rng) -> raw``."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    def __call__(self, raw: RawSample, rng: np.random.Generator) -> RawSample:
        for step in self.steps:
            raw = step(raw, rng)
        return raw

    def __repr__(self) -> str:
        return f"Compose({self.steps})"
