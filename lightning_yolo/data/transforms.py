"""Per-sample augmentation steps and the train / evaluation pipelines.

Every step works on a :class:`~lightning_yolo.data.sample.RawSample` (HWC uint8 numpy image, boxes in its
pixels) and every pipeline ends with :func:`~lightning_yolo.data.sample.raw_to_sample`, which converts to
``tv_tensors`` and applies the ``SanitizeBoundingBoxes`` rule. Images stay uint8 throughout.

Geometry is done with OpenCV, and a random affine whose matrix has no rotation or shear (the YOLOv4 / darknet
default: scale and translation jitter only) is done with ``cv2.resize`` of the visible part of each source image
straight into the output, instead of ``cv2.warpAffine`` of a canvas. Measured on the 2-core development machine
at 640 px (CPU time): ``warpAffine`` of a 1280x1280 Mosaic canvas into a 640x640 output 4.5 ms with or without
rotation, building that canvas 0.5 ms more; resizing four tiles that cover the output, zoomed 1.5x, 0.85 ms
(0.3 ms zoomed 0.5x). Boxes are transformed by exactly the mapping each resize applies (the source crop and the
destination rectangle are integers, so each tile's scale differs from the drawn one by less than one pixel over
its size). With rotation or shear the canvas is built and warped, and a box becomes the bounding box of the part
of its warped quadrilateral inside the output.

Coordinates are continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)``, a box ``[0, 0, W, H]`` covers the
whole image. ``cv2.warpAffine`` indexes pixel centres, so its matrix is shifted by half a pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .image_io import FILL_VALUE
from .sample import RawSample, Sample, raw_to_sample

__all__ = [
    "Tile",
    "render_tiles",
    "Letterbox",
    "RandomAffine",
    "RandomHSV",
    "RandomHorizontalFlip",
    "Compose",
    "AugmentContext",
    "process_rng",
    "EvalDataset",
    "TrainDataset",
    "build_train_dataset",
    "build_eval_dataset",
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


# ----------------------------------------------------------------------------------------------------------------
# rendering source images through an affine map


@dataclass
class Tile:
    """A source image placed on a (virtual) canvas.

    Attributes:
        image: ``[h, w, 3]`` uint8.
        boxes: ``[N, 4]`` xyxy in ``image`` pixels.
        labels: ``[N]`` int64.
        iscrowd: ``[N]`` bool.
        origin: canvas position ``(x, y)`` of the image's top-left corner (integers).
        crop: ``(x0, y0, x1, y1)`` part of ``image`` that is on the canvas (integers; default the whole image).
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    origin: tuple[int, int]
    crop: tuple[int, int, int, int] | None = None
    mapping: tuple[float, float, float, float] = field(default=(1.0, 1.0, 0.0, 0.0))  # set by render: kx, ky, ox, oy

    def region(self) -> tuple[int, int, int, int]:
        h, w = self.image.shape[:2]
        return self.crop if self.crop is not None else (0, 0, w, h)


