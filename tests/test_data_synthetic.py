"""The synthetic shapes dataset: seeded, real image files, COCO and YOLO labels that agree, fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lightning_yolo.data.synthetic import (
    SYNTHETIC_CLASSES,
    default_synthetic_root,
    draw_synthetic_image,
    ensure_synthetic_dataset,
    make_synthetic_dataset,
)


def test_drawing_is_seeded_and_boxes_are_tight() -> None:
    a = draw_synthetic_image(np.random.default_rng(7), 128)
    b = draw_synthetic_image(np.random.default_rng(7), 128)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    img, boxes, labels = a
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert 1 <= len(boxes) <= 6 and set(labels.tolist()) <= set(range(4))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (np.maximum(w, h) >= 15).all() and (np.maximum(w, h) <= 65).all()
    assert (boxes >= 0).all() and (boxes <= 128).all()


def test_dataset_files_and_formats_agree(tmp_path: Path) -> None:
    root = make_synthetic_dataset(tmp_path, num_train=5, num_val=3, img_size=96, seed=0)
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == [f"{i:06d}.jpg" for i in range(5)]
    coco = json.loads((root / "annotations" / "instances_val.json").read_text())
    assert [c["name"] for c in coco["categories"]] == list(SYNTHETIC_CLASSES)
    assert len(coco["images"]) == 3
    img = cv2.imread(str(root / "images" / "val" / coco["images"][0]["file_name"]))
    assert img.shape == (96, 96, 3)
    anns = [a for a in coco["annotations"] if a["image_id"] == coco["images"][0]["id"]]
    lines = (root / "labels" / "val" / "000000.txt").read_text().split("\n")
    lines = [ln for ln in lines if ln]
    assert len(lines) == len(anns)
    for a, ln in zip(anns, lines, strict=True):
        c, cx, cy, w, h = (float(v) for v in ln.split())
        x, y, bw, bh = a["bbox"]
        assert int(c) == a["category_id"] - 1
        np.testing.assert_allclose([cx * 96, cy * 96, w * 96, h * 96], [x + bw / 2, y + bh / 2, bw, bh], atol=1e-3)
    assert "names" in (root / "data.yaml").read_text()


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = make_synthetic_dataset(tmp_path / "a", num_train=2, num_val=1, img_size=64, seed=4)
    b = make_synthetic_dataset(tmp_path / "b", num_train=2, num_val=1, img_size=64, seed=4)
    c = make_synthetic_dataset(tmp_path / "c", num_train=2, num_val=1, img_size=64, seed=5)
    f = "images/train/000001.jpg"
    assert (a / f).read_bytes() == (b / f).read_bytes() != (c / f).read_bytes()


def test_cache_folder_depends_on_parameters(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTNING_YOLO_CACHE", str(tmp_path))
    r1 = default_synthetic_root(num_train=4, num_val=2, img_size=64, seed=0)
    assert r1.parent == tmp_path and r1 != default_synthetic_root(num_train=4, num_val=2, img_size=64, seed=1)
    assert ensure_synthetic_dataset(None, num_train=4, num_val=2, img_size=64, seed=0) == r1
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary folder was renamed into place


@pytest.mark.slow
def test_default_dataset_generates_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    make_synthetic_dataset(tmp_path)  # 512 + 128 images at 256 px
    assert time.perf_counter() - t0 < 15.0
