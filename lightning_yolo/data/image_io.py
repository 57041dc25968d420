"""Image probing and decoding: any file PIL or OpenCV can read -> ``uint8 [H, W, 3]`` RGB, EXIF orientation applied.

Speed (``benchmarks/data.py`` on the busy 2-core development machine, photo-like JPEGs, quality 90, ms per image):
1280x960 for a 640-px network: ``cv2.imdecode`` 10.8-13.4, ``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_2`` (DCT-domain
1/2 scaling) 4.5-9.1, ``torchvision.io.decode_jpeg`` 6.6-11.2, PIL 8.1-15.7 (5.6-10.3 with ``draft``); 640x480:
OpenCV 2.5, torchvision 2.3, PIL 2.8. torchvision has no scaled decode and returns CHW, which OpenCV would need
copied to HWC, so the common case (8-bit RGB or grey, no EXIF rotation) is decoded by OpenCV, at a reduced scale
when the image is shrunk by 2x or more anyway; odd modes (palette, RGBA, 16-bit, CMYK, ...) and EXIF-rotated files
go through PIL, where ``ImageOps.exif_transpose`` applies the orientation.

Orientation: boxes in COCO / YOLO / VOC labels refer to the *displayed* image (EXIF orientation applied), as
ultralytics does; sizes reported by :func:`probe_image` are displayed sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageInfo", "probe_image", "decode_image", "load_resized", "FILL_VALUE"]

#: File extensions treated as images when a folder is scanned (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jfif")

#: Grey used for letterbox padding, Mosaic canvas and transparent pixels (ultralytics / YOLOv5 value).
FILL_VALUE = 114

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
        with Image.open(path) as im:
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
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im) if info.orientation != 1 else im
            return _pil_to_rgb(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err


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
    height, width = info.height, info.width
    if max_size is None:
        return decode_image(path, info), 1.0
    ratio = max_size / max(height, width)
    reduce = 1
    while reduce < 8 and ratio * reduce * 2 <= 1.0:
        reduce *= 2
    img = decode_image(path, info, reduce=reduce)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    if img.shape[0] != new_h or img.shape[1] != new_w:
        # Linear is enough after DCT reduction (the image is shrunk by < 2x here); area only for big reductions
        # of non-JPEG files, where it avoids aliasing.
        shrink = img.shape[1] / new_w
        interp = cv2.INTER_AREA if shrink > 2.0 else cv2.INTER_LINEAR
        img = cv2.resize(img, (new_w, new_h), interpolation=interp)
    return img, ratio
