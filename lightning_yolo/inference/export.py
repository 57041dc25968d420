"""ONNX and TorchScript export of a :class:`YOLOv4` network or a :class:`YOLOPredictor`.

What the exported graph computes depends on what you pass (the network is Conv+BN-fused on a copy first):

========================================  =============================================================
input                                     graph outputs (``B`` dynamic, ``H, W`` fixed at ``img_size``)
========================================  =============================================================
``YOLOv4``                                ``raw_s8, raw_s16, raw_s32``: ``[B, A*(5+C), H/s, W/s]`` head maps
``YOLOPredictor``, ``with_nms=False``     ``decoded``: ``[B, N, 5+C]`` = x1, y1, x2, y2 (input px),
                                          objectness, ``C`` class probabilities
``YOLOPredictor``, ``with_nms=True``      ``detections``: ``[B, max_det, 6]`` = x1, y1, x2, y2, score, label,
                                          by decreasing score, padded with ``0, 0, 0, 0, 0, -1``;
                                          ``num_detections``: ``[B]`` int64 valid rows per image
========================================  =============================================================

The graph input ``images`` is float32 ``[B, 3, H, W]`` RGB in ``[0, 1]``, already letterboxed to ``H x W``
(see :func:`lightning_yolo.data.image_io.letterbox`); boxes come out in those input pixels.

NMS in the graph is **greedy IoU NMS** (``torchvision.ops.batched_nms``, exported to ONNX ``NonMaxSuppression``),
whatever the predictor's ``nms_kind``: DIoU-NMS resolves suppressions with a data-dependent number of steps and has
no static-graph form. Thresholds, ``max_det``, ``max_nms``, ``class_agnostic`` and ``multi_label`` come from the
predictor and are baked into the graph. The graph is built from the same functions as eager post-processing
(:func:`lightning_yolo.ops.postprocess.select_candidates`, :func:`~lightning_yolo.ops.postprocess.nms_groups`,
:func:`lightning_yolo.ops.nms.group_offset_boxes`, :func:`~lightning_yolo.ops.postprocess.cap_per_image`). For DIoU-NMS, export the decoded output and run
:func:`lightning_yolo.ops.postprocess.postprocess` on it.

Two ONNX exporters give the same graphs (both tested against onnxruntime, dynamic batch and NMS included):
``exporter="torchscript"`` (default; ``torch.onnx.export(dynamo=False)``, deprecated by torch since 2.9 but about
4x faster to export) and ``exporter="dynamo"`` (``torch.export``-based, needs ``onnxscript``; the one to keep when
the TorchScript exporter is removed). :func:`export_torchscript` uses ``torch.jit.trace``, which torch also
deprecates in favour of ``torch.export``; the traced file runs with ``torch.jit.load`` alone.

Example::

    predictor = lightning_yolo.load_predictor("last.ckpt", nms_kind="greedy")
    export_onnx(predictor, "yolo.onnx", img_size=640, with_nms=True)

    import onnxruntime as ort
    session = ort.InferenceSession("yolo.onnx")
    image, ratio, pad, (H, W) = load_letterboxed("photo.jpg", 640)      # lightning_yolo.data.image_io
    images = (image.transpose(2, 0, 1)[None] / 255.0).astype("float32")
    detections, num_detections = session.run(None, {"images": images})
    # rows 0..num_detections[0]-1 of detections[0]: x1, y1, x2, y2 (input px), score, label;
    # original pixels: lightning_yolo.ops.boxes.scale_boxes_to_original(boxes, ratio, pad, (H, W))
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import ops as tv_ops

from ..models.predictor import YOLOPredictor
from ..models.yolo import YOLOv4
from ..ops.nms import group_offset_boxes
from ..ops.postprocess import DEFAULT_IMG_SIZE, DEFAULTS, cap_per_image, nms_groups, select_candidates

__all__ = [
    "RawOutputs",
    "DecodedOutputs",
    "PaddedDetections",
    "postprocess_padded",
    "export_module",
    "export_onnx",
    "export_torchscript",
    "check_onnx",
]

DEFAULT_OPSET = 17


def postprocess_padded(
    decoded: torch.Tensor,
    score_thresh: float,
    nms_iou_thresh: float,
    max_det: int,
    class_agnostic: bool = False,
    multi_label: bool = False,
    pre_nms_topk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy-NMS post-processing with fixed-size, traceable outputs (the in-graph twin of ``postprocess``).

    Same candidates and order as :func:`lightning_yolo.ops.postprocess.postprocess` with ``nms_kind="greedy"``:
    ``score = objectness * class probability``, the ``pre_nms_topk`` best per image, ``score > score_thresh``, one
    greedy NMS over the batch with groups ``image * C + class`` (or ``image``), then the ``max_det`` best per image.
    Only ops with ONNX / TorchScript forms are used (``topk``, ``nonzero``, ``torchvision.ops.nms``, ``scatter``).

    Args:
        decoded: ``[B, N, 5+C]`` from :func:`~lightning_yolo.ops.postprocess.decode_outputs`.
        score_thresh: keep candidates with score > this.
        nms_iou_thresh: suppress a box whose IoU with a kept, higher-scored box of its group is > this.
        max_det: rows per image in the output.
        class_agnostic: one NMS group per image.
        multi_label: every (box, class) pair is a candidate, not only each box's best class.
        pre_nms_topk: candidates per image entering NMS (default ``DEFAULTS.max_nms``).

    Returns:
        ``detections``: ``[B, max_det, 6]`` float (x1, y1, x2, y2, score, label) by decreasing score, padding rows
        ``(0, 0, 0, 0, 0, -1)``; ``num_detections``: ``[B]`` int64 valid rows per image.
    """
    batch, num_classes = decoded.shape[0], decoded.shape[2] - 5
    max_nms = DEFAULTS.max_nms if pre_nms_topk is None else int(pre_nms_topk)
    top_scores, top_box, top_label = select_candidates(decoded, max_nms, multi_label)  # [B, K]
    num_cand = top_scores.shape[1]  # K fixed for a fixed input size
    boxes = decoded[..., :4].gather(1, top_box.unsqueeze(-1).expand(-1, -1, 4).contiguous())  # [B, K, 4]
    flat_scores = top_scores.reshape(-1)

    # NMS only over candidates above the threshold (fewer boxes; below-threshold boxes could only suppress boxes
    # that score even lower, so dropping them first does not change the result)
    cand = (flat_scores > score_thresh).nonzero().squeeze(1)
    image_idx = torch.div(cand, num_cand, rounding_mode="floor")
    groups = nms_groups(image_idx, top_label.reshape(-1)[cand], num_classes, class_agnostic)
    # the class-offset trick, called directly because torchvision's batched_nms branches on the box count, which
    # torch.export cannot decide for a data-dependent size; the span is taken over all top-k boxes, never an empty
    # reduction whatever passes the threshold
    span = boxes.max() - boxes.min() + 1
    keep = cand[tv_ops.nms(group_offset_boxes(boxes.reshape(-1, 4)[cand], groups, span), flat_scores[cand],
                           nms_iou_thresh)]  # fmt: skip

    out_scores, order, valid = cap_per_image(keep, top_scores, max_det)  # [B, D]
    out_boxes = boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4).contiguous())
    out_labels = top_label.gather(1, order)
    zeros = torch.zeros_like(out_scores)
    detections = torch.cat(
        (
            torch.where(valid.unsqueeze(-1), out_boxes, zeros.unsqueeze(-1)),
            torch.where(valid, out_scores, zeros).unsqueeze(-1),
            torch.where(valid, out_labels.to(out_scores.dtype), zeros - 1).unsqueeze(-1),
        ),
        dim=-1,
    )
    if detections.shape[1] < max_det:  # fewer candidates than max_det (tiny inputs): pad to the promised size
        pad = detections.new_zeros(batch, max_det - detections.shape[1], 6)
        pad[..., 5] = -1
        detections = torch.cat((detections, pad), dim=1)
    return detections, valid.sum(1)


