"""k-means anchors (IoU distance) and their fitness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_yolo.data.anchors import anchor_fitness, compute_anchors_for_datamodule, kmeans_anchors
from lightning_yolo.models.anchors import COCO_ANCHORS


def test_fitness_by_hand() -> None:
    boxes = np.array([[10, 10], [20, 10], [40, 40]], float)
    anchors = [[[10, 10]], [[40, 40]]]
    # best IoUs: 1, 0.5 (20x10 vs 10x10), 1
    assert anchor_fitness(boxes, anchors) == pytest.approx((1 + 0.5 + 1) / 3)
    assert anchor_fitness(np.zeros((0, 2)), anchors) == 0.0


def test_kmeans_finds_planted_shapes_sorted_by_area() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[8, 8], [16, 40], [40, 16], [60, 60], [100, 30], [30, 100], [150, 150], [300, 120], [120, 300]])
    boxes = np.concatenate([c * rng.uniform(0.95, 1.05, (200, 2)) for c in centres])
    anchors = kmeans_anchors(boxes, num_anchors=9, seed=0)
    assert anchors.shape == (3, 3, 2) and anchors.dtype == torch.float32
    area = anchors.reshape(-1, 2).prod(1)
    assert torch.all(area[1:] >= area[:-1])
    found = sorted(map(tuple, anchors.reshape(-1, 2).round().int().tolist()), key=lambda wh: wh[0] * wh[1])
    for (w, h), (cw, ch) in zip(found, sorted(map(tuple, centres), key=lambda wh: wh[0] * wh[1]), strict=False):
        assert abs(w * h - cw * ch) / (cw * ch) < 0.35
    assert anchor_fitness(boxes, anchors) > 0.9


def test_kmeans_beats_default_anchors_on_a_skewed_dataset() -> None:
    rng = np.random.default_rng(1)
    # long thin objects (e.g. pens, poles): aspect 6:1 lying and standing, 10 to 200 px long
    length = rng.uniform(10, 200, 3000)
    thin = length / rng.uniform(5, 7, 3000)
    lying = rng.random(3000) < 0.5
    boxes = np.stack([np.where(lying, length, thin), np.where(lying, thin, length)], 1)
    default = anchor_fitness(boxes, COCO_ANCHORS)
    new = anchor_fitness(boxes, kmeans_anchors(boxes, seed=0))
    assert new > default + 0.1, (default, new)
    assert new > 0.65


def test_kmeans_rejects_too_few_boxes() -> None:
    with pytest.raises(ValueError, match="at least num_anchors=9 boxes"):
        kmeans_anchors(np.ones((5, 2)))
    with pytest.raises(ValueError, match="multiple of num_levels"):
        kmeans_anchors(np.ones((50, 2)), num_anchors=8)


def test_compute_anchors_for_datamodule(tmp_path: Path) -> None:
    pytest.importorskip("pytorch_lightning")
    from lightning_yolo.data.datamodule import YOLODataModule
    from lightning_yolo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path, num_train=20, num_val=2, img_size=128, seed=0)
    dm = YOLODataModule(str(tmp_path / "data.yaml"), img_size=256)
    wh = dm.train_boxes_wh()
    assert wh.shape[1] == 2 and len(wh) > 20
    assert wh.min() >= 15 * 2 and wh.max() <= 64 * 2  # shapes of 15-64 px, images scaled 128 -> 256
    anchors, fit_default, fit_new = compute_anchors_for_datamodule(dm)
    assert np.array(anchors).shape == (3, 3, 2)
    assert fit_new > fit_default and fit_new > 0.8
