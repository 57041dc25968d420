"""``YOLODataModule``: datasets, samplers and loaders, plus the on-device steps of a batch.

On the device (``on_after_batch_transfer``): uint8 -> float in ``[0, 1]``; while training, random training
shapes (a new side, a multiple of the model's largest stride, every ``augment.multiscale_every`` batches, images
resized with ``F.interpolate`` and boxes scaled with them) and self-adversarial training, through the module's
``self_adversarial_images`` (:meth:`lightning_yolo.module.YOLOModule.self_adversarial_images`).

All augmentation settings are one :class:`~lightning_yolo.data.config.AugmentCfg` (``--data.augment.*``).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
import warnings
from typing import Any, Literal, Union

import cv2
import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..ops.postprocess import DEFAULT_IMG_SIZE
from ..runtime import cpus_available, plan_workers, ram_cache_budget
from .collate import collate_detection
from .config import AugmentCfg
from .formats import DatasetLocation, load_split, read_class_names, resolve_dataset, set_split_json
from .formats.base import DatasetSource, DetectionDataset
from .pipelines import EvalDataset, TrainDataset, build_train_dataset
from .samplers import EvalDistributedSampler, TrainSampler
from .synthetic import SYNTHETIC_CLASSES, ensure_synthetic_dataset

__all__ = ["YOLODataModule"]

log = logging.getLogger(__name__)

#: Largest output stride of the package's networks (``YOLOv4.max_stride`` of every ``MODEL_CFGS`` entry): ``img_size``
#: must be a multiple of it, checked in ``__init__`` before any model is known. Once training runs, random training
#: shapes use the stride of the module's own model instead (:meth:`YOLODataModule.multiscale_sizes`).
IMG_SIZE_MULTIPLE = 32


#: Seconds a DataLoader worker outlives a SIGTERM sent to the whole process group (see :func:`worker_init`).
WORKER_SIGTERM_GRACE_S = 60


def worker_init(worker_id: int) -> None:
    """DataLoader worker start: outlive a SIGTERM sent to the whole process group.

    Slurm (``scancel``) and systemd stop a job by sending SIGTERM to every process. A worker that dies of it makes
    the main process fail with "DataLoader worker is killed by signal: Terminated" before Lightning's clean shutdown
    (stop at the next batch, print the last checkpoint) can run. Here the worker keeps serving; the main process
    gets the same signal and shuts its workers down normally. A worker still alive ``WORKER_SIGTERM_GRACE_S`` after
    a SIGTERM ends itself (SIGALRM), so a stuck worker cannot block the exit.
    """
    if hasattr(signal, "SIGALRM"):  # POSIX
        signal.signal(signal.SIGTERM, lambda signum, frame: signal.alarm(WORKER_SIGTERM_GRACE_S))


class YOLODataModule(pl.LightningDataModule):
    """Object-detection data for YOLOv4: COCO json, YOLO txt (data.yaml) or Pascal VOC, or the built-in synthetic
    shapes dataset.

    Batches are ``{"images": uint8 [B, 3, S, S], "targets": [dict, ...]}`` (the batch contract), turned into float
    ``[0, 1]`` on the device. ``num_classes`` and ``class_names`` are known right after ``__init__`` (read cheaply
    from the yaml / json); the full dataset scan happens in ``setup()``.

    Args:
        path: a ``data.yaml``, a COCO json, or a dataset folder (see :mod:`lightning_yolo.data.formats`);
            ``None``: the synthetic shapes dataset, generated once into ``$LIGHTNING_YOLO_CACHE`` (default
            ``~/.cache/lightning_yolo``).
        format: ``"auto"``, ``"coco"``, ``"yolo"`` or ``"voc"``.
        img_size: network input side ``S`` (multiple of 32, the largest stride of the models here).
        batch_size: images per batch and process.
        num_workers: DataLoader worker processes; ``"auto"``: chosen for the machine when the loaders are built
            (:func:`lightning_yolo.runtime.plan_workers`: none on a CPU with 2 cores or fewer per training process,
            where they only take time from the training threads; up to 8 when a GPU trains) and printed once.
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        pin_memory: pin batches for faster host-to-GPU copies.
        augment: every augmentation setting (:class:`~lightning_yolo.data.config.AugmentCfg`: Mosaic, MixUp,
            CutMix, affine, HSV, flip, close-mosaic, random shapes, SAT); on the command line
            ``--data.augment.mosaic_prob 0.5``. Its ``to_dict`` form (as saved in checkpoints) or ``None`` (the
            defaults) are accepted too.
        cache_images: decode and resize all images into RAM at setup (fast Mosaic; needs
            ``images x S^2 x 3 x 0.75`` bytes or so). ``"auto"`` (default): each split whose resized images fit
            :func:`lightning_yolo.runtime.ram_cache_budget` (a quarter of the available memory, at most 4 GiB) is
            cached; a small dataset then decodes every image once per run instead of once (or four times, for
            Mosaic) per epoch, and validation no longer re-decodes the same images every epoch.
        voc_class_names: VOC only: class names in label order (default: ``labels.txt`` or the names found).
            (Not ``class_names``: that hyperparameter belongs to the LightningModule, which gets it from here.)
        channels_last: keep the batch in channels_last memory on the device (the loader produces it so);
            ``False`` makes it NCHW-contiguous.
        seed: base seed of shuffling and augmentation; ``None`` uses ``PL_GLOBAL_SEED`` (``seed_everything``) or 0.
        synthetic_num_train: synthetic dataset training images.
        synthetic_num_val: synthetic dataset validation images.
        synthetic_image_size: synthetic image side.
        synthetic_seed: synthetic dataset seed.
        predict_path: images for ``Trainer.predict`` / ``lightning-yolo predict``: an image file, a folder or a glob
            (:class:`~lightning_yolo.data.predict.PredictImages`), letterboxed like validation images.
        verify_images: decode every image during the scan (in threads; slower than the header scan): counts JPEGs
            whose data is damaged but still decodes (libjpeg's "Corrupt JPEG data") and skips images that only fail
            at the pixel level. Off: the scan reads headers and file tails only.
        val_json: COCO only: the validation json (default: found beside the training json, see
            :mod:`lightning_yolo.data.formats`; without one, validation reads the training json and says so).
        test_json: COCO only: the test json (default: as ``val_json``).
    """

    def __init__(
        self,
        path: str | None = None,
        format: str = "auto",
        img_size: int = DEFAULT_IMG_SIZE,
        batch_size: int = 16,
        num_workers: Union[int, Literal["auto"]] = "auto",  # noqa: UP007 - jsonargparse reads the annotation
        persistent_workers: bool = True,
        pin_memory: bool = True,
        augment: AugmentCfg = AugmentCfg(),  # noqa: B008 - frozen, so one shared default is safe
        cache_images: Union[bool, Literal["auto"]] = "auto",  # noqa: UP007 - jsonargparse reads the annotation
        voc_class_names: list[str] | None = None,
        channels_last: bool = True,
        seed: int | None = None,
        synthetic_num_train: int = 512,
        synthetic_num_val: int = 128,
        synthetic_image_size: int = 256,
        synthetic_seed: int = 0,
        predict_path: str | None = None,
        verify_images: bool = False,
        val_json: str | None = None,
        test_json: str | None = None,
    ) -> None:
        super().__init__()
        augment_cfg = AugmentCfg.coerce(augment)
        # save_hyperparameters reads this frame's arguments: the plain-dict form goes into hparams (checkpoints) and
        # hparams_initial (the logger's hparams.yaml)
        augment = augment_cfg.to_dict()
        self.save_hyperparameters()
        if img_size % IMG_SIZE_MULTIPLE or img_size <= 0:
            raise ValueError(f"img_size must be a positive multiple of {IMG_SIZE_MULTIPLE}, got {img_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.path = path
        self.format = format
        self.img_size = img_size
        self.batch_size = batch_size
        plan_workers(num_workers, "cpu")  # a bad value fails here, naming num_workers
        self.num_workers = num_workers
        self._workers: int | None = None  # resolved when the first loader is built
        self._cached_bytes = 0  # RAM held by the image caches of the splits set up so far
        self.persistent_workers = persistent_workers
        self.pin_memory = pin_memory
        self.augment = augment_cfg
        self.predict_path = predict_path
        self._train_batches = 0
        self._closed_logged = False  # the close-mosaic notice is printed once
        self._sat_rng = random.Random(0 if seed is None else seed)
        self.location: DatasetLocation | None = None
        if path is None:
            self._class_names = list(SYNTHETIC_CLASSES)
        else:
            self.location = resolve_dataset(path, format)
            for split, given in (("val", val_json), ("test", test_json)):
                if given is not None:
                    set_split_json(self.location, split, given)
            self._class_names = read_class_names(self.location, voc_class_names)
        self.sources: dict[str, DatasetSource] = {}
        self.train_dataset: TrainDataset | EvalDataset | None = None
        self.val_dataset: EvalDataset | None = None
        self.test_dataset: EvalDataset | None = None

    # ------------------------------------------------------------------------------------------------------------
    # classes

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    # ------------------------------------------------------------------------------------------------------------
    # datasets

    def _synthetic_params(self) -> dict[str, Any]:
        hp = self.hparams
        return {
            "num_train": hp.synthetic_num_train,
            "num_val": hp.synthetic_num_val,
            "img_size": hp.synthetic_image_size,
            "seed": hp.synthetic_seed,
        }

    def prepare_data(self) -> None:
        """Generate the synthetic dataset (once, in the cache folder) when no path is given (not for predict, which
        reads only ``predict_path``)."""
        if self.path is None and not (self.trainer is not None and self.trainer.predicting):
            ensure_synthetic_dataset(None, **self._synthetic_params())

    def _ensure_location(self) -> DatasetLocation:
        if self.location is None:
            root = ensure_synthetic_dataset(None, **self._synthetic_params())
            self.location = resolve_dataset(root / "data.yaml")
        return self.location

    def source(self, split: str) -> DatasetSource:
        """The scanned split (scanned on first use; ``test`` falls back to ``val`` when the dataset has none)."""
        if split not in self.sources:
            loc = self._ensure_location()
            actual = split
            if split == "test" and "test" not in loc.splits():
                warnings.warn(f"{loc.path}: no test split; testing on the val split", UserWarning, stacklevel=2)
                actual = "val"
            jsons = loc.coco_jsons if loc.format == "coco" else {}
            if actual != "train" and "train" in self.sources and actual in jsons and jsons[actual] == jsons["train"]:
                # one json for every split (a single COCO json, CVAT's instances_default.json) while training on it:
                # the validation figures are on the training images, which the user must know
                what = "validation" if actual == "val" else "testing"
                warnings.warn(
                    f"{jsons[actual]}: the training json, and no {actual} json found beside it: {what} reads the "
                    f"training images (name a {actual} json with --data.{actual}_json)",
                    UserWarning,
                    stacklevel=2,
                )
            if actual not in self.sources:
                self.sources[actual] = load_split(loc, actual, self._class_names, self.hparams.verify_images)
            self.sources[split] = self.sources[actual]
        return self.sources[split]

    def _base(self, split: str, drop_crowd: bool) -> DetectionDataset:
        source = self.source(split)
        if not any((~r.iscrowd).any() for r in source.records):
            # Every image is background: a training run would only learn "nothing is there", an evaluation gives
            # mAP -1. Usually the labels were not found or all rejected by the scan.
            report = source.report
            reasons = "\n".join(report.summary().splitlines()[1:])
            what = (
                f"{report.source} [{split}]: {report.num_images} images but not one usable (non-crowd) box"
                + (f"; the scan skipped:\n{reasons}" if reasons else "")
            )
            if split == "train":
                raise ValueError(what + "\ntraining on it would learn only background; check the labels")
            warnings.warn(what + f"; {split} mAP will be -1", UserWarning, stacklevel=2)
        base = DetectionDataset(source, load_size=self.img_size, drop_crowd=drop_crowd)
        cache = self.hparams.cache_images
        if cache == "auto":
            cache = base.cache_bytes_estimate() <= ram_cache_budget() - self._cached_bytes
        if cache:
            t0 = time.perf_counter()
            nbytes = base.fill_cache()
            self._cached_bytes += nbytes
            rank_zero_info(
                f"cached {len(base)} {split} images in RAM ({nbytes / 2**20:.0f} MB, {time.perf_counter() - t0:.1f} s)"
            )
        return base

    def setup(self, stage: str | None = None) -> None:
        """Scan the splits the stage needs and build the pipelines (idempotent)."""
        if stage in (None, "fit") and self.train_dataset is None:
            base = self._base("train", drop_crowd=True)
            if self.augment.enabled:
                self.train_dataset = build_train_dataset(base, self.img_size, self.augment)
            else:
                self.train_dataset = EvalDataset(base, self.img_size)
        if stage in (None, "fit", "validate") and self.val_dataset is None:
            self.val_dataset = EvalDataset(self._base("val", drop_crowd=False), self.img_size)
        if stage in (None, "test") and self.test_dataset is None:
            self.test_dataset = EvalDataset(self._base("test", drop_crowd=False), self.img_size)
        names = next(iter(self.sources.values())).class_names if self.sources else self._class_names
        if names != self._class_names:
            raise ValueError(
                f"class names of the scanned dataset {names} differ from those read at init {self._class_names}"
            )

    def summary(self, splits: tuple[str, ...] = ("train", "val")) -> str:
        """What the scan found, for the start of a run: format and path, per split the images, boxes, images without
        boxes and what was skipped (counts by reason), and the class names. Scans the splits not scanned yet."""
        loc = self._ensure_location()
        where = "synthetic shapes" if self.path is None else loc.format
        names = self.class_names
        shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
        lines = [f"dataset: {where} {loc.path} ({len(names)} classes: {shown})"]
        for split in splits:
            if split == "test" and "test" not in loc.splits():
                continue
            report = self.source(split).report
            line = (
                f"  {split}: {report.num_images} images, {report.num_boxes} boxes, {report.num_background} "
                "backgrounds"
            )
            skipped = sum(report.counts.values())
            if skipped:
                reasons = ", ".join(f"{n} {problem}" for problem, n in sorted(report.counts.items()))
                line += f"; skipped or changed: {skipped} ({reasons})"
            lines.append(line)
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------------------------
    # loaders

    def _dist(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    def _seed(self) -> int:
        seed = self.hparams.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else int(seed)

    def _trainer_epoch(self) -> int | None:
        return int(self.trainer.current_epoch) if self.trainer is not None else None

    def multi_image_enabled(self, epoch: int) -> bool:
        """Whether Mosaic / MixUp / CutMix run in ``epoch``: the close-mosaic schedule, the package's one switch.

        Off for the last ``augment.close_mosaic_epochs`` epochs of ``trainer.max_epochs``, read when each epoch's
        iteration starts (the training sampler calls this), so a ``max_epochs`` re-planned during fit (by
        :class:`~lightning_yolo.callbacks.recipe.TimeBudget`) moves the closed epochs with it.
        """
        n = self.augment.close_mosaic_epochs
        if n <= 0:
            return True
        max_epochs = getattr(self.trainer, "max_epochs", None) if self.trainer is not None else None
        if max_epochs is None or max_epochs < 0:
            warnings.warn(
                "augment.close_mosaic_epochs needs Trainer(max_epochs=...); Mosaic stays on", UserWarning, stacklevel=2
            )
            return True
        enabled = epoch < max_epochs - n
        if not enabled and not self._closed_logged and self.augment.multi_image:
            self._closed_logged = True
            rank_zero_info(
                f"close-mosaic: Mosaic / MixUp / CutMix off from epoch {epoch} (the last {n} of {max_epochs} epochs)"
            )
        return enabled

    def resolved_num_workers(self) -> int:
        """The loader workers of this process: ``num_workers``, or the automatic choice for the Trainer's device and
        its processes on this host (printed once)."""
        if self._workers is not None:
            return self._workers
        if self.num_workers != "auto":
            self._workers = plan_workers(self.num_workers, "cpu")
            return self._workers
        trainer = self.trainer
        strategy = getattr(trainer, "strategy", None)
        device_type = strategy.root_device.type if strategy is not None else "cpu"
        processes = trainer.num_devices if strategy is not None and trainer.world_size > 1 else 1
        self._workers = plan_workers(self.num_workers, device_type, processes=processes)
        rank_zero_info(f"loader workers: {self._workers} (auto; {device_type} training, {cpus_available()} CPUs)")
        return self._workers

    def _loader(self, dataset, sampler, drop_last: bool) -> DataLoader:
        workers = self.resolved_num_workers()
        if workers > 0:
            # Before workers fork: OpenCV's thread pool does not survive fork(). A forked worker that touches it
            # (even cv2.setNumThreads) can block forever on a condition variable whose waiters stayed in the parent
            # (seen here: a worker stuck in pthread_cond_destroy inside cv2). With 0 threads OpenCV runs serially;
            # the workers are the parallelism (ultralytics and YOLOX do the same).
            cv2.setNumThreads(0)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate_detection,
            worker_init_fn=worker_init if workers > 0 else None,
            # Worker seeds from the loader's own generator, not the global one: drawing from the global generator
            # at iterator creation shifts the model's random stream (DropBlock) in a resumed run.
            generator=torch.Generator().manual_seed(self._seed()),
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=drop_last,
            persistent_workers=self.persistent_workers and workers > 0,
        )

    def _check_close_mosaic(self) -> None:
        """Say so when close-mosaic covers the whole run (e.g. the demo's 4 closed epochs in a 3-epoch run)."""
        n = self.augment.close_mosaic_epochs
        max_epochs = getattr(self.trainer, "max_epochs", None) if self.trainer is not None else None
        if self.augment.multi_image and n > 0 and max_epochs is not None and 0 < max_epochs <= n:
            rank_zero_warn(
                f"close_mosaic_epochs={n} covers the whole run (max_epochs={max_epochs}): Mosaic / MixUp / CutMix "
                "never run; set data.augment.close_mosaic_epochs below max_epochs (0 keeps them on to the end)"
            )

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            self.setup("fit")
        self._check_close_mosaic()
        world, rank = self._dist()
        sampler = TrainSampler(
            self.train_dataset,
            num_replicas=world,
            rank=rank,
            shuffle=True,
            seed=self._seed(),
            multi_image=self.multi_image_enabled,
            epoch_fn=self._trainer_epoch,
        )
        # a last batch of 1 breaks BatchNorm: drop the tail when there is at least one full batch
        return self._loader(self.train_dataset, sampler, drop_last=len(sampler) >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        if self.val_dataset is None:
            self.setup("validate")
        world, rank = self._dist()
        return self._loader(self.val_dataset, EvalDistributedSampler(self.val_dataset, world, rank), drop_last=False)

    def test_dataloader(self) -> DataLoader:
        if self.test_dataset is None:
            self.setup("test")
        world, rank = self._dist()
        return self._loader(self.test_dataset, EvalDistributedSampler(self.test_dataset, world, rank), drop_last=False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict_path`` images; targets carry ``path``, ``image_id`` and the letterbox geometry."""
        if self.predict_path is None:
            raise ValueError(
                "predict needs images: set data.predict_path to an image file, a folder or a glob "
                "(e.g. --data.predict_path 'photos/*.jpg')"
            )
        from .predict import PredictImages

        dataset = PredictImages(self.predict_path, self.img_size)
        world, rank = self._dist()
        return self._loader(dataset, EvalDistributedSampler(dataset, world, rank), drop_last=False)

    # ------------------------------------------------------------------------------------------------------------
    # on the device

    def model_stride(self) -> int:
        """The largest output stride of the model being trained (the trainer's module's ``max_stride``), or
        :data:`IMG_SIZE_MULTIPLE` when no model is attached."""
        trainer = self.trainer
        stride = getattr(trainer.lightning_module if trainer is not None else None, "max_stride", None)
        return stride if isinstance(stride, int) and stride > 0 else IMG_SIZE_MULTIPLE

    def multiscale_sizes(self, stride: int | None = None) -> list[int]:
        """Candidate training sides: multiples of ``stride`` (default :meth:`model_stride`) in ``[lo * S, hi * S]``
        (``augment.multiscale_range``)."""
        stride = self.model_stride() if stride is None else int(stride)
        lo, hi = self.augment.multiscale_range
        first = max(stride, int(np.ceil(lo * self.img_size / stride)) * stride)
        last = max(first, int(np.floor(hi * self.img_size / stride)) * stride)
        return list(range(first, last + 1, stride))

    def _random_shape(self, batch: dict[str, Any]) -> dict[str, Any]:
        every = self.augment.multiscale_every
        # the same draw on every rank: a function of (seed, batch counter)
        size = random.Random(self._seed() * 1_000_003 + self._train_batches // every).choice(self.multiscale_sizes())
        images = batch["images"]
        if images.shape[-1] == size and images.shape[-2] == size:
            return batch
        factor_y, factor_x = size / images.shape[-2], size / images.shape[-1]
        batch["images"] = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        scale = torch.tensor([factor_x, factor_y, factor_x, factor_y], device=images.device)
        for t in batch["targets"]:
            t["boxes"] = t["boxes"] * scale.to(t["boxes"].dtype)
            if "ratio" in t:
                t["ratio"] = t["ratio"] * factor_x
            if "pad" in t:
                t["pad"] = t["pad"] * scale[:2].to(t["pad"].dtype)
        return batch

    def _self_adversarial(self, batch: dict[str, Any]) -> dict[str, Any]:
        """SAT through the module's public seam ``self_adversarial_images(images, targets, step_size, max_delta,
        steps)``; the DataModule never touches the network or the loss itself."""
        module = self.trainer.lightning_module
        attack = getattr(module, "self_adversarial_images", None)
        if not callable(attack):
            raise TypeError(
                f"augment.sat_prob > 0 needs a LightningModule with a self_adversarial_images(images, targets, "
                f"step_size, max_delta, steps) method (YOLOModule); {type(module).__name__} has none"
            )
        cfg = self.augment
        batch["images"] = attack(
            batch["images"], batch["targets"], step_size=cfg.sat_step_size, max_delta=cfg.sat_max_delta,
            steps=cfg.sat_steps,
        )  # fmt: skip
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 -> float ``[0, 1]``; while training: random shapes, then SAT."""
        if not isinstance(batch, dict) or "images" not in batch:
            return batch
        images = batch["images"]
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)  # keeps channels_last strides
        batch["images"] = images if self.hparams.channels_last else images.contiguous()
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        cfg = self.augment
        if cfg.multiscale:
            batch = self._random_shape(batch)
        self._train_batches += 1
        if cfg.sat_prob > 0 and trainer.current_epoch >= cfg.sat_start_epoch and self._sat_rng.random() < cfg.sat_prob:
            batch = self._self_adversarial(batch)
        return batch

    # ------------------------------------------------------------------------------------------------------------
    # checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": self._train_batches, "sat_rng": self._sat_rng.getstate()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_batches = int(state_dict.get("train_batches", 0))
        if "sat_rng" in state_dict:
            state = state_dict["sat_rng"]
            self._sat_rng.setstate((state[0], tuple(state[1]), state[2]))

    # ------------------------------------------------------------------------------------------------------------
    # anchors

    def train_boxes_wh(self) -> np.ndarray:
        """Widths and heights of the training boxes (crowd excluded) at the network scale.

        Each image is scaled as the loader scales it: long side to ``img_size``.

        Returns:
            ``[N, 2]`` float32 pixels.
        """
        src = self.source("train")
        out = []
        for rec in src.records:
            keep = ~rec.iscrowd
            if keep.any():
                b = rec.boxes[keep]
                out.append((b[:, 2:] - b[:, :2]) * (self.img_size / max(rec.height, rec.width)))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 2), np.float32)
