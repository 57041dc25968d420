"""What a run writes besides checkpoints: predictions (COCO-style json, drawn images), sample and prediction
pictures, results.csv / results.png."""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_warn

from ..data.formats.coco import CocoImageIds, coco_category_ids
from ..ops.boxes import scale_boxes_to_input
from ..ops.postprocess import DEFAULTS
from ..reporting.plots import detection_figures, labels_figure, plot_results, save_figure
from ..reporting.report import results_row
from ..reporting.visualize import MAX_GRID_IMAGES, batch_grid, save_image


__all__ = ["PredictionWriter", "DetectionImageLogger", "DetectionPlots", "EvalOutputs", "ResultsFiles"]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# predictions to COCO-style json (and drawn images)


def _coco_jsons(datamodule: Any) -> list[Path]:
    """The COCO jsons of the DataModule's dataset, val, test and train first (``[]`` for any other dataset)."""
    location = getattr(datamodule, "location", None)
    jsons = getattr(location, "coco_jsons", None) if getattr(location, "format", None) == "coco" else None
    if not jsons:
        return []
    ordered = [jsons[s] for s in ("val", "test", "train") if s in jsons]
    return list(dict.fromkeys([*ordered, *jsons.values()]))


class PredictionWriter(BasePredictionWriter):
    """Write ``Trainer.predict`` detections as a COCO results json and, optionally, images with the boxes drawn.

    ``<output_dir>/predictions.json`` is a list with one entry per detection, the format of COCO results files
    (``pycocotools.COCO.loadRes``) plus the image file::

        {"image_id": 0, "file_name": "photos/a.jpg", "category_id": 1, "bbox": [x, y, w, h], "score": 0.91}

    ``bbox`` is in original-image pixels (top-left corner, width, height). ``image_id`` is the image's id in the
    dataset's COCO json when the DataModule reads a COCO dataset and the file is listed there (matched by
    ``file_name``), so ``COCO.loadRes`` works against that json; otherwise the position of the file in the sorted input
    list (a warning says how many files were not found in the json). Boxes that lie entirely in the letterbox
    padding (zero size once clipped to the image)
    are left out. ``category_id`` is the dataset's category id when the DataModule reads a COCO dataset
    with the model's classes, else the class index (or ``category_ids[label]`` when given). With ``save_images``
    (the default), ``<output_dir>/images/<name>.jpg`` shows each image with boxes, class names and scores. Under DDP
    every process predicts its share and process 0 writes the merged file.

    At the end it prints, as detection tools do, one line per image with its detections per class (``photos/a.jpg:
    2 circle, 1 square``; the first :attr:`MAX_LINES` images, then a count), and the totals per class.

    Args:
        output_dir: output folder (default: the run folder ``runs/detect/predict``, then ``predict2``, ...; in a
            Trainer of your own: ``<trainer.default_root_dir>/predictions``).
        save_images: also write the drawn images (``false``: only the json).
        category_ids: category id of each class index (overrides the DataModule's).
        filename: name of the json file.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        save_images: bool = True,
        category_ids: list[int] | None = None,
        filename: str = "predictions.json",
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.save_images = bool(save_images)
        self.category_ids = None if category_ids is None else [int(c) for c in category_ids]
        self.filename = filename
        self.results: list[dict[str, Any]] = []
        self.json_path: Path | None = None
        self._num_images = 0
        self._image_names: set[str] = set()
        self._ids: list[int] | None = None
        self._coco_images: CocoImageIds | None = None
        self._unmatched = 0
        #: ``(file, reason)`` of the input images that could not be read (no predictions for them)
        self.skipped: list[tuple[str, str]] = []
        #: ``(file, {class name: detections})`` of every predicted image, in prediction order
        self.counts: list[tuple[str, dict[str, int]]] = []

    #: per-image lines printed at the end; more images get a count and the per-class totals only
    MAX_LINES = 20

    def _resolved_dir(self, trainer: pl.Trainer) -> Path:
        return self.output_dir if self.output_dir is not None else Path(trainer.default_root_dir) / "predictions"

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results, self._num_images, self._image_names = [], 0, set()
        self.skipped, self.counts = [], []
        names = list(getattr(pl_module, "class_names", []) or [])
        num_classes = int(getattr(pl_module.hparams, "num_classes", len(names)))
        if self.category_ids is not None:
            if len(self.category_ids) != num_classes:
                raise ValueError(
                    f"PredictionWriter: category_ids has {len(self.category_ids)} ids for {num_classes} classes"
                )
            self._ids = self.category_ids
        else:
            self._ids = None
        jsons = _coco_jsons(trainer.datamodule)
        if self.category_ids is None and names and jsons:
            smallest = min(jsons, key=lambda j: j.stat().st_size)
            self._ids, json_names = coco_category_ids(smallest, names)
            if self._ids is None:
                rank_zero_warn(
                    f"PredictionWriter: the classes of {smallest} {json_names} differ from the model's {names}; "
                    "writing labels as category_id"
                )
        self._coco_images = CocoImageIds(jsons) if jsons else None
        self._unmatched = 0
        self._resolved_dir(trainer).mkdir(parents=True, exist_ok=True)

    def _image_file_name(self, path: str, image_id: int) -> str:
        name = f"{Path(path).stem}.jpg"
        if name in self._image_names:  # same stem from two folders of a recursive glob
            name = f"{Path(path).stem}_{image_id}.jpg"
        self._image_names.add(name)
        return name

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        from ..data.image_io import decode_image
        from ..reporting.visualize import draw_detections

        names = list(getattr(pl_module, "class_names", []) or []) or None
        for det in prediction:
            if "skipped" in det:  # unreadable input file: reported at the end, nothing predicted
                self.skipped.append((str(det.get("path", "")), str(det["skipped"])))
                rank_zero_warn(f"predict: skipped {det['skipped']}")
                continue
            boxes = det["boxes"].detach().float().cpu()
            scores = det["scores"].detach().float().cpu()
            labels = det["labels"].detach().long().cpu()
            image_id = int(det["image_id"]) if "image_id" in det else self._num_images
            path = str(det.get("path", ""))
            if self._coco_images is not None:
                coco_id = self._coco_images.lookup(path) if path else None
                if coco_id is None:
                    self._unmatched += 1
                else:
                    image_id = coco_id
            self._num_images += 1
            xywh = torch.cat((boxes[:, :2], boxes[:, 2:] - boxes[:, :2]), dim=1)
            # boxes that lie in the letterbox padding are clipped to zero size in the original image: drop them
            visible = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
            boxes, scores, labels, xywh = boxes[visible], scores[visible], labels[visible], xywh[visible]
            ids = labels.tolist() if self._ids is None else [self._ids[i] for i in labels.tolist()]
            per_class: dict[str, int] = {}
            for label in sorted(labels.tolist()):
                name = names[label] if names and label < len(names) else str(label)
                per_class[name] = per_class.get(name, 0) + 1
            self.counts.append((path, per_class))
            for box, score, cid in zip(xywh.tolist(), scores.tolist(), ids, strict=True):
                self.results.append(
                    {
                        "image_id": image_id,
                        "file_name": path,
                        "category_id": cid,
                        "bbox": [round(v, 3) for v in box],
                        "score": round(score, 5),
                    }
                )
            if self.save_images and path:
                drawn = draw_detections(decode_image(path), boxes, labels, scores, class_names=names)
                save_image(drawn, self._resolved_dir(trainer) / "images" / self._image_file_name(path, image_id))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results, num_images, unmatched, skipped = self.results, self._num_images, self._unmatched, self.skipped
        counts = self.counts
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (results, num_images, unmatched, skipped, counts))
            results = [r for part, _, _, _, _ in gathered for r in part]
            num_images = sum(n for _, n, _, _, _ in gathered)
            unmatched = sum(u for _, _, u, _, _ in gathered)
            skipped = sorted(s for _, _, _, part, _ in gathered for s in part)
            counts = sorted(c for *_, part in gathered for c in part)
        if not trainer.is_global_zero:
            return
        if unmatched:
            rank_zero_warn(
                f"PredictionWriter: {unmatched} of {num_images} images are not listed in the dataset's COCO json; "
                "their image_id is their position in the input list"
            )
        # string ids (a COCO json with "id": "img_a") sort after numeric ones
        results.sort(key=lambda r: (isinstance(r["image_id"], str), r["image_id"], -r["score"]))
        self.results = results
        self.json_path = self._resolved_dir(trainer) / self.filename
        with open(self.json_path, "w", encoding="utf-8") as f:
            json.dump(results, f)
        self.counts = counts
        where = f" and {_shown(self._resolved_dir(trainer) / 'images')}" if self.save_images else ""
        lines = [f"{_shown(path)}: {_counts(per_class)}" for path, per_class in counts[: self.MAX_LINES]]
        if len(counts) > self.MAX_LINES:
            lines.append(f"... and {len(counts) - self.MAX_LINES} more images")
        totals: dict[str, int] = {}
        for _, per_class in counts:
            for name, n in per_class.items():
                totals[name] = totals.get(name, 0) + n
        total = f": {_counts(totals)}" if totals else ""
        lines.append(f"{len(results)} detections in {num_images} images{total}")
        lines.append(f"-> {_shown(self.json_path)}{where}")
        if skipped:
            self.skipped = skipped
            listed = "".join(f"\n  {r if p in r else f'{p}: {r}'}" for p, r in skipped[:20])  # r names the file
            more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
            lines.append(f"skipped {len(skipped)} unreadable image(s):{listed}{more}")
        _print_above_bar(trainer, "\n".join(f"[lightning-yolo predict] {line}" for line in lines))


def _counts(per_class: dict[str, int]) -> str:
    """``{"circle": 2, "square": 1}`` -> ``"2 circle, 1 square"`` (most first); ``{}`` -> ``"no detections"``."""
    ranked = sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{n} {name}" for name, n in ranked) or "no detections"


def _shown(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies inside it, else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _print_above_bar(trainer: pl.Trainer, text: str) -> None:
    """Print ``text`` above a progress bar that is still shown (never glued onto its end), else plainly."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    bar = trainer.progress_bar_callback
    if isinstance(bar, TQDMProgressBar) and bar.is_enabled:
        try:
            active = bar.predict_progress_bar
        except TypeError:  # Lightning: "reference has not been set yet"
            active = None
        if active is not None and not active.disable:
            active.write(text)
            return
    print(text)


