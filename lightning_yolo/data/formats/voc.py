"""Pascal VOC xml: ``<root>/Annotations/<id>.xml``, ``<root>/JPEGImages/<file>``,
``<root>/ImageSets/Main/<split>.txt`` (one id per line).

Coordinates: VOC ``xmin..xmax`` are 1-based inclusive pixel indices, so the box in continuous pixel
coordinates is ``(xmin - 1, ymin - 1, xmax, ymax)`` (as detectron2 reads it). ``difficult=1`` objects are
treated like COCO crowd boxes: kept out of training, passed to evaluation as ``iscrowd``.

Class names, in order of preference: the ``class_names`` argument, a ``labels.txt`` / ``classes.txt`` (one
name per line) in the root, the 20 standard VOC classes when every name in the split belongs to them, else the
sorted names found in the split's xml files.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..image_io import IMAGE_EXTENSIONS
from .base import (
    DatasetSource,
    ImageRecord,
    ScanReport,
    check_class_names,
    clean_boxes,
    finish_report,
    keep_readable,
)

__all__ = ["VOC_CLASSES", "find_voc_root", "voc_class_names", "load_voc_split", "write_voc_xml"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

_NAMES_FILES = ("labels.txt", "classes.txt")
_NAME_RE = re.compile(r"<object>.*?<name>\s*([^<]*?)\s*</name>", re.S)


def find_voc_root(path: str | os.PathLike) -> Path:
    """The folder holding ``Annotations`` and ``JPEGImages`` (``path`` itself or its single child that does).

    Raises:
        FileNotFoundError: no such folder.
    """
    path = Path(path)
    if (path / "Annotations").is_dir() and (path / "JPEGImages").is_dir():
        return path
    subs = [p for p in sorted(path.glob("*")) + sorted(path.glob("*/*")) if (p / "Annotations").is_dir()]
    if len(subs) == 1 and (subs[0] / "JPEGImages").is_dir():
        return subs[0]
    raise FileNotFoundError(f"{path}: not a Pascal VOC folder (expected Annotations/ and JPEGImages/ in it)")


def _split_ids(root: Path, split: str) -> list[str]:
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file}: VOC split file not found (expected one image id per line)")
    ids = [line.split()[0] for line in split_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"{split_file}: split {split!r} lists no images")
    return list(dict.fromkeys(ids))


def voc_class_names(
    path: str | os.PathLike, split: str = "train", class_names: Sequence[str] | None = None
) -> list[str]:
    """Class names of a VOC folder (see the module docstring for the order of preference)."""
    root = find_voc_root(path)
    if class_names:
        return check_class_names(class_names, "class_names")
    for name in _NAMES_FILES:
        f = root / name
        if f.is_file():
            return check_class_names(
                [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()], str(f)
            )
    found: set[str] = set()
    for img_id in _split_ids(root, split):
        xml = root / "Annotations" / f"{img_id}.xml"
        if xml.is_file():
            found.update(_NAME_RE.findall(xml.read_text(encoding="utf-8", errors="replace")))
    if not found:
        raise ValueError(f"{root}: no object names found in the {split!r} split; pass class_names or add labels.txt")
    if found <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(found)


def _find_image(root: Path, img_id: str, filename: str | None) -> Path:
    folder = root / "JPEGImages"
    if filename:
        p = folder / filename
        if p.is_file():
            return p
    for ext in IMAGE_EXTENSIONS:
        p = folder / f"{img_id}{ext}"
        if p.is_file():
            return p
    return folder / (filename or f"{img_id}.jpg")


def load_voc_split(
    path: str | os.PathLike, split: str, class_names: Sequence[str] | None = None, verify_images: bool = False
) -> DatasetSource:
    """Read one split of a VOC folder, checking every object.

    Args:
        path: VOC root (or a folder with exactly one VOC root below it).
        split: name of the ``ImageSets/Main/<split>.txt`` file.
        class_names: class names (default: see the module docstring).
        verify_images: decode every image (see :func:`~lightning_yolo.data.formats.base.keep_readable`).

    Returns:
        The split's :class:`DatasetSource`; image ids are positions in the split file.
    """
    root = find_voc_root(path)
    names = (
        voc_class_names(root, split, class_names)
        if class_names is None
        else check_class_names(class_names, "class_names")
    )
    label_of = {n: i for i, n in enumerate(names)}
    report = ScanReport(source=str(root), split=split)
    parsed: list[tuple[Path, tuple[int, list]]] = []
    for image_id, img_id in enumerate(_split_ids(root, split)):
        xml = root / "Annotations" / f"{img_id}.xml"
        if not xml.is_file():
            report.add("missing annotation xml (image skipped)", str(xml))
            continue
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as err:
            report.add("unreadable annotation xml (image skipped)", f"{xml} ({err})")
            continue
        objects = []
        for k, obj in enumerate(tree.findall("object")):
            where = f"{xml}: object {k}"
            name = (obj.findtext("name") or "").strip()
            if name not in label_of:
                report.add("unknown class name (skipped)", f"{where} ({name!r})")
                continue
            bb = obj.find("bndbox")
            try:
                xmin, ymin, xmax, ymax = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                report.add("object without a valid bndbox (skipped)", where)
                continue
            difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true", "True")
            objects.append(([xmin - 1.0, ymin - 1.0, xmax, ymax], label_of[name], difficult, where))
        parsed.append((_find_image(root, img_id, tree.findtext("filename")), (image_id, objects)))
    records: list[ImageRecord] = []
    for img_path, (image_id, objects), info in keep_readable(parsed, report, verify_images):
        boxes = np.array([o[0] for o in objects], np.float64).reshape(-1, 4)
        labels = np.array([o[1] for o in objects], np.int64)
        crowd = np.array([o[2] for o in objects], bool)
        boxes, labels, crowd = clean_boxes(
            boxes, labels, crowd, info.height, info.width, report, [o[3] for o in objects]
        )
        records.append(ImageRecord(img_path, image_id, info.height, info.width, boxes, labels, crowd, info))
    finish_report(records, report)
    return DatasetSource(records, names, report, root)


def write_voc_xml(
    xml_path: Path,
    filename: str,
    width: int,
    height: int,
    boxes_xyxy: np.ndarray,
    names: Sequence[str],
    difficult: Sequence[bool] | None = None,
) -> None:
    """Write one VOC annotation; boxes are continuous xyxy pixels (written as ``xmin = x1 + 1``, ``xmax = x2``)."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    difficult = [False] * len(b) if difficult is None else list(difficult)
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{x1 + 1:.6f}</xmin>"
        f"<ymin>{y1 + 1:.6f}</ymin><xmax>{x2:.6f}</xmax><ymax>{y2:.6f}</ymax></bndbox></object>"
        for (x1, y1, x2, y2), n, d in zip(b, names, difficult, strict=True)
    )
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    xml_path.write_text(
        f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
        f"<depth>3</depth></size>{objs}</annotation>\n",
        encoding="utf-8",
    )
