"""Rendering source images through an affine map: the geometry shared by the random affine and Mosaic.

A :class:`Tile` is a source image placed on a (virtual) canvas; :func:`render_tiles` draws tiles through a
``canvas -> output`` affine map into a square output and maps their boxes with them, dropping those that became
too small or too thin (:func:`filter_candidates`).

A map without rotation or shear (the YOLOv4 / darknet default: scale and translation jitter only) is drawn with
``cv2.resize`` of the visible part of each source image straight into the output, instead of ``cv2.warpAffine``
of a canvas: each source pixel is resized once and the large Mosaic canvas is never built (measured figures in
benchmarks/README.md, "Data pipeline figures"). Boxes are transformed by exactly the mapping each resize applies
(the source crop and the destination rectangle are integers, so each tile's scale differs from the drawn one by
less than one pixel over its size). With rotation or shear the canvas is built and warped, and a box becomes the
bounding box of the part of its warped quadrilateral inside the output (:func:`clipped_quad_bounds`).

Coordinates are continuous pixel coordinates: pixel ``i`` covers ``[i, i + 1)``, a box ``[0, 0, W, H]`` covers the
whole image. ``cv2.warpAffine`` indexes pixel centres, so its matrix is shifted by half a pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .image_io import FILL_VALUE

__all__ = ["Tile", "render_tiles", "clipped_quad_bounds", "filter_candidates"]


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


def filter_candidates(
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
                # the output, no temporary and no copy (benchmarks/README.md, "Data pipeline figures")
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
            # The boxes of all tiles in one pass (one set of numpy calls per sample instead of per tile); the same
            # float64 arithmetic as per tile, so the same boxes.
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
            keep = filter_candidates(full, vis, min_size, min_area_ratio, max_aspect)
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
            keep = visible & filter_candidates(ref, vis, min_size, min_area_ratio, max_aspect)
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
