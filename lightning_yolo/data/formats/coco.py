"""COCO json (``instances_*.json``): images, annotations (``bbox`` = x, y, w, h pixels), categories.

Category ids may have gaps (COCO's 1..90 for 80 classes): they are mapped to contiguous labels ``0..C-1`` in
ascending id order, and the names kept in that order. Image and category ids may be strings (``"id": "1"`` or
``"img_a"``, as some tools and hand-made files write them): numeric strings count as their number, other strings
keep the json's order (categories) or get the image's position as internal id (images); predictions written by
``lightning-yolo predict`` carry the json's own ids. Any other id (a float, ``null``, a list) is an error naming
the file and the key. ``iscrowd=1`` (and ``ignore=1``) annotations become crowd
boxes: kept out of training, passed to evaluation as ``iscrowd``. Images without annotations are kept.

Image folder: the json's ``file_name`` entries are looked up, in order, in ``image_dir`` (if given),
``<root>/<split>``, ``<root>/images/<split>``, ``<root>/images``, the json's folder and ``<root>``, where
``<root>`` is the parent of an ``annotations`` folder holding the json and ``<split>`` is the json name without
its prefix (``instances_train2017.json`` -> ``train2017``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    DatasetSource,
    ImageRecord,
    ScanReport,
    check_class_names,
    clean_boxes,
    finish_report,
    keep_readable,
)

__all__ = [
    "CocoImageIds",
    "read_coco_json",
    "coco_category_ids",
    "coco_class_names",
    "coco_category_order",
    "coco_id",
    "load_coco_split",
    "find_image_dir",
    "write_coco_json",
]


def coco_id(value: Any, where: str) -> int | str:
    """A COCO ``id`` / ``image_id`` / ``category_id`` as written: an integer or a non-empty string.

    Raises:
        ValueError: anything else, naming ``where`` (``file: images[3].id``) and the value.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip():
        return value
    raise ValueError(f"{where} is {value!r}: COCO ids must be integers (or strings such as \"1\" or \"img_a\")")


def _id_key(value: Any) -> str:
    # ids are matched by their text: an annotation's image_id 1 finds the image with "id": "1" and the reverse
    return str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else repr(value)


def _numeric(value: int | str) -> int | None:
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else None


def coco_category_order(categories: Sequence[Any], json_path: str | os.PathLike) -> list[tuple[int | str, str]]:
    """``(id, name)`` of the json's categories in label order: ascending numeric id (COCO's rule), categories with
    non-numeric string ids after them in the json's order.

    Raises:
        ValueError: a category without ``id`` / ``name``, or an id that is neither integer nor string.
    """
    cats = []
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise ValueError(f"{json_path}: categories[{i}] needs 'id' and 'name', got {c!r}")
        cid = coco_id(c["id"], f"{json_path}: categories[{i}].id")
        num = _numeric(cid)
        cats.append(((num is None, num if num is not None else 0, i), cid, str(c["name"])))
    cats.sort(key=lambda t: t[0])
    return [(cid, name) for _, cid, name in cats]


