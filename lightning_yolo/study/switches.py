"""The paper's bag of freebies and bag of specials as named switches, and the editing of a config into a variant.

A switch on the command line (``lightning-yolo ablate --switch ...``) is one of

* ``NAME=VALUE`` with ``NAME`` a registered switch (:data:`SWITCHES`, e.g. ``box_loss=iou``, ``mosaic=0``) or a
  dotted config path (``model.loss.label_smoothing=0.1``, ``model.model_overrides.sam=true``,
  ``data.augment.mosaic_prob=0``); ``VALUE`` is read as YAML (``0.1``, ``true``, ``null``, ``[5, 9, 13]``,
  ``ciou``);
* ``NAME`` alone, for a registered switch with an off and an on value: the opposite of the base config's value
  (the off value or unset -> the on value; anything else, e.g. ``mosaic_prob: 0.5``, -> the off value);
* several of those joined by ``,``: one variant with all of the changes (``--switch "mosaic=0,sat=1"``). A comma
  inside brackets belongs to the value (``spp=[5,9]``).

A registered switch may set several paths (``hsv`` sets ``hsv_h``, ``hsv_s``, ``hsv_v``): a value given for it is
a list with one entry per path, or one scalar for all of them.

Setting a dotted path in a config creates the dictionaries on the way (``model.model_overrides`` from ``null``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..ops.postprocess import NMS_KINDS

__all__ = [
    "SWITCHES",
    "Change",
    "Switch",
    "get_path",
    "set_path",
    "has_path",
    "parse_switch",
    "split_switches",
    "apply_changes",
    "variant_name",
    "format_value",
]

#: A value meaning "the opposite of the base config's value" (a registered switch given without ``=VALUE``).
FLIP = object()

_MISSING = object()


@dataclass(frozen=True)
class Switch:
    """One paper item as a config change.

    Attributes:
        name: the switch's name on the command line (``mosaic``).
        paper: the paper's name of the item.
        darknet: the darknet cfg key of the item, or ``None``.
        paths: the dotted config path(s) it sets.
        off, on: the value of each path with the item off / on (one entry per path); ``None`` for ``on`` when the
            switch only takes explicit values.
        doc: one line on what it does.
        choices: the values it accepts, when it is a choice between named alternatives.
    """

    name: str
    paper: str
    darknet: str | None
    paths: tuple[str, ...]
    off: tuple[Any, ...]
    on: tuple[Any, ...] | None
    doc: str
    choices: tuple[Any, ...] = field(default_factory=tuple)

    @property
    def flippable(self) -> bool:
        """Whether ``NAME`` alone (no ``=VALUE``) is allowed."""
        return self.on is not None


def _s(name: str, paper: str, darknet: str | None, path: str | tuple[str, ...], off: Any, on: Any, doc: str,
       choices: tuple[Any, ...] = ()) -> Switch:  # fmt: skip
    paths = (path,) if isinstance(path, str) else tuple(path)
    many = len(paths) > 1
    return Switch(
        name,
        paper,
        darknet,
        paths,
        tuple(off) if many else (off,),
        None if on is None else (tuple(on) if many else (on,)),
        doc,
        tuple(choices),
    )


#: Every switch by name. The paths are those of the settings dataclasses (``AugmentCfg`` under ``data.augment``,
#: ``LossCfg`` under ``model.loss``, ``ModelCfg`` under ``model.model_overrides``) and of the module / Trainer.
SWITCHES: dict[str, Switch] = {
    s.name: s
    for s in (
        _s("mosaic", "Mosaic data augmentation", "mosaic", "data.augment.mosaic_prob", 0.0, 1.0,
           "4 training images in one (probability per sample)"),
        _s("mixup", "MixUp", "mixup", "data.augment.mixup_prob", 0.0, 0.15, "blend two training images"),
        _s("cutmix", "CutMix", "cutmix", "data.augment.cutmix_prob", 0.0, 0.5,
           "paste a patch of another image with its boxes"),
        _s("sat", "Self-Adversarial Training (SAT)", "adversarial_lr", "data.augment.sat_prob", 0.0, 0.5,
           "a gradient step on the input image before the training step"),
        _s("multiscale", "random training shapes", "random", "data.augment.multiscale", False, True,
           "a new input size every few batches"),
        _s("hsv", "photometric distortion (hue / saturation / exposure)", "hue, saturation, exposure",
           ("data.augment.hsv_h", "data.augment.hsv_s", "data.augment.hsv_v"), (0.0, 0.0, 0.0), (0.015, 0.7, 0.4),
           "random hue, saturation and value gains"),
        _s("flip", "random horizontal flip", "flip", "data.augment.flip_prob", 0.0, 0.5, "left-right flip"),
        _s("box_loss", "IoU / GIoU / DIoU / CIoU / MSE box loss", "iou_loss", "model.loss.box_loss", "iou", None,
           "the box regression loss", ("iou", "giou", "diou", "ciou", "mse")),
        _s("label_smoothing", "class label smoothing", "label_smooth_eps", "model.loss.label_smoothing", 0.0, 0.1,
           "class targets eps / 2 and 1 - eps / 2"),
        _s("focal", "focal loss (objectness)", "focal_loss", "model.loss.focal_gamma", 0.0, 1.5,
           "focal modulation of the objectness loss (gamma)"),
        _s("multi_anchor", "multiple anchors for a single ground truth", "iou_thresh", "model.loss.iou_thresh", 1.0,
           0.213, "every anchor with IoU > thresh is a positive (1.0: only the best anchor)"),
        _s("grid_sensitivity", "eliminate grid sensitivity", "scale_x_y", "model.model_overrides.scale_x_y",
           [1.0, 1.0, 1.0], [1.2, 1.1, 1.05], "box centres reach the cell borders (one factor per level)"),
        _s("sam", "modified SAM (spatial attention)", "sam", "model.model_overrides.sam", False, True,
           "point-wise spatial attention on each PAN output"),
        _s("spp", "SPP block", "spp", "model.model_overrides.spp_kernels", [], [5, 9, 13],
           "max-pool pyramid on the last backbone stage (kernel sizes; [] none)"),
        _s("dropblock", "DropBlock regularization", "dropblock", "model.model_overrides.dropblock", 0.0, 0.1,
           "drop contiguous blocks of feature maps (probability)"),
        _s("neck", "PAN (concatenation) vs FPN (addition)", None, "model.model_overrides.neck", "fpn", "pan",
           "the neck's path aggregation: PAN adds a bottom-up path and concatenates", ("pan", "fpn")),
        _s("attention", "SE / CBAM attention in the neck", None, "model.model_overrides.neck_attention", "none",
           "cbam", "channel (SE) or channel + spatial (CBAM) attention blocks in the neck", ("none", "se", "cbam")),
        _s("hard_negatives", "hard negative mining (objectness)", None, "model.loss.hard_negative_ratio", 0.0, 3.0,
           "keep the hardest negatives, this many per positive (0: all)"),
        _s("nms", "DIoU-NMS", "nms_kind", "model.inference.nms_kind", "greedy", "diou", "non-maximum suppression kind",
           NMS_KINDS),
        _s("cmbn", "Cross mini-Batch Normalization (CmBN)", None, "model.cross_minibatch_norm", False, True,
           "batch statistics accumulated over the mini-batches of an accumulated batch"),
        _s("syncbn", "synchronized batch normalization", None, "trainer.sync_batchnorm", False, True,
           "batch statistics across devices"),
        _s("cosine", "cosine annealing scheduler", "policy=sgdr", "model.lr_schedule", "steps", "cosine",
           "the learning-rate decay after warmup (steps: darknet's x0.1 at 80% and 90%)", ("cosine", "steps")),
        _s("ema", "exponential moving average of the weights", None, "model.ema", False, True,
           "validate and save the averaged weights"),
        _s("auto_anchor", "anchors from data (k-means)", None, "model.auto_anchor", False, True,
           "k-means anchors when the given ones fit the data badly"),
    )
}


@dataclass(frozen=True)
class Change:
    """One config edit: ``path`` set to ``value`` (``label`` names it in variant names and tables)."""

    path: str
    value: Any
    label: str


# ----------------------------------------------------------------------------------------------------------- paths


def get_path(config: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """The value at a dotted path (``model.loss.box_loss``), or ``default`` where any part is missing."""
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def has_path(config: Mapping[str, Any], path: str) -> bool:
    """Whether the dotted path exists in the config."""
    return get_path(config, path, _MISSING) is not _MISSING


def set_path(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set a dotted path in place, creating dictionaries where parts are missing or ``null``; returns ``config``.

    Raises:
        ValueError: a part on the way holds a value that is not a mapping (``data.augment: true``).
    """
    keys = path.split(".")
    if not all(keys):
        raise ValueError(f"{path!r}: not a dotted config path")
    node = config
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ValueError(f"cannot set {path}: {where} is {child!r} in the config, not a mapping")
        node = child
    node[keys[-1]] = value
    return config


