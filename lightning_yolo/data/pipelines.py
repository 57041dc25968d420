"""The training and evaluation pipelines: datasets that turn an index into a public sample.

* :class:`TrainDataset` (:func:`build_train_dataset`): Mosaic with the random affine -> MixUp -> CutMix (the
  :mod:`~lightning_yolo.data.mixing` stages, a :class:`~lightning_yolo.data.steps.SampleSource`) -> HSV -> flip
  (:mod:`~lightning_yolo.data.steps`) -> ``SanitizeBoundingBoxes``, as set by one
  :class:`~lightning_yolo.data.config.AugmentCfg`.
* :class:`EvalDataset` (:func:`build_eval_dataset`): letterbox -> ``SanitizeBoundingBoxes``, plus the unfiltered
  annotations the metric scores against.

Both end with :func:`~lightning_yolo.data.sample.raw_to_sample`, which converts to ``tv_tensors`` and applies the
``SanitizeBoundingBoxes`` rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import AugmentCfg
from .formats.base import DetectionDataset
from .mixing import CutMix, MixUp, Mosaic
from .sample import Sample, raw_to_sample
from .steps import (
    AugmentContext,
    Compose,
    Letterbox,
    RandomAffine,
    RandomHorizontalFlip,
    RandomHSV,
    SampleSource,
    Step,
    process_rng,
)

__all__ = ["TrainDataset", "EvalDataset", "build_train_dataset", "build_eval_dataset"]


def _parse_item(item: int | tuple) -> tuple[int, bool, int | None]:
    """``index`` or ``(index, multi_image[, seed])`` as yielded by the training sampler."""
    if isinstance(item, (tuple, list)):
        return int(item[0]), bool(item[1]), (int(item[2]) if len(item) > 2 and item[2] is not None else None)
    return int(item), True, None


class TrainDataset(Dataset):
    """The training pipeline: a (multi-image) stage, then per-sample steps, then ``SanitizeBoundingBoxes``.

    ``dataset[i]`` or ``dataset[(i, multi_image, seed)]`` (the form :class:`~lightning_yolo.data.samplers.TrainSampler`
    yields, which is how the close-mosaic switch and a per-sample seed reach persistent workers).

    Args:
        stage: the source of ``S x S`` samples (e.g. :class:`~lightning_yolo.data.mixing.Mosaic`).
        steps: per-sample steps (HSV, flip).
        class_names: the dataset's class names.
    """

    def __init__(self, stage: SampleSource, steps: Sequence[Step] = (), class_names: Sequence[str] = ()) -> None:
        self.stage = stage
        self.steps = Compose(steps)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.stage)

    def __getitem__(self, item: int | tuple) -> Sample:
        index, multi, seed = _parse_item(item)
        rng = np.random.default_rng(seed) if seed is not None else process_rng()
        raw = self.stage.get(index, AugmentContext(rng, multi))
        return raw_to_sample(self.steps(raw, rng))


class EvalDataset(Dataset):
    """The evaluation pipeline: load resized to ``img_size`` (long side), letterbox, ``SanitizeBoundingBoxes``.

    Crowd boxes are kept (flagged) for the metric. ``SanitizeBoundingBoxes`` drops boxes under 1 px *at the network
    size* (a 1.2 x 13 px box of a 640-px image is 0.8 px wide at 416), which only the loss needs; the metric must score
    against the annotations as written. So each target also carries the image's annotations in original-image pixels,
    unfiltered: ``eval_boxes`` float32 ``[M, 4]`` xyxy, ``eval_labels`` int64 ``[M]``, ``eval_iscrowd`` bool ``[M]``
    (empty when the image could not be decoded, as for ``boxes``).
    """

    def __init__(self, base: DetectionDataset, img_size: int) -> None:
        self.base = base
        self.letterbox = Letterbox(img_size)
        self.class_names = list(base.class_names)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: int | tuple) -> Sample:
        index = _parse_item(item)[0]
        raw = self.base.load_raw(index)
        image, target = raw_to_sample(self.letterbox(raw))
        rec = self.base.records[index]
        failed = str(rec.path) in getattr(self.base, "load_failures", {})
        count = 0 if failed else len(rec.boxes)
        target["eval_boxes"] = torch.from_numpy(np.asarray(rec.boxes[:count], np.float32).reshape(-1, 4).copy())
        target["eval_labels"] = torch.from_numpy(np.asarray(rec.labels[:count], np.int64).copy())
        target["eval_iscrowd"] = torch.from_numpy(np.asarray(rec.iscrowd[:count], bool).copy())
        return image, target


def build_eval_dataset(base: DetectionDataset, img_size: int) -> EvalDataset:
    """Evaluation pipeline over a :class:`~lightning_yolo.data.formats.base.DetectionDataset`."""
    return EvalDataset(base, img_size)


def build_train_dataset(base: DetectionDataset, img_size: int, augment: AugmentCfg | None = None) -> TrainDataset:
    """Training pipeline: Mosaic (+ random affine) -> MixUp -> CutMix -> HSV -> flip -> sanitize.

    Args:
        base: :class:`~lightning_yolo.data.formats.base.DetectionDataset` with ``load_size=img_size`` and
            ``drop_crowd=True``.
        img_size: output side ``S``.
        augment: the augmentation settings (``None``: the defaults). Steps whose probability or range is 0 are left
            out; ``augment.enabled`` False is the caller's to handle (the DataModule trains on an
            :class:`EvalDataset` then).
    """
    cfg = AugmentCfg() if augment is None else augment
    affine = RandomAffine(img_size, degrees=cfg.degrees, translate=cfg.translate, scale=cfg.scale, shear=cfg.shear)
    stage: SampleSource = Mosaic(base, img_size, prob=cfg.mosaic_prob, affine=affine, buffer_size=cfg.mosaic_buffer)
    if cfg.mixup_prob > 0:
        stage = MixUp(stage, prob=cfg.mixup_prob, alpha=cfg.mixup_alpha)
    if cfg.cutmix_prob > 0:
        stage = CutMix(stage, prob=cfg.cutmix_prob, beta=cfg.cutmix_beta)
    steps: list[Step] = []
    if cfg.hsv_h or cfg.hsv_s or cfg.hsv_v:
        steps.append(RandomHSV(cfg.hsv_h, cfg.hsv_s, cfg.hsv_v))
    if cfg.flip_prob > 0:
        steps.append(RandomHorizontalFlip(cfg.flip_prob))
    return TrainDataset(stage, steps, base.class_names)