# ----------------------------------------------------------------------------------------------------------------------
# pictures: sample grids, validation predictions, confusion matrix, precision-recall curves


def _log_to_tensorboard(trainer: pl.Trainer, kind: str, tag: str, value: Any) -> bool:
    """``add_image`` / ``add_figure`` on every TensorBoard logger; ``False`` when there is none."""
    done = False
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            if kind == "image":
                logger.experiment.add_image(tag, value, global_step=trainer.global_step, dataformats="CHW")
            else:
                logger.experiment.add_figure(tag, value, global_step=trainer.global_step, close=False)
            done = True
    return done


def _class_names(pl_module: pl.LightningModule) -> list[str] | None:
    return list(getattr(pl_module, "class_names", []) or []) or None


def _predict_batch(pl_module: Any, images: torch.Tensor, score_thresh: float) -> list[dict[str, torch.Tensor]]:
    """Detections on the images as the network sees them (input pixels), the module's mode left as it was."""
    was_training = pl_module.training
    pl_module.eval()
    with torch.no_grad():
        dets = pl_module.predictor(score_thresh=score_thresh)(images)
    pl_module.train(was_training)
    return dets


class DetectionImageLogger(pl.Callback):
    """Log what the network sees: a grid of augmented training samples with their boxes (once, at the first training
    batch) and a grid of validation images with the predicted boxes (first validation batch, every
    ``every_n_epochs`` epochs).

    Images go to every TensorBoard logger (``add_image``, tags ``train/samples`` and ``val/predictions``); with
    other loggers they are skipped (one warning) unless ``save_dir`` is set. The last grids stay in
    :attr:`images` (``tag -> uint8 [3, H, W]``). The grids are :func:`lightning_yolo.reporting.visualize.batch_grid`.

    Args:
        every_n_epochs: validation grids every this many epochs.
        max_images: images per grid.
        score_thresh: smallest score drawn.
        train_samples: log the training-sample grid.
        save_dir: also write the grids as PNG files there (``<tag>_epoch<N>.png``).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        max_images: int = MAX_GRID_IMAGES,
        score_thresh: float = DEFAULTS.score_thresh,
        train_samples: bool = True,
        save_dir: str | os.PathLike | None = None,
    ) -> None:
        if every_n_epochs < 1 or max_images < 1:
            raise ValueError(f"every_n_epochs and max_images must be >= 1, got {every_n_epochs} and {max_images}")
        self.every_n_epochs = int(every_n_epochs)
        self.max_images = int(max_images)
        self.score_thresh = float(score_thresh)
        self.train_samples = bool(train_samples)
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.images: dict[str, torch.Tensor] = {}
        self._train_logged = False
        self._warned = False

    def _emit(self, trainer: pl.Trainer, tag: str, grid: torch.Tensor) -> None:
        self.images[tag] = grid
        logged = _log_to_tensorboard(trainer, "image", tag, grid)
        if self.save_dir is not None:
            save_image(grid, self.save_dir / f"{tag.replace('/', '_')}_epoch{trainer.current_epoch}.png")
        elif not logged and not self._warned:
            self._warned = True
            rank_zero_warn("DetectionImageLogger: no TensorBoard logger and no save_dir; images kept in .images only")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.train_samples or self._train_logged or not trainer.is_global_zero:
            return
        self._train_logged = True
        grid = batch_grid(batch["images"], batch["targets"], _class_names(pl_module), self.max_images)
        self._emit(trainer, "train/samples", grid)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if trainer.sanity_checking or batch_idx != 0 or dataloader_idx != 0 or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        images = batch["images"][: self.max_images]
        dets = _predict_batch(pl_module, images, self.score_thresh)  # boxes on the images as the network saw them
        self._emit(trainer, "val/predictions", batch_grid(images, dets, _class_names(pl_module), self.max_images))


class EvalOutputs:
    """Detections and targets of one evaluation epoch, gathered from the module's step outputs.

    ``YOLOModule.validation_step`` / ``test_step`` return ``{"detections": [...], "targets": [...]}`` in
    original-image pixels; Lightning hands that to every callback's ``on_validation_batch_end`` as ``outputs``. The
    plotting callbacks keep their own copy (on the CPU) instead of reading the mAP metric's internal state, so they
    neither depend on torchmetrics' attribute names nor on running before the module resets the metric.
    """

    def __init__(self) -> None:
        self.preds: list[dict[str, torch.Tensor]] = []
        self.targets: list[dict[str, torch.Tensor]] = []

    def reset(self) -> None:
        self.preds, self.targets = [], []

    def add(self, outputs: Any) -> bool:
        """Append a step's ``outputs``; ``False`` when they are not the module's ``{"detections", "targets"}``."""
        if not isinstance(outputs, dict) or "detections" not in outputs or "targets" not in outputs:
            return False
        for det in outputs["detections"]:
            self.preds.append({k: det[k].detach().cpu() for k in ("boxes", "scores", "labels")})
        for tgt in outputs["targets"]:
            crowd = tgt.get("iscrowd", torch.zeros(len(tgt["labels"]), dtype=torch.bool))
            self.targets.append(
                {"boxes": tgt["boxes"].detach().cpu(), "labels": tgt["labels"].detach().cpu(), "iscrowd": crowd.cpu()}
            )
        return True

    def __len__(self) -> int:
        return len(self.preds)


class DetectionPlots(pl.Callback):
    """After validation (and test): a detection confusion matrix and per-class precision-recall curves.

    Gathers the detections and ground truth that the module's evaluation steps return (:class:`EvalOutputs`; no
    second inference pass) and draws them with :func:`lightning_yolo.reporting.plots.detection_figures`. Results stay
    on the callback (:attr:`confusion`, :attr:`curves`, :attr:`figures`), go to TensorBoard (``add_figure``:
    ``val/confusion_matrix``, ``val/pr_curves``) and, with ``save_dir``, to PNG files. Under DDP each process sees
    its own share of the images; process 0's share is plotted.

    Args:
        confusion_matrix: compute and plot the confusion matrix (:func:`lightning_yolo.reporting.plots.confusion_matrix`).
        pr_curves: compute and plot precision-recall curves at ``iou_thresh``
            (:func:`lightning_yolo.reporting.plots.precision_recall_curves`).
        iou_thresh: IoU of a match.
        score_thresh: smallest score counted in the confusion matrix (the curves use every detection).
        every_n_epochs: plot every this many epochs.
        save_dir: also save the figures as PNG files there (``<stage>_<name>_epoch<N>.png``).
    """

    def __init__(
        self,
        confusion_matrix: bool = True,
        pr_curves: bool = True,
        iou_thresh: float = 0.5,
        score_thresh: float = DEFAULTS.score_thresh,
        every_n_epochs: int = 1,
        save_dir: str | os.PathLike | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.confusion_matrix = bool(confusion_matrix)
        self.pr_curves = bool(pr_curves)
        self.iou_thresh = float(iou_thresh)
        self.score_thresh = float(score_thresh)
        self.every_n_epochs = int(every_n_epochs)
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.confusion: torch.Tensor | None = None
        self.curves: dict[str, torch.Tensor] | None = None
        self.figures: dict[str, Any] = {}
        self.outputs = EvalOutputs()

    def _plotting(self, trainer: pl.Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs.reset()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if self._plotting(trainer):
            self.outputs.add(outputs)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self.outputs.add(outputs)

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not len(self.outputs):
            rank_zero_warn(
                f"DetectionPlots: the module's {stage} steps returned no {{'detections', 'targets'}}; nothing plotted"
            )
            return
        epoch = trainer.current_epoch
        built = detection_figures(
            self.outputs.preds, self.outputs.targets, int(pl_module.hparams.num_classes), _class_names(pl_module),
            self.iou_thresh, self.score_thresh, stage, epoch, self.confusion_matrix, self.pr_curves,
        )  # fmt: skip
        self.confusion, self.curves, self.figures = built.confusion, built.curves, built.figures
        if not trainer.is_global_zero:
            return
        for name, fig in self.figures.items():
            _log_to_tensorboard(trainer, "figure", f"{stage}/{name}", fig)
            if self.save_dir is not None:
                save_figure(fig, self.save_dir / f"{stage}_{name}_epoch{epoch}.png")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._plotting(trainer):
            self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test")


# ----------------------------------------------------------------------------------------------------------------------
# what a run leaves in its folder: results.csv / results.png and pictures


class _Evaluation:
    """What the pictures of one evaluation are drawn from, kept on the CPU until they are written: its first batch
    (uint8 images with their ground truth and detections in input pixels) and every image's detections and targets
    (:class:`EvalOutputs`)."""

    def __init__(self, stage: str, max_images: int) -> None:
        self.stage, self.max_images = stage, max_images
        self.outputs = EvalOutputs()
        self.images: torch.Tensor | None = None
        self.labels: list[dict[str, torch.Tensor]] = []
        self.preds: list[dict[str, torch.Tensor]] = []

    def add(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.outputs.add(outputs)
        if batch_idx != 0 or not isinstance(outputs, dict) or "detections" not in outputs:
            return
        # the first batch as the network saw it: the step's detections (original pixels) mapped onto the letterboxed
        # input, so drawing it later needs no second forward, whenever that is
        n = self.max_images
        images = batch["images"][:n].detach()
        self.images = (images * 255).round().clamp(0, 255).to(torch.uint8).cpu() if images.is_floating_point() else (
            images.cpu())  # fmt: skip
        targets = batch["targets"][:n]
        self.labels = [{"boxes": t["boxes"].detach().cpu(), "labels": t["labels"].detach().cpu()} for t in targets]
        self.preds = []
        for det, t in zip(outputs["detections"][:n], targets, strict=False):
            boxes = det["boxes"].detach()
            if "ratio" in t:
                boxes = scale_boxes_to_input(boxes, t["ratio"], t["pad"])
            self.preds.append({"boxes": boxes.cpu(), "scores": det["scores"].detach().cpu(),
                               "labels": det["labels"].detach().cpu()})  # fmt: skip


class ResultsFiles(pl.Callback):
    """Write what detection tools leave in a run's folder (the logger's version folder, or ``save_dir``).

    - ``fit``: ``results.csv``, one row per training epoch with the epoch means of the training losses, that epoch's
      validation losses and metrics (blank where the epoch did not validate or a metric does not apply, COCO's -1)
      and the learning rate; ``results.png``: their curves. Resuming keeps the earlier rows.
    - ``validate`` / ``test``: ``results.csv`` with the one row of that evaluation (its losses and metrics) and
      ``per_class.csv``, the per-class table the CLI prints (class, images, instances, P, R, mAP50, mAP50-95).
    - with ``pictures``: ``labels.png`` (instances per class, box sizes of the training set), ``train_batch0.png``
      (the first training batch as the network sees it, augmented, with its boxes), and of the last validation of
      a fit (also when a time budget or an early stop makes a validation the last one after it ran) or of
      ``validate`` / ``test``: ``val_batch0_labels.png`` / ``val_batch0_pred.png`` (first batch, ground truth /
      predictions with score >= ``score_thresh``), ``confusion_matrix.png`` and ``pr_curves.png`` (at
      ``iou_thresh``; ``test_``-prefixed for ``test``).

    The pictures come from :mod:`lightning_yolo.reporting` (``batch_grid``, ``detection_figures``,
    ``labels_figure``), as those of :class:`DetectionImageLogger` and :class:`DetectionPlots`. The CLI adds it to
    every ``fit | validate | test`` run; ``--plots false`` keeps only the results files.

    Args:
        save_dir: output folder (default: ``trainer.log_dir``, else ``trainer.default_root_dir``).
        pictures: also write the pictures.
        max_images: images per batch picture.
        score_thresh: smallest score drawn and counted in the confusion matrix.
        iou_thresh: IoU of a match in the confusion matrix and the precision-recall curves.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike | None = None,
        pictures: bool = True,
        max_images: int = MAX_GRID_IMAGES,
        score_thresh: float = DEFAULTS.score_thresh,
        iou_thresh: float = 0.5,
    ) -> None:
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.pictures = bool(pictures)
        self.max_images = int(max_images)
        self.score_thresh = float(score_thresh)
        self.iou_thresh = float(iou_thresh)
        self.rows: list[dict[str, Any]] = []
        self._val_epoch: int | None = None
        self._train_drawn = False
        self._evaluation: _Evaluation | None = None  # the running or last evaluation whose pictures are not written

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # trainer.log_dir broadcasts from process 0 under DDP: resolve it here, where every process takes part, never
        # inside a process-0-only hook (process 0 alone would wait forever)
        self._folder = self.save_dir if self.save_dir is not None else Path(trainer.log_dir or trainer.default_root_dir)

    def folder(self, trainer: pl.Trainer) -> Path:
        """The output folder (resolved at ``setup``)."""
        folder = getattr(self, "_folder", None)
        if folder is None:
            self.setup(trainer, trainer.lightning_module, "fit")
            folder = self._folder
        return folder

    def _save_figure(self, trainer: pl.Trainer, fig: Any, name: str) -> None:
        if trainer.is_global_zero:
            save_figure(fig, self.folder(trainer) / name)

    # -------------------------------------------------------------------------------------------- results.csv / png
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows, self._train_drawn, self._evaluation = [], False, None
        self._plotted_at = time.monotonic()  # results.png: first drawn after 5 minutes, or at the end
        if self.pictures and trainer.is_global_zero:
            dm = trainer.datamodule
            if dm is not None and hasattr(dm, "source"):
                fig = labels_figure(dm.source("train").records, _class_names(pl_module) or dm.class_names)
                self._save_figure(trainer, fig, "labels.png")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # resumed (fit --ckpt_path continues in its run folder): keep the rows of the epochs already run. Here, not in
        # on_fit_start: a checkpoint written at an epoch's end counts that epoch only once the fit loop has restarted
        path = self.folder(trainer) / "results.csv"
        if trainer.current_epoch > 0 and path.is_file():
            with open(path, encoding="utf-8", newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r.get("epoch", 0) or 0) <= trainer.current_epoch]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        validated = self._val_epoch == trainer.current_epoch
        prefixes = ("train/", "val/") if validated else ("train/",)
        row = {"epoch": trainer.current_epoch + 1, **results_row(trainer.callback_metrics, prefixes)}
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows.append(row)
        # results.png costs ~0.6 s of matplotlib (10% of a small CPU epoch): drawn at most every 5 minutes during a
        # fit and once at its end, as ultralytics does; results.csv is written every epoch
        now = time.monotonic()
        plot = now - getattr(self, "_plotted_at", now) >= 300.0
        if plot:
            self._plotted_at = now
        self._write_results(trainer, self.rows, plot=plot)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            self._write_results(trainer, self.rows, plot=True)
        # the last validation of the fit, whatever ended the run (max_epochs, a time budget, an early stop)
        self._write_pictures(trainer, pl_module)

    def _write_results(self, trainer: pl.Trainer, rows: list[dict[str, Any]], plot: bool = True) -> None:
        columns: list[str] = ["epoch"] if any("epoch" in r for r in rows) else []
        for group in ("train/", "val/", "test/", ""):
            for row in rows:
                for key in row:
                    if key not in columns and key.startswith(group):
                        columns.append(key)
        _write_csv(self.folder(trainer) / "results.csv", columns, rows)
        if plot:
            fig = plot_results([{k: v for k, v in r.items() if v != ""} for r in rows])
            self._save_figure(trainer, fig, "results.png")

    # -------------------------------------------------------------------------------------------- pictures
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.pictures or self._train_drawn or not trainer.is_global_zero:
            return
        self._train_drawn = True
        grid = batch_grid(batch["images"], batch["targets"], _class_names(pl_module), self.max_images)
        save_image(grid, self.folder(trainer) / "train_batch0.png")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._evaluation = _Evaluation("val", self.max_images) if self.pictures else None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._evaluation = _Evaluation("test", self.max_images) if self.pictures else None

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        # every validation of a fit is kept until the next one: which one is the last is known only when the run ends
        if self._evaluation is not None and not trainer.sanity_checking:
            self._evaluation.add(outputs, batch, batch_idx)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if self._evaluation is not None:
            self._evaluation.add(outputs, batch, batch_idx)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._val_epoch = trainer.current_epoch
        if trainer.state.fn != "fit":  # validate: its pictures and results now; a fit's at its end
            self._write_evaluation(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write_evaluation(trainer, pl_module, "test")

    def _write_evaluation(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """``validate`` / ``test``: results.csv (one row), per_class.csv and the pictures."""
        if trainer.is_global_zero:
            row = results_row(trainer.callback_metrics, (f"{stage}/",))
            if row:
                self._write_results(trainer, [row], plot=False)
            report = getattr(pl_module, "eval_report", None)
            if report is not None:
                table = report.to_dicts()
                _write_csv(self.folder(trainer) / "per_class.csv", list(table[0]) if table else [], table)
        self._write_pictures(trainer, pl_module)

    def _write_pictures(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluation, self._evaluation = self._evaluation, None
        if evaluation is None or not len(evaluation.outputs) or not trainer.is_global_zero:
            return
        # under DDP process 0 draws its share of the images
        prefix, names, folder = evaluation.stage, _class_names(pl_module), self.folder(trainer)
        if evaluation.images is not None:
            save_image(batch_grid(evaluation.images, evaluation.labels, names, self.max_images),
                       folder / f"{prefix}_batch0_labels.png")  # fmt: skip
            save_image(batch_grid(evaluation.images, evaluation.preds, names, self.max_images, self.score_thresh),
                       folder / f"{prefix}_batch0_pred.png")  # fmt: skip
        built = detection_figures(
            evaluation.outputs.preds, evaluation.outputs.targets, int(pl_module.hparams.num_classes), names,
            self.iou_thresh, self.score_thresh, prefix,
        )  # fmt: skip
        for name, fig in built.figures.items():
            self._save_figure(trainer, fig, f"{name}.png" if prefix == "val" else f"{prefix}_{name}.png")


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
