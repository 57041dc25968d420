"""Any-input predict: image files, folders, globs, PIL images, numpy arrays or tensors -> boxes in original pixels.

:func:`predict` (also :func:`lightning_yolo.predict`) is the Python twin of ``lightning-yolo predict``: a file is
read by :func:`lightning_yolo.data.image_io.load_letterboxed`, the same call that
:class:`~lightning_yolo.data.predict.PredictImages` makes for the CLI and ``Trainer.predict``, and the default
geometry is the same (long side to ``img_size``, centred on a square canvas), so the same file gives the same boxes
on both paths. In-memory images go through :func:`~lightning_yolo.data.image_io.image_to_array` (PIL images
decoded as files are: transparency over the padding grey, 16-bit to 8-bit) and
:func:`~lightning_yolo.data.image_io.letterbox`. The letterboxed batch runs through a
:class:`~lightning_yolo.models.predictor.YOLOPredictor` (network + decode + NMS) and each image's boxes are
mapped back with :func:`~lightning_yolo.ops.postprocess.detections_to_original` (boxes wholly in the padding dropped,
as on the CLI path).

Example::

    import lightning_yolo

    predictor = lightning_yolo.load_predictor("runs/detect/train/checkpoints/best.ckpt")  # fused for inference
    results = lightning_yolo.predict(predictor, "photos/*.jpg")  # one dict per photo, boxes in its pixels
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.image_io import FILL_VALUE, image_to_array, letterbox, list_image_files, load_letterboxed
from ..models.predictor import YOLOPredictor, check_img_size
from ..ops.postprocess import detections_to_original
from ..runtime import inference_autocast

__all__ = ["ImageInput", "compiled_network", "predict"]

#: What :func:`predict` accepts, alone or in a list: a path (file, folder, glob), a PIL image, a numpy
#: ``[H, W, 3]`` / ``[H, W]`` array, or a ``[3, H, W]`` / ``[B, 3, H, W]`` tensor (uint8 0..255 or float 0..1).
ImageInput = Any


@torch.inference_mode()
def predict(
    predictor: YOLOPredictor,
    inputs: ImageInput | Sequence[ImageInput],
    img_size: int | tuple[int, int] | None = None,
    batch_size: int = 8,
    rect: bool = False,
    precision: str = "auto",
    compile: bool = False,  # noqa: A002 (the name users know from torch.compile)
) -> list[dict[str, Any]]:
    """Detect objects in images of any size and return boxes in original-image pixels.

    Each image is letterboxed (:func:`lightning_yolo.data.image_io.letterbox_params`): scaled so it fits
    ``img_size``, then padded with grey, to the full ``img_size`` canvas (``rect=False``, the default: the geometry
    of ``lightning-yolo predict`` and validation, so a file gives the same boxes as there) or only to the next
    multiple of the model's largest stride (``rect=True``: a 640x480 photo runs at 640x480, fewer FLOPs; images
    of one batch are then padded right / bottom to a common size, which does not move their boxes).

    Args:
        predictor: the network with its thresholds (:func:`lightning_yolo.load_predictor`, ``YOLOModule.predictor()``
            or ``YOLOPredictor(model)``).
        inputs: an image file, a folder (its image files, sorted), a glob pattern, a PIL image, a numpy
            ``[H, W, 3]`` / ``[H, W]`` array (uint8, or float in [0, 1]), a ``[3, H, W]`` / ``[B, 3, H, W]``
            tensor (uint8, or float in [0, 1]), or a list of these. RGB channel order.
        img_size: letterbox size (``S`` or ``(H, W)``); default ``predictor.img_size`` (the checkpoint's, or 640).
        batch_size: images per forward pass.
        rect: minimal padding (see above).
        precision: ``"auto"`` (default): the network runs in bfloat16 autocast on a CPU with bf16 units
            (AVX-512 BF16 / AMX; :func:`lightning_yolo.runtime.cpu_has_bf16`), in float32 elsewhere; ``"bf16"`` or
            ``"fp32"`` force one. Decoding and NMS stay float32.
        compile: run the network through ``torch.compile`` with Inductor freezing (:func:`compiled_network`): the
            paper model at 416 px in bf16 on a 2-core CPU 214 ms instead of 269 ms per image, after about 11 s of
            compilation at the first batch; worth it for many images of one size. The weights are frozen into the
            compiled graph at that first batch (a predictor whose network trains on is compiled anew by a new
            predictor, not updated), the last batch is padded to ``batch_size`` so it reuses the graph, and
            ``rect=True`` (a shape per aspect ratio) compiles once per shape.

    Returns:
        One dict per image, in input order (folders and globs expanded in sorted order): ``boxes`` ``[K, 4]``
        xyxy float32 in original-image pixels (clipped to the image; boxes wholly in the padding, of zero width or
        height once clipped, dropped), ``scores`` ``[K]``, ``labels`` ``[K]`` int64, and ``names`` (list of ``K``
        str) when ``predictor.class_names`` is set. Tensors are on the model's device.

    Raises:
        FileNotFoundError: a path matches no image file. ValueError / TypeError: an unreadable file or an image
        of the wrong shape, dtype or range, naming it.
    """
    inference_autocast(precision, "cpu")  # a bad value fails before any image is read
    size = predictor.img_size if img_size is None else check_img_size(img_size)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    items = _expand_inputs(inputs)
    model = predictor.model
    network = compiled_network(predictor) if compile else None
    device = _module_device(model)
    channels_last = _is_channels_last(model)
    stride = int(model.max_stride)
    results: list[dict[str, Any]] = []
    for start in range(0, len(items), int(batch_size)):
        # (canvas [h, w, 3], ratio, pad, original (H, W)) per image
        boxed = [_letterboxed(item, size, stride, rect) for item in items[start : start + int(batch_size)]]
        images = _stack_padded([b[0] for b in boxed]).to(device)
        images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with inference_autocast(precision, device.type):
            if network is None:
                detections = predictor(images)
            else:
                count = images.shape[0]
                if count < int(batch_size) and not rect:  # one graph for every batch: pad the last one
                    images = torch.cat([images, images[-1:].expand(int(batch_size) - count, -1, -1, -1)])
                detections = predictor.detect_raw([r[:count] for r in network(images)])
        for (_, ratio, pad, orig_hw), det in zip(boxed, detections, strict=True):
            out: dict[str, Any] = detections_to_original(det, ratio, pad, orig_hw)
            if predictor.class_names is not None:
                out["names"] = [predictor.class_names[i] for i in out["labels"].tolist()]
            results.append(out)
    return results


def compiled_network(predictor: YOLOPredictor) -> torch.nn.Module:
    """``torch.compile`` of ``predictor.model`` with Inductor freezing (weights become constants, pre-packed for
    oneDNN on a CPU), made once per predictor and kept on it. Inference only."""
    net = predictor.__dict__.get("_compiled_network")
    if net is None:
        net = torch.compile(predictor.model, options={"freezing": True})
        predictor.__dict__["_compiled_network"] = net  # not a submodule: never in a state_dict
    return net


def _letterboxed(
    item: Any, size: int | tuple[int, int], stride: int, rect: bool
) -> tuple[np.ndarray, float, tuple[int, int], tuple[int, int]]:
    """One input -> ``(canvas [h, w, 3] uint8 or float32, ratio, pad, original (H, W))`` through image_io."""
    if isinstance(item, str | os.PathLike):
        return load_letterboxed(item, size, stride=stride, rect=rect)
    arr = image_to_array(_tensor_to_hwc(item) if isinstance(item, torch.Tensor) else item)
    canvas, ratio, pad = letterbox(arr, size, stride=stride, rect=rect)
    return canvas, ratio, pad, (arr.shape[0], arr.shape[1])


def _tensor_to_hwc(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` / ``[1, H, W]`` tensor -> ``[H, W, C]`` numpy array on the CPU."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image tensors must be [3, H, W] or [B, 3, H, W], got shape {list(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(f"image tensors must be uint8 (0..255) or float (0..1), got dtype {image.dtype}")
    return image.detach().permute(1, 2, 0).cpu().numpy()


def _expand_inputs(inputs: Any) -> list[Any]:
    """Flatten ``predict`` inputs into a list of single images (paths stay paths until their batch is loaded)."""
    from PIL import Image

    if isinstance(inputs, str | os.PathLike):
        return list(list_image_files(inputs))
    if isinstance(inputs, torch.Tensor | np.ndarray):
        return list(inputs) if inputs.ndim == 4 else [inputs]
    if isinstance(inputs, list | tuple):
        return [single for item in inputs for single in _expand_inputs(item)]
    if isinstance(inputs, Image.Image):
        return [inputs]
    if isinstance(inputs, Iterable):
        return _expand_inputs(list(inputs))
    raise TypeError(
        f"cannot predict on a {type(inputs).__name__}: expected a path, folder, glob, PIL image, numpy array, "
        "tensor, or a list of these"
    )


def _stack_padded(canvases: list[np.ndarray]) -> torch.Tensor:
    """``[h_i, w_i, 3]`` -> ``[B, 3, max h, max w]``, padding right / bottom with the letterbox grey (boxes do not
    move); uint8 when every canvas is uint8, else float32 in ``[0, 1]``."""
    if any(c.dtype != np.uint8 for c in canvases):  # mixed uint8 / float inputs: all to float [0, 1]
        canvases = [c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c for c in canvases]
    height, width = max(c.shape[0] for c in canvases), max(c.shape[1] for c in canvases)
    dtype = canvases[0].dtype
    out = np.full((len(canvases), height, width, 3), FILL_VALUE if dtype == np.uint8 else FILL_VALUE / 255.0, dtype)
    for i, c in enumerate(canvases):  # one copy per image, not per box
        out[i, : c.shape[0], : c.shape[1]] = c
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _is_channels_last(module: nn.Module) -> bool:
    for p in module.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
