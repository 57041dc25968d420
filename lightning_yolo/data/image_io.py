"""Image files in, network-sized pixels out: the one place that decodes, resizes and letterboxes images.

Everything that turns an image into network input reads through this module: training and validation
(``data/formats`` via :func:`load_resized`), ``lightning-yolo predict`` (:class:`~lightning_yolo.data.predict.PredictImages`
via :func:`load_letterboxed`), the Python any-input predict (:mod:`lightning_yolo.inference.predict`, files via
:func:`load_letterboxed`, in-memory images via :func:`image_to_array` and :func:`letterbox`), and drawing
(:func:`decode_image`). So the same file gives the same pixels, hence the same boxes, on every path.

* **Decode** (:func:`decode_image`): any file PIL or OpenCV reads -> ``uint8 [H, W, 3]`` RGB, EXIF orientation
  applied. The common case (8-bit RGB or grey, no EXIF rotation) is decoded by OpenCV, at a reduced DCT scale when
  the image is shrunk by 2x or more anyway; odd modes (palette, RGBA, 16-bit, CMYK, ...) and EXIF-rotated files go
  through PIL (``ImageOps.exif_transpose``). Transparent pixels (RGBA, LA, PA, palette with transparency) are
  composited over :data:`FILL_VALUE`, so they look like padding; 16-bit images keep their high byte. Decoder
  timings: ``benchmarks/README.md``.
* **Resize** (:func:`resize_image`): OpenCV, linear, area interpolation when shrinking by more than 2x.
* **Letterbox** (:func:`letterbox_params` for the geometry, :func:`letterbox` for pixels): scale by
  ``ratio = min(H_t / H, W_t / W)`` to ``round(H * ratio) x round(W * ratio)``, pad with :data:`FILL_VALUE` to the
  ``size`` canvas (square) or, with ``rect``, only to the next multiple of ``stride``; padding split
  ``left = round(dw / 2 - 0.1)`` (the odd pixel goes right / bottom; YOLOv5's rule). A point maps as
  ``input = original * ratio + pad``; :func:`lightning_yolo.ops.boxes.scale_boxes_to_original` inverts it.
* **Files** (:func:`list_image_files`, :data:`IMAGE_EXTENSIONS`): a file, a folder or a glob pattern.
* **Size limit** (:data:`MAX_IMAGE_PIXELS`): PIL refuses images over about 179 megapixels as possible
  "decompression bombs"; a dataset is the user's own data, not an attack, so every file here is opened
  (:func:`open_image`) with the limit raised to OpenCV's own, 2^30 pixels. A larger image is a ``ValueError``
  naming the file and its size: the scan counts it as unreadable and skips it, predict reports it as skipped.

Orientation: boxes in COCO / YOLO / VOC labels refer to the *displayed* image (EXIF orientation applied), as
ultralytics does; sizes reported by :func:`probe_image` are displayed sizes.
"""

from __future__ import annotations

import glob
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "FILL_VALUE",
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "decode_image",
    "image_to_array",
    "letterbox",
    "letterbox_params",
    "list_image_files",
    "load_letterboxed",
    "load_resized",
    "MAX_IMAGE_PIXELS",
    "open_image",
    "probe_image",
    "resize_image",
]

#: File extensions treated as images when a folder or glob is expanded (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jfif")

#: Grey used for letterbox padding, Mosaic canvas and transparent pixels (ultralytics / YOLOv5 value).
FILL_VALUE = 114

#: Largest image decoded (pixels): OpenCV's ``CV_IO_MAX_IMAGE_PIXELS`` default, 2^30 (about 3 GiB as RGB).
MAX_IMAGE_PIXELS = 1 << 30

_PIL_LIMIT_LOCK = threading.Lock()


def open_image(path: str | os.PathLike) -> Image.Image:
    """``PIL.Image.open`` with PIL's decompression-bomb limit raised to :data:`MAX_IMAGE_PIXELS`.

    PIL raises ``DecompressionBombError`` (not an ``OSError``) from ``open`` for images over twice its
    ``MAX_IMAGE_PIXELS`` (about 179 MP), and warns above it: a 200-megapixel photo in a dataset would end a run
    with a traceback. The check happens only inside ``open``, so the module-wide limit is raised just around it
    (under a lock: scans probe in threads) and restored; a limit the user set higher (or ``None``) is kept.

    Raises:
        ValueError: the image has more than :data:`MAX_IMAGE_PIXELS` pixels, naming the file and its size.
        Whatever ``PIL.Image.open`` raises otherwise.
    """
    with _PIL_LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        if before is not None and before < MAX_IMAGE_PIXELS // 2:
            Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2  # PIL: warning above the limit, error above twice it
        try:
            return Image.open(path)
        except Image.DecompressionBombError as err:
            raise ValueError(f"{path}: image too large to decode ({err}; limit {MAX_IMAGE_PIXELS} pixels)") from err
        finally:
            Image.MAX_IMAGE_PIXELS = before