# ----------------------------------------------------------------------------------------------------------- parsing


def split_switches(text: str) -> list[str]:
    """``"a=1,b=[5,9]"`` -> ``["a=1", "b=[5,9]"]``: split at commas outside brackets and quotes."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_switch(text: str) -> list[tuple[str, Any]]:
    """One ``--switch`` argument -> ``[(name or path, value or FLIP), ...]`` (values read as YAML)."""
    out: list[tuple[str, Any]] = []
    for part in split_switches(text):
        name, sep, raw = part.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"--switch {text!r}: {part!r} names no switch")
        if not sep:
            if name not in SWITCHES:
                raise ValueError(
                    f"--switch {part}: a dotted config path needs =VALUE; the switches that flip without a value: "
                    f"{', '.join(k for k, s in SWITCHES.items() if s.flippable)}"
                )
            out.append((name, FLIP))
            continue
        if name not in SWITCHES and "." not in name:
            raise ValueError(
                f"--switch {part}: {name!r} is neither a registered switch nor a dotted config path "
                f"(model.loss.label_smoothing=0.1); registered: {', '.join(SWITCHES)}"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"--switch {part}: {raw!r} is not a YAML value ({err})") from err
        out.append((name, value))
    return out


def format_value(value: Any) -> str:
    """A value as typed on the command line (``0.1``, ``true``, ``[5, 9, 13]``, ``null``)."""
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def resolve_changes(
    parsed: Sequence[tuple[str, Any]], base: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> list[Change]:
    """Parsed switches -> config edits. A flip reads the current value from ``base`` (the base YAML), else from
    ``defaults`` (the full config ``fit --print_config`` shows), else takes it as unset; off or unset -> on,
    anything else -> off."""
    changes: list[Change] = []
    for name, value in parsed:
        switch = SWITCHES.get(name)
        if switch is None:
            changes.append(Change(name, value, f"{name}={format_value(value)}"))
            continue
        if value is FLIP:
            if not switch.flippable:
                raise ValueError(f"--switch {name}: give a value, one of {'|'.join(map(str, switch.choices))}")
            current = tuple(_current(base, defaults, p) for p in switch.paths)
            is_off = all(c is None or _same(c, o) for c, o in zip(current, switch.off))
            values = switch.on if is_off else switch.off
            shown = format_value(values[0] if len(values) == 1 else list(values))
        else:
            if switch.choices and value not in switch.choices:
                raise ValueError(f"--switch {name}={format_value(value)}: one of {'|'.join(map(str, switch.choices))}")
            if len(switch.paths) > 1 and isinstance(value, list) and len(value) == len(switch.paths):
                values = tuple(value)
            else:
                values = (value,) * len(switch.paths)
            shown = format_value(value)
        for path, v in zip(switch.paths, values):
            changes.append(Change(path, v, f"{name}={shown}"))
    return changes


def _current(base: Mapping[str, Any], defaults: Mapping[str, Any] | None, path: str) -> Any:
    value = get_path(base, path, _MISSING)
    if value is _MISSING and defaults is not None:
        value = get_path(defaults, path, _MISSING)
    return None if value is _MISSING else value


def _same(a: Any, b: Any) -> bool:
    """Equality that treats lists and tuples, and ints and floats, alike (``[1, 1]`` == ``(1.0, 1.0)``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def needs_defaults(parsed: Sequence[tuple[str, Any]], base: Mapping[str, Any]) -> bool:
    """Whether flipping a switch needs the full config (a flipped path missing from the base YAML)."""
    return any(
        value is FLIP and name in SWITCHES and not all(has_path(base, p) for p in SWITCHES[name].paths)
        for name, value in parsed
    )


def apply_changes(base: Mapping[str, Any], changes: Sequence[Change]) -> dict[str, Any]:
    """A deep copy of ``base`` with the changes set."""
    config = copy.deepcopy(dict(base))
    for change in changes:
        set_path(config, change.path, copy.deepcopy(change.value))
    return config


def variant_name(changes: Sequence[Change]) -> str:
    """A folder-safe name of a variant: its labels joined by ``+`` (``mosaic-0+box_loss-iou``), ``=`` -> ``-``."""
    parts = []
    for label in dict.fromkeys(c.label for c in changes):
        text = label.replace("[]", "none").replace("=", "-").replace(", ", "_").replace(",", "_")
        parts.append(re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", text)).strip("-"))
    name = "+".join(p for p in parts if p) or "base"
    if len(name) > 80:
        import hashlib

        name = f"{name[:70]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name or "variant"
