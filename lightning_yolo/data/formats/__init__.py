"""Dataset readers: COCO json, YOLO txt + data.yaml, Pascal VOC xml -> one sample type.

:func:`resolve_dataset` finds out what a path is (``format="auto"``), :func:`read_class_names` reads only the
class names (cheap, for the CLI at instantiation) and :func:`load_split` scans one split.

Auto-detection of a path:

* ``*.yaml`` / ``*.yml`` file: YOLO ``data.yaml`` (also Roboflow's, ``train: ../train/images``).
* ``*.json`` file: COCO, the training json. The val and test jsons are found beside it: in a Roboflow COCO export
  (``<root>/train/_annotations.coco.json``) the json of ``<root>/valid/`` (or ``val/``) and ``<root>/test/``; in
  a COCO layout (``instances_train2017.json``) the same name with ``val`` / ``test`` for ``train``. A split without
  its own json reads the training json (``YOLODataModule`` says so in one line; ``val_json`` / ``test_json``
  name them).
* folder with ``data.yaml`` (or ``dataset.yaml``, or a single ``*.yaml``): YOLO;
  folder with ``annotations/*.json``: COCO (``*train*``, ``*val*``, ``*test*`` jsons, ``instances_*`` first; a
  single json with no split in its name, such as CVAT's ``instances_default.json``, serves every split; several
  such jsons are an error naming them); folder with ``train/``, ``valid/`` (or ``val/``), ``test/`` each holding
  ``_annotations.coco.json`` (or one ``*.json``): COCO, a Roboflow export; a split folder of that export: its json
  as above; folder with ``Annotations/`` and ``JPEGImages/``: VOC. The first match wins in that order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .base import (
    DatasetSource,
    DatasetWarning,
    DetectionDataset,
    ImageRecord,
    ScanReport,
    check_class_names,
)
from .coco import coco_class_names, load_coco_split, write_coco_json
from .voc import VOC_CLASSES, find_voc_root, load_voc_split, voc_class_names, write_voc_xml
from .yolo import image_to_label_path, load_yolo_split, read_data_yaml, write_data_yaml, write_yolo_labels

__all__ = [
    "FORMATS",
    "DatasetLocation",
    "resolve_dataset",
    "read_class_names",
    "load_split",
    "DatasetSource",
    "DatasetWarning",
    "DetectionDataset",
    "ImageRecord",
    "ScanReport",
    "VOC_CLASSES",
    "load_coco_split",
    "load_yolo_split",
    "load_voc_split",
    "write_coco_json",
    "write_yolo_labels",
    "write_data_yaml",
    "write_voc_xml",
    "image_to_label_path",
]

FORMATS: tuple[str, ...] = ("auto", "coco", "yolo", "voc")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class DatasetLocation:
    """A resolved dataset path.

    Attributes:
        format: ``"coco"``, ``"yolo"`` or ``"voc"``.
        path: the data.yaml (yolo), the VOC root (voc), or the folder / json given (coco).
        coco_jsons: split -> json file (coco only).
    """

    format: str
    path: Path
    coco_jsons: dict[str, Path] = field(default_factory=dict)

    def splits(self) -> list[str]:
        """Splits this dataset defines (``train`` / ``val`` / ``test``)."""
        if self.format == "yolo":
            return [s for s in SPLITS if s in read_data_yaml(self.path)["splits"]]
        if self.format == "coco":
            return [s for s in SPLITS if s in self.coco_jsons]
        main = self.path / "ImageSets" / "Main"
        return [s for s in SPLITS if (main / f"{s}.txt").is_file()]


#: Folder names of each split in exported datasets (Roboflow writes ``valid``).
SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}
#: The json Roboflow's COCO export writes into each split folder.
ROBOFLOW_COCO_JSON = "_annotations.coco.json"


def _split_folder_json(folder: Path) -> Path | None:
    """The COCO json of one split folder of an export: ``_annotations.coco.json``, else the folder's only json."""
    if not folder.is_dir():
        return None
    if (folder / ROBOFLOW_COCO_JSON).is_file():
        return folder / ROBOFLOW_COCO_JSON
    jsons = sorted(folder.glob("*.json"))
    return jsons[0] if len(jsons) == 1 else None


