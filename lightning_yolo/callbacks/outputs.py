"""What a run writes besides checkpoints: predictions (COCO-style json, drawn images), sample and prediction
pictures, results.csv / results.png."""

from __future__ import annotations

import json
import logging
import math
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
from ..ops.postprocess import DEFAULTS


__all__ = ["PredictionWriter", "DetectionImageLogger", "DetectionPlots", "EvalOutputs", "ResultsFiles"]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------------
# predictions to COCO-style json (and drawn images)


def _coco_category_ids(datamodule: Any, class_names: Sequence[str]) -> list[int | str] | None:
    """COCO category ids by contiguous label, when the DataModule reads a COCO dataset with these classes."""
    location = getattr(datamodule, "location", None)
    if location is None or getattr(location, "format", None) != "coco" or not getattr(location, "coco_jsons", None):
        return None
    smallest = min(set(location.coco_jsons.values()), key=lambda j: j.stat().st_size)
    with open(smallest, encoding="utf-8") as f:
        categories = json.load(f).get("categories") or []
    from ..data.formats.coco import coco_category_order

    pairs = coco_category_order(categories, smallest)  # the reader's label order; ids as the json writes them
    if [n for _, n in pairs] != list(class_names):
        rank_zero_warn(
            f"PredictionWriter: the classes of {smallest} {[n for _, n in pairs]} differ from the model's "
            f"{list(class_names)}; writing labels as category_id"
        )
        return None
    return [i for i, _ in pairs]


class _CocoImageIds:
    """COCO image id of an image file, looked up by ``file_name`` in the dataset's jsons (val, test, then train;
    each json read only when an image is not found in the previous ones)."""

    def __init__(self, jsons: Sequence[Path]) -> None:
        self._pending = list(jsons)
        self._by_name: dict[str, list[tuple[str, int | str]]] = {}

    def _load_next(self) -> bool:
        if not self._pending:
            return False
        with open(self._pending.pop(0), encoding="utf-8") as f:
            images = json.load(f).get("images") or []
        for img in images:
            if isinstance(img, dict) and "file_name" in img and "id" in img:
                name = str(img["file_name"]).replace("\\", "/")
                # the json's id as written (an int, or a string such as "img_a"), so COCO.loadRes matches it
                self._by_name.setdefault(name.rsplit("/", 1)[-1], []).append((name, img["id"]))
        return True

    def lookup(self, path: str) -> int | str | None:
        """The id whose ``file_name`` is the end of ``path`` (``None``: not in the jsons, or ambiguous)."""
        posix = Path(path).as_posix()
        while True:
            candidates = self._by_name.get(posix.rsplit("/", 1)[-1], [])
            hits = {i for name, i in candidates if posix == name or posix.endswith("/" + name)}
            if len(hits) == 1:
                return hits.pop()
            if len(hits) > 1 or not self._load_next():
                return None


def _coco_image_ids(datamodule: Any) -> _CocoImageIds | None:
    location = getattr(datamodule, "location", None)
    if location is None or getattr(location, "format", None) != "coco" or not getattr(location, "coco_jsons", None):
        return None
    jsons = location.coco_jsons
    ordered = [jsons[s] for s in ("val", "test", "train") if s in jsons]
    ordered += [j for j in jsons.values() if j not in ordered]
    return _CocoImageIds(list(dict.fromkeys(ordered)))


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
    with the model's classes, else the class index (or ``category_ids[label]`` when given). With ``save_images``,
    ``<output_dir>/images/<name>.jpg`` shows each image with boxes, class names and scores. Under DDP every process
    predicts its share and process 0 writes the merged file.

    Args:
        output_dir: output folder (default: ``<trainer.default_root_dir>/predictions``).
        save_images: also write the drawn images.
        category_ids: category id of each class index (overrides the DataModule's).
        filename: name of the json file.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        save_images: bool = False,
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
        self._coco_images: _CocoImageIds | None = None
        self._unmatched = 0
        #: ``(file, reason)`` of the input images that could not be read (no predictions for them)
        self.skipped: list[tuple[str, str]] = []

    def _resolved_dir(self, trainer: pl.Trainer) -> Path:
        return self.output_dir if self.output_dir is not None else Path(trainer.default_root_dir) / "predictions"

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results, self._num_images, self._image_names = [], 0, set()
        self.skipped = []
        names = list(getattr(pl_module, "class_names", []) or [])
        num_classes = int(getattr(pl_module.hparams, "num_classes", len(names)))
        if self.category_ids is not None:
            if len(self.category_ids) != num_classes:
                raise ValueError(
                    f"PredictionWriter: category_ids has {len(self.category_ids)} ids for {num_classes} classes"
                )
            self._ids = self.category_ids
        else:
            self._ids = _coco_category_ids(trainer.datamodule, names) if names else None
        self._coco_images = _coco_image_ids(trainer.datamodule)
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
        from ..reporting.visualize import draw_detections, save_image

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
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, (results, num_images, unmatched, skipped))
            results = [r for part, _, _, _ in gathered for r in part]
            num_images = sum(n for _, n, _, _ in gathered)
            unmatched = sum(u for _, _, u, _ in gathered)
            skipped = sorted(s for _, _, _, part in gathered for s in part)
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
        where = f" and {self._resolved_dir(trainer) / 'images'}" if self.save_images else ""
        print(f"[lightning-yolo predict] {len(results)} detections in {num_images} images -> {self.json_path}{where}")
        if skipped:
            self.skipped = skipped
            listed = "".join(f"\n  {r if p in r else f'{p}: {r}'}" for p, r in skipped[:20])  # r names the file
            more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
            print(f"[lightning-yolo predict] skipped {len(skipped)} unreadable image(s):{listed}{more}")


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


