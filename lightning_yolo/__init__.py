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
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Lazy: importing the network must not import Lightning or the data stack (export, inference-only use).
    if name == "YOLOPredictor":
        from .models.predictor import YOLOPredictor

        return YOLOPredictor
    if name == "load_predictor":  # checkpoint -> YOLOPredictor, no Lightning
        from .inference.checkpoint import load_predictor

        return load_predictor
    if name == "predict":  # any images -> boxes in original pixels
        from .inference.predict import predict

        return predict
    if name == "YOLOModule":
        from .module import YOLOModule

        return YOLOModule
    if name == "YOLODataModule":
        from .data.datamodule import YOLODataModule

        return YOLODataModule
    raise AttributeError(f"module 'lightning_yolo' has no attribute {name!r}")