def _export_jsons(root: Path) -> dict[str, Path]:
    """Split -> json of a Roboflow-style export: ``root/train/``, ``root/valid/`` (or ``val/``), ``root/test/``."""
    out: dict[str, Path] = {}
    for split, names in SPLIT_FOLDERS.items():
        found = next((j for j in (_split_folder_json(root / n) for n in names) if j is not None), None)
        if found is not None:
            out[split] = found
    return out


def _coco_jsons(folder: Path) -> dict[str, Path]:
    jsons = sorted((folder / "annotations").glob("*.json")) if (folder / "annotations").is_dir() else []
    out: dict[str, Path] = {}
    for split in SPLITS:
        hits = [j for j in jsons if split in j.stem.lower()]
        # instances_* before captions_* / person_keypoints_*; then the shortest name
        hits.sort(key=lambda j: (not j.stem.startswith("instances"), len(j.name)))
        if hits:
            out[split] = hits[0]
    if not out and len(jsons) == 1:
        # one json not named for a split (CVAT: annotations/instances_default.json beside images/): every split
        return {s: jsons[0] for s in SPLITS}
    if not out and len(jsons) > 1:
        raise FileNotFoundError(
            f"{folder / 'annotations'}: {len(jsons)} COCO jsons and none named for a split (train / val / test): "
            f"{', '.join(j.name for j in jsons)}; give the training json as the path (and --data.val_json)"
        )
    if not out and "train" in _export_jsons(folder):
        return _export_jsons(folder)
    return out


def coco_split_jsons(json_path: Path) -> dict[str, Path]:
    """Split -> json for a COCO json given as the dataset path: the json trains; val and test jsons beside it (see
    the module docstring) or, where there is none, the same json."""
    out = {s: json_path for s in SPLITS}
    folder = json_path.parent
    if any(folder.name.lower() in names for names in SPLIT_FOLDERS.values()):  # Roboflow: root/train/x.json
        for split, names in SPLIT_FOLDERS.items():
            if split == "train":
                continue
            for name in names:
                sibling = folder.parent / name
                if sibling == folder:
                    continue
                found = sibling / json_path.name if (sibling / json_path.name).is_file() else None
                found = found or _split_folder_json(sibling)
                if found is not None:
                    out[split] = found
                    break
    elif "train" in json_path.stem.lower():  # instances_train2017.json -> instances_val2017.json
        for split in ("val", "test"):
            sibling = folder / (json_path.stem.lower().replace("train", split) + json_path.suffix)
            match = next((j for j in sorted(folder.glob("*.json")) if j.name.lower() == sibling.name), None)
            if match is not None:
                out[split] = match
    return out


