"""darknet ``.weights`` files: the header (version, images seen) and the flat float32 payload, read and written."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cfg import DarknetError

#: Version written into ``.weights`` headers: 0.2.5, darknet's own (``seen`` as int64).
WEIGHTS_VERSION = (0, 2, 5)


@dataclass
class DarknetWeights:
    """Contents of a ``.weights`` file: header and the flat float32 payload."""

    major: int
    minor: int
    revision: int
    seen: int
    data: np.ndarray

    @property
    def version(self) -> tuple[int, int, int]:
        return self.major, self.minor, self.revision


def _seen_is_int64(major: int, minor: int) -> bool:
    return major * 10 + minor >= 2


def read_weights(path: str | os.PathLike) -> DarknetWeights:
    """Read a darknet ``.weights`` file (header, then float32 payload).

    Raises:
        FileNotFoundError: no such file.
        DarknetError: the file is shorter than its header, its payload is not whole float32 values, or the
            version marks transposed weights (``major`` or ``minor`` > 1000).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"darknet weights not found: {path!r}")
    raw = Path(path).read_bytes()
    if len(raw) < 16:
        raise DarknetError(f"{path}: {len(raw)} bytes, shorter than a darknet .weights header (16 or 20 bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=3))
    if major > 1000 or minor > 1000:
        raise DarknetError(f"{path}: version {major}.{minor}.{revision} marks transposed weights; not supported")
    if _seen_is_int64(major, minor):
        if len(raw) < 20:
            raise DarknetError(f"{path}: version {major}.{minor} needs a 20-byte header, file has {len(raw)} bytes")
        seen, offset = int(np.frombuffer(raw, dtype="<u8", count=1, offset=12)[0]), 20
    else:
        seen, offset = int(np.frombuffer(raw, dtype="<u4", count=1, offset=12)[0]), 16
    if (len(raw) - offset) % 4:
        raise DarknetError(f"{path}: payload of {len(raw) - offset} bytes is not a whole number of float32 values")
    data = np.frombuffer(raw, dtype="<f4", offset=offset).astype(np.float32, copy=False)
    return DarknetWeights(major, minor, revision, seen, data)


def write_weights(
    path: str | os.PathLike,
    arrays: Sequence[np.ndarray],
    seen: int = 0,
    version: tuple[int, int, int] = WEIGHTS_VERSION,
) -> Path:
    """Write a ``.weights`` file: header (``seen`` as int64 for version >= 0.2) and the arrays as float32."""
    major, minor, revision = (int(v) for v in version)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(np.asarray([major, minor, revision], dtype="<i4").tobytes())
        f.write(np.asarray([seen], dtype="<u8" if _seen_is_int64(major, minor) else "<u4").tobytes())
        for a in arrays:
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
    return path


