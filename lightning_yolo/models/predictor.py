"""YOLOPredictor: network + decode + NMS, the unit for inference and export.

Two ways in:

* ``predictor(images)``: float ``[B, 3, H, W]`` in ``[0, 1]`` (already letterboxed, ``H, W`` multiples of 32) ->
  detections in those input pixels (what validation and export use);
* ``predictor.predict(inputs)``: image files, a folder or glob, PIL images, numpy arrays or tensors of any size ->
  letterboxed, batched, run under ``torch.inference_mode`` and mapped back to each original image's pixels.

``YOLOPredictor.from_checkpoint(path)`` rebuilds the network from a ``YOLOModule`` checkpoint (or a plain
``state_dict``) without Lightning.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..ops.boxes import scale_boxes_to_original
from ..ops.image import FILL_VALUE, letterbox, list_image_files, read_image
from ..ops.postprocess import NMS_KINDS, decode_outputs, postprocess
from .config import ModelCfg
from .factory import create_model
from .yolo import YOLOv4

__all__ = ["YOLOPredictor", "ImageInput"]

#: What :meth:`YOLOPredictor.predict` accepts, alone or in a list: a path (file, folder, glob), a PIL image, a numpy
#: ``[H, W, 3]`` / ``[H, W]`` array, or a ``[3, H, W]`` / ``[B, 3, H, W]`` tensor (uint8 0..255 or float 0..1).
ImageInput = Any

# Prefix of the network's weights inside a YOLOModule checkpoint (the module's attribute ``model``).
_MODEL_PREFIX = "model."


class YOLOPredictor(nn.Module):
    """Wraps a :class:`YOLOv4` with box decoding and NMS.

    Args:
        model: the network.
        score_thresh: minimum ``objectness * class probability`` kept.
        nms_iou_thresh: IoU above which a lower-scored box is suppressed.
        nms_kind: ``"diou"`` (DIoU-NMS, darknet ``nms_kind=diounms``) or ``"greedy"``.
        beta_nms: DIoU-NMS exponent on the centre-distance penalty (darknet ``beta_nms``).
        max_det: detections kept per image.
        max_nms: candidates per image entering NMS, the best by score (as YOLOv5's ``max_nms`` and mmdetection's
            ``nms_pre``). An untrained model passes ``score_thresh=0.001`` with every box (6,300 per image at 320 px
            for one class); capping keeps early validations about as fast as later ones
            (``benchmarks/validation_speed.py``).
        class_agnostic: NMS across classes instead of per class.
        multi_label: a box may be reported for every class above ``score_thresh``.
        class_names: optional names for the labels (``predict`` then adds ``names`` to each result).
        img_size: default letterbox size of :meth:`predict` (long side, or ``(H, W)``).

    ``forward(images: [B, 3, H, W] float in [0, 1]) -> list[dict(boxes [K, 4] xyxy input pixels, scores [K],
    labels [K] int64)]``.
    """

    def __init__(
        self,
        model: YOLOv4,
        score_thresh: float = 0.25,
        nms_iou_thresh: float = 0.45,
        nms_kind: str = "diou",
        beta_nms: float = 0.6,
        max_det: int = 300,
        max_nms: int = 3000,
        class_agnostic: bool = False,
        multi_label: bool = False,
        class_names: Sequence[str] | None = None,
        img_size: int | tuple[int, int] = 640,
    ) -> None:
        super().__init__()
        if nms_kind not in NMS_KINDS:
            raise ValueError(f"nms_kind must be one of {NMS_KINDS}, got {nms_kind!r}")
        if class_names is not None and len(class_names) != model.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but the model has {model.num_classes} classes")
        self.model = model
        self.score_thresh = float(score_thresh)
        self.nms_iou_thresh = float(nms_iou_thresh)
        self.nms_kind = nms_kind
        self.beta_nms = float(beta_nms)
        self.max_det = int(max_det)
        if max_nms < 1:
            raise ValueError(f"max_nms must be >= 1, got {max_nms}")
        self.max_nms = int(max_nms)
        self.class_agnostic = bool(class_agnostic)
        self.multi_label = bool(multi_label)
        self.class_names = list(class_names) if class_names is not None else None
        self.img_size = _check_img_size(img_size)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def decode(self, images: torch.Tensor) -> torch.Tensor:
        """Raw network output decoded: ``[B, N, 5 + C]`` = (x1, y1, x2, y2 input px, objectness, class probs)."""
        return self.decode_raw(self.model(images))

    def decode_raw(self, raw_maps: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`decode` for head maps already computed (e.g. by a validation step that also needs the loss)."""
        a = self.model.anchors
        return decode_outputs(raw_maps, a.anchors, a.strides, a.scale_x_y, self.model.num_classes)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.select(self.decode(images))

    def detect_raw(self, raw_maps: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Decode + NMS of head maps already computed: ``list[dict(boxes, scores, labels)]`` in input pixels."""
        return self.select(self.decode_raw(raw_maps))

    def select(self, decoded: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Score threshold + NMS + top-k of decoded outputs ``[B, N, 5 + C]`` with this predictor's settings."""
        return postprocess(
            decoded,
            score_thresh=self.score_thresh,
            nms_iou_thresh=self.nms_iou_thresh,
            nms_kind=self.nms_kind,
            beta_nms=self.beta_nms,
            class_agnostic=self.class_agnostic,
            multi_label=self.multi_label,
            max_det=self.max_det,
            pre_nms_topk=self.max_nms,
        )

    @torch.no_grad()
    def fuse(self, channels_last: bool = True) -> YOLOPredictor:
        """Fold Conv+BN and (optionally) store weights ``channels_last``: the fast CPU inference form. Returns self.

        ``channels_last`` matters on CPU: the 3 -> 32 stem convolution alone is ~11x slower in NCHW (DESIGN
        section 6). The model is put in eval mode and can no longer be trained.
        """
        self.model.fuse()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        return self.eval()

    # ------------------------------------------------------------------ images in, original-pixel boxes out
    @torch.inference_mode()
    def predict(
        self,
        inputs: ImageInput | Sequence[ImageInput],
        img_size: int | tuple[int, int] | None = None,
        batch_size: int = 8,
        rect: bool = True,
    ) -> list[dict[str, Any]]:
        """Detect objects in images of any size and return boxes in original-image pixels.

        Each image is letterboxed (:func:`lightning_yolo.ops.image.letterbox`): scaled so it fits ``img_size``,
        then padded with grey to a multiple of 32 (``rect=True``: only as much as needed, a 640x480 photo runs at
        640x480; ``rect=False``: the full ``img_size`` canvas, as in validation). Images of one batch are padded
        right / bottom to a common size, which does not move their boxes.

        Args:
            inputs: an image file, a folder (its image files, sorted), a glob pattern, a PIL image, a numpy
                ``[H, W, 3]`` / ``[H, W]`` array (uint8, or float in [0, 1]), a ``[3, H, W]`` / ``[B, 3, H, W]``
                tensor (uint8, or float in [0, 1]), or a list of these. RGB channel order.
            img_size: letterbox size (``S`` or ``(H, W)``); default :attr:`img_size` (the checkpoint's, or 640).
            batch_size: images per forward pass.
            rect: minimal padding (see above).

        Returns:
            One dict per image, in input order (folders and globs expanded in sorted order): ``boxes`` ``[K, 4]``
            xyxy float32 in original-image pixels (clipped to the image), ``scores`` ``[K]``, ``labels`` ``[K]``
            int64, and ``names`` (list of ``K`` str) when :attr:`class_names` is set. Tensors are on the model's
            device.
        """
        size = self.img_size if img_size is None else _check_img_size(img_size)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        items = _expand_inputs(inputs)
        device = _module_device(self.model)
        channels_last = _is_channels_last(self.model)
        stride = int(self.model.max_stride)
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), int(batch_size)):
            chunk = [_load(item) for item in items[start : start + int(batch_size)]]
            boxed = [letterbox(img, size, stride=stride, rect=rect) for img in chunk]
            canvases = [b[0] for b in boxed]
            if any(c.dtype != torch.uint8 for c in canvases):  # mixed uint8 / float inputs: all to float [0, 1]
                canvases = [c.float() / 255.0 if c.dtype == torch.uint8 else c.float() for c in canvases]
            images = _stack_padded(canvases, FILL_VALUE).to(device)
            images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            for img, (_, ratio, pad), det in zip(chunk, boxed, self(images), strict=True):
                out: dict[str, Any] = {
                    "boxes": scale_boxes_to_original(det["boxes"], ratio, pad, tuple(img.shape[-2:])),
                    "scores": det["scores"],
                    "labels": det["labels"],
                }
                if self.class_names is not None:
                    out["names"] = [self.class_names[i] for i in det["labels"].tolist()]
                results.append(out)
        return results

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        model_name: str | None = None,
        num_classes: int | None = None,
        map_location: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> YOLOPredictor:
        """Rebuild a predictor from a ``YOLOModule`` checkpoint or a plain network ``state_dict`` (no Lightning).

        A Lightning checkpoint is read with ``torch.load(weights_only=True)``; the network is rebuilt from the
        checkpoint's ``lightning_yolo.model_cfg`` when present, else from ``hyper_parameters`` as
        ``create_model(model_name, num_classes, **model_overrides)``, and loaded from the ``model.``-prefixed
        weights (loss and metric entries are ignored). A plain ``state_dict`` file (network keys, optionally
        ``model.``-prefixed) needs ``model_name``; ``num_classes`` is then read from the head's shape.
        ``pretrained_backbone`` paths stored in a checkpoint are not opened: the weights come from the checkpoint.

        Args:
            path: ``.ckpt`` written by the Trainer, or ``torch.save(model.state_dict())`` output.
            model_name: variant name; required for a plain ``state_dict``, overrides the checkpoint's otherwise.
            num_classes: class count; checked against the weights.
            map_location: device the weights are loaded to.
            **kwargs: :class:`YOLOPredictor` settings (``score_thresh``, ``nms_kind``, ``class_names``,
                ``img_size``, ...); the checkpoint's ``class_names``, ``nms_iou_thresh``, ``nms_kind`` and
                ``img_size`` are the defaults, ``score_thresh`` defaults to 0.25.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not such a checkpoint; the message names ``path`` and the missing key.

        Example:
            >>> predictor = YOLOPredictor.from_checkpoint("runs/detect/train/checkpoints/last.ckpt")
            >>> predictor.fuse()  # Conv+BN folded, channels_last: faster on CPU
            >>> results = predictor.predict("photos/*.jpg")  # boxes in each photo's pixels
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # pickle / zip errors: not a torch file, or one needing arbitrary code
            raise ValueError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}: {err})") from err
        if not isinstance(ckpt, dict):
            raise ValueError(f"{path}: expected a checkpoint dict or a state_dict, got {type(ckpt).__name__}")

        is_lightning = "state_dict" in ckpt or "hyper_parameters" in ckpt
        hparams: dict[str, Any] = {}
        if is_lightning:
            for key in ("state_dict", "hyper_parameters"):
                if not isinstance(ckpt.get(key), dict):
                    raise ValueError(f"{path}: checkpoint has no {key!r} dict (keys: {sorted(ckpt)[:8]})")
            hparams = dict(ckpt["hyper_parameters"])
            state = {k[len(_MODEL_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(_MODEL_PREFIX)}
            if not state:
                raise ValueError(
                    f"{path}: 'state_dict' has no {_MODEL_PREFIX!r}-prefixed network weights "
                    f"(first keys: {list(ckpt['state_dict'])[:4]})"
                )
        else:
            state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
            if len(state) != len(ckpt) or not state:
                raise ValueError(
                    f"{path}: neither a YOLOModule checkpoint (keys 'state_dict', 'hyper_parameters') nor a "
                    f"state_dict of tensors (keys: {list(ckpt)[:8]})"
                )
            if all(k.startswith(_MODEL_PREFIX) for k in state):
                state = {k[len(_MODEL_PREFIX) :]: v for k, v in state.items()}

        model = _build_model(path, ckpt, hparams if is_lightning else None, state, model_name, num_classes)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            name = model_name or hparams.get("model_name") or "network"
            raise ValueError(f"{path}: weights do not fit the rebuilt {name}: {err}") from err
        model.to(map_location).eval()

        meta = ckpt.get("lightning_yolo") if isinstance(ckpt.get("lightning_yolo"), dict) else {}
        settings: dict[str, Any] = {"score_thresh": 0.25}
        for key in ("nms_iou_thresh", "nms_kind"):
            if hparams.get(key) is not None:
                settings[key] = hparams[key]
        # the training / validation size: the module's hyper-parameters, else the DataModule's (Lightning stores
        # them as 'datamodule_hyper_parameters')
        data_hparams = ckpt.get("datamodule_hyper_parameters")
        for source in (hparams, data_hparams if isinstance(data_hparams, dict) else {}):
            if source.get("img_size") is not None and "img_size" not in settings:
                settings["img_size"] = source["img_size"]
        names = meta.get("class_names") or hparams.get("class_names")
        if names:
            settings["class_names"] = list(names)
        settings.update(kwargs)
        return cls(model, **settings)


def _build_model(
    path: Path,
    ckpt: dict[str, Any],
    hparams: dict[str, Any] | None,
    state: dict[str, torch.Tensor],
    model_name: str | None,
    num_classes: int | None,
) -> YOLOv4:
    """The network described by a checkpoint (``hparams`` is ``None`` for a plain state_dict), weights not loaded."""
    is_lightning = hparams is not None
    hparams = hparams or {}
    meta = ckpt.get("lightning_yolo")
    if model_name is None and isinstance(meta, dict) and isinstance(meta.get("model_cfg"), dict):
        # the full configuration: rebuilds even if the named variant changed or no longer exists
        try:
            cfg = ModelCfg.from_dict(meta["model_cfg"])
        except TypeError as err:
            raise ValueError(f"{path}: 'lightning_yolo.model_cfg' is not a valid ModelCfg: {err}") from err
        classes = int(num_classes if num_classes is not None else meta.get("num_classes", hparams.get("num_classes")))
        return YOLOv4(dataclasses.replace(cfg, pretrained_backbone=None), classes)

    name = model_name if model_name is not None else hparams.get("model_name")
    if name is None:
        where = (
            "hyper_parameters has no key 'model_name'" if is_lightning else "a plain state_dict needs model_name=..."
        )
        raise ValueError(f"{path}: cannot rebuild the network: {where}")
    if num_classes is None:
        num_classes = hparams.get("num_classes")
    if num_classes is None:
        if is_lightning:
            raise ValueError(f"{path}: hyper_parameters has no key 'num_classes'")
        num_classes = _num_classes_from_state(path, state)
    overrides = dict(hparams.get("model_overrides") or {})
    overrides["pretrained_backbone"] = None  # weights come from the checkpoint; never open a stale backbone path
    model = create_model(name, int(num_classes), **overrides)
    return model


def _num_classes_from_state(path: Path, state: dict[str, torch.Tensor]) -> int:
    """``C`` from the first prediction bias ``[A * (5 + C)]`` and the anchor buffer ``[L, A, 2]``."""
    bias, anchors = state.get("head.preds.0.bias"), state.get("anchors.anchors")
    if bias is None or anchors is None:
        missing = "head.preds.0.bias" if bias is None else "anchors.anchors"
        raise ValueError(f"{path}: state_dict has no key {missing!r}; pass num_classes=...")
    per_anchor, rest = divmod(bias.numel(), anchors.shape[1])
    if rest or per_anchor < 6:
        raise ValueError(f"{path}: head.preds.0.bias has {bias.numel()} values, not A*(5+C) for A={anchors.shape[1]}")
    return per_anchor - 5


def _check_img_size(img_size: int | Sequence[int]) -> int | tuple[int, int]:
    if isinstance(img_size, int | float):
        if int(img_size) <= 0:
            raise ValueError(f"img_size must be positive, got {img_size!r}")
        return int(img_size)
    size = tuple(int(s) for s in img_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"img_size must be an int or (H, W), got {img_size!r}")
    return size  # type: ignore[return-value]


def _module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _is_channels_last(module: nn.Module) -> bool:
    for p in module.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _expand_inputs(inputs: Any) -> list[Any]:
    """Flatten ``predict`` inputs into a list of single images (paths stay paths until their batch is loaded)."""
    if isinstance(inputs, str | os.PathLike):
        return list(list_image_files(inputs))
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim == 4:
            return list(inputs.unbind(0))
        return [inputs]
    try:
        import numpy as np

        if isinstance(inputs, np.ndarray):
            return list(inputs) if inputs.ndim == 4 else [inputs]
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    if isinstance(inputs, list | tuple):
        items: list[Any] = []
        for item in inputs:
            items.extend(_expand_inputs(item))
        return items
    if _is_pil(inputs):
        return [inputs]
    if isinstance(inputs, Iterable):
        return _expand_inputs(list(inputs))
    raise TypeError(
        f"cannot predict on a {type(inputs).__name__}: expected a path, folder, glob, PIL image, numpy array, "
        "tensor, or a list of these"
    )


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, Image.Image)


def _load(item: Any) -> torch.Tensor:
    """One input image -> ``[3, H, W]`` uint8, or float in ``[0, 1]``."""
    if isinstance(item, str | os.PathLike):
        return read_image(item)
    if _is_pil(item):
        import numpy as np

        item = np.asarray(item.convert("RGB"))
    if not isinstance(item, torch.Tensor):  # numpy [H, W, 3] / [H, W]
        import numpy as np

        arr = np.asarray(item)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (1, 3):
            raise ValueError(f"numpy images must be [H, W, 3] or [H, W] (RGB), got shape {list(arr.shape)}")
        arr = np.ascontiguousarray(arr)
        item = torch.from_numpy(arr if arr.flags.writeable else arr.copy()).permute(2, 0, 1)  # PIL arrays: read-only
    if item.ndim != 3 or item.shape[0] not in (1, 3):
        raise ValueError(f"image tensors must be [3, H, W] or [B, 3, H, W], got shape {list(item.shape)}")
    if item.shape[0] == 1:
        item = item.expand(3, -1, -1)
    if item.dtype == torch.uint8:
        return item
    if not item.is_floating_point():
        raise TypeError(f"image tensors must be uint8 (0..255) or float (0..1), got dtype {item.dtype}")
    lo, hi = float(item.min()), float(item.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; pass uint8 or divide by 255"
        )
    return item


def _stack_padded(images: list[torch.Tensor], fill: float) -> torch.Tensor:
    """``[3, h_i, w_i]`` -> ``[B, 3, max h, max w]``, padding right / bottom (boxes do not move)."""
    height, width = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
    if all(i.shape[-2:] == (height, width) for i in images):
        return torch.stack(images)
    value = fill if images[0].dtype == torch.uint8 else fill / 255.0
    out = images[0].new_full((len(images), 3, height, width), value)
    for i, img in enumerate(images):  # one copy per image, not per box
        out[i, :, : img.shape[-2], : img.shape[-1]] = img
    return out