# PIL modes that OpenCV decodes to the same RGB as PIL's convert("RGB"); everything else goes through PIL.
_FAST_MODES = ("RGB", "L")
_FAST_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
_EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 transpose the image: displayed width is the stored height.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


@dataclass(frozen=True)
class ImageInfo:
    """Header facts about an image file.

    Attributes:
        height: displayed height in pixels (EXIF orientation applied).
        width: displayed width in pixels.
        mode: PIL mode of the stored image, e.g. ``"RGB"``, ``"L"``, ``"P"``, ``"I;16"``, ``"CMYK"``.
        orientation: EXIF orientation tag (1 = as stored).
        format: PIL format name, e.g. ``"JPEG"``.
    """

    height: int
    width: int
    mode: str
    orientation: int
    format: str

    @property
    def fast_path(self) -> bool:
        """True when OpenCV decodes this file to exactly what the PIL path would give."""
        return self.orientation == 1 and self.mode in _FAST_MODES and self.format in _FAST_FORMATS


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Read an image header (no pixel decode) and check the file is not truncated.

    Args:
        path: image file.

    Returns:
        The :class:`ImageInfo` with displayed size.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image or a JPEG without its end-of-image marker.
    """
    path = Path(path)
    try:
        with open_image(path) as im:
            width, height = im.size
            mode, fmt = im.mode, im.format or ""
            try:
                orientation = int(im.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
            except Exception:  # a broken EXIF block is not a broken image: ignore the tag
                orientation = 1
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err
    if fmt == "JPEG":
        # A truncated download keeps a valid header; the end-of-image marker (FF D9) is missing. Some cameras append
        # data after it, so look in the tail rather than at the last two bytes only.
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            if b"\xff\xd9" not in f.read():
                raise ValueError(f"{path}: truncated JPEG (no end-of-image marker)")
    elif fmt == "PNG":
        # Same for PNG: every complete file ends with an IEND chunk; a cut-off one passes the header read.
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            if b"IEND" not in f.read():
                raise ValueError(f"{path}: truncated PNG (no IEND chunk)")
    if orientation not in range(1, 9):
        orientation = 1
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: image has size {width}x{height}")
    return ImageInfo(height=height, width=width, mode=mode, orientation=orientation, format=fmt)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL image -> ``[H, W, 3]`` uint8 RGB (16-bit scaled by >> 8, alpha composited over grey)."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit int) grey: keep the high byte, as OpenCV and PIL do for 16-bit RGB.
        arr = np.asarray(im).astype(np.int64)
        arr = np.clip(arr >> 8, 0, 255).astype(np.uint8) if arr.max(initial=0) > 255 else arr.astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        arr = arr * 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else arr
        arr = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
        alpha = rgba[..., 3:4]
        # Composite over the padding grey so transparent areas look like padding, not like black objects.
        rgb = (rgba[..., :3] * alpha + FILL_VALUE * (255 - alpha) + 127) // 255
        return np.ascontiguousarray(rgb.astype(np.uint8))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.array(im)  # a writable copy (np.asarray of a PIL image is read-only)


def decode_image(path: str | os.PathLike, info: ImageInfo | None = None, reduce: int = 1) -> np.ndarray:
    """Decode an image file to RGB with EXIF orientation applied.

    Args:
        path: image file.
        info: its :func:`probe_image` result (probed here when ``None``).
        reduce: 1, 2, 4 or 8: allow a JPEG to be decoded at ``1/reduce`` scale (DCT scaling; the result is then
            ``ceil(size / reduce)``). Ignored on the PIL path and for other formats.

    Returns:
        ``[H, W, 3]`` uint8 RGB, C-contiguous.

    Raises:
        ValueError: the file cannot be decoded.
    """
    info = probe_image(path) if info is None else info
    if info.fast_path:
        flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION
        if reduce > 1 and info.format == "JPEG":
            # IMREAD_REDUCED_COLOR_k is IMREAD_COLOR | (16, 32, 48); drop the BGR bit to combine with RGB output.
            flags |= {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[
                reduce
            ] & ~cv2.IMREAD_COLOR
        # imdecode(fromfile) rather than imread: same speed, and non-ASCII paths work on every platform.
        img = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), flags)
        if img is not None and img.ndim == 3 and img.shape[2] == 3:
            return img
        # fall through to PIL, which gives the better error message
    try:
        with open_image(path) as im:
            im = ImageOps.exif_transpose(im) if info.orientation != 1 else im
            return _pil_to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err


def resize_image(image: np.ndarray, new_hw: tuple[int, int]) -> np.ndarray:
    """Resize ``[H, W, 3]`` (uint8 or float32) to ``new_hw = (h, w)``: linear, area when shrinking by more than 2x.

    Linear is enough after a DCT-reduced decode (the image is then shrunk by less than 2x); area interpolation only
    for big reductions, where it avoids aliasing. Returns ``image`` itself when it already has that size.
    """
    new_h, new_w = int(new_hw[0]), int(new_hw[1])
    if image.shape[0] == new_h and image.shape[1] == new_w:
        return image
    interp = cv2.INTER_AREA if image.shape[1] / new_w > 2.0 else cv2.INTER_LINEAR
    return cv2.resize(image, (new_w, new_h), interpolation=interp)


def letterbox_params(
    orig_hw: tuple[int, int],
    size: int | tuple[int, int],
    stride: int = 32,
    scale_up: bool = True,
    rect: bool = False,
) -> tuple[float, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Geometry of a letterbox, without touching pixels (the one padding rule; see the module docstring).

    Args:
        orig_hw: ``(H, W)`` of the original image.
        size: target side ``S`` (square ``S x S``) or ``(H_t, W_t)``.
        stride: with ``rect``, the canvas is rounded up to a multiple of this (the model's largest stride).
        scale_up: allow ``ratio > 1`` (small images are enlarged); else only shrink.
        rect: minimal padding: the canvas is the resized image rounded up to ``stride`` per side (e.g. a 640x480
            photo at ``size=640`` gives a 640x480 canvas instead of 640x640), never larger than ``size`` rounded
            up to ``stride``.

    Returns:
        ``(ratio, (new_h, new_w), (pad_left, pad_top), (canvas_h, canvas_w))``.
    """
    height, width = int(orig_hw[0]), int(orig_hw[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got (H, W) = {(height, width)}")
    target_h, target_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if target_h <= 0 or target_w <= 0:
        raise ValueError(f"letterbox size must be positive, got {size!r}")
    ratio = min(target_h / height, target_w / width)
    if not scale_up:
        ratio = min(ratio, 1.0)
    new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    if rect:
        canvas_h, canvas_w = (math.ceil(n / stride) * stride for n in (new_h, new_w))
    else:
        canvas_h, canvas_w = target_h, target_w
    # round(d / 2 - 0.1) puts the odd pixel right / bottom (YOLOv5)
    left, top = int(round((canvas_w - new_w) / 2 - 0.1)), int(round((canvas_h - new_h) / 2 - 0.1))
    return ratio, (new_h, new_w), (left, top), (canvas_h, canvas_w)


def _pad(image: np.ndarray, canvas_hw: tuple[int, int], left: int, top: int, fill: float) -> np.ndarray:
    """Pad ``[h, w, 3]`` to ``canvas_hw`` with ``fill`` (0..255 scale; divided by 255 for float images)."""
    right, bottom = canvas_hw[1] - image.shape[1] - left, canvas_hw[0] - image.shape[0] - top
    if not (left or top or right or bottom):
        return image
    value = float(fill) if image.dtype == np.uint8 else float(fill) / 255.0
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(value,) * 3)


def letterbox(
    image: np.ndarray,
    size: int | tuple[int, int],
    stride: int = 32,
    scale_up: bool = True,
    rect: bool = False,
    fill: float = FILL_VALUE,
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio (:func:`resize_image`), then pad to the canvas (:func:`letterbox_params`).

    Args:
        image: ``[H, W, 3]`` uint8 in ``0..255`` or float32 in ``[0, 1]``.
        size: target side ``S`` or ``(H_t, W_t)``.
        stride: canvas multiple with ``rect``.
        scale_up: allow enlarging.
        rect: minimal padding to a multiple of ``stride`` instead of the full ``size`` canvas.
        fill: padding value on the 0..255 scale.

    Returns:
        ``(canvas [canvas_h, canvas_w, 3]`` same dtype, ``ratio``, ``(pad_left, pad_top))``; boxes map as
        ``input = original * ratio + pad``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got shape {list(image.shape)}")
    ratio, new_hw, (left, top), canvas_hw = letterbox_params(image.shape[:2], size, stride, scale_up, rect)
    return _pad(resize_image(image, new_hw), canvas_hw, left, top, fill), ratio, (left, top)


def _dct_reduce(ratio: float) -> int:
    """The largest JPEG DCT scale ``1/k`` (k in 1, 2, 4, 8) that still leaves the image at least as large as needed."""
    reduce = 1
    while reduce < 8 and ratio * reduce * 2 <= 1.0:
        reduce *= 2
    return reduce


def load_resized(path: str | os.PathLike, info: ImageInfo | None, max_size: int | None) -> tuple[np.ndarray, float]:
    """Decode an image and resize it once so its long side is ``max_size`` (ultralytics ``load_image``).

    Args:
        path: image file.
        info: its probe result (probed here when ``None``).
        max_size: target long side in pixels; ``None`` keeps the original size.

    Returns:
        ``(image [h, w, 3] uint8 RGB, ratio)`` with ``h = round(H * ratio)``, ``w = round(W * ratio)`` and
        ``ratio = max_size / max(H, W)`` for the displayed original ``H x W`` (1.0 when ``max_size`` is ``None``).
        Boxes scale by exactly ``ratio``.
    """
    info = probe_image(path) if info is None else info
    if max_size is None:
        return decode_image(path, info), 1.0
    ratio, new_hw, _, _ = letterbox_params((info.height, info.width), int(max_size))
    return resize_image(decode_image(path, info, reduce=_dct_reduce(ratio)), new_hw), ratio


def load_letterboxed(
    path: str | os.PathLike,
    size: int | tuple[int, int],
    info: ImageInfo | None = None,
    stride: int = 32,
    scale_up: bool = True,
    rect: bool = False,
) -> tuple[np.ndarray, float, tuple[int, int], tuple[int, int]]:
    """Decode a file straight to network input: :func:`letterbox` of the displayed image, with a DCT-reduced decode
    when the image is shrunk by 2x or more (the square case equals :func:`load_resized` then padding).

    Args:
        path: image file.
        size: letterbox side ``S`` or ``(H_t, W_t)``.
        info: its probe result (probed here when ``None``).
        stride, scale_up, rect: as in :func:`letterbox_params`.

    Returns:
        ``(canvas [canvas_h, canvas_w, 3] uint8, ratio, (pad_left, pad_top), (H, W))`` with ``(H, W)`` the
        displayed original size.

    Raises:
        FileNotFoundError / ValueError: as :func:`probe_image` and :func:`decode_image`, naming the file.
    """
    info = probe_image(path) if info is None else info
    ratio, new_hw, (left, top), canvas_hw = letterbox_params((info.height, info.width), size, stride, scale_up, rect)
    image = resize_image(decode_image(path, info, reduce=_dct_reduce(ratio)), new_hw)
    return _pad(image, canvas_hw, left, top, FILL_VALUE), ratio, (left, top), (info.height, info.width)


def image_to_array(image: Any) -> np.ndarray:
    """An in-memory image -> ``[H, W, 3]`` RGB array, uint8 ``0..255`` or float32 ``[0, 1]``.

    Args:
        image: a PIL image (any mode: decoded like a file, transparency over :data:`FILL_VALUE`, 16-bit to 8-bit),
            or a numpy ``[H, W, 3]`` / ``[H, W, 1]`` / ``[H, W]`` array, uint8 or float in ``[0, 1]``.

    Raises:
        ValueError: wrong shape, or float values outside ``[0, 1]``.
        TypeError: neither uint8 nor float.
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"numpy images must be [H, W, 3] or [H, W] (RGB), got shape {list(arr.shape)}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"images must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; pass uint8 or divide by 255"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def list_image_files(source: str | os.PathLike) -> list[Path]:
    """Expand an image file, a folder (not recursive) or a glob pattern into a sorted list of image files.

    Args:
        source: a file path, a directory, or a pattern with ``*``, ``?`` or ``[`` (``**`` recurses).

    Returns:
        Image files (by extension, :data:`IMAGE_EXTENSIONS`) sorted by path; a single file is returned whatever
        its extension.

    Raises:
        FileNotFoundError: nothing matches, naming ``source``.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"{path}: folder holds no image files (extensions {', '.join(IMAGE_EXTENSIONS)})")
        return files
    if glob.has_magic(text):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"{text}: pattern matches no image files")
        return files
    raise FileNotFoundError(f"{text}: no such image file, folder or pattern")
