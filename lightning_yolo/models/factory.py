"""Model factory: ``create_model(name, num_classes, **overrides)`` and ``list_models()`` (timm style)."""

from __future__ import annotations

import fnmatch
from typing import Any

from .config import MODEL_CFGS, ModelCfg
from .yolo import YOLOv4

__all__ = ["create_model", "list_models", "get_model_cfg"]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered variants matching a shell-style ``pattern``."""
    return sorted(n for n in MODEL_CFGS if fnmatch.fnmatch(n, pattern))


def get_model_cfg(name: str, **overrides: Any) -> ModelCfg:
    """The :class:`ModelCfg` of variant ``name`` with ``overrides`` applied (``None`` values ignored)."""
    if name not in MODEL_CFGS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    return MODEL_CFGS[name].replace(**overrides)


def create_model(name: str = "yolov4_cspdarknet53", num_classes: int = 80, **overrides: Any) -> YOLOv4:
    """Build a YOLOv4 variant.

    Args:
        name: a name from :func:`list_models`.
        num_classes: number of object classes.
        **overrides: :class:`ModelCfg` fields to replace, e.g. ``sam=True``, ``backbone="cs3darknet_m"``,
            ``anchors=[[[10, 13], ...], ...]``.

    Example:
        >>> model = create_model("yolov4_pico", num_classes=3)
        >>> [o.shape[1] for o in model(torch.zeros(1, 3, 64, 64))]
        [24, 24, 24]
    """
    return YOLOv4(get_model_cfg(name, **overrides), num_classes)
