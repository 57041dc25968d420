"""lightning_yolo: YOLOv4 object detection with PyTorch Lightning and timm backbones."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from .models import YOLOv4, create_model, list_models  # noqa: E402

__all__ = [
    "YOLOv4",
    "YOLOPredictor",
    "YOLOModule",
    "YOLODataModule",
    "create_model",
    "list_models",
    "load_predictor",
    "predict",
    "ModelCfg",
    "LossCfg",
    "AugmentCfg",
    "InferenceCfg",
    "__version__",
]

#: Lazily imported public names -> their module (importing the network must not import Lightning or the data stack).
_LAZY = {
    "YOLOPredictor": "lightning_yolo.models.predictor",
    "load_predictor": "lightning_yolo.inference.checkpoint",  # checkpoint -> YOLOPredictor, no Lightning
    "predict": "lightning_yolo.inference.predict",  # any images -> boxes in original pixels
    "YOLOModule": "lightning_yolo.module",
    "YOLODataModule": "lightning_yolo.data.datamodule",
    "ModelCfg": "lightning_yolo.models.config",
    "LossCfg": "lightning_yolo.training.config",
    "AugmentCfg": "lightning_yolo.data.config",
    "InferenceCfg": "lightning_yolo.ops.postprocess",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_yolo' has no attribute {name!r}")
