"""Checks of ``fit | validate | test | predict`` settings before anything runs, for settings whose own failure is a
library's error that names neither the option nor the fix: one ``ValueError`` each (``error: ...``, exit 2).

* :func:`check_max_time`: ``--trainer.max_time`` in a form Lightning's ``Timer`` accepts;
* :func:`check_accelerator`: ``--trainer.accelerator gpu | cuda | mps`` on a machine that has one;
* :func:`check_sync_batchnorm`: ``sync_batchnorm: true`` only where SyncBatchNorm works (CUDA);
* :func:`check_checkpoint_model`: ``--ckpt_path`` holds the network this run builds (size, settings, classes).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import torch

__all__ = ["check_max_time", "check_accelerator", "check_sync_batchnorm", "check_checkpoint_model"]

#: The keys of a ``max_time`` mapping (``datetime.timedelta``'s keyword arguments, which Lightning passes it to).
MAX_TIME_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")

_MAX_TIME_FORMS = (
    "give DD:HH:MM:SS (00:12:00:00 for 12 hours) or a mapping of " + ", ".join(MAX_TIME_KEYS[:5]) + " ('{minutes: 10}')"
)


def check_max_time(value: Any) -> None:
    """Raise a ``ValueError`` naming ``--trainer.max_time`` and its forms for a value Lightning's ``Timer`` would
    fail on (``'{minute: 10}'``: a ``TypeError`` from ``timedelta``; ``'10m'``: "not enough values to unpack")."""
    if value is None or isinstance(value, timedelta):
        return
    if isinstance(value, str):
        if re.fullmatch(r"\s*\d+:\d+:\d+:\d+\s*", value):
            return
        raise ValueError(f"--trainer.max_time {value!r}: {_MAX_TIME_FORMS}")
    if isinstance(value, Mapping):
        unknown = [str(k) for k in value if k not in MAX_TIME_KEYS]
        if unknown:
            raise ValueError(f"--trainer.max_time {dict(value)}: unknown key(s) {unknown}; {_MAX_TIME_FORMS}")
        bad = [str(k) for k, v in value.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise ValueError(f"--trainer.max_time {dict(value)}: {bad} must be numbers; {_MAX_TIME_FORMS}")
        return
    raise ValueError(f"--trainer.max_time {value!r}: {_MAX_TIME_FORMS}")


def _gpus_found() -> str:
    """What torch sees of GPUs, for the accelerator errors."""
    build = f"a CPU-only build of torch {torch.__version__}" if torch.version.cuda is None else (
        f"torch {torch.__version__} built for CUDA {torch.version.cuda}, {torch.cuda.device_count()} CUDA device(s) "
        f"visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
    )  # fmt: skip
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    return f"{build}; {'an' if has_mps else 'no'} Apple MPS device"


def check_accelerator(value: Any) -> None:
    """Raise a ``ValueError`` naming ``--trainer.accelerator`` and what torch found when it asks for a GPU kind this
    machine does not have (Lightning says only ``No supported gpu backend found!``)."""
    if not isinstance(value, str) or value.lower() not in ("gpu", "cuda", "mps"):
        return
    from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator

    kind = value.lower()
    cuda, mps = CUDAAccelerator.is_available(), MPSAccelerator.is_available()
    if (kind == "gpu" and (cuda or mps)) or (kind == "cuda" and cuda) or (kind == "mps" and mps):
        return
    raise ValueError(
        f"--trainer.accelerator {value}: this machine has no {'GPU' if kind == 'gpu' else kind.upper()} that torch can "
        f"use ({_gpus_found()}); use --trainer.accelerator cpu, or auto (a GPU when there is one)"
    )


def check_sync_batchnorm(trainer: Any, sync_batchnorm: bool) -> None:
    """Raise a ``ValueError`` for ``sync_batchnorm: true`` in a run of several processes that are not on CUDA
    devices: torch's SyncBatchNorm works only there (DDP stops with ``SyncBatchNorm layers only work with GPU
    modules``). One process never synchronises, so it runs as plain BatchNorm and is let through."""
    if not sync_batchnorm or int(getattr(trainer, "world_size", 1) or 1) <= 1:
        return
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    kind = getattr(device, "type", None)
    if kind in (None, "cuda"):
        return
    raise ValueError(
        f"--trainer.sync_batchnorm true: SyncBatchNorm needs CUDA devices, and this run has {trainer.world_size} "
        f"processes on {kind}; on {kind} use cross mini-batch normalisation (--model.cross_minibatch_norm true) or "
        "plain BatchNorm (--trainer.sync_batchnorm false)"
    )


def _describe(hparams: Mapping[str, Any], names: list[str]) -> str:
    model = str(hparams.get("model_name") or "an unnamed model")
    overrides = hparams.get("model_overrides") or {}
    if overrides:
        model += " with " + ", ".join(f"{k}={v}" for k, v in overrides.items())
    return f"{model}, {len(names)} classes {names}"


def check_checkpoint_model(ckpt_path: str, ckpt: Mapping[str, Any], module: Any) -> None:
    """Raise a ``ValueError`` when ``--ckpt_path`` holds another network than ``module`` builds (another size, other
    model settings or another number of classes): one line naming both, and ``--model.init_from`` for starting from
    the checkpoint's weights, instead of the hundreds of lines of ``load_state_dict``'s size mismatch.

    Only the network's tensors (``model.*``) are compared, by name and shape; ``ckpt`` is the checkpoint dict (a
    memory-mapped one is enough: nothing is read but the shapes).
    """
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping) or not hasattr(module, "model"):
        return
    theirs = {k: tuple(v.shape) for k, v in state.items() if k.startswith("model.") and hasattr(v, "shape")}
    ours = {f"model.{k}": tuple(v.shape) for k, v in module.model.state_dict().items()}
    if not theirs:
        return
    changed = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    missing, extra = [k for k in ours if k not in theirs], [k for k in theirs if k not in ours]
    if not (changed or missing or extra):
        return
    hp = ckpt.get("hyper_parameters") or {}
    their_names = list(hp.get("class_names") or [str(i) for i in range(int(hp.get("num_classes", 0) or 0))])
    our_names = list(getattr(module, "class_names", None) or [])
    mine = getattr(module, "hparams", {}) or {}
    if changed:
        key = changed[0]
        example = f"{len(changed)} tensor(s) of other shapes, e.g. {key} {list(theirs[key])} vs {list(ours[key])}"
    else:
        example = f"{len(missing)} tensor(s) missing and {len(extra)} unexpected, e.g. {(missing or extra)[0]}"
    raise ValueError(
        f"{ckpt_path}: holds {_describe(hp, their_names)}, but this run builds {_describe(mine, our_names)} "
        f"({example}); --ckpt_path continues that same model: drop the changed --model.* / --data.* settings, or "
        f"start a new run from its weights with --model.init_from {ckpt_path} (fine-tuning, no --ckpt_path)"
    )
