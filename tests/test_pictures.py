"""Pictures behind switches: confusion matrix, precision-recall curves, sample / prediction grids in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torchmetrics.detection import MeanAveragePrecision

from lightning_yolo import InferenceCfg, YOLODataModule, YOLOModule
from lightning_yolo.callbacks import DetectionImageLogger, DetectionPlots
from lightning_yolo.data.synthetic import make_synthetic_dataset
from lightning_yolo.reporting.plots import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_precision_recall,
    precision_recall_curves,
)


def det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.long)}  # fmt: skip


def gt(boxes, labels, crowd=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long()}
    if crowd is not None:
        out["iscrowd"] = torch.tensor(crowd)
    return out


def test_confusion_matrix_hand_computed():
    a, b, c = [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]
    preds = [
        det([a, [21, 21, 31, 31], c, a, [1, 0, 11, 10]], [0.9, 0.8, 0.7, 0.1, 0.6], [0, 0, 1, 0, 0]),
        det([], [], []),
        det([b], [0.5], [1]),
    ]
    targets = [
        gt([a, b], [0, 1]),  # a: matched as 0 (IoU 1 beats the 0.82 duplicate, which becomes a false 0)
        gt([c], [1]),  # missed
        gt([b, c], [1, 1], crowd=[False, True]),  # crowd c is ignored; b matched as 1
    ]
    # image 0: a(0)->pred 0.9 (0) | b(1)->pred 0.8 (0, IoU 0.68) | c pred (1) false | score-0.1 pred ignored
    #          | the 0.6 duplicate of a (IoU 0.82, a already taken) is a false 0
    cm = confusion_matrix(preds, targets, num_classes=2, iou_thresh=0.5, score_thresh=0.25)
    expected = torch.tensor(
        [
            [1, 0, 0],  # true 0: 1 predicted as 0
            [1, 1, 1],  # true 1: 1 predicted as 0, 1 as 1, 1 missed
            [1, 1, 0],  # background: 1 false 0, 1 false 1
        ]
    )
    assert torch.equal(cm, expected)
    # every ground truth and every kept prediction is counted exactly once
    assert cm[:2].sum() == 4 and cm[:, :2].sum() == 5
    # a stricter IoU turns the 0.68 pair into a miss plus a false detection
    strict = confusion_matrix(preds, targets, num_classes=2, iou_thresh=0.7, score_thresh=0.25)
    assert strict[1, 0] == 0 and strict[1, 2] == 2 and strict[2, 0] == 2


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix([det([[0, 0, 1, 1]], [0.9], [2])], [gt([], [])], num_classes=2)


def test_precision_recall_curves_agree_with_map50():
    gen = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for _ in range(6):
        xy = torch.rand(5, 2, generator=gen) * 80
        boxes = torch.cat((xy, xy + 10 + torch.rand(5, 2, generator=gen) * 20), 1)
        labels = torch.randint(0, 3, (5,), generator=gen)
        targets.append({"boxes": boxes, "labels": labels})
        noisy = boxes + torch.randn(5, 4, generator=gen) * 3
        flip = torch.rand(5, generator=gen) < 0.2
        preds.append({"boxes": noisy, "scores": torch.rand(5, generator=gen),
                      "labels": torch.where(flip, (labels + 1) % 3, labels)})  # fmt: skip
    curves = precision_recall_curves(preds, targets, num_classes=4, iou_thresh=0.5)
    assert curves["precision"].shape == (4, 101) and torch.isnan(curves["ap"][3])  # class 3 has no ground truth
    reference = MeanAveragePrecision(box_format="xyxy", iou_thresholds=[0.5], backend="pycocotools", class_metrics=True,
                                     rec_thresholds=np.linspace(0.0, 1.0, 101).tolist())  # fmt: skip
    reference.update(preds, targets)
    result = reference.compute()
    assert float(curves["ap"][:3].mean()) == pytest.approx(float(result["map"]), abs=1e-6)
    torch.testing.assert_close(curves["ap"][:3].float(), result["map_per_class"].float(), rtol=0, atol=1e-6)
    # precision never increases with recall (COCO interpolation)
    valid = curves["precision"][:3]
    assert (valid[:, 1:] <= valid[:, :-1] + 1e-12).all()


def test_plot_functions_return_figures(tmp_path):
    fig = plot_confusion_matrix(torch.tensor([[3, 1, 0], [0, 2, 1], [1, 0, 0]]), ["cat", "dog"])
    fig.savefig(tmp_path / "cm.png")
    curves = {"recall": torch.linspace(0, 1, 101, dtype=torch.float64),
              "precision": torch.stack([torch.linspace(1, 0.5, 101), torch.full((101,), float("nan"))]).double(),
              "ap": torch.tensor([0.75, float("nan")], dtype=torch.float64)}  # fmt: skip
    fig = plot_precision_recall(curves, ["cat", "dog"])
    fig.savefig(tmp_path / "pr.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000 and (tmp_path / "pr.png").stat().st_size > 1000
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["cat 0.750", "all classes 0.750"]


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pics")
    make_synthetic_dataset(root, num_train=8, num_val=4, img_size=96, formats=("yolo",))
    return root / "data.yaml"


def run(tmp_path: Path, data_yaml: Path, logger, callbacks) -> YOLODataModule:
    dm = YOLODataModule(path=str(data_yaml), img_size=96, batch_size=4, num_workers=0)
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=1, accelerator="cpu", logger=logger, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )  # fmt: skip
    inference = InferenceCfg(val_score_thresh=0.0)
    module = YOLOModule(num_classes=dm.num_classes, class_names=dm.class_names, inference=inference)
    trainer.fit(module, dm)
    return dm


def test_callbacks_log_pictures_to_tensorboard(tmp_path, data_yaml):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images = DetectionImageLogger(every_n_epochs=1, max_images=4, score_thresh=0.0)
    plots = DetectionPlots(score_thresh=0.0, save_dir=tmp_path / "plots")
    logger = TensorBoardLogger(tmp_path, name="tb")
    dm = run(tmp_path, data_yaml, logger, [images, plots])

    assert set(images.images) == {"train/samples", "val/predictions"}
    grid = images.images["train/samples"]
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3 and grid.shape[1] > 2 * 96  # 2 x 2 grid of 96-px images
    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = set(events.Tags()["images"])
    assert {"train/samples", "val/predictions", "val/confusion_matrix", "val/pr_curves"} <= tags
    assert len(events.Images("val/predictions")) == 2  # one per epoch

    # the confusion matrix counts every validation box once (rows = true classes, last column = missed)
    truth = sum(int((~r.iscrowd).sum()) for r in dm.source("val").records)
    assert int(plots.confusion[:-1].sum()) == truth > 0
    assert plots.curves["precision"].shape == (dm.num_classes, 101)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "val_confusion_matrix_epoch0.png", "val_confusion_matrix_epoch1.png", "val_pr_curves_epoch0.png",
        "val_pr_curves_epoch1.png",
    ]  # fmt: skip


def test_image_logger_without_tensorboard_keeps_images_and_saves_pngs(tmp_path, data_yaml):
    images = DetectionImageLogger(max_images=2, train_samples=False, save_dir=tmp_path / "grids")
    run(tmp_path, data_yaml, CSVLogger(tmp_path), [images])
    assert set(images.images) == {"val/predictions"}
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == [
        "val_predictions_epoch0.png",
        "val_predictions_epoch1.png",
    ]
    assert np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(tmp_path / "grids" /
                      "val_predictions_epoch1.png")).shape[2] == 3  # fmt: skip


def test_labels_overview_bars_carry_their_counts_and_batch_grids_their_class_names():
    """Issue 20, item 8: labels.png says how many boxes each bar is; the batch pictures name the classes."""
    from types import SimpleNamespace

    from lightning_yolo.reporting.plots import labels_figure
    from lightning_yolo.reporting.visualize import batch_grid

    records = [
        SimpleNamespace(boxes=np.array([[0, 0, 10, 10], [5, 5, 20, 30], [1, 1, 2, 2]], np.float32), width=40,
                        height=40, labels=np.array([0, 1, 1]), iscrowd=np.array([False, False, True])),
        SimpleNamespace(boxes=np.array([[0, 0, 4, 4]], np.float32), width=8, height=8, labels=np.array([1]),
                        iscrowd=np.array([False])),
    ]  # fmt: skip
    fig = labels_figure(records, ["cat", "dog", "bird"])
    bars = fig.axes[0]
    assert [t.get_text() for t in bars.texts] == ["1", "2", "0"]  # the crowd box is not counted
    assert [t.get_text() for t in bars.get_xticklabels()] == ["cat", "dog", "bird"]

    # the same box drawn with the class name and with the id: the captions differ, so the names are drawn
    image = torch.full((1, 3, 64, 64), 0.5)
    box = [{"boxes": torch.tensor([[8.0, 20.0, 56.0, 60.0]]), "labels": torch.tensor([1])}]
    named, ids = batch_grid(image, box, ["cat", "doggo"]), batch_grid(image, box, None)
    assert named.dtype == torch.uint8 and named.shape == ids.shape and not torch.equal(named, ids)
