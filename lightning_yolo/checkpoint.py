"""Loading weights for fine-tuning: every tensor whose name and shape match, with a report of the rest."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["LoadReport", "load_matching_weights", "read_state_dict"]

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


def read_state_dict(path: str | os.PathLike, prefix: str = "model.") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a network state dict from a Lightning checkpoint of this package or a plain ``state_dict`` file.

    Args:
        path: file written by ``Trainer.save_checkpoint`` / ``ModelCheckpoint`` or ``torch.save(state_dict)``.
        prefix: key prefix of the network inside a Lightning checkpoint (``YOLOModule.model``).

    Returns:
        ``(state_dict, hyper_parameters)``; the hyper-parameters are empty for a plain state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle / zip errors: the file is not a torch checkpoint
        raise ValueError(f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict or a state_dict, got {type(obj).__name__}")
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
