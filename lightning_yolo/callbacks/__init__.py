"""Lightning hooks of the package: the training recipe (:mod:`.recipe`), checkpoint files (:mod:`.checkpoints`),
run outputs (:mod:`.outputs`), the training progress bar (:mod:`.progress`) and the SyncBatchNorm plugin
(:mod:`.plugins`)."""

from .checkpoints import (
    AtomicCheckpointIO,
    LastCheckpoint,
    WeightsOnlyBest,
    ensure_last_checkpoint,
    install_atomic_checkpoint_io,
)
from .outputs import DetectionImageLogger, DetectionPlots, PredictionWriter, ResultsFiles
from .plugins import TimmSyncBatchNorm
from .progress import DetectionProgressBar
from .recipe import EMA, AutoAnchor, TimeBudget

__all__ = [
    "EMA",
    "AutoAnchor",
    "TimeBudget",
    "LastCheckpoint",
    "WeightsOnlyBest",
    "DetectionProgressBar",
    "ensure_last_checkpoint",
    "AtomicCheckpointIO",
    "install_atomic_checkpoint_io",
    "PredictionWriter",
    "DetectionImageLogger",
    "DetectionPlots",
    "ResultsFiles",
    "TimmSyncBatchNorm",
]
