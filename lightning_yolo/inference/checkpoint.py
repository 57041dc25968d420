"""Loading weights for fine-tuning: every tensor whose name and shape match, with a report of the rest."""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["LoadReport", "check_checkpoint_file", "load_checkpoint_dict", "load_matching_weights", "read_state_dict"]

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_matching_weights` did, by state-dict key."""

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


def check_checkpoint_file(path: str | os.PathLike) -> None:
    """Cheap checks that ``path`` is a complete ``torch.save`` file, raising an error that names it.

    Reads only the file size and the zip directory at the end of the file (where a cut-off write shows), not the
    tensors. Legacy (pre-1.6, non-zip) pickle files pass.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, an empty file, or a file that is not (or no longer) a complete checkpoint.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; expected a checkpoint file (.ckpt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(
            f"{path}: checkpoint file is empty (0 bytes; an interrupted copy or write?); use another checkpoint, "
            "e.g. best.ckpt or an earlier last.ckpt"
        )
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            legacy = f.read(2) == b"\x80\x02"  # pickle protocol 2: torch's pre-zip format
        if not legacy:
            raise ValueError(
                f"{path}: not a complete PyTorch checkpoint ({size} bytes, no zip directory at its end): the file is "
                "truncated (a write or copy was interrupted) or another kind of file; use another checkpoint"
            )


def load_checkpoint_dict(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a checkpoint dict, with errors that name the file.

    Raises:
        FileNotFoundError / ValueError: see :func:`check_checkpoint_file`; a file torch cannot read; not a dict.
    """
    path = os.fspath(path)
    check_checkpoint_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors: the file is not a torch checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}: {reason[:300]})"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict or a state_dict, got {type(obj).__name__}")
    return obj


def read_state_dict(path: str | os.PathLike, prefix: str = "model.") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a network state dict from a Lightning checkpoint of this package or a plain ``state_dict`` file.

    Args:
        path: file written by ``Trainer.save_checkpoint`` / ``ModelCheckpoint`` or ``torch.save(state_dict)``.
        prefix: key prefix of the network inside a Lightning checkpoint (``YOLOModule.model``).

    Returns:
        ``(state_dict, hyper_parameters)``; the hyper-parameters are empty for a plain state dict.
    """
    path = os.fspath(path)
    obj = load_checkpoint_dict(path)
    hparams: dict[str, Any] = dict(obj.get("hyper_parameters") or {})
    if "state_dict" in obj:
        sd = obj["state_dict"]
        if not isinstance(sd, dict):
            raise ValueError(f"{path}: key 'state_dict' is a {type(sd).__name__}, expected a dict of tensors")
    else:
        sd = obj
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path}: holds no tensors (keys {list(obj)[:6]})")
    if any(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors, hparams


@torch.no_grad()
def load_matching_weights(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Initialise ``model`` from ``path``: copy every tensor whose key and shape match.

    The anchor buffers are not copied (the model's configuration decides its anchors); the prediction
    layers are re-initialised by the model when the class count differs, since their shapes then differ.
    """
    source, _ = read_state_dict(path)
    target = model.state_dict()
    report = LoadReport()
    matched: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.startswith("anchors."):
            continue
        if key not in target:
            report.unexpected.append(key)
        elif target[key].shape != value.shape:
            report.shape_mismatch.append(key)
        else:
            matched[key] = value
    report.missing = [k for k in target if k not in source and not k.startswith("anchors.")]
    report.loaded = sorted(matched)
    if not matched:
        raise ValueError(
            f"{os.fspath(path)}: no tensor matches the model (first keys in file {list(source)[:4]}, "
            f"in model {list(target)[:4]}); is this a checkpoint of another architecture?"
        )
    model.load_state_dict(matched, strict=False)
    report.head_reinitialised = any(k.startswith("head.preds") for k in report.shape_mismatch)
    log.info("init_from %s: %s", os.fspath(path), report.summary())
    return report