def _grid(drawn: list[torch.Tensor]) -> torch.Tensor:
    """uint8 ``[3, H, W]`` images -> one near-square uint8 grid, white between the images."""
    from torchvision.utils import make_grid

    return make_grid(drawn, nrow=max(1, math.ceil(math.sqrt(len(drawn)))), padding=2, pad_value=255)


class DetectionImageLogger(pl.Callback):
    """Log what the network sees: a grid of augmented training samples with their boxes (once, at the first training
    batch) and a grid of validation images with the predicted boxes (first validation batch, every
    ``every_n_epochs`` epochs).

    Images go to every TensorBoard logger (``add_image``, tags ``train/samples`` and ``val/predictions``); with
    other loggers they are skipped (one warning) unless ``save_dir`` is set. The last grids stay in
    :attr:`images` (``tag -> uint8 [3, H, W]``).

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
        max_images: int = 16,
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
        from ..reporting.visualize import save_image

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
        from ..reporting.visualize import draw_detections

        self._train_logged = True
        images = batch["images"][: self.max_images].detach().float().cpu()
        names = list(getattr(pl_module, "class_names", []) or []) or None
        drawn = [
            draw_detections(img, t["boxes"].detach().cpu(), t["labels"].detach().cpu(), class_names=names)
            for img, t in zip(images, batch["targets"], strict=False)
        ]
        self._emit(trainer, "train/samples", _grid(drawn))

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or batch_idx != 0 or dataloader_idx != 0 or not trainer.is_global_zero:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        from ..reporting.visualize import draw_detections

        images = batch["images"][: self.max_images]
        with torch.no_grad():
            # boxes in the input (letterboxed) pixels, i.e. on the images as the network saw them
            dets = pl_module.predictor(score_thresh=self.score_thresh)(images)
        names = list(getattr(pl_module, "class_names", []) or []) or None
        drawn = [
            draw_detections(img.cpu(), d["boxes"].cpu(), d["labels"].cpu(), d["scores"].cpu(), class_names=names)
            for img, d in zip(images.detach().float(), dets, strict=True)
        ]
        self._emit(trainer, "val/predictions", _grid(drawn))


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
    second inference pass). Results stay on the callback (:attr:`confusion`, :attr:`curves`, :attr:`figures`), go to TensorBoard
    (``add_figure``: ``val/confusion_matrix``, ``val/pr_curves``) and, with ``save_dir``, to PNG files. Under DDP
    each process sees its own share of the images; process 0's share is plotted.

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
        from ..reporting import plots

        if not len(self.outputs):
            rank_zero_warn(
                f"DetectionPlots: the module's {stage} steps returned no {{'detections', 'targets'}}; nothing plotted"
            )
            return
        preds, targets = self.outputs.preds, self.outputs.targets
        num_classes = int(pl_module.hparams.num_classes)
        names = list(getattr(pl_module, "class_names", []) or []) or None
        epoch = trainer.current_epoch
        self.figures = {}
        if self.confusion_matrix:
            self.confusion = plots.confusion_matrix(preds, targets, num_classes, self.iou_thresh, self.score_thresh)
            self.figures["confusion_matrix"] = plots.plot_confusion_matrix(
                self.confusion, names, title=f"{stage} confusion matrix (IoU > {self.iou_thresh:g}, epoch {epoch})"
            )
        if self.pr_curves:
            self.curves = plots.precision_recall_curves(preds, targets, num_classes, self.iou_thresh)
            self.figures["pr_curves"] = plots.plot_precision_recall(
                self.curves, names, title=f"{stage} precision-recall (IoU {self.iou_thresh:g}, epoch {epoch})"
            )
        if not trainer.is_global_zero:
            return
        for name, fig in self.figures.items():
            _log_to_tensorboard(trainer, "figure", f"{stage}/{name}", fig)
            if self.save_dir is not None:
                self.save_dir.mkdir(parents=True, exist_ok=True)
                fig.savefig(self.save_dir / f"{stage}_{name}_epoch{epoch}.png", dpi=100)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._plotting(trainer):
            self._run(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module, "test")



# ----------------------------------------------------------------------------------------------------------------------
# what a run leaves in its folder: results.csv / results.png and pictures


class ResultsFiles(pl.Callback):
    """Write what detection tools leave in a run's folder (the logger's version folder, or ``save_dir``).

    - ``results.csv``: one row per training epoch with the epoch means of the training losses, that epoch's
      validation losses and metrics (blank where the epoch did not validate or a metric does not apply, COCO's -1)
      and the learning rate; ``results.png``: their curves. Resuming keeps the earlier rows.
    - with ``pictures``: ``labels.png`` (instances per class, box sizes of the training set), ``train_batch0.png``
      (the first training batch as the network sees it, augmented, with its boxes), and of the last validation of
      a fit (or of ``validate`` / ``test``): ``val_batch0_labels.png`` / ``val_batch0_pred.png`` (first batch,
      ground truth / predictions with score >= ``score_thresh``), ``confusion_matrix.png`` and ``pr_curves.png``.

    The CLI adds it to every ``fit | validate | test`` run; ``--plots false`` keeps only ``results.csv`` / ``.png``.

    Args:
        save_dir: output folder (default: ``trainer.log_dir``, else ``trainer.default_root_dir``).
        pictures: also write the pictures.
        max_images: images per batch picture.
        score_thresh: smallest score drawn and counted in the confusion matrix.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike | None = None,
        pictures: bool = True,
        max_images: int = 16,
        score_thresh: float = DEFAULTS.score_thresh,
    ) -> None:
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.pictures = bool(pictures)
        self.max_images = int(max_images)
        self.score_thresh = float(score_thresh)
        self.rows: list[dict[str, Any]] = []
        self._val_epoch: int | None = None
        self._train_drawn = False
        self.outputs = EvalOutputs()

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
        if not trainer.is_global_zero:
            return
        path = self.folder(trainer) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)

    def _final_evaluation(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        if not trainer.training and trainer.state.fn != "fit":
            return True  # validate / test
        max_epochs = trainer.max_epochs
        return max_epochs is not None and max_epochs > 0 and trainer.current_epoch >= max_epochs - 1

    # -------------------------------------------------------------------------------------------- results.csv / png
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows, self._train_drawn = [], False
        self._plotted_at = time.monotonic()  # results.png: first drawn after 5 minutes, or at the end
        if self.pictures and trainer.is_global_zero:
            self._labels_overview(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # resumed (fit --ckpt_path continues in its run folder): keep the rows of the epochs already run. Here, not in
        # on_fit_start: a checkpoint written at an epoch's end counts that epoch only once the fit loop has restarted
        path = self.folder(trainer) / "results.csv"
        if trainer.current_epoch > 0 and path.is_file():
            import csv

            with open(path, encoding="utf-8", newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r.get("epoch", 0) or 0) <= trainer.current_epoch]

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        validated = self._val_epoch == trainer.current_epoch
        for key, value in sorted(trainer.callback_metrics.items()):
            if key.endswith("_step") or key.endswith("img_size"):
                continue
            name = key[: -len("_epoch")] if key.endswith("_epoch") else key
            if not name.startswith(("train/", "val/")) or (name.startswith("val/") and not validated):
                continue
            number = float(value)
            row[name] = "" if (not math.isfinite(number) or (number < 0 and ("map" in name or "mar" in name))) else (
                round(number, 6))  # fmt: skip
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows.append(row)
        # results.png costs ~0.6 s of matplotlib (10% of a small CPU epoch): drawn at most every 5 minutes during a
        # fit and once at its end, as ultralytics does; results.csv is written every epoch
        now = time.monotonic()
        plot = now - getattr(self, "_plotted_at", now) >= 300.0
        if plot:
            self._plotted_at = now
        self._write(trainer, plot=plot)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            self._write(trainer, plot=True)

    def _write(self, trainer: pl.Trainer, plot: bool = True) -> None:
        import csv

        from ..reporting.plots import plot_results

        columns: list[str] = ["epoch"]
        for group in ("train/", "val/", ""):
            for row in self.rows:
                for key in row:
                    if key not in columns and key.startswith(group):
                        columns.append(key)
        folder = self.folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "results.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        if not plot:
            return
        fig = plot_results([{k: v for k, v in r.items() if v != ""} for r in self.rows])
        self._save_figure(trainer, fig, "results.png")

    # -------------------------------------------------------------------------------------------- pictures
    def _labels_overview(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import numpy as np

        from ..reporting.plots import plot_labels

        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "source"):
            return
        records = dm.source("train").records
        wh, labels = [], []
        for rec in records:
            keep = ~rec.iscrowd
            if keep.any():
                b = rec.boxes[keep]
                wh.append((b[:, 2:] - b[:, :2]) / np.array([rec.width, rec.height], np.float32))
                labels.append(rec.labels[keep])
        wh_all = np.concatenate(wh) if wh else np.zeros((0, 2), np.float32)
        labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        names = list(getattr(pl_module, "class_names", []) or dm.class_names)
        fig = plot_labels(wh_all, labels_all, names, title=f"training labels ({len(records)} images)")
        self._save_figure(trainer, fig, "labels.png")

    def _draw(self, pl_module: pl.LightningModule, images: torch.Tensor, dets: Sequence[dict[str, torch.Tensor]]):
        from ..reporting.visualize import draw_detections

        names = list(getattr(pl_module, "class_names", []) or []) or None
        drawn = [
            draw_detections(img.detach().float().cpu(), d["boxes"].detach().cpu(), d["labels"].detach().cpu(),
                            d["scores"].detach().cpu() if "scores" in d else None, class_names=names)  # fmt: skip
            for img, d in zip(images[: self.max_images], dets, strict=False)
        ]
        return _grid(drawn)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.pictures or self._train_drawn or not trainer.is_global_zero:
            return
        from ..reporting.visualize import save_image

        self._train_drawn = True
        grid = self._draw(pl_module, batch["images"], batch["targets"])
        save_image(grid, self.folder(trainer) / "train_batch0.png")

    def _eval_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, prefix: str) -> None:
        from ..reporting.visualize import save_image

        images = batch["images"][: self.max_images]
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            dets = pl_module.predictor(score_thresh=self.score_thresh)(images)  # boxes in the input pixels
        pl_module.train(was_training)
        folder = self.folder(trainer)
        save_image(self._draw(pl_module, images, batch["targets"]), folder / f"{prefix}_batch0_labels.png")
        save_image(self._draw(pl_module, images, dets), folder / f"{prefix}_batch0_pred.png")

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if self.pictures and self._final_evaluation(trainer):
            self.outputs.add(outputs)
            if batch_idx == 0 and trainer.is_global_zero:
                self._eval_batch(trainer, pl_module, batch, "val")

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if self.pictures:
            self.outputs.add(outputs)
            if batch_idx == 0 and trainer.is_global_zero:
                self._eval_batch(trainer, pl_module, batch, "test")

    def _curves(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        # from the evaluation steps' outputs (EvalOutputs); under DDP process 0 plots its share
        from ..reporting import plots

        if not len(self.outputs) or not trainer.is_global_zero:
            return
        preds, targets = self.outputs.preds, self.outputs.targets
        num_classes = int(pl_module.hparams.num_classes)
        names = list(getattr(pl_module, "class_names", []) or []) or None
        matrix = plots.confusion_matrix(preds, targets, num_classes, 0.5, self.score_thresh)
        self._save_figure(trainer, plots.plot_confusion_matrix(matrix, names, title=f"{prefix} confusion matrix"),
                          "confusion_matrix.png" if prefix == "val" else f"{prefix}_confusion_matrix.png")  # fmt: skip
        curves = plots.precision_recall_curves(preds, targets, num_classes, 0.5)
        fig = plots.plot_precision_recall(curves, names, title=f"{prefix} precision-recall (IoU 0.5)")
        self._save_figure(trainer, fig, "pr_curves.png" if prefix == "val" else f"{prefix}_pr_curves.png")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pictures and self._final_evaluation(trainer):
            self._curves(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pictures:
            self._curves(trainer, pl_module, "test")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs.reset()

    on_test_epoch_start = on_validation_epoch_start
