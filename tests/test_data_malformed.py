"""Malformed datasets: structural problems raise naming the path and what was expected; per-image and per-box
problems are skipped (or clipped) and counted with their first locations. The table is docs/datasets.md."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from lightning_yolo.data.formats import DatasetWarning, load_split, resolve_dataset, write_coco_json, write_voc_xml

W, H = 40, 30


def _img(path: Path, w: int = W, h: int = H) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 80, np.uint8))


def _yolo(root: Path, labels: dict[str, str], yaml: str | None = None, ext: str = ".png") -> Path:
    """A YOLO dataset whose train and val splits are images/train; ``labels``: stem -> label file text."""
    for stem, text in labels.items():
        _img(root / "images" / "train" / f"{stem}{ext}")
        if text is not None:
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(yaml or "train: images/train\nval: images/train\nnames: [a, b]\n")
    return root / "data.yaml"


def _scan(path: Path, split: str = "train"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = load_split(resolve_dataset(path), split)
    msgs = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    return src, "\n".join(msgs)


def _count(src, key_part: str) -> int:
    hits = [n for k, n in src.report.counts.items() if key_part in k]
    assert len(hits) <= 1, src.report.counts
    return hits[0] if hits else 0


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope: dataset path does not exist \(expected a data.yaml"):
        resolve_dataset(tmp_path / "nope")


def test_folder_without_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no dataset recognised.*data.yaml.*annotations.*Annotations"):
        resolve_dataset(tmp_path)


@pytest.mark.parametrize(
    ("yaml", "match"),
    [
        ("train: images/train\nval: images/train\n", "data.yaml: missing key 'names'"),
        ("val: images/train\nnames: [a]\n", "data.yaml: missing key 'train'"),
        ("train: images/train\nval: images/train\nnames: [a, b]\nnc: 3\n", "nc=3 but names has 2 entries"),
        (
            "train: images/train\nval: images/train\nnames: {0: a, 2: b}\n",
            r"names keys must be 0..1 without gaps, got \[0, 2\]",
        ),
        ("train: images/train\nval: images/train\nnames: [a, a]\n", "class name 'a' appears twice"),
        ("train: [images/train\nval: x\n", "data.yaml: not valid YAML"),
    ],
    ids=["no-names", "no-train", "nc-mismatch", "names-gap", "duplicate-names", "bad-yaml"],
)
def test_bad_data_yaml(tmp_path: Path, yaml: str, match: str) -> None:
    path = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, yaml=yaml)
    with pytest.raises(ValueError, match=match):
        load_split(resolve_dataset(path), "train")


def test_missing_split_folder(tmp_path: Path) -> None:
    path = _yolo(tmp_path, {"a": ""}, yaml="train: images/train\nval: images/valid\nnames: [a]\n")
    with pytest.raises(
        FileNotFoundError, match=r"val: 'images/valid' resolves to .*images/valid, which does not exist"
    ):
        load_split(resolve_dataset(path), "val")


def test_split_without_images(tmp_path: Path) -> None:
    path = _yolo(tmp_path, {"a": ""})
    (tmp_path / "images" / "empty").mkdir()
    (tmp_path / "data.yaml").write_text("train: images/empty\nval: images/train\nnames: [a]\n")
    with pytest.raises(ValueError, match=r"split 'train' \('images/empty'\) contains no images \(looked for .jpg"):
        load_split(resolve_dataset(path), "train")


def test_label_file_without_image(tmp_path: Path) -> None:
    path = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(FileNotFoundError, match=r"ghost.txt: label file has no image \(expected .*images/train/ghost"):
        load_split(resolve_dataset(path), "train")


def _coco(root: Path, data_text: str | None = None, **kw) -> Path:
    _img(root / "images" / "train" / "a.png")
    images = kw.get("images", [{"id": 1, "file_name": "a.png", "width": W, "height": H}])
    anns = kw.get("anns", [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}])
    cats = kw.get("cats", [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    json_path = root / "annotations" / "instances_train.json"
    write_coco_json(json_path, images, anns, cats)
    if data_text is not None:
        json_path.write_text(data_text)
    return json_path


def test_coco_invalid_json(tmp_path: Path) -> None:
    path = _coco(tmp_path, data_text='{"images": [\n  {"id": 1,,}]}')
    with pytest.raises(ValueError, match=r"instances_train.json:2:\d+: not valid JSON"):
        load_split(resolve_dataset(path), "train")


def test_coco_missing_key(tmp_path: Path) -> None:
    path = _coco(tmp_path, data_text='{"images": [], "annotations": []}')
    with pytest.raises(ValueError, match="missing key 'categories'"):
        load_split(resolve_dataset(path), "train")


def test_coco_duplicate_image_id(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "a.png"}]
    path = _coco(tmp_path, images=images)
    with pytest.raises(ValueError, match=r"images\[1\] repeats image id 1"):
        load_split(resolve_dataset(path), "train")


def test_coco_image_folder_not_found(tmp_path: Path) -> None:
    path = _coco(tmp_path, images=[{"id": 1, "file_name": "elsewhere/zz.png"}])
    with pytest.raises(FileNotFoundError, match="cannot find its images \\(first file_name 'elsewhere/zz.png'\\)"):
        load_split(resolve_dataset(path), "train")


def test_voc_missing_split_file(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/train.txt: VOC split file not found"):
        load_split(resolve_dataset(tmp_path), "train", class_names=["a"])


# ---------------------------------------------------------------------------------------------------------------
# skips and counts (YOLO)


def test_yolo_line_problems_are_counted_and_skipped(tmp_path: Path) -> None:
    labels = {
        "ok": "0 0.5 0.5 0.2 0.2\n",
        "short": "0 0.5 0.5 0.2\n1 0.3 0.3 0.1 0.1\n",  # 4 columns: malformed, the second line is kept
        "text": "zero 0.5 0.5 0.2 0.2\n",  # non-numeric: malformed
        "range": "2 0.5 0.5 0.2 0.2\n-1 0.5 0.5 0.2 0.2\n1.5 0.5 0.5 0.2 0.2\n",  # 3 x class id out of range
        "pixels": "0 20 15 10 10\n",  # pixel coordinates instead of normalised
        "flat": "0 0.5 0.5 0.0 0.2\n0 0.5 0.5 nan 0.2\n",  # zero width, NaN: degenerate
        "edge": "1 0.95 0.5 0.2 0.2\n",  # partly outside: clipped, kept
        "dup": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n",  # duplicate: one kept
        "poly": "1 0.1 0.1 0.4 0.1 0.4 0.5 0.1 0.5\n",  # polygon: enclosing box
        "empty": "",  # background image
        "nolabel": None,  # no label file: background image
    }
    src, msg = _scan(_yolo(tmp_path, labels))
    recs = {r.path.stem: r for r in src.records}
    assert len(recs) == 11
    assert _count(src, "malformed label line") == 2
    assert _count(src, "class id out of range 0..1") == 3
    assert _count(src, "coordinates not normalised") == 1
    assert _count(src, "degenerate box") == 2
    assert _count(src, "clipped") == 1
    assert _count(src, "duplicate box") == 1
    assert _count(src, "polygon label converted") == 1
    assert recs["short"].labels.tolist() == [1]
    np.testing.assert_allclose(recs["edge"].boxes, [[0.85 * W, 0.4 * H, W, 0.6 * H]], atol=1e-4)
    assert len(recs["dup"].labels) == 1
    np.testing.assert_allclose(recs["poly"].boxes, [[0.1 * W, 0.1 * H, 0.4 * W, 0.5 * H]], atol=1e-4)
    assert src.report.num_background == 6  # text, range, pixels, flat (all boxes skipped), empty, nolabel
    assert len(recs["empty"].labels) == 0 and len(recs["nolabel"].labels) == 0
    # the warning names the problem, the count and the first places (file:line)
    assert "2 x malformed label line" in msg and "short.txt:1" in msg and "text.txt:1" in msg
    assert "3 x class id out of range 0..1 (skipped) (e.g." in msg and "range.txt:2 (class -1)" in msg


def test_unreadable_images_are_skipped(tmp_path: Path) -> None:
    path = _yolo(tmp_path, {"good": "0 0.5 0.5 0.2 0.2\n"}, ext=".jpg")
    (tmp_path / "images" / "train" / "garbage.jpg").write_bytes(b"this is not an image")
    good = (tmp_path / "images" / "train" / "good.jpg").read_bytes()
    (tmp_path / "images" / "train" / "cut.jpg").write_bytes(good[: len(good) // 2])  # truncated download
    src, msg = _scan(path)
    assert [r.path.name for r in src.records] == ["good.jpg"]
    assert _count(src, "unreadable image") == 2
    assert "garbage.jpg" in msg and "cut.jpg" in msg


def test_undecodable_label_file_skips_its_image(tmp_path: Path) -> None:
    path = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": ""})
    (tmp_path / "labels" / "train" / "b.txt").write_bytes(b"\xff\xfe\x00binary")
    src, msg = _scan(path)
    assert [r.path.stem for r in src.records] == ["a"]
    assert _count(src, "unreadable label file") == 1 and "b.txt" in msg


def test_missing_listed_image_is_skipped(tmp_path: Path) -> None:
    path = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "list.txt").write_text("images/train/a.png\nimages/train/gone.png\n")
    (tmp_path / "data.yaml").write_text("train: list.txt\nval: list.txt\nnames: [a, b]\n")
    src, msg = _scan(path)
    assert len(src.records) == 1 and _count(src, "missing image file") == 1 and "gone.png" in msg


# ---------------------------------------------------------------------------------------------------------------
# skips and counts (COCO, VOC)


def test_coco_annotation_problems_are_counted(tmp_path: Path) -> None:
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [2, 2, 10, 10]},  # unknown category
        {"id": 3, "image_id": 77, "category_id": 1, "bbox": [2, 2, 10, 10]},  # unknown image
        {"id": 4, "image_id": 1, "category_id": 2, "segmentation": [[1, 1, 5, 5, 1, 5]]},  # no bbox
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [5, 5, -3, 4]},  # negative width
        {"id": 6, "image_id": 1, "category_id": 2, "bbox": [30, 20, 20, 20]},  # partly outside: clipped
    ]
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "missing.png"}]
    src, msg = _scan(_coco(tmp_path, images=images, anns=anns))
    assert _count(src, "unknown category id") == 1 and "category_id 9" in msg
    assert _count(src, "annotation for an unknown image id") == 1 and "image_id 77" in msg
    assert _count(src, "annotation without a valid bbox") == 1
    assert _count(src, "degenerate box") == 1
    assert _count(src, "clipped") == 1
    assert _count(src, "missing image file") == 1 and "missing.png" in msg
    assert len(src.records) == 1
    np.testing.assert_allclose(src.records[0].boxes, [[2, 2, 12, 12], [30, 20, W, H]])


def test_voc_problems_are_counted(tmp_path: Path) -> None:
    for stem in ("a", "b", "c"):
        _img(tmp_path / "JPEGImages" / f"{stem}.jpg")
    write_voc_xml(
        tmp_path / "Annotations" / "a.xml", "a.jpg", W, H, np.array([[1, 1, 9, 9], [2, 2, 8, 8]]), ["cat", "unicorn"]
    )
    (tmp_path / "Annotations" / "b.xml").write_text("<annotation><object><name>cat</name>")  # broken xml
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\n")  # c has no xml
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    src, msg = _scan(tmp_path)
    assert src.class_names == ["cat", "dog"]
    assert _count(src, "unknown class name") == 1 and "'unicorn'" in msg
    assert _count(src, "unreadable annotation xml") == 1 and "b.xml" in msg
    assert _count(src, "missing annotation xml") == 1 and "c.xml" in msg
    assert [r.path.stem for r in src.records] == ["a"]
    np.testing.assert_allclose(src.records[0].boxes, [[1, 1, 9, 9]])


def test_datamodule_rejects_bad_arguments(tmp_path: Path) -> None:
    from lightning_yolo.data.datamodule import YOLODataModule

    path = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(ValueError, match="img_size must be a positive multiple of 32, got 100"):
        YOLODataModule(str(path), img_size=100)
    with pytest.raises(ValueError, match=r"AugmentCfg.mosaic_prob must be in \[0, 1\], got 1.5"):
        YOLODataModule(str(path), augment={"mosaic_prob": 1.5})
