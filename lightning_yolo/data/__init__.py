"""Data: dataset readers (COCO / YOLO / VOC), the synthetic shapes dataset, augmentation, batching and the
``YOLODataModule``.

Everything except :class:`YOLODataModule` imports without Lightning.
"""

from __future__ import annotations

from typing import Any

from .anchors import anchor_fitness, compute_anchors_for_datamodule, kmeans_anchors
from .collate import collate_detection
from .formats import DatasetWarning, DetectionDataset, load_split, read_class_names, resolve_dataset
from .mosaic import CutMix, MixUp, Mosaic
from .sample import RawSample, raw_to_sample
from .samplers import EvalDistributedSampler, TrainSampler
from .synthetic import SYNTHETIC_CLASSES, ensure_synthetic_dataset, make_synthetic_dataset
from .transforms import (
    EvalDataset,
    Letterbox,
    RandomAffine,
    RandomHorizontalFlip,
    RandomHSV,
    TrainDataset,
    build_eval_dataset,
    build_train_dataset,
)

__all__ = [
    "YOLODataModule",
    "DatasetWarning",
    "DetectionDataset",
    "resolve_dataset",
    "read_class_names",
    "load_split",
    "RawSample",
    "raw_to_sample",
    "collate_detection",
    "TrainSampler",
    "EvalDistributedSampler",
    "Mosaic",
    "MixUp",
    "CutMix",
    "Letterbox",
    "RandomAffine",
    "RandomHSV",
    "RandomHorizontalFlip",
    "TrainDataset",
    "EvalDataset",
    "build_train_dataset",
    "build_eval_dataset",
    "SYNTHETIC_CLASSES",
    "make_synthetic_dataset",
    "ensure_synthetic_dataset",
    "kmeans_anchors",
    "anchor_fitness",
    "compute_anchors_for_datamodule",
]


def __getattr__(name: str) -> Any:
    if name == "YOLODataModule":  # lazy: importing Lightning is slow and not needed by the readers
        from .datamodule import YOLODataModule

        return YOLODataModule
    raise AttributeError(f"module 'lightning_yolo.data' has no attribute {name!r}")
