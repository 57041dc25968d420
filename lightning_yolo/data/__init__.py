"""Data: dataset readers (COCO / YOLO / VOC), the synthetic shapes dataset, augmentation, batching and the
``YOLODataModule``.

By job: :mod:`.formats` and :mod:`.image_io` read datasets and images; :mod:`.config` holds the augmentation
settings (:class:`AugmentCfg`); :mod:`.tiles` renders images through an affine map; :mod:`.steps` holds the
per-sample steps and the ``Step`` / ``SampleSource`` interfaces; :mod:`.mixing` the multi-image stages (Mosaic,
MixUp, CutMix); :mod:`.pipelines` assembles them into the train / eval datasets; :mod:`.samplers` and
:mod:`.collate` batch them; :mod:`.datamodule` ties it together for Lightning.

Everything except :class:`YOLODataModule` imports without Lightning.
"""

from __future__ import annotations

from typing import Any

from .anchors import anchor_fitness, compute_anchors_for_datamodule, kmeans_anchors
from .collate import collate_detection
from .config import AugmentCfg
from .formats import DatasetWarning, DetectionDataset, load_split, read_class_names, resolve_dataset
from .mixing import CutMix, MixUp, Mosaic
from .pipelines import EvalDataset, TrainDataset, build_eval_dataset, build_train_dataset
from .sample import RawSample, raw_to_sample
from .samplers import EvalDistributedSampler, TrainSampler
from .steps import (
    AugmentContext,
    Compose,
    Letterbox,
    RandomAffine,
    RandomHorizontalFlip,
    RandomHSV,
    SampleSource,
    Step,
)
from .synthetic import SYNTHETIC_CLASSES, ensure_synthetic_dataset, make_synthetic_dataset
from .tiles import Tile, render_tiles

__all__ = [
    "YOLODataModule",
    "AugmentCfg",
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
    "Step",
    "SampleSource",
    "AugmentContext",
    "Compose",
    "Tile",
    "render_tiles",
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
