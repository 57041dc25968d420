"""Drawing detections on images and saving them (``torchvision.utils.draw_bounding_boxes`` underneath)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

__all__ = ["MAX_GRID_IMAGES", "PALETTE", "batch_grid", "class_color", "draw_detections", "save_image"]

#: Images in a batch picture (``train_batch0.png``, ``val_batch0_pred.png``, TensorBoard grids).
MAX_GRID_IMAGES = 16

#: Distinct colours (RGB), one per class, cycled (the ultralytics palette).
PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    tuple(int(h[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[misc]
    for h in (
        "FF3838 FF9D97 FF701F FFB21D CFD231 48F90A 92CC17 3DDB86 1A9334 00D4BB "
        "2C99A8 00C2FF 344593 6473FF 0018EC 8438FF 520085 CB38FF FF95C8 FF37C7"
    ).split()
)


def class_color(label: int) -> tuple[int, int, int]:
    """The palette colour of a class id."""
    return PALETTE[int(label) % len(PALETTE)]


def _to_chw_uint8(image: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    """Image -> (``[3, H, W]`` uint8 tensor, whether the input was a numpy ``HWC`` array)."""
    is_numpy = isinstance(image, np.ndarray)
    if is_numpy:
        arr = image[..., None] if image.ndim == 2 else image
        if arr.ndim != 3 or arr.shape[2] not in (1, 3):
            raise ValueError(f"numpy images must be [H, W, 3] or [H, W], got shape {list(image.shape)}")
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
    elif isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image tensors must be [3, H, W], got shape {list(image.shape)}")
        img = image.detach().cpu()
    else:
        raise TypeError(
            f"image must be a torch.Tensor [3, H, W] or a numpy [H, W, 3] array, got {type(image).__name__}"
        )
    if img.is_floating_point():
        # float images are taken to be in [0, 1] (the network's input scale)
        img = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    elif img.dtype != torch.uint8:
        raise TypeError(f"image must be uint8 or float in [0, 1], got dtype {img.dtype}")
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.contiguous(), is_numpy


def draw_detections(
    image: torch.Tensor | np.ndarray,
    boxes: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | Sequence[int],
    scores: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    width: int = 2,
    font_size: int | None = None,
    font: str | None = None,
) -> torch.Tensor | np.ndarray:
    """Draw boxes with ``"name 0.87"`` captions, one colour per class.

    Args:
        image: ``[3, H, W]`` tensor or ``[H, W, 3]`` numpy array, uint8 (or float in [0, 1]), RGB.
        boxes: ``[K, 4]`` xyxy in the image's pixels.
        labels: ``[K]`` class ids.
        scores: ``[K]`` scores, appended to the caption with two decimals; ``None`` omits them.
        class_names: names by class id; ids are printed when ``None``.
        width: line width in pixels.
        font_size: caption size (needs ``font``, a TrueType file; PIL's built-in font otherwise).
        font: path of a TrueType font for the captions.

    Returns:
        A new uint8 image in the layout of ``image`` (``[3, H, W]`` tensor or ``[H, W, 3]`` numpy array).
    """
    img, is_numpy = _to_chw_uint8(image)
    boxes_t = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, torch.Tensor) else boxes.detach().cpu())
    boxes_t = boxes_t.float().reshape(-1, 4)
    labels_list = [int(v) for v in torch.as_tensor(labels).reshape(-1).tolist()]
    if len(labels_list) != boxes_t.shape[0]:
        raise ValueError(f"got {boxes_t.shape[0]} boxes but {len(labels_list)} labels")
    score_list = None if scores is None else [float(v) for v in torch.as_tensor(scores).reshape(-1).tolist()]
    if score_list is not None and len(score_list) != len(labels_list):
        raise ValueError(f"got {len(labels_list)} labels but {len(score_list)} scores")
    if class_names is not None and labels_list and max(labels_list) >= len(class_names):
        raise ValueError(f"label {max(labels_list)} has no name: class_names has {len(class_names)} entries")

    if boxes_t.shape[0]:
        names = [class_names[i] if class_names is not None else str(i) for i in labels_list]
        captions = names if score_list is None else [f"{n} {s:.2f}" for n, s in zip(names, score_list, strict=True)]
        # draw_bounding_boxes rejects x2 < x1; clamp degenerate boxes to zero size
        boxes_t = torch.cat((boxes_t[:, :2], torch.maximum(boxes_t[:, 2:], boxes_t[:, :2])), dim=1)
        img = draw_bounding_boxes(
            img,
            boxes_t,
            labels=captions,
            colors=[class_color(i) for i in labels_list],
            width=width,
            font=font,
            font_size=font_size if font is not None else None,
            fill_labels=True,  # black caption on a box-coloured strip: readable on any background
        )
    else:
        img = img.clone()
    return img.permute(1, 2, 0).numpy().copy() if is_numpy else img


def save_image(image: torch.Tensor | np.ndarray, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Write an RGB image to ``path`` (format from the extension, e.g. ``.jpg``, ``.png``); folders are created.

    Args:
        image: ``[3, H, W]`` tensor or ``[H, W, 3]`` numpy array, uint8 (or float in [0, 1]).
        path: output file.
        **save_kwargs: passed to ``PIL.Image.save`` (e.g. ``quality=90``).

    Returns:
        The written path.
    """
    from PIL import Image

    img, _ = _to_chw_uint8(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path, **save_kwargs)
    return path


def batch_grid(
    images: torch.Tensor,
    annotations: Sequence[dict[str, torch.Tensor]],
    class_names: Sequence[str] | None = None,
    max_images: int = MAX_GRID_IMAGES,
    score_thresh: float | None = None,
) -> torch.Tensor:
    """A batch as one picture: the first ``max_images`` images with their boxes, in a near-square grid.

    Args:
        images: ``[B, 3, H, W]`` uint8, or float in ``[0, 1]`` (any device).
        annotations: per image ``boxes [K, 4]`` xyxy in the images' pixels and ``labels [K]``, and ``scores [K]`` for
            detections (drawn in the captions).
        class_names: names in the captions (``None``: class ids).
        max_images: images in the grid.
        score_thresh: draw only detections scoring at least this (``None``: all).

    Returns:
        uint8 ``[3, H', W']``, white between the images.
    """
    from torchvision.utils import make_grid

    drawn = []
    for img, ann in zip(images[:max_images], annotations, strict=False):
        boxes, labels = ann["boxes"].detach().cpu(), ann["labels"].detach().cpu()
        scores = ann["scores"].detach().cpu() if "scores" in ann else None
        if scores is not None and score_thresh is not None:
            keep = scores >= score_thresh
            boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
        image = img.detach().cpu()
        drawn.append(draw_detections(image if image.dtype == torch.uint8 else image.float(), boxes, labels, scores,
                                     class_names=class_names))  # fmt: skip
    return make_grid(drawn, nrow=max(1, math.ceil(math.sqrt(len(drawn)))), padding=2, pad_value=255)
