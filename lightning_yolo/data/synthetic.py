"""A seeded, procedurally drawn shapes dataset, written to disk as real image files with COCO and YOLO labels.

It is the DataModule's embedded default (``path=None``): generated once into a cache folder and reused. Each
image has a textured background (colour gradient, low-frequency blotches, distractor lines, pixel noise) and
1-``max_objects`` filled shapes of clearly distinct classes (circle, square, triangle, cross, ...), with random
colours and sizes from ``min_size`` to ``max_size`` pixels (log-uniform), overlapping each other by at most
``max_overlap`` of the smaller shape. Boxes are the exact extents of the drawn pixels.

Layout of ``root``::

    data.yaml                          # YOLO: path ".", train images/train, val images/val
    images/{train,val}/000000.jpg
    labels/{train,val}/000000.txt      # class cx cy w h, normalised
    annotations/instances_{train,val}.json   # COCO, category ids 1..C
    voc/{Annotations,JPEGImages,ImageSets/Main}  # only with "voc" in formats
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .formats.coco import write_coco_json
from .formats.voc import write_voc_xml
from .formats.yolo import write_data_yaml, write_yolo_labels

__all__ = [
    "SHAPES",
    "SYNTHETIC_CLASSES",
    "draw_synthetic_image",
    "make_synthetic_dataset",
    "default_synthetic_root",
    "ensure_synthetic_dataset",
    "cache_dir",
]

#: Every shape the generator can draw, in class order; the first ``num_classes`` are used.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring", "bar", "star")
#: Class names of the default synthetic dataset.
SYNTHETIC_CLASSES: tuple[str, ...] = SHAPES[:4]
# Bump when the drawing changes, so cached datasets are regenerated.
_GENERATOR_VERSION = 2
_DONE_MARKER = ".complete"


def cache_dir() -> Path:
    """``$LIGHTNING_YOLO_CACHE`` or ``~/.cache/lightning_yolo``."""
    return Path(os.environ.get("LIGHTNING_YOLO_CACHE") or Path.home() / ".cache" / "lightning_yolo")


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Textured background: gradient between two colours + low-frequency blotches + distractor lines."""
    cells = int(rng.integers(3, 9))
    c0, c1 = rng.uniform(30, 225, 3).astype(np.float32), rng.uniform(30, 225, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    g = np.linspace(0.0, 1.0, cells, dtype=np.float32)
    t = (np.cos(angle) * g[None, :] + np.sin(angle) * g[:, None] + 1.0) / 2.0
    small = c0 + (c1 - c0) * t[..., None] + rng.uniform(-40, 40, (cells, cells, 3)).astype(np.float32)
    # one resize of a cells x cells grid: a linear gradient stays linear, the blotches become smooth
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 6))):  # distractor lines: edges that are not objects
        p0 = tuple(int(v) for v in rng.integers(0, (width, height)))
        p1 = tuple(int(v) for v in rng.integers(0, (width, height)))
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p0, p1, col, int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _shape_mask(shape: str, size: int) -> np.ndarray:
    """Binary mask ``[size, size]`` of one shape (the shape touches the borders of its square)."""
    m = np.zeros((size, size), np.uint8)
    s = size - 1
    if shape == "circle":
        cv2.circle(m, (s // 2, s // 2), s // 2, 1, -1)
    elif shape == "square":
        m[:] = 1
    elif shape == "triangle":
        cv2.fillPoly(m, [np.array([[s // 2, 0], [0, s], [s, s]], np.int32)], 1)
    elif shape == "cross":
        t = max(1, size // 3)
        a = (size - t) // 2
        m[a : a + t, :] = 1
        m[:, a : a + t] = 1
    elif shape == "diamond":
        cv2.fillPoly(m, [np.array([[s // 2, 0], [s, s // 2], [s // 2, s], [0, s // 2]], np.int32)], 1)
    elif shape == "ring":
        cv2.circle(m, (s // 2, s // 2), s // 2, 1, -1)
        cv2.circle(m, (s // 2, s // 2), max(1, s // 4), 0, -1)
    elif shape == "bar":
        t = max(1, size // 4)
        m[(size - t) // 2 : (size - t) // 2 + t, :] = 1
    elif shape == "star":
        ang = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:10]
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45) * s / 2
        pts = np.stack([s / 2 + rad * np.cos(ang), s / 2 + rad * np.sin(ang)], 1).round().astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")
    return m


def _colour(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """A saturated random colour at least some distance from ``avoid`` (the local background mean)."""
    best, best_d = None, -1.0
    for _ in range(8):
        hsv = np.array([[[rng.integers(0, 180), rng.integers(130, 256), rng.integers(110, 256)]]], np.uint8)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        d = float(np.abs(rgb - avoid).sum())
        if d > 150:
            return rgb
        if d > best_d:
            best, best_d = rgb, d
    return best


def _ioa(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over the smaller area between ``box`` [4] and ``boxes`` [N, 4]."""
    if len(boxes) == 0:
        return np.zeros(0)
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.minimum(area(box), area(boxes))


def draw_synthetic_image(
    rng: np.random.Generator,
    size: int | tuple[int, int] = 256,
    num_classes: int = 4,
    min_objects: int = 1,
    max_objects: int = 6,
    min_size: int = 16,
    max_size: int | None = None,
    max_overlap: float = 0.25,
    noise: float = 6.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image.

    Args:
        rng: random generator (the image is a pure function of its state).
        size: ``S`` (square) or ``(width, height)``.
        num_classes: use the first ``num_classes`` of :data:`SHAPES`.
        min_objects: fewest shapes per image.
        max_objects: most shapes per image (fewer when they do not fit).
        min_size: smallest shape side in pixels.
        max_size: largest shape side (default: half the shorter image side).
        max_overlap: largest intersection over the smaller box between two shapes.
        noise: standard deviation of the (uniform) pixel noise.

    Returns:
        ``(image [H, W, 3] uint8 RGB, boxes [N, 4] float32 xyxy pixels, labels [N] int64)``.
    """
    width, height = (size, size) if isinstance(size, int) else size
    max_size = max_size or min(width, height) // 2
    max_size = max(min_size, min(max_size, min(width, height)))
    img = _background(rng, height, width)
    boxes: list[list[float]] = []
    labels: list[int] = []
    target = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(target * 10):
        if len(boxes) >= target:
            break
        side = int(round(np.exp(rng.uniform(np.log(min_size), np.log(max_size + 1)))))
        side = min(max(side, min_size), max_size)
        x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        cls = int(rng.integers(0, num_classes))
        mask = _shape_mask(SHAPES[cls], side)
        ys, xs = np.nonzero(mask)
        box = np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.float32)
        if len(boxes) and (_ioa(box, np.asarray(boxes, np.float32)) > max_overlap).any():
            continue
        roi = img[y0 : y0 + side, x0 : x0 + side]
        colour = _colour(rng, roi.reshape(-1, 3).mean(0))
        # a little shading so shapes are not flat (the class is the shape, not the colour)
        shade = np.linspace(1.0 - rng.uniform(0, 0.25), 1.0, side, dtype=np.float32)
        fill = np.clip(colour[None, None, :] * shade[:, None, None], 0, 255).astype(np.uint8)
        np.copyto(roi, np.broadcast_to(fill, roi.shape), where=mask[..., None].astype(bool))
        boxes.append(box.tolist())
        labels.append(cls)
    if noise > 0:
        # uniform noise with standard deviation `noise` (3x cheaper to draw than Gaussian)
        amp = int(round(noise * np.sqrt(3.0)))
        img = cv2.add(img, rng.integers(-amp, amp + 1, img.shape, dtype=np.int16), dtype=cv2.CV_8U)
    return img, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def _params(**kw: object) -> str:
    blob = json.dumps({"version": _GENERATOR_VERSION, **kw}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def make_synthetic_dataset(
    root: str | os.PathLike,
    num_train: int = 512,
    num_val: int = 128,
    img_size: int | tuple[int, int] = 256,
    seed: int = 0,
    num_classes: int = 4,
    max_objects: int = 6,
    min_size: int = 16,
    max_size: int | None = None,
    formats: Sequence[str] = ("coco", "yolo"),
    image_format: str = "jpg",
    jpeg_quality: int = 92,
    noise: float = 6.0,
) -> Path:
    """Generate the dataset into ``root`` (overwriting files of the same names).

    Args:
        root: output folder.
        num_train: training images.
        num_val: validation images.
        img_size: image side ``S`` or ``(width, height)``.
        seed: the whole dataset is a function of the arguments.
        num_classes: 1..8 shape classes (:data:`SHAPES`).
        max_objects: most shapes per image.
        min_size: smallest shape side in pixels.
        max_size: largest shape side (default: half the shorter image side).
        formats: any of ``"coco"``, ``"yolo"``, ``"voc"``.
        image_format: ``"jpg"`` or ``"png"``.
        jpeg_quality: JPEG quality.
        noise: pixel noise standard deviation (uniform noise).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    unknown = set(formats) - {"coco", "yolo", "voc"}
    if unknown:
        raise ValueError(f"formats may contain coco, yolo, voc; got {sorted(unknown)}")
    root = Path(root)
    names = list(SHAPES[:num_classes])
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ss = np.random.SeedSequence(seed)
    for split, n, split_seq in zip(("train", "val"), (num_train, num_val), ss.spawn(2), strict=True):
        img_dir = root / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        coco_images, coco_anns = [], []
        voc_ids = []
        for i, child in enumerate(split_seq.spawn(n)):
            rng = np.random.default_rng(child)
            img, boxes, labels = draw_synthetic_image(
                rng, img_size, num_classes, max_objects=max_objects, min_size=min_size, max_size=max_size, noise=noise
            )
            h, w = img.shape[:2]
            stem = f"{i:06d}"
            fname = f"{stem}.{image_format}"
            ok, buf = cv2.imencode(f".{image_format}", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
            if not ok:
                raise RuntimeError(f"could not encode {fname}")
            buf.tofile(str(img_dir / fname))
            if "yolo" in formats:
                write_yolo_labels(root / "labels" / split / f"{stem}.txt", boxes, labels, w, h)
            if "coco" in formats:
                coco_images.append({"id": i + 1, "file_name": fname, "width": w, "height": h})
                for b, c in zip(boxes.tolist(), labels.tolist(), strict=True):
                    bw, bh = b[2] - b[0], b[3] - b[1]
                    coco_anns.append({"id": len(coco_anns) + 1, "image_id": i + 1, "category_id": c + 1,
                                      "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})  # fmt: skip
            if "voc" in formats:
                voc = root / "voc"
                (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
                vname = f"{split}_{stem}"
                dst = voc / "JPEGImages" / f"{vname}.{image_format}"
                if not dst.exists():
                    try:
                        os.link(img_dir / fname, dst)
                    except OSError:
                        shutil.copyfile(img_dir / fname, dst)
                write_voc_xml(voc / "Annotations" / f"{vname}.xml", dst.name, w, h, boxes, [names[c] for c in labels])
                voc_ids.append(vname)
        if "coco" in formats:
            cats = [{"id": c + 1, "name": nm} for c, nm in enumerate(names)]
            write_coco_json(root / "annotations" / f"instances_{split}.json", coco_images, coco_anns, cats)
        if "voc" in formats:
            (root / "voc" / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
            (root / "voc" / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(voc_ids) + "\n")
            (root / "voc" / "labels.txt").write_text("\n".join(names) + "\n")
    if "yolo" in formats:
        write_data_yaml(root / "data.yaml", names)
    return root


def default_synthetic_root(**params: object) -> Path:
    """Cache folder for the given :func:`make_synthetic_dataset` parameters: ``<cache>/synthetic-<hash>``."""
    return cache_dir() / f"synthetic-{_params(**params)}"


def ensure_synthetic_dataset(root: str | os.PathLike | None = None, **params: object) -> Path:
    """Generate the synthetic dataset once and return its folder (the default cache folder when ``root`` is None).

    Generation writes to a temporary sibling folder and renames it, so concurrent processes never see a
    half-written dataset.
    """
    root = Path(root) if root is not None else default_synthetic_root(**params)
    if (root / _DONE_MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    make_synthetic_dataset(tmp, **params)  # type: ignore[arg-type]
    (tmp / _DONE_MARKER).write_text(json.dumps({"version": _GENERATOR_VERSION, **params}, default=str))
    try:
        os.rename(tmp, root)
    except OSError:
        # another process finished first (or a stale incomplete folder exists)
        if (root / _DONE_MARKER).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
            os.rename(tmp, root)
    return root
