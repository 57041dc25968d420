"""What a partial weight load did (checkpoint fine-tuning and darknet weights alike)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LoadReport"]


@dataclass
class LoadReport:
    """What :func:`lightning_yolo.inference.checkpoint.load_matching_weights` or
    :func:`lightning_yolo.models.darknet.init_from_darknet` did, by state-dict key."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_reinitialised: bool = False

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors, {len(self.shape_mismatch)} skipped for shape mismatch "
            f"{self.shape_mismatch[:4]}, {len(self.missing)} not in the file {self.missing[:4]}, "
            f"{len(self.unexpected)} unused {self.unexpected[:4]}; head re-initialised: {self.head_reinitialised}"
        )
