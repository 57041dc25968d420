"""Datasets that used to train on nothing or crash late: labels not found, truncated or undecodable images, empty
splits, a byte-order mark, COCO files partly missing."""

from __future__ import annotations

import json
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_yolo import YOLODataModule
from lightning_yolo.data.formats import DatasetLocation, load_split
from lightning_yolo.data.formats.base import DatasetWarning, DetectionDataset
from lightning_yolo.data.formats.yolo import load_yolo_split
from lightning_yolo.data.pipelines import EvalDataset

LABEL = "0 0.5 0.5 0.4 0.4\n"


def _image(path: Path, size: tuple[int, int] = (64, 48), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # the same pictures in every run
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def _yaml(root: Path, train: str = "train", val: str = "train") -> Path:
    (root / "data.yaml").write_text(f"path: .\ntrain: {train}\nval: {val}\nnames: [thing]\n", encoding="utf-8")
    return root / "data.yaml"


def test_flat_dataset_under_a_parent_folder_named_images_finds_its_labels(tmp_path):
    root = tmp_path / "images" / "mydata"  # e.g. ~/images/mydata: the parent's 'images' is not the dataset's
    for name in ("a", "b"):
        _image(root / "train" / f"{name}.jpg")
        (root / "train" / f"{name}.txt").write_text(LABEL, encoding="utf-8")
    src = load_yolo_split(_yaml(root), "train")
    assert [len(r.labels) for r in src.records] == [1, 1]


def test_misnamed_labels_folder_stops_and_says_where_labels_were_looked_for(tmp_path):
    root = tmp_path / "ds"
    _image(root / "images" / "train" / "a.jpg")
    (root / "label" / "train").mkdir(parents=True)  # typo: 'label'
    (root / "label" / "train" / "a.txt").write_text(LABEL, encoding="utf-8")
    with pytest.raises(FileNotFoundError) as err:
        load_yolo_split(_yaml(root, "images/train", "images/train"), "train")
    message = str(err.value)
    assert "split 'train' has 1 images but no label file for any of them" in message
    assert str(root / "labels" / "train" / "a.txt") in message and str(root / "images" / "train" / "a.txt") in message


def test_label_file_with_a_byte_order_mark_keeps_its_first_box(tmp_path):
    root = tmp_path / "ds"
    _image(root / "train" / "a.jpg")
    (root / "train" / "a.txt").write_bytes("\ufeff0 0.3 0.3 0.2 0.2\n0 0.7 0.7 0.2 0.2\n".encode())
    src = load_yolo_split(_yaml(root), "train")
    assert len(src.records[0].labels) == 2 and not src.report.counts


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_png_is_counted_by_the_scan_not_found_by_the_loader(tmp_path):
    root = tmp_path / "ds"
    for name in ("a", "b"):
        _image(root / "train" / f"{name}.png", size=(96, 96))
        (root / "train" / f"{name}.txt").write_text(LABEL, encoding="utf-8")
    _truncate(root / "train" / "b.png")
    with pytest.warns(DatasetWarning, match=r"1 x unreadable image \(skipped\) \(e\.g\. .*b\.png"):
        src = load_yolo_split(_yaml(root), "train")
    assert [r.path.name for r in src.records] == ["a.png"]


def test_image_that_fails_to_decode_after_the_scan_is_a_blank_sample_not_a_crash(tmp_path):
    root = tmp_path / "ds"
    for name in ("a", "b"):
        _image(root / "train" / f"{name}.png", size=(96, 64))
        (root / "train" / f"{name}.txt").write_text(LABEL, encoding="utf-8")
    src = load_yolo_split(_yaml(root), "train")
    (root / "train" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64 + b"IEND")  # broken after the scan
    dataset = EvalDataset(DetectionDataset(src, load_size=64), 64)
    with pytest.warns(DatasetWarning, match=r"b\.png: cannot be decoded .* used as a blank image without boxes"):
        image, target = dataset[1]
    assert image.shape == (3, 64, 64) and len(target["boxes"]) == 0
    assert list(dataset.base.load_failures) == [str(root / "train" / "b.png")]
    image, target = dataset[0]
    assert len(target["boxes"]) == 1


def test_split_whose_images_are_all_unusable_says_why(tmp_path):
    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.jpg").write_bytes(b"this is not a jpeg")
    (root / "train" / "a.txt").write_text(LABEL, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        with pytest.raises(ValueError, match=r"\[train\]: the split has no usable images.*\n.*unreadable image"):
            load_split(DatasetLocation("yolo", _yaml(root)), "train")


def test_training_split_without_a_single_box_stops(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    _image(root / "train" / "a.jpg")
    (root / "train" / "a.txt").write_text("7 0.5 0.5 0.2 0.2\n", encoding="utf-8")  # class 7 of 1: skipped
    dm = YOLODataModule(path=str(_yaml(root)), img_size=64, batch_size=1, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        with pytest.raises(ValueError, match=r"(?s)not one usable .*box.*class id out of range.*learn only background"):
            dm.setup("fit")


def test_coco_json_with_its_first_files_missing_names_them_instead_of_blaming_the_folder(tmp_path):
    root = tmp_path / "coco"
    images, annotations = [], []
    for i in range(10):
        name = f"{i:03d}.jpg"
        if i >= 6:  # the first six files are missing
            _image(root / "images" / "train" / name)
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0})
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    )
    with pytest.warns(DatasetWarning, match=r"6 x missing image file \(skipped\) \(e\.g\. .*000\.jpg"):
        src = load_split(DatasetLocation("coco", root, {"train": root / "annotations" / "instances_train.json"}),
                         "train")  # fmt: skip
    assert len(src.records) == 4


def _damage_jpeg_data(path: Path) -> None:
    """An invalid marker (FF 97) in the middle of the compressed data: libjpeg still decodes it ("Corrupt JPEG
    data"), PIL refuses it."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2] = b"\xff\x97"
    path.write_bytes(bytes(data))


def test_damaged_jpeg_data_is_counted_when_images_are_verified(tmp_path):
    root = tmp_path / "ds"
    for name in ("a", "b"):
        _image(root / "train" / f"{name}.jpg", size=(128, 96))
        (root / "train" / f"{name}.txt").write_text(LABEL, encoding="utf-8")
    _damage_jpeg_data(root / "train" / "b.jpg")
    src = load_yolo_split(_yaml(root), "train")  # header scan: cannot see it
    assert len(src.records) == 2 and not src.report.counts
    damaged = r"1 x damaged image data \(decodes with artefacts; kept\) \(e\.g\. .*b\.jpg"
    with pytest.warns(DatasetWarning, match=damaged):
        src = load_yolo_split(_yaml(root), "train", verify_images=True)
    assert len(src.records) == 2 and src.records[1].height == 96