def _filter_candidates(
    before: np.ndarray, after: np.ndarray, min_size: float, min_area_ratio: float, max_aspect: float
) -> np.ndarray:
    """Keep boxes still large enough after a warp (ultralytics ``box_candidates``).

    Args:
        before: ``[N, 4]`` boxes in output pixels before clipping (full extent of the object).
        after: ``[N, 4]`` the same boxes clipped to what is visible.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > min_size) & (h2 > min_size) & (w2 * h2 / (w1 * h1 + 1e-16) > min_area_ratio) & (aspect < max_aspect)


def clipped_quad_bounds(quads: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounding boxes of convex quadrilaterals intersected with the square ``[0, size]^2``.

    Tighter than clipping the quad's bounding box when a rotated box is partly outside: the box then spans only
    what is visible. The extreme points of a convex polygon clipped to a square are among its corners inside the
    square, the crossings of its edges with the square's sides, and the square's corners inside it.

    Args:
        quads: ``[N, 4, 2]`` corners in order around the polygon.
        size: side of the square.

    Returns:
        ``(boxes [N, 4] xyxy, visible [N] bool)``; boxes of invisible quads are zeros.
    """
    n = len(quads)
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0, bool)
    p0 = quads
    p1 = np.roll(quads, -1, axis=1)
    cand = [p0]
    valid = [((p0 >= 0) & (p0 <= size)).all(-1)]
    d = p1 - p0
    for axis in (0, 1):
        for border in (0.0, size):
            with np.errstate(divide="ignore", invalid="ignore"):  # edges parallel to the side: no crossing
                t = (border - p0[..., axis]) / d[..., axis]
                pt = p0 + t[..., None] * d
            pt[..., axis] = border
            other = pt[..., 1 - axis]
            ok = np.isfinite(t) & (t >= 0) & (t <= 1) & (other >= 0) & (other <= size)
            cand.append(np.nan_to_num(pt))
            valid.append(ok)
    # square corners inside the quad: same side of every edge
    sq = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64)
    rel = sq[None, None, :, :] - p0[:, :, None, :]  # [N, 4 edges, 4 corners, 2]
    cross = d[:, :, None, 0] * rel[..., 1] - d[:, :, None, 1] * rel[..., 0]
    inside = (cross >= 0).all(1) | (cross <= 0).all(1)  # [N, 4 corners]
    cand.append(np.broadcast_to(sq, (n, 4, 2)))
    valid.append(inside)
    pts = np.concatenate(cand, 1)
    ok = np.concatenate(valid, 1)
    lo = np.where(ok[..., None], pts, np.inf).min(1)
    hi = np.where(ok[..., None], pts, -np.inf).max(1)
    # a quad collapsed to a segment or point (box clipped away by its Mosaic cell) shows nothing; its zero-length
    # edges would otherwise count every square corner as inside
    area = 0.5 * np.abs((p0[..., 0] * p1[..., 1] - p1[..., 0] * p0[..., 1]).sum(1))
    visible = ok.any(1) & (area > 1e-9)
    boxes = np.where(visible[:, None], np.concatenate([lo, hi], 1), 0.0)
    return boxes, visible


