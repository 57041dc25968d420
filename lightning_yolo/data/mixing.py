"""Multi-image augmentation as dataset wrappers: Mosaic (with the random affine fused in), MixUp and CutMix.

Each wrapper is a :class:`~lightning_yolo.data.steps.SampleSource` (``get(index, ctx) -> RawSample``, an ``S x S``
sample, and ``__len__``); they nest (``CutMix(MixUp(Mosaic(base)))``) and their partner images come from the wrapped
stage, so a MixUp partner is itself a Mosaic, as in YOLOX and ultralytics. ``ctx.multi_image`` False (close-mosaic)
turns all three off: Mosaic then letterboxes and warps the single image, MixUp and CutMix pass it through.

As in YOLOX's ``MosaicDetection``, the affine warp is part of the Mosaic step: the four images are drawn through
the affine map straight into the ``S x S`` output (:func:`~lightning_yolo.data.tiles.render_tiles`), so each
image is resized once and the ``2S x 2S`` canvas is only built when the map rotates or shears.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import cv2
import numpy as np

from .formats.base import DetectionDataset
from .sample import RawSample
from .steps import AugmentContext, RandomAffine, SampleSource
from .tiles import Tile

__all__ = ["Mosaic", "MixUp", "CutMix", "KEEP_DECODED_BYTES"]

# Decoded images Mosaic keeps per process beyond its partner window (see Mosaic's keep_bytes).
KEEP_DECODED_BYTES = 256 * 2**20


class Mosaic:
    """Four images around a random centre on a ``2S x 2S`` canvas, then the random affine into ``S x S``
    (ultralytics ``Mosaic`` + ``RandomPerspective``; YOLOv4 paper section 3.3).

    Args:
        dataset: source images (``load_raw`` resized to long side ``S``; crowd boxes dropped).
        img_size: output side ``S``.
        prob: probability of a Mosaic; otherwise the image is letterboxed to ``S`` and warped alone.
        affine: the random affine (``None``: none, i.e. the centre ``S x S`` crop of the canvas).
        center_range: Mosaic centre drawn from ``U(lo * S, hi * S)`` per axis.
        buffer_size: when > 0 and the dataset is not RAM-cached, the three partner images are drawn from the
            last ``buffer_size`` images this process loaded (ultralytics' Mosaic buffer): one decode per sample
            instead of four. With a shuffling sampler the partners are still a random draw, from a recent window.
        keep_bytes: with the buffer on, images that leave the partner window stay decoded, the most recent first,
            up to this many bytes per process; a later sample of the same image then skips its decode. It changes
            only how often a file is decoded, never which images are drawn (the window is the same). On a dataset
            that fits (at 640 px, a few hundred photos: 256 MiB holds about 280 of 640x480) every image is decoded
            once per process, as in ultralytics, whose buffer of ``min(images, 8 x batch, 1000)`` keeps the
            images it holds decoded. 0 turns it off.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        img_size: int,
        prob: float = 1.0,
        affine: RandomAffine | None = None,
        center_range: tuple[float, float] = (0.5, 1.5),
        buffer_size: int = 0,
        keep_bytes: int = KEEP_DECODED_BYTES,
    ) -> None:
        if affine is not None and affine.out_size != img_size:
            raise ValueError(f"affine.out_size {affine.out_size} must equal img_size {img_size}")
        self.dataset = dataset
        self.img_size = int(img_size)
        self.prob = float(prob)
        self.affine = affine if affine is not None else RandomAffine(img_size, translate=0.0, scale=0.0)
        self.center_range = center_range
        self.class_names = dataset.class_names
        self.buffer_size = int(buffer_size)
        self.keep_bytes = int(keep_bytes)
        self._buffer: OrderedDict[int, RawSample] = OrderedDict()
        self._buffer_pid: int | None = None
        self._kept: OrderedDict[int, RawSample] = OrderedDict()  # decoded images that left the window
        self._kept_bytes = 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_buffer"], state["_buffer_pid"] = OrderedDict(), None  # each worker starts its own buffer
        state["_kept"], state["_kept_bytes"] = OrderedDict(), 0
        return state

    def _keep(self, index: int, raw: RawSample) -> None:
        """Hold an image that left the partner window, dropping the oldest held ones beyond ``keep_bytes``."""
        if raw.image.nbytes > self.keep_bytes:
            return
        self._kept[index] = raw
        self._kept_bytes += raw.image.nbytes
        while self._kept_bytes > self.keep_bytes:
            self._kept_bytes -= self._kept.popitem(last=False)[1].image.nbytes

    def _load(self, index: int) -> RawSample:
        """``dataset.load_raw``, remembering the result in this process's buffer when buffering is on."""
        if self.buffer_size <= 0 or self.dataset.is_cached:
            return self.dataset.load_raw(index)
        if self._buffer_pid != os.getpid():  # forked worker: start empty
            self._buffer, self._buffer_pid = OrderedDict(), os.getpid()
            self._kept, self._kept_bytes = OrderedDict(), 0
        raw = self._buffer.get(index)
        if raw is None:
            # the window's bookkeeping is the same whether or not the image was still held decoded
            raw = self._kept.pop(index, None)
            if raw is None:
                raw = self.dataset.load_raw(index)
            else:
                self._kept_bytes -= raw.image.nbytes
            self._buffer[index] = raw
            while len(self._buffer) > self.buffer_size:
                self._keep(*self._buffer.popitem(last=False))
        else:
            self._buffer.move_to_end(index)
        return raw

    def _partners(self, index: int, rng: np.random.Generator) -> list[RawSample]:
        if self.buffer_size > 0 and not self.dataset.is_cached and len(self._buffer) >= 4:
            keys = [k for k in self._buffer if k != index]
            return [self._buffer[keys[int(j)]] for j in rng.integers(0, len(keys), 3)]
        return [self._load(int(j)) for j in rng.integers(0, len(self.dataset), 3)]

    def __len__(self) -> int:
        return len(self.dataset)

    def _tile(self, raw: RawSample, origin: tuple[int, int], crop: tuple[int, int, int, int] | None) -> Tile:
        return Tile(raw.image, raw.boxes, raw.labels, raw.iscrowd, origin, crop)

    def get(self, index: int, ctx: AugmentContext) -> RawSample:
        rng = ctx.rng
        s = self.img_size
        first = self._load(index)
        if ctx.multi_image and self.prob > 0 and (self.prob >= 1 or rng.random() < self.prob):
            lo, hi = self.center_range
            xc, yc = (int(v) for v in rng.uniform(lo * s, hi * s, 2))
            tiles = []
            for i, raw in enumerate([first, *self._partners(index, rng)]):
                h, w = raw.image.shape[:2]
                # canvas cell and the part of the image that fills it (ultralytics _mosaic4)
                if i == 0:  # top left
                    x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                    x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
                elif i == 1:  # top right
                    x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
                    x1b, y1b = 0, h - (y2a - y1a)
                elif i == 2:  # bottom left
                    x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
                    x1b, y1b = w - (x2a - x1a), 0
                else:  # bottom right
                    x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
                    x1b, y1b = 0, 0
                crop = (x1b, y1b, x1b + (x2a - x1a), y1b + (y2a - y1a))
                tiles.append(self._tile(raw, (x1a - x1b, y1a - y1b), crop))
            canvas = (2 * s, 2 * s)
        else:
            h, w = first.image.shape[:2]
            # letterbox position in an S x S canvas (the image's long side is S already)
            tiles = [self._tile(first, ((s - w) // 2, (s - h) // 2), None)]
            canvas = (s, s)
        matrix = self.affine.sample_matrix(canvas, rng)
        image, boxes, labels, crowd = self.affine.render(tiles, canvas, matrix)
        kx, _, ox, oy = tiles[0].mapping
        return RawSample(image, boxes, labels, crowd, first.image_id, first.orig_size, first.ratio * kx, (ox, oy))


def _with_partner(stage: SampleSource, prob: float, index: int, ctx: AugmentContext) -> tuple[RawSample, RawSample | None]:
    """The sample at ``index`` and, with probability ``prob`` while multi-image augmentation is on, a random partner
    from the same stage (``None`` otherwise): the draw MixUp and CutMix share."""
    raw = stage.get(index, ctx)
    rng = ctx.rng
    if not ctx.multi_image or prob <= 0 or rng.random() >= prob:
        return raw, None
    return raw, stage.get(int(rng.integers(0, len(stage))), ctx)


class MixUp:
    """Blend a sample with another one; the boxes of both are kept (Zhang et al. 2018, detection variant of
    YOLOX / ultralytics).

    Args:
        stage: source of ``S x S`` samples (e.g. :class:`Mosaic`).
        prob: probability of mixing.
        alpha: mixing ratio of the first image drawn from ``Beta(alpha, alpha)`` (32: close to 0.5, ultralytics).
        ratio: a fixed mixing ratio instead (tests).
    """

    def __init__(self, stage: SampleSource, prob: float = 0.5, alpha: float = 32.0, ratio: float | None = None) -> None:
        self.stage, self.prob, self.alpha, self.ratio = stage, float(prob), float(alpha), ratio
        self.class_names = getattr(stage, "class_names", [])

    def __len__(self) -> int:
        return len(self.stage)

    def get(self, index: int, ctx: AugmentContext) -> RawSample:
        raw, other = _with_partner(self.stage, self.prob, index, ctx)
        if other is None:
            return raw
        rng = ctx.rng
        r = self.ratio if self.ratio is not None else float(rng.beta(self.alpha, self.alpha))
        raw.image = cv2.addWeighted(raw.image, r, other.image, 1.0 - r, 0.0)
        raw.boxes = np.concatenate([raw.boxes, other.boxes])
        raw.labels = np.concatenate([raw.labels, other.labels])
        raw.iscrowd = np.concatenate([raw.iscrowd, other.iscrowd])
        return raw


class CutMix:
    """Paste a random rectangle of another sample (Yun et al. 2019, detection variant as in ultralytics).

    The rectangle's area fraction is ``1 - lam`` with ``lam ~ Beta(beta, beta)``; of ``num_tries`` random
    rectangles the one hiding the least of the first sample's boxes is used. Boxes of the first sample that
    lose more than ``1 - min_visible`` of their area under the patch are dropped; the second sample's boxes are
    clipped to the patch and kept when at least ``min_area_ratio`` of them remains.

    Args:
        stage: source of ``S x S`` samples.
        prob: probability of CutMix.
        beta: Beta parameter of the area.
        num_tries: rectangles tried.
        min_visible: fraction of a first-sample box that must stay visible.
        min_area_ratio: fraction of a pasted box that must fall inside the patch.
        min_size: pasted boxes narrower or lower than this (pixels) are dropped.
    """

    def __init__(
        self,
        stage: SampleSource,
        prob: float = 0.5,
        beta: float = 1.0,
        num_tries: int = 4,
        min_visible: float = 0.6,
        min_area_ratio: float = 0.25,
        min_size: float = 2.0,
    ) -> None:
        self.stage, self.prob, self.beta, self.num_tries = stage, float(prob), float(beta), int(num_tries)
        self.min_visible, self.min_area_ratio, self.min_size = min_visible, min_area_ratio, min_size
        self.class_names = getattr(stage, "class_names", [])

    def __len__(self) -> int:
        return len(self.stage)

    @staticmethod
    def _hidden_fraction(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
        lt = np.maximum(boxes[:, :2], rect[:2])
        rb = np.minimum(boxes[:, 2:], rect[2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
        return inter / np.maximum(area, 1e-9)

    def get(self, index: int, ctx: AugmentContext) -> RawSample:
        raw, other = _with_partner(self.stage, self.prob, index, ctx)
        if other is None:
            return raw
        rng = ctx.rng
        h, w = raw.image.shape[:2]
        best, best_cost = None, np.inf
        for _ in range(max(1, self.num_tries)):
            cut = np.sqrt(1.0 - rng.beta(self.beta, self.beta))
            cw, ch = int(w * cut), int(h * cut)
            cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
            rect = np.array(
                [
                    np.clip(cx - cw // 2, 0, w),
                    np.clip(cy - ch // 2, 0, h),
                    np.clip(cx + cw // 2, 0, w),
                    np.clip(cy + ch // 2, 0, h),
                ]
            )
            if rect[2] - rect[0] < 2 or rect[3] - rect[1] < 2:
                continue
            hidden = self._hidden_fraction(raw.boxes, rect) if len(raw.boxes) else np.zeros(0)
            cost = float((hidden > 1.0 - self.min_visible).sum()) + float(hidden.sum()) * 1e-3
            if cost < best_cost:
                best, best_cost = rect, cost
        if best is None:
            return raw
        x0, y0, x1, y1 = (int(v) for v in best)
        # in place: stage outputs are freshly rendered arrays, never a cached source image
        raw.image[y0:y1, x0:x1] = other.image[y0:y1, x0:x1]
        if len(raw.boxes):
            keep = self._hidden_fraction(raw.boxes, best) <= 1.0 - self.min_visible
            raw.select(keep)
        if len(other.boxes):
            b = other.boxes.copy()
            b[:, 0::2] = b[:, 0::2].clip(x0, x1)
            b[:, 1::2] = b[:, 1::2].clip(y0, y1)
            area0 = (other.boxes[:, 2:] - other.boxes[:, :2]).prod(1)
            wh = b[:, 2:] - b[:, :2]
            keep = (wh.prod(1) >= self.min_area_ratio * area0) & (wh > self.min_size).all(1)
            raw.boxes = np.concatenate([raw.boxes, b[keep]])
            raw.labels = np.concatenate([raw.labels, other.labels[keep]])
            raw.iscrowd = np.concatenate([raw.iscrowd, other.iscrowd[keep]])
        return raw
