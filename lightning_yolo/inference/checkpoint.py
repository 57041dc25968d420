"""The one reader of checkpoint files: networks for inference, weights for fine-tuning.

* :func:`load_checkpoint_dict`: ``torch.load(weights_only=True)`` with errors that name the file (the CLI, the
  module and everything below read through it);
* :func:`split_checkpoint`: the network weights and hyper-parameters of a ``YOLOModule`` checkpoint (Lightning's
  layout: ``state_dict`` with ``model.``-prefixed network keys, ``hyper_parameters``, and this package's
  ``lightning_yolo`` entry with the full ``model_cfg``) or of a plain ``state_dict`` file;
* :func:`load_predictor` (also :func:`lightning_yolo.load_predictor`): a :class:`YOLOPredictor` rebuilt from such a
  file, without Lightning;
* :func:`load_matching_weights`: fine-tuning initialisation, every tensor whose name and shape match.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..models.config import ModelCfg
from ..models.factory import create_model
from ..models.predictor import YOLOPredictor
from ..models.weights import LoadReport
from ..models.yolo import YOLOv4
from ..ops.postprocess import InferenceCfg

__all__ = [
    "LoadReport",
    "MOVED_HPARAMS",
    "check_checkpoint_file",
    "init_weights",
    "is_darknet_weights",
    "load_checkpoint_dict",
    "load_matching_weights",
    "load_predictor",
    "read_state_dict",
    "split_checkpoint",
    "upgrade_checkpoint",
    "upgrade_module_hparams",
    "upgrade_notice",
    "upgraded_groups",
]

#: Prefix of the network's weights inside a YOLOModule checkpoint (the module's attribute ``model``).
MODEL_PREFIX = "model."

log = logging.getLogger(__name__)


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


def load_checkpoint_dict(path: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a checkpoint dict, with errors that name the file.

    ``mmap=True`` maps the tensors instead of reading them (zip checkpoints), for callers that only read the
    hyperparameters: the CLI looks into ``--ckpt_path`` before Lightning loads it.

    Raises:
        FileNotFoundError / ValueError: see :func:`check_checkpoint_file`; a file torch cannot read; not a dict.
    """
    path = os.fspath(path)
    check_checkpoint_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # pickle / zip errors: the file is not a torch checkpoint
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{path}: cannot be read as a PyTorch checkpoint ({type(err).__name__}: {reason[:300]})"
        ) from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a checkpoint dict or a state_dict, got {type(obj).__name__}")
    return obj