def read_coco_json(json_path: str | os.PathLike) -> dict[str, Any]:
    """Parse a COCO json and check its top-level structure.

    Raises:
        FileNotFoundError: missing file.
        ValueError: invalid JSON (with line and column) or a missing ``images`` / ``annotations`` /
            ``categories`` key.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: COCO json not found")
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{json_path}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{json_path}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(
                f"{json_path}: missing key {key!r} (a list); a COCO detection json needs images, annotations "
                f"and categories"
            )
    return data


def _categories(data: dict[str, Any], json_path: Path) -> tuple[dict[int, int], list[str]]:
    """category id (as :func:`_id_key` text) -> contiguous label, and names in label order."""
    cats = coco_category_order(data["categories"], json_path)
    keys = [_id_key(cid) for cid, _ in cats]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"{json_path}: duplicate category ids {dup}")
    names = check_class_names([n for _, n in cats], f"{json_path}: categories")
    return {key: label for label, key in enumerate(keys)}, names


def coco_class_names(json_path: str | os.PathLike) -> list[str]:
    """Contiguous class names of a COCO json (ascending category id)."""
    json_path = Path(json_path)
    return _categories(read_coco_json(json_path), json_path)[1]


def find_image_dir(json_path: Path, file_names: Sequence[str], image_dir: Path | None = None) -> Path:
    """The folder the json's ``file_name`` entries live in (see the module docstring for the search order).

    Raises:
        FileNotFoundError: none of the candidate folders holds the first images.
    """
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    split = json_path.stem.split("_", 1)[1] if "_" in json_path.stem else json_path.stem
    candidates = [image_dir] if image_dir is not None else []
    candidates += [root / split, root / "images" / split, root / "images", json_path.parent, root]
    if not file_names:
        return Path(image_dir) if image_dir is not None else root
    # Probe names spread over the whole list (not only the first few): a json whose first files are missing must
    # not make the right folder look wrong. Missing files are then skipped and named by the scan report.
    step = max(1, len(file_names) // 32)
    probe = list(dict.fromkeys([*file_names[:8], *file_names[::step]]))
    best, best_hits = None, 0
    for cand in candidates:
        if cand is None:
            continue
        hits = sum((Path(cand) / f).is_file() for f in probe)
        if hits > best_hits:
            best, best_hits = Path(cand), hits
    if best is not None:
        return best
    raise FileNotFoundError(
        f"{json_path}: cannot find its images (first file_name {probe[0]!r}) in any of the folders tried "
        f"({len(probe)} file_name entries probed); "
        f"looked in {', '.join(str(c) for c in candidates if c is not None)}"
    )


def load_coco_split(
    json_path: str | os.PathLike,
    split: str = "train",
    image_dir: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    verify_images: bool = False,
) -> DatasetSource:
    """Read a COCO json, checking every annotation.

    Args:
        json_path: the annotation file.
        split: name used in messages.
        image_dir: folder of the images (found automatically when ``None``).
        class_names: when given, the json's names must equal these (train and val must agree).
        verify_images: decode every image (see :func:`~lightning_yolo.data.formats.base.keep_readable`).

    Returns:
        The split's :class:`DatasetSource`; image ids are the json's ids.

    Raises:
        FileNotFoundError / ValueError: missing file or image folder, invalid JSON, missing keys, image entries
            without ``id`` / ``file_name``, duplicate image ids, names differing from ``class_names``.
    """
    json_path = Path(json_path)
    data = read_coco_json(json_path)
    label_of, names = _categories(data, json_path)
    if class_names is not None and list(class_names) != names:
        raise ValueError(f"{json_path}: categories {names} differ from the other split's {list(class_names)}")
    report = ScanReport(source=str(json_path), split=split)

    images: dict[str, dict[str, Any]] = {}  # id text -> image entry
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise ValueError(f"{json_path}: images[{i}] needs 'id' and 'file_name', got {im!r}")
        key = _id_key(coco_id(im["id"], f"{json_path}: images[{i}].id"))
        if key in images:
            raise ValueError(f"{json_path}: images[{i}] repeats image id {im['id']!r} (ids must be unique)")
        images[key] = im
    # internal integer ids: the json's own when they are all numeric (and distinct as numbers: "07" and "7" are not),
    # else each image's position in the json
    numeric = [_numeric(im["id"]) for im in images.values()]
    use_numeric = None not in numeric and len(set(numeric)) == len(numeric)
    internal_id = {key: (num if use_numeric else pos) for pos, (key, num) in enumerate(zip(images, numeric))}
    folder = find_image_dir(json_path, [im["file_name"] for im in data["images"]], image_dir and Path(image_dir))

    per_image: dict[str, list[tuple[list[float], int, bool, str]]] = {key: [] for key in images}
    for i, ann in enumerate(data["annotations"]):
        where = f"{json_path}: annotations[{i}] (id {ann.get('id') if isinstance(ann, dict) else '?'})"
        if not isinstance(ann, dict):
            report.add("malformed annotation (skipped)", where)
            continue
        iid = ann.get("image_id")
        if _id_key(iid) not in per_image:
            report.add("annotation for an unknown image id (skipped)", f"{where} image_id {iid!r}")
            continue
        cid = ann.get("category_id")
        if _id_key(cid) not in label_of:
            report.add(
                f"unknown category id (not in categories [{', '.join(label_of)}]; skipped)", f"{where} category_id {cid!r}"
            )
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            report.add("annotation without a valid bbox [x, y, w, h] (skipped)", where)
            continue
        crowd = bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0))
        per_image[_id_key(iid)].append(([x, y, x + w, y + h], label_of[_id_key(cid)], crowd, where))

    candidates = [(folder / images[iid]["file_name"], iid) for iid in images]
    records: list[ImageRecord] = []
    for path, iid, info in keep_readable(candidates, report, verify_images):
        im = images[iid]
        jw, jh = im.get("width"), im.get("height")
        if jw is not None and jh is not None and (int(jw), int(jh)) != (info.width, info.height):
            report.add(
                "width/height in the json differ from the image (image size used)",
                f"{path} ({jw}x{jh} vs {info.width}x{info.height})",
            )
        anns = per_image[iid]
        boxes = np.array([a[0] for a in anns], np.float64).reshape(-1, 4)
        labels = np.array([a[1] for a in anns], np.int64)
        crowd = np.array([a[2] for a in anns], bool)
        boxes, labels, crowd = clean_boxes(boxes, labels, crowd, info.height, info.width, report, [a[3] for a in anns])
        records.append(ImageRecord(path, internal_id[iid], info.height, info.width, boxes, labels, crowd, info))
    finish_report(records, report)
    return DatasetSource(records, names, report, folder)


def write_coco_json(
    json_path: Path,
    images: Sequence[dict[str, Any]],
    annotations: Sequence[dict[str, Any]],
    categories: Sequence[dict[str, Any]],
) -> None:
    """Write a COCO json (``images``: id, file_name, width, height; ``annotations``: id, image_id,
    category_id, bbox [x, y, w, h], area, iscrowd; ``categories``: id, name)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    data = {"images": list(images), "annotations": list(annotations), "categories": list(categories)}
    json_path.write_text(json.dumps(data), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------------
# predictions back to the dataset's ids


def coco_category_ids(
    json_path: str | os.PathLike, class_names: Sequence[str]
) -> tuple[list[int | str] | None, list[str]]:
    """``(ids, names)``: the category id of each contiguous label of ``json_path`` as the json writes it (the order
    :func:`coco_category_order` gives the reader's labels) and the json's class names; ``ids`` is ``None`` when those
    names are not ``class_names`` (a model trained on other classes)."""
    with open(json_path, encoding="utf-8") as f:
        categories = json.load(f).get("categories") or []
    pairs = coco_category_order(categories, json_path)
    names = [n for _, n in pairs]
    return ([i for i, _ in pairs] if names == list(class_names) else None), names


class CocoImageIds:
    """COCO image id of an image file, looked up by ``file_name`` in a dataset's jsons (in the order given, e.g.
    val, test, then train; each json read only when an image is not found in the previous ones). Ids are returned
    as the json writes them (an int, or a string such as ``"img_a"``), so ``COCO.loadRes`` matches them."""

    def __init__(self, jsons: Sequence[str | os.PathLike]) -> None:
        self._pending = [Path(j) for j in jsons]
        self._by_name: dict[str, list[tuple[str, int | str]]] = {}

    def _load_next(self) -> bool:
        if not self._pending:
            return False
        with open(self._pending.pop(0), encoding="utf-8") as f:
            images = json.load(f).get("images") or []
        for img in images:
            if isinstance(img, dict) and "file_name" in img and "id" in img:
                name = str(img["file_name"]).replace("\\", "/")
                self._by_name.setdefault(name.rsplit("/", 1)[-1], []).append((name, img["id"]))
        return True

    def lookup(self, path: str | os.PathLike) -> int | str | None:
        """The id whose ``file_name`` is the end of ``path`` (``None``: not in the jsons, or ambiguous)."""
        posix = Path(path).as_posix()
        while True:
            candidates = self._by_name.get(posix.rsplit("/", 1)[-1], [])
            hits = {i for name, i in candidates if posix == name or posix.endswith("/" + name)}
            if len(hits) == 1:
                return hits.pop()
            if len(hits) > 1 or not self._load_next():
                return None
