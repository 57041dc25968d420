"""Dataset readers: COCO / YOLO / VOC give the same samples; category mapping, crowd, splits; image decoding."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from lightning_yolo.data.formats import (
    DetectionDataset,
    load_split,
    read_class_names,
    resolve_dataset,
    write_coco_json,
    write_data_yaml,
    write_yolo_labels,
)
from lightning_yolo.data.image_io import decode_image, load_resized, probe_image
from lightning_yolo.data.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.filterwarnings("ignore::lightning_yolo.data.formats.base.DatasetWarning")


@pytest.fixture(scope="module")
def three_formats(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("three")
    # non-square images, so a swapped width / height would show
    make_synthetic_dataset(root, num_train=6, num_val=2, img_size=(120, 88), seed=3, formats=("coco", "yolo", "voc"))
    return root


def _by_stem(ds: DetectionDataset) -> dict[str, tuple]:
    out = {}
    for i, rec in enumerate(ds.records):
        stem = rec.path.stem.split("_")[-1]  # VOC names are <split>_<stem>
        out[stem] = ds[i]
    return out


def test_three_formats_read_to_the_same_samples(three_formats: Path) -> None:
    samples = {}
    names = {}
    for fmt, path in (
        ("yolo", three_formats / "data.yaml"),
        ("coco", three_formats),
        ("voc", three_formats / "voc"),
    ):
        loc = resolve_dataset(path, "coco" if fmt == "coco" else "auto")
        assert loc.format == fmt
        names[fmt] = read_class_names(loc)
        src = load_split(loc, "train")
        assert src.class_names == names[fmt]
        samples[fmt] = _by_stem(DetectionDataset(src))
    assert names["yolo"] == names["coco"] == names["voc"] == ["circle", "square", "triangle", "cross"]
    ref = samples["coco"]
    assert len(ref) == 6
    n_boxes = 0
    for fmt in ("yolo", "voc"):
        assert set(samples[fmt]) == set(ref)
        for stem, (img, tgt) in ref.items():
            img2, tgt2 = samples[fmt][stem]
            assert isinstance(img2, tv_tensors.Image) and img2.dtype == torch.uint8 and img2.shape == (3, 88, 120)
            assert torch.equal(img2, img)
            assert isinstance(tgt2["boxes"], tv_tensors.BoundingBoxes)
            assert tgt2["boxes"].canvas_size == (88, 120)
            assert tgt2["boxes"].format == tv_tensors.BoundingBoxFormat.XYXY
            torch.testing.assert_close(tgt2["boxes"].as_subclass(torch.Tensor), tgt["boxes"].as_subclass(torch.Tensor),
                                       atol=1e-3, rtol=0)  # fmt: skip
            assert torch.equal(tgt2["labels"], tgt["labels"]) and tgt2["labels"].dtype == torch.int64
            assert not tgt2["iscrowd"].any()
            n_boxes += len(tgt["labels"])
    assert n_boxes > 10


def test_coco_noncontiguous_ids_crowd_and_empty_images(tmp_path: Path) -> None:
    img_dir = tmp_path / "images" / "train"
    img_dir.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(img_dir / f"{i}.png"), np.full((40, 50, 3), 60 + i, np.uint8))
    cats = [{"id": 11, "name": "bird"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]  # unsorted, with gaps
    images = [{"id": 100 + i, "file_name": f"{i}.png", "width": 50, "height": 40} for i in range(3)]
    anns = [
        {"id": 1, "image_id": 100, "category_id": 3, "bbox": [1, 2, 10, 12], "iscrowd": 0},
        {"id": 2, "image_id": 100, "category_id": 11, "bbox": [20, 5, 8, 8], "iscrowd": 1},
        {"id": 3, "image_id": 101, "category_id": 7, "bbox": [0.5, 0.5, 30, 20], "iscrowd": 0},
    ]
    write_coco_json(tmp_path / "annotations" / "instances_train.json", images, anns, cats)
    loc = resolve_dataset(tmp_path)
    assert read_class_names(loc) == ["cat", "dog", "bird"]  # ascending category id
    src = load_split(loc, "train")
    assert [r.image_id for r in src.records] == [100, 101, 102]
    r0, r1, r2 = src.records
    assert r0.labels.tolist() == [0, 2] and r0.iscrowd.tolist() == [False, True]
    np.testing.assert_allclose(r0.boxes, [[1, 2, 11, 14], [20, 5, 28, 13]])
    assert r1.labels.tolist() == [1]
    assert len(r2.labels) == 0  # image without annotations is kept
    assert src.report.num_background == 1
    # training drops crowd boxes; evaluation keeps them flagged
    ds_train = DetectionDataset(src, load_size=64, drop_crowd=True)
    assert ds_train.load_raw(0).labels.tolist() == [0]
    img, tgt = DetectionDataset(src)[0]
    assert tgt["iscrowd"].tolist() == [False, True]
    assert int(tgt["image_id"]) == 100 and tgt["orig_size"].tolist() == [40, 50]


def test_yolo_yaml_variants(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for split, n in (("a", 3), ("b", 2)):
        for i in range(n):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / split / f"{split}{i}.jpg"), np.full((32, 48, 3), 90, np.uint8))
            write_yolo_labels(
                root / "labels" / split / f"{split}{i}.txt", np.array([[4, 4, 20, 30]]), np.array([1]), 48, 32
            )
    # train: a list of a folder and a file list; val: a file list with ./ paths; names as a list; path relative
    (root / "val.txt").write_text("./images/b/b0.jpg\n./images/b/b1.jpg\n")
    (root / "extra.txt").write_text("images/b/b0.jpg\n")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "data.yaml").write_text("path: ../ds\ntrain: [images/a, extra.txt]\nval: val.txt\nnames: [x, y]\n")
    loc = resolve_dataset(cfg / "data.yaml")
    assert loc.splits() == ["train", "val"]
    train = load_split(loc, "train")
    assert sorted(r.path.name for r in train.records) == ["a0.jpg", "a1.jpg", "a2.jpg", "b0.jpg"]
    np.testing.assert_allclose(train.records[0].boxes, [[4, 4, 20, 30]], atol=1e-3)
    assert train.records[0].labels.tolist() == [1]
    val = load_split(loc, "val")
    assert [r.path.name for r in val.records] == ["b0.jpg", "b1.jpg"]
    # names as a dict, folder auto-detected through data.yaml
    write_data_yaml(root / "data.yaml", ["x", "y"], train="images/a", val="images/b")
    assert "0: x" in (root / "data.yaml").read_text()
    loc2 = resolve_dataset(root)
    assert loc2.format == "yolo" and read_class_names(loc2) == ["x", "y"]
    assert len(load_split(loc2, "val").records) == 2


def test_auto_detection_and_format_override(three_formats: Path) -> None:
    assert resolve_dataset(three_formats).format == "yolo"  # data.yaml wins over annotations/
    assert resolve_dataset(three_formats, "coco").format == "coco"
    assert resolve_dataset(three_formats / "annotations" / "instances_val.json").format == "coco"
    assert resolve_dataset(three_formats / "voc").format == "voc"
    with pytest.raises(ValueError, match="format must be one of"):
        resolve_dataset(three_formats, "kitti")
    with pytest.raises(ValueError, match="cannot be read as format='voc'"):
        resolve_dataset(three_formats / "data.yaml", "voc")


# ---------------------------------------------------------------------------------------------------------------
# decoding


def test_exif_orientation_applied_to_image_and_boxes(tmp_path: Path) -> None:
    stored = np.full((20, 40, 3), 30, np.uint8)  # stored 40 wide, 20 high
    stored[0:6, 0:10] = (255, 0, 0)  # red patch at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    img_dir = tmp_path / "images" / "train"
    img_dir.mkdir(parents=True)
    Image.fromarray(stored).save(img_dir / "r.jpg", quality=98, exif=exif)
    info = probe_image(img_dir / "r.jpg")
    assert (info.width, info.height, info.orientation) == (20, 40, 6) and not info.fast_path
    shown = decode_image(img_dir / "r.jpg")
    assert shown.shape == (40, 20, 3)
    # the stored top-left lands at the displayed top-right: x in [14, 20), y in [0, 10)
    red = (shown[..., 0] > 200) & (shown[..., 1] < 60)
    ys, xs = np.nonzero(red)
    assert xs.min() >= 13 and xs.max() == 19 and ys.min() == 0 and ys.max() <= 10
    # labels refer to the displayed image (as ultralytics): a box on the displayed red patch
    write_yolo_labels(tmp_path / "labels" / "train" / "r.txt", np.array([[14, 0, 20, 10]]), np.array([0]), 20, 40)
    write_data_yaml(tmp_path / "data.yaml", ["red"], "images/train", "images/train")
    img, tgt = DetectionDataset(load_split(resolve_dataset(tmp_path), "train"))[0]
    assert img.shape == (3, 40, 20) and tgt["boxes"].canvas_size == (40, 20)
    np.testing.assert_allclose(tgt["boxes"].numpy(), [[14, 0, 20, 10]], atol=1e-3)


def test_odd_image_modes_decode_to_rgb(tmp_path: Path) -> None:
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(g, "L").save(tmp_path / "grey.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top opaque red, bottom transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), g16)
    rgb16 = np.zeros((8, 8, 3), np.uint16)
    rgb16[..., 2] = 65535  # cv2 writes BGR: this is red
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16)
    Image.fromarray(np.full((8, 8, 3), (10, 200, 30), np.uint8)).convert("P", palette=Image.ADAPTIVE).save(
        tmp_path / "pal.png"
    )
    Image.fromarray(np.full((8, 8, 3), (0, 0, 255), np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)

    grey = decode_image(tmp_path / "grey.png")
    assert grey.shape == (8, 8, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 0], g)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    a = decode_image(tmp_path / "rgba.png")
    assert a.shape == (8, 8, 3)
    assert a[0, 0].tolist() == [200, 0, 0] and a[7, 7].tolist() == [114, 114, 114]  # transparent -> padding grey
    assert probe_image(tmp_path / "grey16.png").mode.startswith("I")
    d16 = decode_image(tmp_path / "grey16.png")
    np.testing.assert_array_equal(d16[..., 1], (g16 >> 8).astype(np.uint8))
    assert decode_image(tmp_path / "rgb16.png")[0, 0].tolist() == [255, 0, 0]
    assert decode_image(tmp_path / "pal.png")[0, 0].tolist() == [10, 200, 30]
    np.testing.assert_allclose(decode_image(tmp_path / "cmyk.jpg")[0, 0], [0, 0, 255], atol=3)


def test_load_resized_uses_scaled_jpeg_decode(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (9, 9), 0)
    cv2.imwrite(str(tmp_path / "x.jpg"), img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    small, ratio = load_resized(tmp_path / "x.jpg", None, 160)  # 1/4: DCT-reduced decode
    assert small.shape == (120, 160, 3) and ratio == 0.25
    ref = cv2.resize(img, (160, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - ref).mean() < 4
    same, r1 = load_resized(tmp_path / "x.jpg", None, 640)
    assert same.shape == (480, 640, 3) and r1 == 1.0


def test_scan_reads_voc_difficult_as_crowd(tmp_path: Path, three_formats: Path) -> None:
    voc = tmp_path / "voc"
    shutil.copytree(three_formats / "voc", voc)
    xml = sorted((voc / "Annotations").glob("train_*.xml"))[0]
    text = xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
    xml.write_text(text)
    src = load_split(resolve_dataset(voc), "train")
    rec = next(r for r in src.records if r.path.stem == xml.stem)
    assert rec.iscrowd.tolist()[0] is True and not rec.iscrowd[1:].any()


def test_coco_json_sizes_checked_against_the_image(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((30, 40, 3), np.uint8))
    write_coco_json(
        tmp_path / "img" / "a.json",
        [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 20]}],
        [{"id": 1, "name": "a"}],
    )
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        src = load_split(resolve_dataset(tmp_path / "img" / "a.json"), "train")
    assert src.report.counts["width/height in the json differ from the image (image size used)"] == 1
    np.testing.assert_allclose(src.records[0].boxes, [[30, 20, 40, 30]])  # clipped to the real 40x30
    assert any("differ from the image" in str(x.message) for x in w)
    assert json.loads((tmp_path / "img" / "a.json").read_text())["images"][0]["width"] == 80