class RawOutputs(nn.Module):
    """Export wrapper: ``images [B, 3, H, W] -> (raw_s8, raw_s16, raw_s32)`` head maps as a tuple (one per level:
    ``(raw_s16, raw_s32)`` for yolov4_tiny)."""

    def __init__(self, model: YOLOv4) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(images))


class DecodedOutputs(nn.Module):
    """Export wrapper: ``images [B, 3, H, W] -> decoded [B, N, 5+C]`` (:meth:`YOLOPredictor.decode`)."""

    def __init__(self, predictor: YOLOPredictor) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predictor.decode(images)


class PaddedDetections(nn.Module):
    """Export wrapper: ``images -> (detections [B, max_det, 6], num_detections [B])`` with greedy NMS in the graph.

    Thresholds, ``max_det``, ``max_nms`` (unless ``pre_nms_topk`` is given), ``class_agnostic`` and
    ``multi_label`` are read from the predictor.
    """

    def __init__(self, predictor: YOLOPredictor, pre_nms_topk: int | None = None) -> None:
        super().__init__()
        self.predictor = predictor
        # default: the predictor's own max_nms, so the graph keeps the candidates eager inference keeps
        self.pre_nms_topk = int(predictor.max_nms if pre_nms_topk is None else pre_nms_topk)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.predictor
        return postprocess_padded(
            p.decode(images),
            score_thresh=p.score_thresh,
            nms_iou_thresh=p.nms_iou_thresh,
            max_det=p.max_det,
            class_agnostic=p.class_agnostic,
            multi_label=p.multi_label,
            pre_nms_topk=self.pre_nms_topk,
        )