def _looks_like_data_yaml(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "train" in data and "names" in data


def resolve_dataset(path: str | os.PathLike, format: str = "auto") -> DatasetLocation:
    """Work out the format and the files of a dataset path.

    Args:
        path: a data.yaml, a COCO json, or a folder (see the module docstring).
        format: ``"auto"``, ``"coco"``, ``"yolo"`` or ``"voc"``.

    Raises:
        FileNotFoundError: the path does not exist or holds no recognisable dataset.
        ValueError: unknown ``format``, or a ``format`` that does not fit the path.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise FileNotFoundError(f"{p}: dataset path does not exist (expected a data.yaml, a COCO json or a folder)")
    if p.is_file():
        suffix = p.suffix.lower()
        fmt = {".yaml": "yolo", ".yml": "yolo", ".json": "coco"}.get(suffix)
        if fmt is None or format not in ("auto", fmt):
            raise ValueError(f"{p}: a {suffix} file cannot be read as format={format!r} (yaml: yolo, json: coco)")
        if fmt == "coco":
            return DatasetLocation("coco", p, coco_split_jsons(p))
        return DatasetLocation("yolo", p)
    # folder
    if format in ("auto", "yolo"):
        yamls = [p / n for n in ("data.yaml", "dataset.yaml", "data.yml") if (p / n).is_file()]
        yamls = yamls or [y for y in sorted(p.glob("*.y*ml")) if _looks_like_data_yaml(y)]
        if yamls:
            return DatasetLocation("yolo", yamls[0])
        if format == "yolo":
            raise FileNotFoundError(f"{p}: no data.yaml in this folder (format='yolo')")
    if format in ("auto", "coco"):
        jsons = _coco_jsons(p)
        if jsons:
            return DatasetLocation("coco", p, jsons)
        own = _split_folder_json(p) if any(p.name.lower() in n for n in SPLIT_FOLDERS.values()) else None
        if own is not None:  # a split folder of a Roboflow export (train/ with _annotations.coco.json)
            return DatasetLocation("coco", own, coco_split_jsons(own))
        if format == "coco":
            raise FileNotFoundError(
                f"{p}: no annotations/*.json, nor train/ valid/ test/ folders with {ROBOFLOW_COCO_JSON} "
                "(format='coco')"
            )
    if format in ("auto", "voc"):
        try:
            return DatasetLocation("voc", find_voc_root(p))
        except FileNotFoundError:
            if format == "voc":
                raise
    raise FileNotFoundError(
        f"{p}: no dataset recognised (expected data.yaml for YOLO, annotations/*.json or train/ + valid/ folders "
        f"with {ROBOFLOW_COCO_JSON} for COCO, or Annotations/ + JPEGImages/ for VOC)"
    )


def read_class_names(location: DatasetLocation, class_names: Sequence[str] | None = None) -> list[str]:
    """Class names without scanning images (the smallest COCO json is parsed; VOC may read its xml files)."""
    if location.format == "yolo":
        names = read_data_yaml(location.path)["names"]
    elif location.format == "coco":
        jsons = sorted(set(location.coco_jsons.values()), key=lambda j: j.stat().st_size)
        names = coco_class_names(jsons[0])
    else:
        names = voc_class_names(
            location.path, "train" if "train" in location.splits() else location.splits()[0], class_names
        )
    if class_names is not None and location.format != "voc" and list(class_names) != names:
        raise ValueError(f"{location.path}: class_names {list(class_names)} differ from the dataset's {names}")
    return names


def load_split(
    location: DatasetLocation, split: str, class_names: Sequence[str] | None = None, verify_images: bool = False
) -> DatasetSource:
    """Scan one split.

    Args:
        location: from :func:`resolve_dataset`.
        split: ``"train"``, ``"val"`` or ``"test"``.
        class_names: names the split must have (COCO: checked; VOC: used to map names to labels).
        verify_images: decode every image at the scan (slow: a full decode per image; counts damaged JPEG data
            that still decodes, which the header probe cannot see).

    Raises:
        ValueError: the split is not defined; structural errors of the readers.
    """
    if location.format == "yolo":
        src = load_yolo_split(location.path, split, verify_images)
    elif location.format == "coco":
        if split not in location.coco_jsons:
            raise ValueError(f"{location.path}: no json for split {split!r} (found {location.coco_jsons})")
        src = load_coco_split(location.coco_jsons[split], split, class_names=class_names, verify_images=verify_images)
    else:
        src = load_voc_split(location.path, split, class_names, verify_images)
    if class_names is not None and src.class_names != list(class_names):
        raise ValueError(f"{location.path} [{split}]: class names {src.class_names} differ from {list(class_names)}")
    if not src.records:
        reasons = "\n".join(src.report.summary().splitlines()[1:]) or "  (no problem counted)"
        raise ValueError(
            f"{src.report.source} [{split}]: the split has no usable images; the scan skipped them all:\n{reasons}"
        )
    return src


def set_split_json(location: DatasetLocation, split: str, json_path: str | os.PathLike) -> None:
    """Use ``json_path`` for ``split`` of a COCO dataset (``YOLODataModule(val_json=..., test_json=...)``).

    Raises:
        ValueError: the dataset is not COCO, or the file is not a ``.json``. FileNotFoundError: it does not exist.
    """
    p = Path(os.path.expanduser(str(json_path)))
    key = f"{split}_json"
    if location.format != "coco":
        raise ValueError(f"{key} {str(p)!r}: only for COCO datasets; {location.path} is a {location.format} dataset")
    if not p.is_file():
        raise FileNotFoundError(f"{key} {str(p)!r}: file not found")
    if p.suffix.lower() != ".json":
        raise ValueError(f"{key} {str(p)!r}: expected a COCO .json file")
    location.coco_jsons[split] = p


__all__ += ["check_class_names", "SPLITS", "SPLIT_FOLDERS", "coco_split_jsons", "set_split_json"]
