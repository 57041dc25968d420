"""Networks: the YOLOv4 detector, its parts and the inference predictor. No targets, losses or Lightning here."""

from .anchors import COCO_ANCHORS, SCALE_X_Y, STRIDES, AnchorSet
from .config import MODEL_CFGS, ModelCfg
from .factory import create_model, get_model_cfg, list_models
from .yolo import YOLOv4

__all__ = [
    "AnchorSet",
    "COCO_ANCHORS",
    "MODEL_CFGS",
    "ModelCfg",
    "SCALE_X_Y",
    "STRIDES",
    "YOLOv4",
    "create_model",
    "get_model_cfg",
    "list_models",
]