def export_module(
    predictor_or_model: YOLOPredictor | YOLOv4,
    with_nms: bool = False,
    fuse: bool = True,
    pre_nms_topk: int | None = None,
) -> tuple[nn.Module, list[str]]:
    """The eval-mode module that export traces, and its output names.

    The network is deep-copied before fusing, so the caller's module is left untouched.

    Args:
        predictor_or_model: a :class:`YOLOv4` (raw maps) or a :class:`YOLOPredictor` (decoded or detections).
        with_nms: greedy NMS in the graph (predictor only).
        fuse: fold Conv+BN (:meth:`YOLOv4.fuse`).
        pre_nms_topk: candidates per image entering NMS (``with_nms`` only; default the predictor's ``max_nms``).

    Returns:
        ``(module, output_names)``.
    """
    if isinstance(predictor_or_model, YOLOPredictor):
        predictor = copy.deepcopy(predictor_or_model)
        model = predictor.model
        if with_nms and predictor.nms_kind != "greedy":
            warnings.warn(
                f"predictor nms_kind={predictor.nms_kind!r}: the exported graph uses greedy IoU NMS "
                "(DIoU-NMS has no static-graph form); export with with_nms=False and run postprocess() for DIoU-NMS",
                stacklevel=3,
            )
    elif isinstance(predictor_or_model, YOLOv4):
        if with_nms:
            raise ValueError(
                "with_nms=True needs a YOLOPredictor (it holds score_thresh, nms_iou_thresh, max_det); got a YOLOv4: "
                "wrap it as YOLOPredictor(model, score_thresh=..., nms_iou_thresh=..., max_det=...)"
            )
        predictor, model = None, copy.deepcopy(predictor_or_model)
    else:
        raise TypeError(f"expected a YOLOv4 or a YOLOPredictor, got {type(predictor_or_model).__name__}")

    model.eval()
    if fuse:
        model.fuse()
    if predictor is None:
        module: nn.Module = RawOutputs(model)
        names = [f"raw_s{int(s)}" for s in model.strides]
    elif with_nms:
        module, names = PaddedDetections(predictor, pre_nms_topk), ["detections", "num_detections"]
    else:
        module, names = DecodedOutputs(predictor), ["decoded"]
    return module.eval(), names


def _ignore_export_warnings() -> None:
    """Silence warnings that export always raises and the user cannot act on (call inside ``catch_warnings``)."""
    # shape asserts in forward() become constants for the fixed H, W: intended
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    # torch >= 2.9 deprecates torch.jit and the TorchScript-based ONNX exporter; both still work and are what
    # exports torchvision's NMS and a dynamic batch today (see the module docstring)
    warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"`create_unbacked_symint` is deprecated", category=FutureWarning)


def _max_stride(predictor_or_model: YOLOPredictor | YOLOv4) -> int:
    network = predictor_or_model.model if isinstance(predictor_or_model, YOLOPredictor) else predictor_or_model
    return int(network.max_stride)


