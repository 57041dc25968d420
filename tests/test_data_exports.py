"""Datasets as other tools leave them on disk (issue 19): symbolic links to folders, COCO ids written as strings,
COCO jsons per split found beside the training json, images over PIL's decompression-bomb limit. Each built as
real files; the same layouts run through the real command line in ``tests/test_fault_corpus.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_yolo.data.formats import load_split, resolve_dataset
from lightning_yolo.data.formats.yolo import walk_files
from lightning_yolo.data.image_io import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, open_image, probe_image


def _jpg(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(path)
    return path


def test_walk_follows_linked_folders_once_and_keeps_their_names(tmp_path):
    _jpg(tmp_path / "root" / "a" / "1.jpg")
    _jpg(tmp_path / "other" / "2.jpg")
    (tmp_path / "root" / "b").symlink_to(tmp_path / "other", target_is_directory=True)
    (tmp_path / "root" / "b2").symlink_to(tmp_path / "other", target_is_directory=True)  # a second link: read once
    (tmp_path / "root" / "a" / "up").symlink_to("..", target_is_directory=True)  # a cycle
    files = walk_files(tmp_path / "root", IMAGE_EXTENSIONS)
    assert [p.relative_to(tmp_path / "root").as_posix() for p in files] == ["a/1.jpg", "b/2.jpg"]


def _coco(root: Path, images: list, anns: list, name: str = "instances_train.json") -> Path:
    for im in images:
        _jpg(root / "images" / im["file_name"])
    path = root / name
    cats = [{"id": "7", "name": "b"}, {"id": 2, "name": "a"}, {"id": "z", "name": "c"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_coco_string_ids_match_by_text_and_get_internal_integers(tmp_path):
    images = [{"id": "img_a", "file_name": "a.jpg"}, {"id": "5", "file_name": "b.jpg"}]
    anns = [
        {"id": 1, "image_id": "img_a", "category_id": "z", "bbox": [1, 1, 10, 10]},
        {"id": 2, "image_id": 5, "category_id": 7, "bbox": [2, 2, 10, 10]},  # int 5 finds the image "5"
        {"id": 3, "image_id": "5", "category_id": "2", "bbox": [3, 3, 10, 10]},
    ]
    src = load_split(resolve_dataset(_coco(tmp_path, images, anns)), "train")
    # labels: numeric ids ascending (2, 7), then non-numeric ones in json order ("z")
    assert src.class_names == ["a", "b", "c"]
    by_name = {r.path.name: r for r in src.records}
    assert [r.image_id for r in src.records] == [0, 1]  # not all ids numeric: positions in the json
    assert by_name["a.jpg"].labels.tolist() == [2] and by_name["b.jpg"].labels.tolist() == [1, 0]
    assert sum(src.report.counts.values()) == 0


def test_coco_numeric_ids_keep_their_numbers_and_clashing_ids_are_an_error(tmp_path):
    images = [{"id": "10", "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}]
    src = load_split(resolve_dataset(_coco(tmp_path / "ok", images, [])), "train")
    assert sorted(r.image_id for r in src.records) == [3, 10]
    images = [{"id": "1", "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]
    with pytest.raises(ValueError, match=r"instances_train.json: images\[1\] repeats image id 1"):
        load_split(resolve_dataset(_coco(tmp_path / "clash", images, [])), "train")
    with pytest.raises(ValueError, match=r"instances_train.json: images\[0\].id is \[1\]: COCO ids must be"):
        load_split(resolve_dataset(_coco(tmp_path / "list", [{"id": [1], "file_name": "a.jpg"}], [])), "train")


def test_coco_val_json_beside_the_training_json(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg"}]
    train = _coco(tmp_path / "annotations", images, [], "instances_train2017.json")
    val = _coco(tmp_path / "annotations", images, [], "instances_val2017.json")
    location = resolve_dataset(train)
    assert location.coco_jsons == {"train": train, "val": val, "test": train}


def test_image_over_the_pixel_limit_is_skipped_and_counted_and_pil_limit_restored(tmp_path):
    """A 1-bit PNG of 32768 x 32769 pixels (just over 2^30; 134 MB in memory, a few hundred kB on disk): over even
    the raised limit, so the scan names and skips it. PIL's own limit is left as it was."""
    root = tmp_path / "ds"
    _jpg(root / "images" / "0.jpg")
    Image.new("1", (32768, 32769)).save(root / "images" / "1.png")
    (root / "labels").mkdir(parents=True)
    for i in range(2):
        (root / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [a]\n")
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match=rf"1.png: image too large to decode .*limit {MAX_IMAGE_PIXELS} pixels"):
        probe_image(root / "images" / "1.png")
    assert Image.MAX_IMAGE_PIXELS == before
    with pytest.warns(UserWarning, match=r"unreadable image \(skipped\).*images/1.png"):
        src = load_split(resolve_dataset(root), "train")
    assert [r.path.name for r in src.records] == ["0.jpg"]


def test_200_megapixel_image_is_read(tmp_path):
    """20000 x 10000 grey JPEG (PIL's DecompressionBombError without the raised limit): probed with its size."""
    path = tmp_path / "big.jpg"
    Image.new("L", (20000, 10000), 90).save(path, quality=50)
    assert (probe_image(path).width, probe_image(path).height) == (20000, 10000)
    with open_image(path) as im:
        assert im.size == (20000, 10000)