def split_checkpoint(
    obj: dict[str, Any], path: str | os.PathLike, prefix: str = MODEL_PREFIX
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The network weights of a loaded checkpoint dict.

    Args:
        obj: :func:`load_checkpoint_dict` output.
        path: the file (for error messages).
        prefix: key prefix of the network inside a Lightning checkpoint (``YOLOModule.model``).

    Returns:
        ``(state_dict, hyper_parameters)`` with the network keys unprefixed; ``hyper_parameters`` is ``None`` for a
        plain ``state_dict`` file (whose keys may also carry ``prefix``).

    Raises:
        ValueError: neither layout, or no network weights; the message names ``path`` and the key.
    """
    path = os.fspath(path)
    if "state_dict" in obj or "hyper_parameters" in obj:
        for key in ("state_dict", "hyper_parameters"):
            if not isinstance(obj.get(key), dict):
                raise ValueError(f"{path}: checkpoint has no {key!r} dict (keys: {sorted(obj)[:8]})")
        state = {k[len(prefix) :]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
        if not state:
            raise ValueError(
                f"{path}: 'state_dict' has no {prefix!r}-prefixed network weights "
                f"(first keys: {list(obj['state_dict'])[:4]})"
            )
        return state, dict(obj["hyper_parameters"])
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(state) != len(obj) or not state:
        raise ValueError(
            f"{path}: neither a YOLOModule checkpoint (keys 'state_dict', 'hyper_parameters') nor a "
            f"state_dict of tensors (keys: {list(obj)[:8]})"
        )
    if all(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state, None


def read_state_dict(
    path: str | os.PathLike, prefix: str = MODEL_PREFIX
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a network state dict from a Lightning checkpoint of this package or a plain ``state_dict`` file.

    Args:
        path: file written by ``Trainer.save_checkpoint`` / ``ModelCheckpoint`` or ``torch.save(state_dict)``.
        prefix: key prefix of the network inside a Lightning checkpoint (``YOLOModule.model``).

    Returns:
        ``(state_dict, hyper_parameters)``; the hyper-parameters are empty for a plain state dict.
    """
    state, hparams = split_checkpoint(load_checkpoint_dict(path), path, prefix)
    return state, hparams or {}


def load_predictor(
    path: str | os.PathLike,
    model_name: str | None = None,
    num_classes: int | None = None,
    map_location: str | torch.device = "cpu",
    trainable: bool = False,
    **settings: Any,
) -> YOLOPredictor:
    """Rebuild a :class:`YOLOPredictor` from a ``YOLOModule`` checkpoint or a plain network ``state_dict``.

    The file is read by :func:`load_checkpoint_dict` (``weights_only=True``); the network is rebuilt from the
    checkpoint's ``lightning_yolo.model_cfg`` when present, else from ``hyper_parameters`` as
    ``create_model(model_name, num_classes, **model_overrides)``, and loaded from the ``model.``-prefixed
    weights (loss and metric entries are ignored). A plain ``state_dict`` file (network keys, optionally
    ``model.``-prefixed) needs ``model_name``; ``num_classes`` is then read from the head's shape.
    ``pretrained_backbone`` paths stored in a checkpoint are not opened: the weights come from the checkpoint.

    Args:
        path: ``.ckpt`` written by the Trainer, or ``torch.save(model.state_dict())`` output.
        model_name: variant name; required for a plain ``state_dict``, overrides the checkpoint's otherwise.
        num_classes: class count; checked against the weights.
        map_location: device the network is moved to.
        trainable: ``False`` (default): the fast inference form, Conv+BN folded and ``channels_last`` weights
            (:meth:`YOLOPredictor.fuse`; about 1.2x faster on a CPU, same boxes to float rounding); ``True``: the
            network as trained (BatchNorm layers kept), e.g. to fine-tune or to read its modules.
        **settings: :class:`YOLOPredictor` settings (``score_thresh``, ``nms_kind``, ``class_names``,
            ``img_size``, ...); the defaults are the checkpoint's predict settings
            (``InferenceCfg.predictor_settings("predict")`` of its ``inference``: ``score_thresh`` is the predict
            threshold, 0.25 unless set at training, never the validation ``val_score_thresh``), its ``class_names``
            and ``img_size``; a plain ``state_dict`` gets :data:`lightning_yolo.ops.postprocess.DEFAULTS`.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not such a checkpoint; the message names ``path`` and the missing key.

    Example:
        >>> predictor = load_predictor("runs/detect/train/checkpoints/last.ckpt")  # fused, eval mode
        >>> results = lightning_yolo.predict(predictor, "photos/*.jpg")  # boxes in each photo's pixels
    """
    ckpt = load_checkpoint_dict(path)
    state, hparams = split_checkpoint(ckpt, path)
    model = _build_model(os.fspath(path), ckpt, hparams, state, model_name, num_classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        name = model_name or (hparams or {}).get("model_name") or "network"
        raise ValueError(f"{os.fspath(path)}: weights do not fit the rebuilt {name}: {err}") from err
    model.to(map_location).eval()

    hparams, _ = upgrade_module_hparams(hparams or {})
    meta = ckpt.get("lightning_yolo") if isinstance(ckpt.get("lightning_yolo"), dict) else {}
    found: dict[str, Any] = InferenceCfg.coerce(hparams.get("inference")).predictor_settings("predict")
    # the training / validation size: the module's hyper-parameters, else the DataModule's (Lightning stores
    # them as 'datamodule_hyper_parameters')
    data_hparams = ckpt.get("datamodule_hyper_parameters")
    for source in (hparams, data_hparams if isinstance(data_hparams, dict) else {}):
        if source.get("img_size") is not None and "img_size" not in found:
            found["img_size"] = source["img_size"]
    names = meta.get("class_names") or hparams.get("class_names")
    if names:
        found["class_names"] = list(names)
    found.update(settings)
    predictor = YOLOPredictor(model, **found)
    return predictor if trainable else predictor.fuse()


def _build_model(
    path: str,
    ckpt: dict[str, Any],
    hparams: dict[str, Any] | None,
    state: dict[str, torch.Tensor],
    model_name: str | None,
    num_classes: int | None,
) -> YOLOv4:
    """The network described by a checkpoint (``hparams`` is ``None`` for a plain state_dict), weights not loaded."""
    is_lightning = hparams is not None
    hparams = hparams or {}
    meta = ckpt.get("lightning_yolo")
    if model_name is None and isinstance(meta, dict) and isinstance(meta.get("model_cfg"), dict):
        # the full configuration: rebuilds even if the named variant changed or no longer exists
        try:
            cfg = ModelCfg.from_dict(meta["model_cfg"])
        except TypeError as err:
            raise ValueError(f"{path}: 'lightning_yolo.model_cfg' is not a valid ModelCfg: {err}") from err
        classes = int(num_classes if num_classes is not None else meta.get("num_classes", hparams.get("num_classes")))
        return YOLOv4(dataclasses.replace(cfg, pretrained_backbone=None), classes)

    name = model_name if model_name is not None else hparams.get("model_name")
    if name is None:
        where = (
            "hyper_parameters has no key 'model_name'" if is_lightning else "a plain state_dict needs model_name=..."
        )
        raise ValueError(f"{path}: cannot rebuild the network: {where}")
    if num_classes is None:
        num_classes = hparams.get("num_classes")
    if num_classes is None:
        if is_lightning:
            raise ValueError(f"{path}: hyper_parameters has no key 'num_classes'")
        num_classes = _num_classes_from_state(path, state)
    overrides = dict(hparams.get("model_overrides") or {})
    overrides["pretrained_backbone"] = None  # weights come from the checkpoint; never open a stale backbone path
    return create_model(name, int(num_classes), **overrides)


def _num_classes_from_state(path: str, state: dict[str, torch.Tensor]) -> int:
    """``C`` from the first prediction bias ``[A * (5 + C)]`` and the anchor buffer ``[L, A, 2]``."""
    bias, anchors = state.get("head.preds.0.bias"), state.get("anchors.anchors")
    if bias is None or anchors is None:
        missing = "head.preds.0.bias" if bias is None else "anchors.anchors"
        raise ValueError(f"{path}: state_dict has no key {missing!r}; pass num_classes=...")
    per_anchor, rest = divmod(bias.numel(), anchors.shape[1])
    if rest or per_anchor < 6:
        raise ValueError(f"{path}: head.preds.0.bias has {bias.numel()} values, not A*(5+C) for A={anchors.shape[1]}")
    return per_anchor - 5


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


def is_darknet_weights(path: str | os.PathLike | None) -> bool:
    """Whether ``init_from`` names darknet ``.weights`` (else a checkpoint of this package or a ``state_dict``)."""
    return bool(path) and os.fspath(path).lower().endswith(".weights")


def init_weights(model: nn.Module, path: str | os.PathLike, darknet_cfg: str | os.PathLike | None = None) -> LoadReport:
    """Fine-tune start (``YOLOModule(init_from=path)``): darknet ``.weights`` through
    :func:`~lightning_yolo.models.darknet.init_from_darknet` (``darknet_cfg``, or the ``.cfg`` next to the weights),
    anything else through :func:`load_matching_weights`. Returns what was loaded, skipped and re-initialised."""
    if is_darknet_weights(path):
        from ..models.darknet import init_from_darknet

        return init_from_darknet(model, path, darknet_cfg)
    return load_matching_weights(model, path)


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints written before the settings dataclasses

#: ``YOLOModule`` arguments of older versions that moved into a settings group: old name -> today's dotted path
#: under ``model`` (the ``LossCfg`` fields moved to ``loss.<name>`` likewise). The one table the checkpoint upgrade
#: and the command line's "moved" errors read.
MOVED_HPARAMS: dict[str, str] = {
    "score_thresh": "inference.val_score_thresh",  # it was the validation threshold
    "max_det": "inference.val_max_det",
    "predict_score_thresh": "inference.score_thresh",
    "predict_max_det": "inference.max_det",
    "nms_iou_thresh": "inference.nms_iou_thresh",
    "nms_kind": "inference.nms_kind",
}

#: ``YOLOModule`` arguments that older checkpoints hold and this version does not take (the optimizer / scheduler
#: callables; the optimizer is chosen by ``optimizer_name`` now).
_DROPPED_HPARAMS = ("optimizer", "lr_scheduler")


def moved_hparams() -> dict[str, str]:
    """Every moved ``YOLOModule`` argument, old name -> today's dotted path: :data:`MOVED_HPARAMS` and the flat loss
    knobs (``box_loss`` -> ``loss.box_loss``)."""
    from ..training.config import LossCfg

    return {**{f.name: f"loss.{f.name}" for f in dataclasses.fields(LossCfg)}, **MOVED_HPARAMS}


def upgrade_module_hparams(hparams: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``YOLOModule`` hyperparameters of a checkpoint written before the settings groups (``box_loss: ciou`` at the
    top level instead of ``loss: {box_loss: ciou}``, ``score_thresh: 0.001`` instead of
    ``inference: {val_score_thresh: 0.001}``), in today's form (:func:`moved_hparams`).

    Returns:
        The upgraded copy and the names of the keys that moved or were dropped (empty: nothing to upgrade).
    """
    moved = {k: path for k, path in moved_hparams().items() if k in hparams}
    dropped = [k for k in _DROPPED_HPARAMS if k in hparams]
    if not moved and not dropped:
        return dict(hparams), []
    out = {k: v for k, v in hparams.items() if k not in moved and k not in dropped}
    groups: dict[str, dict[str, Any]] = {}
    for key, path in moved.items():
        group, name = path.split(".", 1)
        groups.setdefault(group, dict(hparams.get(group) or {}))[name] = hparams[key]
    if "loss" in groups:
        from ..training.config import LossCfg

        out["loss"] = LossCfg.from_dict(groups["loss"]).to_dict()
    if "inference" in groups:
        out["inference"] = InferenceCfg.from_dict(groups["inference"]).to_dict()
    return out, list(moved) + dropped


def upgraded_groups(path: Any, notify: Callable[[str], Any]) -> dict[str, Any]:
    """The settings groups (``loss``, ``inference``) of a checkpoint file of an older version in today's form, after
    ``notify(upgrade_notice(...))``; ``{}`` for a current checkpoint or anything but a file path."""
    if not isinstance(path, str | os.PathLike) or not os.path.isfile(path):
        return {}
    upgraded, moved = upgrade_module_hparams(dict(load_checkpoint_dict(path, mmap=True).get("hyper_parameters") or {}))
    if not moved:
        return {}
    notify(upgrade_notice(path, moved))
    return {k: upgraded[k] for k in ("loss", "inference") if k in upgraded}


def upgrade_notice(path: str | os.PathLike, moved: list[str]) -> str:
    """The one line printed when a checkpoint of an older version is upgraded on load (CLI and Python alike)."""
    table = moved_hparams()
    changes = ", ".join(f"{k} -> model.{table[k]}" if k in table else f"{k} dropped" for k in moved)
    return (
        f"{os.fspath(path)}: checkpoint of an older lightning-yolo, upgraded on load ({changes}); "
        "lightning_yolo.inference.checkpoint.upgrade_checkpoint rewrites the file"
    )


def upgrade_checkpoint(path: str | os.PathLike, output: str | os.PathLike | None = None) -> list[str]:
    """Rewrite a checkpoint of an older lightning-yolo with today's hyperparameter layout
    (:func:`upgrade_module_hparams`), in place or into ``output``; weights and training state are kept.

    Returns:
        The keys that moved or were dropped (empty: the file was already current and is left as it is).
    """
    from ..callbacks.checkpoints import atomic_torch_save

    ckpt = load_checkpoint_dict(path)
    upgraded, moved = upgrade_module_hparams(dict(ckpt.get("hyper_parameters") or {}))
    if moved:
        ckpt["hyper_parameters"] = upgraded
        atomic_torch_save(ckpt, output or path)
    return moved