def render_tiles(
    tiles: Sequence[Tile],
    canvas_wh: tuple[int, int],
    matrix: np.ndarray,
    out_size: int,
    fill: int = FILL_VALUE,
    min_size: float = 2.0,
    min_area_ratio: float = 0.1,
    max_aspect: float = 100.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw tiles placed on a canvas through an affine map into a square output.

    Args:
        tiles: source images with their canvas placement.
        canvas_wh: canvas ``(width, height)``; pixels outside the tiles are ``fill``.
        matrix: ``[3, 3]`` (or ``[2, 3]``) affine map from canvas to output coordinates.
        out_size: output side ``S``.
        fill: grey value of empty pixels.
        min_size: boxes narrower or lower than this (output pixels) are dropped.
        min_area_ratio: boxes keeping less than this fraction of their area (clipping) are dropped.
        max_aspect: boxes more elongated than this are dropped.

    Returns:
        ``(image [S, S, 3] uint8, boxes [M, 4] float32, labels [M], iscrowd [M])``. Each tile's ``mapping`` is set
        to the ``(kx, ky, ox, oy)`` that maps its image pixels to output pixels (``u = ox + kx * x``; for a rotated
        or sheared matrix, the scale and translation part only).
    """
    m = np.asarray(matrix, np.float64)[:2]
    out = np.full((out_size, out_size, 3), fill, np.uint8)
    all_boxes, all_labels, all_crowd = [], [], []
    if m[0, 1] == 0.0 and m[1, 0] == 0.0 and m[0, 0] > 0 and m[1, 1] > 0:
        sx, sy, tx, ty = m[0, 0], m[1, 1], m[0, 2], m[1, 2]
        params, shown = [], []
        for tile in tiles:
            cx0, cy0, cx1, cy1 = tile.region()
            ox, oy = tile.origin
            # visible destination, then the integer source rectangle that covers it
            u0, u1 = max(sx * (ox + cx0) + tx, 0.0), min(sx * (ox + cx1) + tx, out_size)
            v0, v1 = max(sy * (oy + cy0) + ty, 0.0), min(sy * (oy + cy1) + ty, out_size)
            if u1 - u0 < 1 or v1 - v0 < 1:
                continue
            s0 = max(cx0, math.floor((u0 - tx) / sx - ox))
            s1 = min(cx1, math.ceil((u1 - tx) / sx - ox))
            t0 = max(cy0, math.floor((v0 - ty) / sy - oy))
            t1 = min(cy1, math.ceil((v1 - ty) / sy - oy))
            d0, d1 = round(sx * (ox + s0) + tx), round(sx * (ox + s1) + tx)
            e0, e1 = round(sy * (oy + t0) + ty), round(sy * (oy + t1) + ty)
            if d1 <= d0 or e1 <= e0 or s1 <= s0 or t1 <= t0:
                continue
            src = tile.image[t0:t1, s0:s1]
            p0, p1, q0, q1 = max(d0, 0), min(d1, out_size), max(e0, 0), min(e1, out_size)
            if (d1 - d0, e1 - e0) == (s1 - s0, t1 - t0):
                out[q0:q1, p0:p1] = src[q0 - e0 : q1 - e0, p0 - d0 : p1 - d0]
            elif (p0, p1, q0, q1) == (d0, d1, e0, e1):
                # all of the resized tile is visible (about 1 tile in 3 in a 640-px Mosaic): resize straight into
                # the output, no temporary and no copy. With the one-pass boxes below, render_tiles of recorded
                # 640-px Mosaic samples went from 1.09-1.12 to 0.94 ms.
                cv2.resize(src, (d1 - d0, e1 - e0), dst=out[q0:q1, p0:p1], interpolation=cv2.INTER_LINEAR)
            else:
                src = cv2.resize(src, (d1 - d0, e1 - e0), interpolation=cv2.INTER_LINEAR)
                out[q0:q1, p0:p1] = src[q0 - e0 : q1 - e0, p0 - d0 : p1 - d0]
            kx, ky = (d1 - d0) / (s1 - s0), (e1 - e0) / (t1 - t0)
            tile.mapping = (kx, ky, d0 - s0 * kx, e0 - t0 * ky)
            if len(tile.boxes):
                # per tile: the map of its boxes and the part of the output it shows (not beyond its Mosaic cell)
                x_lo, x_hi = max(p0, d0 + (cx0 - s0) * kx), min(p1, d0 + (cx1 - s0) * kx)
                y_lo, y_hi = max(q0, e0 + (cy0 - t0) * ky), min(q1, e0 + (cy1 - t0) * ky)
                params.append((d0, s0, kx, e0, t0, ky, x_lo, x_hi, y_lo, y_hi))
                shown.append(tile)
        if shown:
            # The boxes of all tiles in one pass (one set of numpy calls per sample instead of per tile: measured
            # 0.1-0.2 ms per 640-px Mosaic sample); the same float64 arithmetic as per tile, so the same boxes.
            counts = [len(t.boxes) for t in shown]
            d0, s0, kx, e0, t0, ky, x_lo, x_hi, y_lo, y_hi = np.repeat(np.array(params, np.float64), counts, 0).T[
                :, :, None
            ]
            b = np.concatenate([t.boxes for t in shown]).astype(np.float64)
            full = np.empty_like(b)
            full[:, 0::2] = d0 + (b[:, 0::2] - s0) * kx
            full[:, 1::2] = e0 + (b[:, 1::2] - t0) * ky
            vis = np.empty_like(full)
            np.clip(full[:, 0::2], x_lo, x_hi, out=vis[:, 0::2])
            np.clip(full[:, 1::2], y_lo, y_hi, out=vis[:, 1::2])
            keep = _filter_candidates(full, vis, min_size, min_area_ratio, max_aspect)
            all_boxes.append(vis[keep])
            all_labels.append(np.concatenate([t.labels for t in shown])[keep])
            all_crowd.append(np.concatenate([t.iscrowd for t in shown])[keep])
    else:
        cw, ch = canvas_wh
        canvas = np.full((ch, cw, 3), fill, np.uint8)
        for tile in tiles:
            cx0, cy0, cx1, cy1 = tile.region()
            ox, oy = tile.origin
            canvas[oy + cy0 : oy + cy1, ox + cx0 : ox + cx1] = tile.image[cy0:cy1, cx0:cx1]
        # warpAffine works on pixel-centre indices: x_c = x - 0.5, so the translation moves by A @ 0.5 - 0.5
        mc = m.copy()
        mc[:, 2] += m[:, :2].sum(1) * 0.5 - 0.5
        out = cv2.warpAffine(
            canvas, mc, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=(fill, fill, fill),
        )  # fmt: skip
        scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
        for tile in tiles:
            cx0, cy0, cx1, cy1 = tile.region()
            ox, oy = tile.origin
            tile.mapping = (scale, scale, float(m[0] @ [ox, oy, 1.0]), float(m[1] @ [ox, oy, 1.0]))
            if not len(tile.boxes):
                continue
            b = tile.boxes.astype(np.float64)
            b = np.stack(
                [b[:, 0].clip(cx0, cx1), b[:, 1].clip(cy0, cy1), b[:, 2].clip(cx0, cx1), b[:, 3].clip(cy0, cy1)], 1
            )
            b[:, 0::2] += ox
            b[:, 1::2] += oy
            full_area = (tile.boxes[:, 2] - tile.boxes[:, 0]) * (tile.boxes[:, 3] - tile.boxes[:, 1]) * scale**2
            corners = b[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)  # 4 corners per box, in order around it
            warped = (corners @ m[:, :2].T + m[:, 2]).reshape(-1, 4, 2)
            vis, visible = clipped_quad_bounds(warped, out_size)
            # reference box with the object's own (unclipped) area, for the area-ratio test
            side = np.sqrt(np.maximum(full_area, 1e-16))
            ref = np.stack([np.zeros_like(side), np.zeros_like(side), side, side], 1)
            keep = visible & _filter_candidates(ref, vis, min_size, min_area_ratio, max_aspect)
            all_boxes.append(vis[keep])
            all_labels.append(tile.labels[keep])
            all_crowd.append(tile.iscrowd[keep])
    if all_boxes:
        boxes = np.concatenate(all_boxes).astype(np.float32)
        labels = np.concatenate(all_labels).astype(np.int64)
        crowd = np.concatenate(all_crowd).astype(bool)
    else:
        boxes, labels, crowd = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    return out, boxes, labels, crowd


# ----------------------------------------------------------------------------------------------------------------
# per-sample steps


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
        lut = np.empty((256, 1, 3), np.uint8)
        lut[:, 0, 0] = np.mod(x + dh * 180.0, 180.0).astype(np.uint8)  # OpenCV 8-bit hue is 0..179
        lut[:, 0, 1] = np.clip(x * gs, 0, 255).astype(np.uint8)
        lut[:, 0, 2] = np.clip(x * gv, 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(raw.image, cv2.COLOR_RGB2HSV)  # a new array: the source may be a cached image
        cv2.LUT(hsv, lut, dst=hsv)
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

    def __init__(self, steps: Sequence[Callable[[RawSample, np.random.Generator], RawSample]]) -> None:
        self.steps = list(steps)

    def __call__(self, raw: RawSample, rng: np.random.Generator) -> RawSample:
        for step in self.steps:
            raw = step(raw, rng)
        return raw

    def __repr__(self) -> str:
        return f"Compose({self.steps})"


# ----------------------------------------------------------------------------------------------------------------
# pipelines


def _parse_item(item: int | tuple) -> tuple[int, bool, int | None]:
    """``index`` or ``(index, multi_image[, seed])`` as yielded by the training sampler."""
    if isinstance(item, (tuple, list)):
        return int(item[0]), bool(item[1]), (int(item[2]) if len(item) > 2 and item[2] is not None else None)
    return int(item), True, None


class TrainDataset(Dataset):
    """The training pipeline: a (multi-image) stage, then per-sample steps, then ``SanitizeBoundingBoxes``.

    ``dataset[i]`` or ``dataset[(i, multi_image, seed)]`` (the form :class:`~lightning_yolo.data.samplers.TrainSampler`
    yields, which is how the close-mosaic switch and a per-sample seed reach persistent workers).

    Args:
        stage: object with ``get(index, ctx) -> RawSample`` of size ``S`` and ``__len__`` (e.g. ``Mosaic``).
        steps: per-sample steps (HSV, flip).
        class_names: the dataset's class names.
    """

    def __init__(self, stage, steps: Sequence[Callable] = (), class_names: Sequence[str] = ()) -> None:
        self.stage = stage
        self.steps = Compose(steps)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.stage)

    def __getitem__(self, item: int | tuple) -> Sample:
        index, multi, seed = _parse_item(item)
        rng = np.random.default_rng(seed) if seed is not None else process_rng()
        raw = self.stage.get(index, AugmentContext(rng, multi))
        return raw_to_sample(self.steps(raw, rng))


class EvalDataset(Dataset):
    """The evaluation pipeline: load resized to ``img_size`` (long side), letterbox, ``SanitizeBoundingBoxes``.

    Crowd boxes are kept (flagged) for the metric. ``SanitizeBoundingBoxes`` drops boxes under 1 px *at the network
    size* (a 1.2 x 13 px box of a 640-px image is 0.8 px wide at 416), which only the loss needs; the metric must score
    against the annotations as written. So each target also carries the image's annotations in original-image pixels,
    unfiltered: ``eval_boxes`` float32 ``[M, 4]`` xyxy, ``eval_labels`` int64 ``[M]``, ``eval_iscrowd`` bool ``[M]``
    (empty when the image could not be decoded, as for ``boxes``).
    """

    def __init__(self, base, img_size: int) -> None:
        self.base = base
        self.letterbox = Letterbox(img_size)
        self.class_names = list(base.class_names)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int | tuple) -> Sample:
        index = _parse_item(item)[0]
        raw = self.base.load_raw(index)
        image, target = raw_to_sample(self.letterbox(raw))
        rec = self.base.records[index]
        failed = str(rec.path) in getattr(self.base, "load_failures", {})
        count = 0 if failed else len(rec.boxes)
        target["eval_boxes"] = torch.from_numpy(np.asarray(rec.boxes[:count], np.float32).reshape(-1, 4).copy())
        target["eval_labels"] = torch.from_numpy(np.asarray(rec.labels[:count], np.int64).copy())
        target["eval_iscrowd"] = torch.from_numpy(np.asarray(rec.iscrowd[:count], bool).copy())
        return image, target


def build_eval_dataset(base, img_size: int) -> EvalDataset:
    """Evaluation pipeline over a :class:`~lightning_yolo.data.formats.base.DetectionDataset`."""
    return EvalDataset(base, img_size)


def build_train_dataset(
    base,
    img_size: int,
    mosaic_prob: float = 1.0,
    mixup_prob: float = 0.0,
    cutmix_prob: float = 0.0,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    hsv_h: float = 0.015,
    hsv_s: float = 0.7,
    hsv_v: float = 0.4,
    flip_prob: float = 0.5,
    mixup_alpha: float = 32.0,
    cutmix_beta: float = 1.0,
    mosaic_buffer: int = 0,
) -> TrainDataset:
    """Training pipeline: Mosaic (+ random affine) -> MixUp -> CutMix -> HSV -> flip -> sanitize.

    Args:
        base: :class:`~lightning_yolo.data.formats.base.DetectionDataset` with ``load_size=img_size`` and
            ``drop_crowd=True``.
        img_size: output side ``S``.
        mosaic_prob: probability of a 4-image Mosaic (0 disables).
        mixup_prob: probability of MixUp with a second (Mosaic) sample (0 disables).
        cutmix_prob: probability of CutMix with a second (Mosaic) sample (0 disables).
        degrees: affine rotation range.
        translate: affine translation fraction.
        scale: affine zoom range ``1 +- scale``.
        shear: affine shear range in degrees.
        hsv_h: hue shift fraction (0 with ``hsv_s = hsv_v = 0`` disables HSV).
        hsv_s: saturation gain range.
        hsv_v: value gain range.
        flip_prob: horizontal flip probability.
        mixup_alpha: MixUp ratio drawn from ``Beta(alpha, alpha)``.
        cutmix_beta: CutMix area drawn from ``Beta(beta, beta)``.
        mosaic_buffer: draw Mosaic partners from the last N loaded images (see :class:`~.mosaic.Mosaic`).
    """
    from .mosaic import CutMix, MixUp, Mosaic

    affine = RandomAffine(img_size, degrees=degrees, translate=translate, scale=scale, shear=shear)
    stage = Mosaic(base, img_size, prob=mosaic_prob, affine=affine, buffer_size=mosaic_buffer)
    if mixup_prob > 0:
        stage = MixUp(stage, prob=mixup_prob, alpha=mixup_alpha)
    if cutmix_prob > 0:
        stage = CutMix(stage, prob=cutmix_prob, beta=cutmix_beta)
    steps: list[Callable] = []
    if hsv_h or hsv_s or hsv_v:
        steps.append(RandomHSV(hsv_h, hsv_s, hsv_v))
    if flip_prob > 0:
        steps.append(RandomHorizontalFlip(flip_prob))
    return TrainDataset(stage, steps, base.class_names)
