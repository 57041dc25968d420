"""What every format reader produces: image records, a scan report, and the dataset that loads them.

A reader (``coco.py``, ``yolo.py``, ``voc.py``) turns one split of a dataset on disk into a
:class:`DatasetSource`: a list of :class:`ImageRecord` (file, displayed size, boxes in displayed-image pixels,
contiguous labels, crowd flags) plus the class names and a :class:`ScanReport`. Structural problems raise at
once; per-image and per-box problems are skipped and counted (see ``docs/datasets.md``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..image_io import FILL_VALUE, ImageInfo, load_resized, probe_image
from ..sample import RawSample, Sample, raw_to_sample

__all__ = [
    "DatasetWarning",
    "ImageRecord",
    "ScanReport",
    "DatasetSource",
    "DetectionDataset",
    "check_class_names",
    "clean_boxes",
    "probe_images",
    "MIN_BOX_SIZE",
]

#: Boxes narrower or lower than this (pixels of the original image, after clipping) are degenerate.
MIN_BOX_SIZE = 1.0
#: How many example locations a report keeps per problem.
MAX_EXAMPLES = 5


class DatasetWarning(UserWarning):
    """Raised (as a warning) when a dataset scan skipped or changed something."""


@dataclass
class ImageRecord:
    """One image of a split and its annotations.

    Attributes:
        path: image file.
        image_id: integer id (COCO id; running index for YOLO and VOC).
        height: displayed height in pixels.
        width: displayed width in pixels.
        boxes: ``[N, 4]`` float32 xyxy in displayed-image pixels, clipped to the image.
        labels: ``[N]`` int64 in ``0..C-1``.
        iscrowd: ``[N]`` bool: COCO ``iscrowd`` / VOC ``difficult``; kept out of training, passed to evaluation.
        info: the header probe (decides the decode path).
    """

    path: Path
    image_id: int
    height: int
    width: int
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    info: ImageInfo | None = None


@dataclass
class ScanReport:
    """Counts of what a scan skipped or changed, with the first few places for each.

    Attributes:
        source: what was scanned (file or folder), for messages.
        split: ``"train"``, ``"val"`` or ``"test"``.
        counts: problem -> number of occurrences (boxes, lines or images, as the key says).
        examples: problem -> first few locations (``file`` or ``file:line``).
        num_images: images kept.
        num_boxes: boxes kept (crowd included).
        num_background: kept images without any box.
    """

    source: str
    split: str
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    num_images: int = 0
    num_boxes: int = 0
    num_background: int = 0

    def add(self, problem: str, where: str | Iterable[str], count: int = 1) -> None:
        """Count ``count`` occurrences of ``problem`` found at ``where`` (one place or several)."""
        if count <= 0:
            return
        self.counts[problem] = self.counts.get(problem, 0) + count
        ex = self.examples.setdefault(problem, [])
        places = [where] if isinstance(where, str) else list(where)
        for w in places:
            if len(ex) >= MAX_EXAMPLES:
                break
            if w not in ex:
                ex.append(w)

    def summary(self) -> str:
        """One line per problem: ``count problem (e.g. a.txt:3, b.txt:1)``."""
        lines = [
            f"  {n} x {problem} (e.g. {', '.join(self.examples.get(problem, []))})"
            for problem, n in sorted(self.counts.items())
        ]
        head = (
            f"{self.source} [{self.split}]: {self.num_images} images, {self.num_boxes} boxes, "
            f"{self.num_background} without boxes"
        )
        return "\n".join([head, *lines])

    def warn(self) -> None:
        """Issue one :class:`DatasetWarning` listing every problem (nothing when the scan was clean)."""
        if self.counts:
            warnings.warn(f"dataset scan: {self.summary()}", DatasetWarning, stacklevel=3)


@dataclass
class DatasetSource:
    """One split of a dataset: its records, the class names, the scan report and where it came from."""

    records: list[ImageRecord]
    class_names: list[str]
    report: ScanReport
    root: Path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_class_names(names: Sequence[str], where: str) -> list[str]:
    """Validate class names: non-empty, strings, unique.

    Raises:
        ValueError: naming ``where`` and the offending value.
    """
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f"{where}: no class names given (expected at least one)")
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if not n.strip():
            raise ValueError(f"{where}: class {i} has an empty name")
        if n in seen:
            raise ValueError(
                f"{where}: class name {n!r} appears twice (classes {seen[n]} and {i}); names must be unique"
            )
        seen[n] = i
    return names


def clean_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray,
    height: int,
    width: int,
    report: ScanReport,
    where: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip boxes to the image, drop degenerate and duplicate ones, counting each in ``report``.

    Args:
        boxes: ``[N, 4]`` xyxy pixels (may be non-finite, inverted or outside).
        labels: ``[N]`` int64 (already range-checked).
        iscrowd: ``[N]`` bool.
        height: image height.
        width: image width.
        report: receives ``"box clipped to image"``, ``"degenerate box"`` and ``"duplicate box"`` counts.
        where: ``[N]`` location strings for the report.

    Returns:
        ``(boxes, labels, iscrowd)`` filtered, boxes float32 clipped.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    where = list(where)
    finite = np.isfinite(boxes).all(1)
    safe = np.where(finite[:, None], boxes, 0.0)
    clipped = np.empty_like(safe)
    clipped[:, 0::2] = safe[:, 0::2].clip(0, width)
    clipped[:, 1::2] = safe[:, 1::2].clip(0, height)
    size_ok = ((clipped[:, 2] - clipped[:, 0]) >= MIN_BOX_SIZE) & ((clipped[:, 3] - clipped[:, 1]) >= MIN_BOX_SIZE)
    keep = finite & size_ok
    changed = keep & (np.abs(clipped - safe) > 1e-2).any(1)  # ignore rounding of normalised coordinates
    report.add(
        "box partly outside the image (clipped)", [where[i] for i in np.flatnonzero(changed)], int(changed.sum())
    )
    bad = ~keep
    report.add(
        "degenerate box (non-finite, inverted, outside the image or under 1 px; skipped)",
        [where[i] for i in np.flatnonzero(bad)],
        int(bad.sum()),
    )
    clipped, labels, iscrowd = clipped[keep], np.asarray(labels)[keep], np.asarray(iscrowd)[keep]
    kept_where = [where[i] for i in np.flatnonzero(keep)]
    if len(clipped) > 1:
        # Exact duplicates (same class, same box) are a labelling accident; ultralytics drops them too.
        rows = np.concatenate([clipped.round(3), labels[:, None].astype(np.float64)], 1)
        _, first = np.unique(rows, axis=0, return_index=True)
        if len(first) < len(rows):
            dup = np.ones(len(rows), bool)
            dup[first] = False
            report.add("duplicate box (skipped)", [kept_where[i] for i in np.flatnonzero(dup)], int(dup.sum()))
            order = np.sort(first)
            clipped, labels, iscrowd = clipped[order], labels[order], iscrowd[order]
    return clipped.astype(np.float32), labels.astype(np.int64), iscrowd.astype(bool)


def probe_images(
    paths: Sequence[Path], num_threads: int | None = None, verify: bool = False
) -> list[ImageInfo | Exception]:
    """Probe many image headers in threads (file I/O releases the GIL).

    Args:
        paths: image files.
        num_threads: threads (default: up to 16).
        verify: also decode every image fully (:func:`verify_decode`); a :class:`CorruptImageData` result means
            "damaged data that still decodes".

    Returns:
        One :class:`ImageInfo` per path, or the exception raised for it.
    """

    def one(p: Path) -> ImageInfo | Exception:
        try:
            info = probe_image(p)
            if verify:
                verify_decode(p)
            return info
        except (FileNotFoundError, ValueError) as err:
            return err

    if len(paths) < 64:
        return [one(p) for p in paths]
    workers = num_threads or min(16, (os.cpu_count() or 2) * 4)
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths, chunksize=64))


class CorruptImageData(ValueError):
    """The image decodes, but its compressed data is damaged (libjpeg: "Corrupt JPEG data")."""

    def __init__(self, message: str, info: ImageInfo | None = None) -> None:
        super().__init__(message)
        self.info = info


def verify_decode(path: Path) -> None:
    """Decode ``path`` fully with PIL (a full decode, far slower than the header probe): what the probe cannot see.

    Raises:
        CorruptImageData: damaged compressed data that OpenCV still decodes (the image is usable, with artefacts).
        ValueError: the pixels cannot be decoded at all.
    """
    import cv2

    from ..image_io import open_image

    try:
        with open_image(path) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as err:
        decoded = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ValueError(f"{path}: pixels cannot be decoded ({type(err).__name__}: {err})") from err
        raise CorruptImageData(f"{path}: damaged image data ({err}); decodes with artefacts") from err


def keep_readable(
    candidates: Sequence[tuple[Path, object]], report: ScanReport, verify: bool = False
) -> list[tuple[Path, object, ImageInfo]]:
    """Probe the images of ``(path, payload)`` pairs; drop and count missing or unreadable ones.

    With ``verify`` every image is also decoded (:func:`verify_decode`): undecodable ones are skipped, damaged ones
    that still decode are kept and counted (``damaged image data (decodes with artefacts; kept)``).
    """
    paths = [p for p, _ in candidates]
    infos = probe_images(paths, verify=verify)
    damaged = [i for i, info in enumerate(infos) if isinstance(info, CorruptImageData)]
    if damaged:
        reprobed = probe_images([paths[i] for i in damaged])  # the header info of the damaged-but-usable ones
        for i, info in zip(damaged, reprobed, strict=True):
            report.add("damaged image data (decodes with artefacts; kept)", str(paths[i]))
            infos[i] = info
    out = []
    for (path, payload), info in zip(candidates, infos, strict=True):
        if isinstance(info, FileNotFoundError):
            report.add("missing image file (skipped)", str(path))
        elif isinstance(info, Exception):
            report.add("unreadable image (skipped)", str(path))
        else:
            out.append((path, payload, info))
    return out


def finish_report(records: list[ImageRecord], report: ScanReport) -> None:
    """Fill the totals of ``report`` and warn about its problems."""
    report.num_images = len(records)
    report.num_boxes = int(sum(len(r.labels) for r in records))
    report.num_background = int(sum(len(r.labels) == 0 for r in records))
    report.warn()


class DetectionDataset(Dataset):
    """Images and annotations of one split, read from a :class:`DatasetSource`.

    ``dataset[i]`` gives the public sample at original resolution (the form every reader returns);
    :meth:`load_raw` gives the pipeline's working form, decoded and resized once to ``load_size`` (long side),
    optionally from a RAM cache.

    Args:
        source: records, class names and scan report of the split.
        load_size: long side that :meth:`load_raw` resizes to (the network input size); ``None`` = original.
        drop_crowd: leave crowd / difficult boxes out of :meth:`load_raw` (training).
    """

    def __init__(self, source: DatasetSource, load_size: int | None = None, drop_crowd: bool = False) -> None:
        self.source = source
        self.records = source.records
        self.class_names = list(source.class_names)
        self.load_size = load_size
        self.drop_crowd = drop_crowd
        self._cache: list[np.ndarray | None] | None = None
        self._cache_ratio: list[float] | None = None
        self._fully_cached = False
        #: files that failed to decode in this process: path -> reason (see :meth:`load_raw`)
        self.load_failures: dict[str, str] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_cached(self) -> bool:
        """True when every image is in the RAM cache (:meth:`fill_cache`)."""
        return self._fully_cached

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        """Public sample at original resolution, crowd boxes included (flagged)."""
        rec = self.records[index]
        img, _ = load_resized(rec.path, rec.info, None)
        self._check_size(rec, img)
        raw = RawSample(img, rec.boxes, rec.labels, rec.iscrowd, rec.image_id, (rec.height, rec.width))
        return raw_to_sample(raw, sanitize=False)

    @staticmethod
    def _check_size(rec: ImageRecord, img: np.ndarray) -> None:
        if img.shape[0] != rec.height or img.shape[1] != rec.width:
            raise ValueError(
                f"{rec.path}: decoded size {img.shape[1]}x{img.shape[0]} differs from the scanned size "
                f"{rec.width}x{rec.height} (file changed after the scan?)"
            )

    def load_image(self, index: int) -> tuple[np.ndarray, float]:
        """Decoded image resized to ``load_size`` (from the cache when filled) and its scale ratio."""
        if self._cache is not None:
            img = self._cache[index]
            if img is not None:
                return img, self._cache_ratio[index]
        rec = self.records[index]
        img, ratio = load_resized(rec.path, rec.info, self.load_size)
        expected = (max(1, round(rec.height * ratio)), max(1, round(rec.width * ratio)))
        if img.shape[:2] != expected:
            raise ValueError(
                f"{rec.path}: decoded image is {img.shape[1]}x{img.shape[0]}, expected {expected[1]}x{expected[0]} "
                f"from the scanned size {rec.width}x{rec.height} (file changed after the scan?)"
            )
        return img, ratio

    def _load_image_or_blank(self, index: int) -> tuple[np.ndarray, float, bool]:
        """:meth:`load_image`, or a blank (padding-grey) image of the scanned size when the file fails to decode.

        A file can pass the header scan and still fail to decode (damaged data, changed after the scan): one bad
        image must not end a run after hours. It is warned about once per file and process (naming it), counted in
        :attr:`load_failures`, and stands in as a blank image without boxes.

        Returns:
            ``(image, ratio, ok)``.
        """
        try:
            img, ratio = self.load_image(index)
            return img, ratio, True
        except (ValueError, OSError) as err:
            rec = self.records[index]
            if str(rec.path) not in self.load_failures:
                self.load_failures[str(rec.path)] = str(err)
                warnings.warn(
                    f"{rec.path}: cannot be decoded ({err}); used as a blank image without boxes "
                    f"({len(self.load_failures)} such file(s) in this process so far); replace or remove the file",
                    DatasetWarning,
                    stacklevel=2,
                )
            ratio = 1.0 if self.load_size is None else self.load_size / max(rec.height, rec.width)
            shape = (max(1, round(rec.height * ratio)), max(1, round(rec.width * ratio)), 3)
            return np.full(shape, FILL_VALUE, np.uint8), ratio, False

    def load_raw(self, index: int) -> RawSample:
        """The working sample: image resized to ``load_size``, boxes scaled by the same ratio.

        Returns:
            :class:`RawSample` with ``ratio`` set and ``pad = (0, 0)``; crowd boxes dropped when ``drop_crowd``;
            a blank image without boxes when the file cannot be decoded (see :meth:`_load_image_or_blank`).
        """
        rec = self.records[index]
        img, ratio, ok = self._load_image_or_blank(index)
        boxes, labels, crowd = rec.boxes, rec.labels, rec.iscrowd
        if not ok:
            boxes, labels, crowd = boxes[:0], labels[:0], crowd[:0]
        if self.drop_crowd and crowd.any():
            keep = ~crowd
            boxes, labels, crowd = boxes[keep], labels[keep], crowd[keep]
        return RawSample(img, boxes * np.float32(ratio), labels, crowd, rec.image_id, (rec.height, rec.width), ratio)

    def cache_bytes_estimate(self) -> int:
        """Bytes :meth:`fill_cache` would hold: every image resized to ``load_size`` (long side), 3 channels."""
        total = 0
        for rec in self.records:
            ratio = self.load_size / max(rec.height, rec.width, 1)
            total += max(1, round(rec.height * ratio)) * max(1, round(rec.width * ratio)) * 3
        return total

    def fill_cache(self, num_threads: int | None = None) -> int:
        """Decode and resize every image into RAM (for Mosaic, which reads four images per sample).

        Filled in the main process before DataLoader workers start, the arrays are shared copy-on-write with
        forked workers.

        Returns:
            bytes held by the cache.
        """
        if self._cache is None:
            self._cache = [None] * len(self.records)
            self._cache_ratio = [1.0] * len(self.records)

        def one(i: int) -> int:
            if self._cache[i] is None:
                img, ratio, ok = self._load_image_or_blank(i)
                if not ok:
                    return 0  # not cached: load_raw finds the failure again (and drops the boxes)
                self._cache[i], self._cache_ratio[i] = img, ratio
            return self._cache[i].nbytes

        workers = num_threads or min(8, (os.cpu_count() or 2))
        with ThreadPoolExecutor(workers) as pool:  # OpenCV decode and resize release the GIL
            nbytes = int(sum(pool.map(one, range(len(self.records)))))
        self._fully_cached = True
        return nbytes
