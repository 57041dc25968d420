"""Image tensors for the network: letterbox geometry and resize + pad, image-file discovery and reading.

The letterbox convention is the one of the data pipeline (``data.transforms.Letterbox``) and of YOLOv5:
scale by ``ratio = min(H_t / H, W_t / W)``, size ``round(H * ratio) x round(W * ratio)``, padding split as
``left = round(dw / 2 - 0.1)`` (the odd pixel goes right / bottom), fill grey 114. A point maps as
``input = original * ratio + pad``; :func:`lightning_yolo.ops.boxes.scale_boxes_to_original` inverts it.
"""

from __future__ import annotations

import glob
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "FILL_VALUE",
    "IMAGE_EXTENSIONS",
    "letterbox_params",
    "letterbox",
    "list_image_files",
    "read_image",
]

#: Padding grey (ultralytics / YOLOv5 value, also the data pipeline's).
FILL_VALUE = 114

#: File extensions taken as images when a folder or glob is expanded (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".jfif")


def letterbox_params(
    orig_hw: tuple[int, int],
    size: int | tuple[int, int],
    stride: int = 32,
    scale_up: bool = True,
    rect: bool = False,
) -> tuple[float, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Geometry of a letterbox, without touching pixels.

    Args:
        orig_hw: ``(H, W)`` of the original image.
        size: target side ``S`` (square ``S x S``) or ``(H_t, W_t)``.
        stride: with ``rect``, the canvas is rounded up to a multiple of this.
        scale_up: allow ``ratio > 1`` (small images are enlarged); else only shrink.
        rect: minimal padding: the canvas is the resized image rounded up to ``stride`` per side (e.g. a 640x480
            photo at ``size=640`` gives a 640x480 canvas instead of 640x640: 25 % fewer FLOPs), never larger
            than ``size`` rounded up to ``stride``.

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
    # YOLOv5 / data.transforms.Letterbox split: round(d / 2 - 0.1) puts the odd pixel right / bottom
    left, top = int(round((canvas_w - new_w) / 2 - 0.1)), int(round((canvas_h - new_h) / 2 - 0.1))
    return ratio, (new_h, new_w), (left, top), (canvas_h, canvas_w)


def letterbox(
    image: torch.Tensor,
    size: int | tuple[int, int],
    stride: int = 32,
    scale_up: bool = True,
    rect: bool = False,
    fill: float = FILL_VALUE,
) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """Resize keeping the aspect ratio, then pad to the canvas (:func:`letterbox_params`).

    Resizing is bilinear with antialiasing (``torchvision.transforms.v2.functional.resize``; for uint8 it uses the
    native uint8 kernels, no float copy), close to OpenCV's ``INTER_AREA`` when shrinking.

    Args:
        image: ``[3, H, W]`` (or ``[..., 3, H, W]``) uint8 in ``0..255`` or float in ``[0, 1]``.
        size: target side ``S`` or ``(H_t, W_t)``.
        stride: canvas multiple with ``rect``.
        scale_up: allow enlarging.
        rect: minimal padding to a multiple of ``stride`` instead of the full ``size`` canvas.
        fill: padding value on the 0..255 scale (divided by 255 for float images).

    Returns:
        ``(image [..., 3, canvas_h, canvas_w]`` same dtype, ``ratio``, ``(pad_left, pad_top))``; boxes map as
        ``input = original * ratio + pad``.
    """
    if image.ndim < 3 or image.shape[-3] not in (1, 3):
        raise ValueError(f"image must be [..., 3, H, W], got shape {list(image.shape)}")
    ratio, (new_h, new_w), (left, top), (canvas_h, canvas_w) = letterbox_params(
        image.shape[-2:], size, stride=stride, scale_up=scale_up, rect=rect
    )
    if (new_h, new_w) != tuple(image.shape[-2:]):
        image = TF.resize(image, [new_h, new_w], antialias=True)
    right, bottom = canvas_w - new_w - left, canvas_h - new_h - top
    if left or top or right or bottom:
        value = float(fill) if not image.is_floating_point() else float(fill) / 255.0
        image = F.pad(image, (left, right, top, bottom), value=value)
    return image, ratio, (left, top)


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


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file to RGB, EXIF orientation applied.

    OpenCV decodes (``cv2.imdecode``; it applies the EXIF orientation and reduces 16-bit and grey images to 8-bit
    RGB); files it cannot read go through PIL (``ImageOps.exif_transpose``). ``torchvision.io`` decoding is
    deprecated since torchvision 0.29, so it is not used.

    Args:
        path: image file.

    Returns:
        ``[3, H, W]`` uint8 RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image, naming it.
    """
    import cv2
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    # imdecode(fromfile) rather than imread: non-ASCII paths work on every platform
    arr = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR_RGB)
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3:
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                arr = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise ValueError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from err
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
