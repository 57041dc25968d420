"""YOLO txt labels with an ultralytics-style ``data.yaml``.

``data.yaml`` keys: ``path`` (dataset root; relative to the yaml's folder; default: that folder), ``train``,
``val`` and optionally ``test`` (each a folder of images, a ``.txt`` file listing images, or a list of those;
relative to ``path``; an entry starting with ``../`` that does not exist there is read without the ``../``, as
ultralytics does: Roboflow's ``train: ../train/images`` beside ``train/``), ``names`` (list, or dict
``{index: name}`` with indices ``0..C-1``), optionally ``nc``, and ``kpt_shape: [K, D]`` for pose labels.
Image folders are searched recursively, following symbolic links to folders (each real folder once, so a link
cycle ends). Labels follow the ultralytics convention: the label of ``.../images/<sub>/x.jpg`` is
``.../labels/<sub>/x.txt`` (last ``images`` path component replaced; no ``images`` component: same folder).
Each line is ``class cx cy w h`` normalised to 0..1 of the displayed image, or a polygon
``class x1 y1 x2 y2 x3 y3 ...`` (ultralytics segment labels), whose enclosing box is used. With ``kpt_shape``
(ultralytics pose labels) every line is ``class cx cy w h`` followed by ``K * D`` keypoint values: the box is read
from the first four values and the keypoints are ignored (never taken for a polygon).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

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

__all__ = [
    "read_data_yaml",
    "load_yolo_split",
    "image_to_label_path",
    "label_candidates",
    "walk_files",
    "write_yolo_labels",
    "write_data_yaml",
]

# Normalised coordinates may overshoot 0..1 by rounding in labelling tools; beyond this they are pixels.
_NORM_TOL = 0.01


def read_data_yaml(yaml_path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a ``data.yaml``.

    Returns:
        ``{"root": Path, "names": list[str], "splits": {split: spec}, "yaml": Path, "kpt_shape": (K, D) or None}``.

    Raises:
        FileNotFoundError: the yaml or its ``path`` folder is missing.
        ValueError: invalid YAML, a missing ``train`` / ``val`` / ``names`` key, bad ``names`` or ``nc``.
    """
    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        raise FileNotFoundError(f"{yaml_path}: data.yaml not found")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as err:
        raise ValueError(f"{yaml_path}: not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{yaml_path}: not a text file (UTF-8 expected): {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{yaml_path}: expected a mapping with keys path/train/val/names, got {type(data).__name__}")
    for key in ("train", "val", "names"):
        if key not in data or data[key] in (None, "", []):
            raise ValueError(f"{yaml_path}: missing key {key!r} (expected train, val and names; test is optional)")
    names = data["names"]
    if isinstance(names, dict):
        try:
            by_index = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError) as err:
            raise ValueError(f"{yaml_path}: names keys must be integers 0..C-1, got {list(names)}") from err
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(
                f"{yaml_path}: names keys must be 0..{len(by_index) - 1} without gaps, got {sorted(by_index)}"
            )
        names = [by_index[i] for i in range(len(by_index))]
    elif not isinstance(names, (list, tuple)):
        raise ValueError(f"{yaml_path}: names must be a list or a dict {{index: name}}, got {names!r}")
    names = check_class_names(names, f"{yaml_path}: names")
    if "nc" in data and data["nc"] is not None and int(data["nc"]) != len(names):
        raise ValueError(f"{yaml_path}: nc={data['nc']} but names has {len(names)} entries")
    root = data.get("path")
    root = yaml_path.parent if root in (None, "") else Path(os.path.expanduser(str(root)))
    if not root.is_absolute():
        root = (yaml_path.parent / root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{yaml_path}: path {data.get('path')!r} resolves to {root}, which is not a folder")
    splits = {k: data[k] for k in ("train", "val", "test") if data.get(k) not in (None, "", [])}
    return {"root": root, "names": names, "splits": splits, "yaml": yaml_path, "kpt_shape": _kpt_shape(data, yaml_path)}


def _kpt_shape(data: dict[str, Any], yaml_path: Path) -> tuple[int, int] | None:
    """``kpt_shape: [K, D]`` of an ultralytics pose dataset (``K`` keypoints of ``D`` = 2 (x, y) or 3 (x, y,
    visibility) values each), or ``None``."""
    value = data.get("kpt_shape")
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(type(v) is int for v in value)
    if not ok or value[0] < 1 or value[1] not in (2, 3):
        raise ValueError(f"{yaml_path}: kpt_shape must be [K, D] with K >= 1 keypoints and D 2 or 3, got {value!r}")
    return int(value[0]), int(value[1])


def image_to_label_path(image_path: Path, root: Path | None = None) -> Path:
    """``.../images/a/b.jpg`` -> ``.../labels/a/b.txt``: the last ``images`` folder replaced by ``labels``
    (ultralytics' rule); no ``images`` folder: the ``.txt`` next to the image.

    Args:
        image_path: the image file.
        root: the dataset root; when the image lies inside it, only ``images`` folders below the root count, so a
            flat dataset stored under some ``.../images/...`` parent folder keeps its labels next to the images.
    """
    parts = list(image_path.parts)
    first = 0
    if root is not None:
        root_parts = Path(root).parts
        if tuple(parts[: len(root_parts)]) == tuple(root_parts):
            first = len(root_parts)
    for i in range(len(parts) - 2, first - 1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image_path.with_suffix(".txt")


def label_candidates(image_path: Path, root: Path | None = None) -> list[Path]:
    """Where the label of an image is looked for, in order: :func:`image_to_label_path`, then the ``.txt`` beside
    the image (a flat dataset)."""
    first = image_to_label_path(image_path, root)
    beside = image_path.with_suffix(".txt")
    return [first] if first == beside else [first, beside]


def walk_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files under ``folder`` (recursively) whose lower-case suffix is in ``suffixes``, sorted.

    Symbolic links to folders are followed (``Path.rglob`` does not enter them before Python 3.13, so a linked
    sub-folder of images would be left out without a word); each real folder is entered once, so a link cycle or
    two links to one folder neither loop nor read an image twice. Paths keep the linked names (the label of
    ``images/b/x.jpg`` stays ``labels/b/x.txt``).
    """
    seen: set[tuple[int, int]] = set()
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []  # a folder already read (a cycle, or a second link to it)
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        out += [Path(dirpath) / f for f in filenames if Path(f).suffix.lower() in suffixes]
    return sorted(p for p in out if p.is_file())


def _images_in(folder: Path) -> list[Path]:
    return walk_files(folder, IMAGE_EXTENSIONS)


def _resolve_split(spec: Any, root: Path, yaml_path: Path, split: str) -> tuple[list[Path], list[Path]]:
    """Image paths of a split spec and the folders among its items (for the orphan-label check)."""
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    images: list[Path] = []
    folders: list[Path] = []
    for item in items:
        p = Path(os.path.expanduser(str(item)))
        p = p if p.is_absolute() else root / p
        if not p.exists() and str(item).startswith("../") and (root / str(item)[3:]).exists():
            # ultralytics' rule for Roboflow's data.yaml (``train: ../train/images`` in the folder holding train/)
            p = root / str(item)[3:]
        if p.is_dir():
            folders.append(p)
            images += _images_in(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text(encoding="utf-8-sig").splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                q = Path(line)
                if not q.is_absolute():
                    # ultralytics: "./x" is relative to the list file; other relative paths: the root, else the
                    # list file's folder
                    if line.startswith("./") or (not (root / q).exists() and (p.parent / q).exists()):
                        q = p.parent / q
                    else:
                        q = root / q
                images.append(q)
        elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(p)
        else:
            raise FileNotFoundError(
                f"{yaml_path}: {split}: {item!r} resolves to {p}, which does not exist "
                f"(expected a folder of images, a .txt list of images, or a list of those)"
            )
    if not images:
        raise ValueError(
            f"{yaml_path}: split {split!r} ({spec!r}) contains no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    # keep order, drop repeats (a file listed twice would be counted twice in evaluation)
    return list(dict.fromkeys(images)), folders


def _check_orphan_labels(folders: Sequence[Path], images: Sequence[Path], yaml_path: Path, root: Path) -> None:
    """A label file whose image is missing means images and labels are out of step: raise."""
    image_keys = {p.with_suffix("") for p in images}
    for folder in folders:
        label_dir = image_to_label_path(folder / "x.jpg", root).parent
        if label_dir == folder or not label_dir.is_dir():
            continue
        for txt in walk_files(label_dir, (".txt",)):
            if txt.name == "classes.txt":  # written by labelImg next to the labels
                continue
            rel = txt.relative_to(label_dir).with_suffix("")
            if (folder / rel) not in image_keys:
                raise FileNotFoundError(
                    f"{txt}: label file has no image (expected {folder / rel} with an image extension such as "
                    f".jpg or .png; split folder from {yaml_path})"
                )


def _parse_label_file(
    label_path: Path,
    num_classes: int,
    width: int,
    height: int,
    report: ScanReport,
    kpt_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Parse one label file to pixel xyxy boxes; ``None`` when the file itself is unreadable.

    With ``kpt_shape = (K, D)`` (pose labels) a line must have ``5 + K * D`` values; the box is its values 1..4."""
    try:
        text = label_path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark would hide the first box
    except UnicodeDecodeError:
        report.add("unreadable label file (image skipped)", str(label_path))
        return None
    boxes, labels, where = [], [], []
    for line_no, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        loc = f"{label_path}:{line_no}"
        cols = line.split()
        if kpt_shape is not None:
            pose_cols = 5 + kpt_shape[0] * kpt_shape[1]
            if len(cols) != pose_cols:
                report.add(
                    f"malformed pose label line (kpt_shape {list(kpt_shape)}: expected {pose_cols} values; skipped)",
                    loc,
                )
                continue
            cols = cols[:5]  # the keypoints are not used by a detector
            report.add("pose label: box read, keypoints ignored", loc)
        elif not (len(cols) == 5 or (len(cols) >= 7 and len(cols) % 2 == 1)):
            report.add("malformed label line (expected 'class cx cy w h' or a polygon; skipped)", loc)
            continue
        try:
            values = np.array([float(c) for c in cols], dtype=np.float64)
        except ValueError:
            report.add("malformed label line (expected 'class cx cy w h' or a polygon; skipped)", loc)
            continue
        if not np.isfinite(values).all():
            report.add("degenerate box (non-finite, inverted, outside the image or under 1 px; skipped)", loc)
            continue
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < num_classes:
            report.add(f"class id out of range 0..{num_classes - 1} (skipped)", f"{loc} (class {cols[0]})")
            continue
        coords = values[1:]
        if (coords < -_NORM_TOL).any() or (coords > 1 + _NORM_TOL).any():
            report.add("coordinates not normalised to 0..1 (skipped)", loc)
            continue
        if len(coords) == 4:
            cx, cy, w, h = coords
            xyxy = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
        else:
            pts = coords.reshape(-1, 2)
            xyxy = [
                pts[:, 0].min() * width,
                pts[:, 1].min() * height,
                pts[:, 0].max() * width,
                pts[:, 1].max() * height,
            ]
            report.add("polygon label converted to its enclosing box", loc)
        boxes.append(xyxy)
        labels.append(int(cls))
        where.append(loc)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels, np.int64), where


def load_yolo_split(yaml_path: str | os.PathLike, split: str, verify_images: bool = False) -> DatasetSource:
    """Read one split of a YOLO-txt dataset, checking every label.

    Args:
        yaml_path: the ``data.yaml``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        verify_images: decode every image (see :func:`~lightning_yolo.data.formats.base.keep_readable`).

    Returns:
        The split's :class:`DatasetSource` (image ids are positions in the sorted image list).

    Raises:
        FileNotFoundError / ValueError: structural problems (see :func:`read_data_yaml`, missing split folder,
            no images, a label file without its image).
    """
    meta = read_data_yaml(yaml_path)
    yaml_path, root, names = meta["yaml"], meta["root"], meta["names"]
    if split not in meta["splits"]:
        raise ValueError(f"{yaml_path}: no {split!r} split (keys present: {sorted(meta['splits'])})")
    images, folders = _resolve_split(meta["splits"][split], root, yaml_path, split)
    _check_orphan_labels(folders, images, yaml_path, root)
    report = ScanReport(source=str(yaml_path), split=split)
    records: list[ImageRecord] = []
    num_label_files = 0
    for image_id, (path, _, info) in enumerate(keep_readable([(p, None) for p in images], report, verify_images)):
        label_path = next((c for c in label_candidates(path, root) if c.is_file()), None)
        boxes = np.zeros((0, 4))
        labels = np.zeros(0, np.int64)
        where: list[str] = []
        if label_path is not None:
            num_label_files += 1
            parsed = _parse_label_file(label_path, len(names), info.width, info.height, report, meta["kpt_shape"])
            if parsed is None:
                continue
            boxes, labels, where = parsed
        crowd = np.zeros(len(labels), bool)
        boxes, labels, crowd = clean_boxes(boxes, labels, crowd, info.height, info.width, report, where)
        records.append(ImageRecord(path, image_id, info.height, info.width, boxes, labels, crowd, info))
    if records and num_label_files == 0:
        # Not one label file: a misnamed labels/ folder, not a split of background images. Training on it would
        # silently learn "nothing is ever there".
        example = records[0].path
        raise FileNotFoundError(
            f"{yaml_path}: split {split!r} has {len(records)} images but no label file for any of them; for "
            f"{example} the label was looked for at {' and '.join(str(c) for c in label_candidates(example, root))} "
            "(labels go in a 'labels' folder beside 'images' with the same sub-folders, or next to the images, one "
            ".txt per image; an image without objects may have an empty .txt)"
        )
    finish_report(records, report)
    return DatasetSource(records, names, report, root)


def write_yolo_labels(label_path: Path, boxes_xyxy: np.ndarray, labels: np.ndarray, width: int, height: int) -> None:
    """Write ``class cx cy w h`` lines normalised to the image size (7 decimals: < 1e-3 px at 10k px)."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    cxcywh = np.stack(
        [(b[:, 0] + b[:, 2]) / 2 / width, (b[:, 1] + b[:, 3]) / 2 / height, (b[:, 2] - b[:, 0]) / width,
         (b[:, 3] - b[:, 1]) / height], 1
    )  # fmt: skip
    label_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{int(c)} {x:.7f} {y:.7f} {w:.7f} {h:.7f}" for c, (x, y, w, h) in zip(labels, cxcywh, strict=True)]
    label_path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def write_data_yaml(
    yaml_path: Path, names: Sequence[str], train: str = "images/train", val: str = "images/val", test: str | None = None
) -> None:
    """Write a ``data.yaml`` whose ``path`` is its own folder."""
    data: dict[str, Any] = {"path": ".", "train": train, "val": val}
    if test is not None:
        data["test"] = test
    data["nc"] = len(names)
    data["names"] = {i: n for i, n in enumerate(names)}
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