def _example_input(img_size: int | tuple[int, int], stride: int, batch: int = 2) -> torch.Tensor:
    height, width = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if height % stride or width % stride:
        raise ValueError(f"img_size must be multiples of {stride} (the model's largest stride), got {(height, width)}")
    # batch 2 in the example so the tracer cannot fold a size-1 batch dimension into a constant
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def export_onnx(
    predictor_or_model: YOLOPredictor | YOLOv4,
    path: str | Path,
    img_size: int | tuple[int, int] = DEFAULT_IMG_SIZE,
    dynamic_batch: bool = True,
    with_nms: bool = False,
    opset: int = DEFAULT_OPSET,
    fuse: bool = True,
    pre_nms_topk: int | None = None,
    exporter: str = "torchscript",
) -> Path:
    """Export to ONNX (see the module docstring for the outputs of each kind).

    Args:
        predictor_or_model: a :class:`YOLOv4` (raw maps) or a :class:`YOLOPredictor` (decoded or detections).
        path: output ``.onnx`` file (parent folders are created).
        img_size: ``H`` (square) or ``(H, W)`` of the input, multiples of the model's largest stride; fixed in the graph.
        dynamic_batch: leave the batch dimension of inputs and outputs symbolic (``"batch"``).
        with_nms: greedy NMS and fixed-size padded detections in the graph (predictor only).
        opset: ONNX opset (>= 11 for ``NonMaxSuppression``; the dynamo exporter needs >= 18).
        fuse: fold Conv+BN on a copy of the network before export.
        pre_nms_topk: candidates per image entering NMS (default the predictor's ``max_nms``).
        exporter: ``"torchscript"`` (``torch.onnx.export(dynamo=False)``) or ``"dynamo"`` (``torch.export``).

    Returns:
        The written path.

    Example:
        >>> export_onnx(YOLOPredictor(create_model("yolov4_pico", 3)), "det.onnx", img_size=128, with_nms=True)
    """
    if exporter not in ("torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    if exporter == "dynamo":
        _require_export_extra("onnxscript", "the dynamo ONNX exporter")
    if with_nms and opset < 11:
        raise ValueError(f"with_nms=True needs opset >= 11 (NonMaxSuppression), got opset={opset}")
    module, output_names = export_module(predictor_or_model, with_nms=with_nms, fuse=fuse, pre_nms_topk=pre_nms_topk)
    example = _example_input(img_size, _max_stride(predictor_or_model), batch=2 if dynamic_batch else 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    with warnings.catch_warnings(), torch.no_grad():
        # expected while tracing: shape asserts become constants for the fixed H, W; legacy-exporter deprecation
        _ignore_export_warnings()
        if exporter == "torchscript":
            dynamic_axes = {n: {0: "batch"} for n in ["images", *output_names]} if dynamic_batch else None
            torch.onnx.export(
                module,
                (example,),
                str(path),
                input_names=["images"],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        else:
            dynamic_shapes = {"images": {0: torch.export.Dim("batch", min=1)}} if dynamic_batch else None
            program = torch.onnx.export(
                module,
                (example,),
                input_names=["images"],
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=max(opset, 18),
                dynamo=True,
                verbose=False,
            )
            program.save(str(path))
    return path


def export_torchscript(
    predictor_or_model: YOLOPredictor | YOLOv4,
    path: str | Path,
    img_size: int | tuple[int, int] = DEFAULT_IMG_SIZE,
    with_nms: bool = False,
    fuse: bool = True,
    pre_nms_topk: int | None = None,
) -> Path:
    """Export with ``torch.jit.trace`` (same outputs as :func:`export_onnx`, batch dynamic, ``H, W`` as traced).

    Load with ``torch.jit.load(path)``; no ``lightning_yolo`` import is needed to run it.

    Args:
        predictor_or_model: a :class:`YOLOv4` (raw maps) or a :class:`YOLOPredictor` (decoded or detections).
        path: output ``.pt`` / ``.torchscript`` file.
        img_size: ``H`` or ``(H, W)`` traced with, multiples of the model's largest stride.
        with_nms: greedy NMS and padded detections (predictor only).
        fuse: fold Conv+BN on a copy first.
        pre_nms_topk: candidates per image entering NMS (default the predictor's ``max_nms``).

    Returns:
        The written path.
    """
    module, _ = export_module(predictor_or_model, with_nms=with_nms, fuse=fuse, pre_nms_topk=pre_nms_topk)
    example = _example_input(img_size, _max_stride(predictor_or_model))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        _ignore_export_warnings()
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def check_onnx(
    path: str | Path, reference: nn.Module, images: torch.Tensor, providers: list[str] | None = None
) -> dict[str, float]:
    """Run an exported file in ONNX Runtime next to a PyTorch module and report the largest differences.

    Args:
        path: the ``.onnx`` file.
        reference: a module returning the same outputs (e.g. the first value of :func:`export_module`).
        images: ``[B, 3, H, W]`` float input.
        providers: ONNX Runtime execution providers (default CPU).

    Returns:
        ``{output_name: max |onnx - torch|}``.
    """
    _require_export_extra("onnxruntime", "checking an export against PyTorch")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: images.detach().cpu().numpy()})
    with torch.no_grad():
        expected: Any = reference(images)
    if isinstance(expected, torch.Tensor):
        expected = (expected,)
    names = [o.name for o in session.get_outputs()]
    return {
        name: float((torch.from_numpy(got).to(torch.float64) - exp.to(torch.float64)).abs().max())
        if exp.numel()
        else 0.0
        for name, got, exp in zip(names, outputs, expected, strict=True)
    }


def _require_export_extra(module: str, what: str) -> None:
    """An ``ImportError`` that names the extra to install when an optional export dependency is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{what} needs the {module} package: pip install 'lightning-yolo[export]'")
