"""Checkpoint files: ``last.ckpt`` that really is the last epoch, and atomic writes.

Atomic checkpoint files: a crash while ``last.ckpt`` is written never destroys the previous ``last.ckpt``.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in ``$TMPDIR``;
the commit is a ``shutil.move``, which becomes a copy when the run folder is on another filesystem (another disk,
``/dev/shm``, a network mount). A ``kill -9`` during that copy leaves a truncated ``last.ckpt`` that does not load
and a checkpoint-sized orphan in ``/tmp``. :class:`AtomicCheckpointIO` writes beside the destination instead::

    <dir>/.last.ckpt.<pid>.<random>.tmp   torch.save, flush, fsync
    os.replace(tmp, <dir>/last.ckpt)       atomic on POSIX and Windows (same folder = same filesystem)
    fsync(<dir>)                            the rename itself survives a power cut

so at every moment ``last.ckpt`` is either the old complete file or the new complete file. A failed write (disk
full, read-only folder, an exception) removes its temporary file and leaves the old checkpoint untouched; orphans of
a killed process (``.last.ckpt.*.tmp``) are removed by the next successful save of the same file.

The CLI installs it on every Trainer whose strategy uses the default ``TorchCheckpointIO``; in Python pass
``Trainer(plugins=[AtomicCheckpointIO()])``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.rank_zero import rank_zero_debug

__all__ = [
    "LastCheckpoint", "ensure_last_checkpoint", "WeightsOnlyBest", "WEIGHTS_KEYS", "weights_only_checkpoint",
    "AtomicCheckpointIO", "atomic_torch_save", "install_atomic_checkpoint_io",
]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# last.ckpt that really is the last epoch (resume / extend)


class LastCheckpoint(ModelCheckpoint):
    """Write ``last.ckpt`` at the end of every training epoch (after that epoch's validation), for
    ``lightning-yolo fit --ckpt_path .../last.ckpt``.

    Lightning 2.6 writes ``ModelCheckpoint(save_last=True)``'s ``last.ckpt`` only when a top-k checkpoint is saved
    at the same step: with a monitored metric that did not improve, ``last.ckpt`` holds an older epoch and resuming
    from it silently repeats epochs. This callback keeps one file, overwritten every ``every_n_epochs`` epochs.
    The CLI adds it for every ``ModelCheckpoint(save_last=True, monitor=...)`` of a config
    (:func:`ensure_last_checkpoint`).

    Args:
        dirpath: folder (default: the logger's ``checkpoints`` folder, as for ``ModelCheckpoint``).
        filename: file name without ``.ckpt``.
        every_n_epochs: write every this many epochs.
    """

    def __init__(
        self, dirpath: str | os.PathLike | None = None, filename: str = "last", every_n_epochs: int = 1
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,  # with monitor=None: the newest checkpoint only, overwritten in place
            save_last=False,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=True,  # epoch end runs after the epoch's validation: every epoch, any val period
            enable_version_counter=False,
            auto_insert_metric_name=False,
        )


def ensure_last_checkpoint(callbacks: list[pl.Callback]) -> LastCheckpoint | None:
    """Give ``save_last=True`` its intended meaning: a ``last.ckpt`` of the last epoch.

    For ``ModelCheckpoint`` callbacks with a ``monitor``, ``save_last=True`` and ``save_top_k != -1`` (whose
    ``last.ckpt`` is only rewritten with a new best, see :class:`LastCheckpoint`), ``save_last`` is switched off and
    one :class:`LastCheckpoint` in the same folder is appended to ``callbacks`` (in place), unless one is there.

    Returns:
        The added (or existing) :class:`LastCheckpoint`, or ``None`` when nothing needed it.
    """
    existing = next((cb for cb in callbacks if isinstance(cb, LastCheckpoint)), None)
    stale = [
        cb
        for cb in callbacks
        if isinstance(cb, ModelCheckpoint)
        and not isinstance(cb, LastCheckpoint)
        and cb.save_last is True
        and cb.monitor is not None
        and cb.save_top_k != -1
    ]
    if not stale:
        return existing
    for cb in stale:
        cb.save_last = False
    if existing is None:
        existing = LastCheckpoint(dirpath=stale[0].dirpath)
        callbacks.append(existing)
        # a debug message only: the shipped configs themselves ask for save_last=True, and the README explains it
        rank_zero_debug(
            f"ModelCheckpoint(monitor={stale[0].monitor!r}, save_last=True) rewrites last.ckpt only with a new best "
            "(Lightning >= 2.6); added LastCheckpoint, which writes last.ckpt after every epoch"
        )
    return existing


# ----------------------------------------------------------------------------------------------------------------------
# best.ckpt: the weights alone


#: What a weights-only checkpoint keeps: the (averaged, with EMA) weights and what rebuilds the model and its data
#: settings. Dropped: the optimizer and scheduler states, the callbacks' states, EMA's raw weights
#: (``current_model_state``) and averaging state, the random states and the loops: what only resuming needs.
WEIGHTS_KEYS = (
    "state_dict", "hyper_parameters", "hparams_name", "datamodule_hyper_parameters", "datamodule_hparams_name",
    "lightning_yolo", "epoch", "global_step", "pytorch-lightning_version",
)  # fmt: skip


def weights_only_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The :data:`WEIGHTS_KEYS` of a full checkpoint dict (the tensors are shared, not copied)."""
    return {k: checkpoint[k] for k in WEIGHTS_KEYS if k in checkpoint}


class WeightsOnlyBest(pl.Callback):
    """Rewrite each new best checkpoint of the run's monitored ``ModelCheckpoint`` s as weights only.

    ``best.ckpt`` is for predict, validate, export and fine-tuning (``--model.init_from``); resuming uses
    ``last.ckpt``. A full checkpoint of ``yolov4_nano`` with EMA holds the weights four times (averaged, raw, AdamW's
    two moments): 49 MB; the weights alone are 12 MB. The rewritten file keeps :data:`WEIGHTS_KEYS`: with EMA its
    ``state_dict`` is the averaged weights, the ones validated. The CLI adds this callback to every ``fit``.

    (The rewrite runs after Lightning wrote the file, because a ``save_weights_only=True`` checkpoint skips the
    callbacks' ``on_save_checkpoint`` and so would store the raw weights instead of the averaged ones.)
    """

    def __init__(self) -> None:
        self._done: dict[str, float] = {}  # path -> modification time of the file already rewritten

    def _slim(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, LastCheckpoint) or not isinstance(cb, ModelCheckpoint) or cb.monitor is None:
                continue
            path = Path(cb.best_model_path) if cb.best_model_path else None
            if path is None or not path.is_file() or self._done.get(str(path)) == path.stat().st_mtime:
                continue
            from ..inference.checkpoint import load_checkpoint_dict

            full = load_checkpoint_dict(path)
            if "optimizer_states" in full or "current_model_state" in full:
                atomic_torch_save(weights_only_checkpoint(full), path)
            self._done[str(path)] = path.stat().st_mtime

    # the checkpoint callbacks run last in each hook: a best file written at this epoch's validation exists by the
    # end of the epoch (and of the fit)
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._slim(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._slim(trainer)


# ----------------------------------------------------------------------------------------------------------------------
# atomic writes


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_orphans(path: Path, keep: Path | None = None) -> None:
    """Delete temporary files of earlier, interrupted writes of ``path`` (``.<name>.*.tmp`` beside it)."""
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        if orphan != keep:
            with contextlib.suppress(OSError):
                orphan.unlink()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` that replaces ``path`` only once the new file is complete and on disk.

    Raises:
        OSError: the folder cannot be created or written (read-only, disk full, permission); the message names
            the file and says that the previous checkpoint (if any) is unchanged.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 honours the umask (tempfile.mkstemp would create a 0600 file)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        kept = "the previous file is unchanged" if path.exists() else "no file was written"
        if isinstance(err, OSError):
            reason = os.strerror(err.errno) if err.errno else str(err)
            if err.errno == errno.ENOSPC:
                reason += "; free some space or point trainer.default_root_dir at another disk"
            elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                reason += "; choose a writable folder (trainer.default_root_dir or the callback's dirpath)"
            raise OSError(err.errno, f"{path}: cannot write the checkpoint ({reason}); {kept}") from err
        if isinstance(err, RuntimeError) and "failed writing" in str(err):
            # torch's zip writer reports a full disk as RuntimeError("... failed writing file ...")
            raise OSError(errno.EIO, f"{path}: cannot write the checkpoint ({err}); {kept}") from err
        raise
    _fsync_dir(path.parent)
    _remove_orphans(path)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local writes are atomic (see the module docstring); remote URLs
    (``s3://...``) keep Lightning's fsspec path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


def install_atomic_checkpoint_io(trainer: Any) -> bool:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` when its strategy uses the plain ``TorchCheckpointIO``.

    Returns:
        ``True`` when installed (or already there); ``False`` when the strategy has its own checkpoint IO
        (e.g. async or sharded), which is left alone.
    """
    strategy = trainer.strategy
    current = strategy.checkpoint_io
    if isinstance(current, AtomicCheckpointIO):
        return True
    if type(current) is not TorchCheckpointIO:
        return False
    strategy.checkpoint_io = AtomicCheckpointIO()
    return True
