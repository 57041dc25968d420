"""Batching to the batch contract: ``{"images": uint8 [B, 3, S, S], "targets": list of B dicts}``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .sample import Sample

__all__ = ["check_batch", "collate_detection"]


def collate_detection(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack images and keep targets as a list.

    The pipelines hand out CHW views of HWC arrays, so the images are stacked as ``[B, S, S, 3]`` (one memcpy
    each, where a CHW-contiguous copy would reorder every pixel) and returned as the permuted view
    ``[B, 3, S, S]``: shape NCHW, memory ``torch.channels_last``, which is also the faster layout for the stem
    convolution. Call ``.contiguous()`` for NCHW memory.

    Args:
        samples: ``(image uint8 [3, S, S], target)`` pairs, all images of the same size.

    Returns:
        ``images``: uint8 ``[B, 3, S, S]`` (channels_last memory); ``targets``: list of dicts with plain tensors
        (``boxes`` float32 ``[N, 4]`` xyxy, ``labels`` int64 ``[N]``, ``iscrowd`` bool ``[N]``, ``image_id``,
        ``orig_size``, ``ratio``, ``pad``).

    Raises:
        ValueError: images of different sizes or not uint8 RGB.
    """
    if not samples:
        raise ValueError("collate_detection got an empty batch")
    shapes = {tuple(img.shape) for img, _ in samples}
    if len(shapes) != 1:
        raise ValueError(f"all images of a batch must have one size, got {sorted(shapes)}")
    shape = next(iter(shapes))
    if len(shape) != 3 or shape[0] != 3:
        raise ValueError(f"images must be [3, H, W] RGB, got {list(shape)}")
    hwc = [img.as_subclass(torch.Tensor).permute(1, 2, 0) for img, _ in samples]
    if hwc[0].dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (normalised on the device), got {hwc[0].dtype}")
    # numpy's stack: torch.stack runs the copy on OpenMP threads, which stall on a busy machine (benchmarks/README.md,
    # "Data pipeline figures")
    images = torch.from_numpy(np.stack([x.numpy() for x in hwc])).permute(0, 3, 1, 2)
    targets = []
    for _, t in samples:
        out = {}
        for k, v in t.items():
            out[k] = v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v
        if "boxes" in out:
            out["boxes"] = out["boxes"].to(torch.float32).reshape(-1, 4)
        targets.append(out)
    return {"images": images, "targets": targets}


def check_batch(batch: Any) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """``(images, targets)`` of a batch on the device, or an error saying what breaks the batch contract: a dict with
    float ``images [B, 3, H, W]`` in ``[0, 1]`` (``YOLODataModule.on_after_batch_transfer`` converts the collated
    uint8) and ``targets``, a list of ``B`` dicts."""
    if not isinstance(batch, dict) or "images" not in batch or "targets" not in batch:
        raise TypeError(
            f"a batch must be a dict with keys 'images' and 'targets' (YOLODataModule's collate), got "
            f"{type(batch).__name__}" + (f" with keys {sorted(batch)}" if isinstance(batch, dict) else "")
        )
    images, targets = batch["images"], batch["targets"]
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"batch['images'] must be a [B, 3, H, W] tensor, got {shape}")
    if not images.is_floating_point():
        raise TypeError(
            "batch['images'] is still uint8: YOLODataModule.on_after_batch_transfer converts images to float; "
            "when feeding batches by hand, pass float images in [0, 1]"
        )
    if len(targets) != images.shape[0]:
        raise ValueError(f"batch['targets'] has {len(targets)} entries for {images.shape[0]} images")
    return images, targets
