"""darknet ``.cfg`` and ``.weights`` files: read them into this package's networks, and write them back.

darknet (AlexeyAB) describes a network as a list of ``[section]`` layers in a ``.cfg`` text file and stores its
weights in a flat ``.weights`` file: a header (``major``, ``minor``, ``revision`` as int32, then the number of
training images seen, int64 when ``major * 10 + minor >= 2``, else int32), then for every ``[convolutional]``
layer in order its BatchNorm bias (beta), scale (gamma), running mean and running variance (or its conv bias when
``batch_normalize=0``), then its weights ``[filters, channels, size, size]``, all float32 little-endian.

Instead of building a generic graph from the cfg, this module maps the file onto this package's own networks, so
a model that came from darknet trains, validates, predicts and exports like any other:

* :func:`darknet_layout` writes down, for a :class:`~.yolo.YOLOv4`, the darknet layer list it computes
  (``yolov4.cfg`` for the PAN models on timm ``cspdarknet53``, ``yolov4-tiny.cfg`` for ``yolov4_tiny``) and, for
  every convolution, the ``state_dict`` key it fills (:class:`ConvSlot`: darknet layer index -> key prefix, with
  the channel slice or permutation timm's module layout needs);
* :func:`load_darknet` parses a cfg, picks the package model it describes, checks the cfg section by section
  against that model's layout (the first section that differs is named with its file line and why) and loads the
  weights through the slots;
* :func:`save_darknet` writes a model back as ``.cfg`` + ``.weights`` for darknet or OpenCV DNN.

Two details make the mapping exact rather than approximate:

* timm's CSPDarknet53 computes darknet's two 1x1 convolutions after each downsampling (the cross-stage "part 1"
  and the block path "part 2") as one ``conv_exp`` convolution whose output is split in two, and concatenates
  ``[part 1, blocks]`` where darknet's ``[route] layers=-1,-N`` concatenates ``[blocks, part 1]``: the slots carry
  the output-channel slice of ``conv_exp`` and the input-channel half swap of ``conv_transition``;
* darknet normalises with ``sqrt(var + 1e-5)``: networks loaded from darknet are built with ``bn_eps=1e-5``;
  a model trained here with another epsilon is written with its running variances shifted by the difference, so
  darknet computes the same function.

Supported sections: ``[net]`` (``width``, ``height``, ``channels=3``), ``[convolutional]``, ``[route]`` (with
``groups`` / ``group_id``), ``[shortcut]``, ``[maxpool]``, ``[upsample]``, ``[sam]`` and ``[yolo]``, in the
arrangements of yolov4.cfg (optionally with SAM or without SPP) and yolov4-tiny.cfg; :data:`UNSUPPORTED` lists what
is rejected and why.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ModelCfg
from .factory import get_model_cfg
from .weights import LoadReport
from .yolo import YOLOv4

__all__ = [
    "ConvSlot",
    "DarknetImport",
    "DarknetLayout",
    "DarknetWeights",
    "Section",
    "UNSUPPORTED",
    "darknet_layout",
    "find_cfg",
    "init_from_darknet",
    "layout_state_dict",
    "load_darknet",
    "parse_cfg",
    "read_weights",
    "save_darknet",
    "state_dict_arrays",
    "write_weights",
]

#: darknet's BatchNorm epsilon (``src/blas.c`` ``normalize_cpu``: ``sqrt(variance + .00001f)``).
DARKNET_BN_EPS = 1e-5

#: Version written into ``.weights`` headers: 0.2.5, darknet's own (``seen`` as int64).
WEIGHTS_VERSION = (0, 2, 5)

#: darknet features this module does not map, and why.
UNSUPPORTED: dict[str, str] = {
    "[connected], [local], [crnn], [rnn], [gru], [lstm], [conv_lstm], [history]": "no such layers in the package's "
    "detectors (classification / recurrent heads)",
    "[region], [detection], [Gaussian_yolo]": "YOLOv2 / v1 / Gaussian heads: other decodings and losses",
    "[dropout], [crop], [cost], [softmax], [contrastive], [normalization], [batchnorm], [activation]": "not in the "
    "yolov4 / yolov4-tiny layer lists (DropBlock exists here only as a training switch without weights)",
    "[avgpool], [local_avgpool], [reorg], [reorg3d], [scale_channels], [implicit*], [empty], [silence]": "used by "
    "other cfgs (yolov2, yolov3-spp variants, YOLOR, SE/attention blocks): no counterpart here",
    "[convolutional] groups>1, dilation>1, stride_x != stride_y, antialiasing, share_index, binary/xnor, deform, "
    "coordconv, assisted_excitation, custom padding": "every convolution here is dense, square-strided, 'same' padded",
    "[shortcut] weights_type / weights_normalization, more than one 'from'": "weighted shortcuts (yolov4x-mish "
    "BiFPN) have no counterpart",
    "[maxpool] maxpool_depth, stride_x / stride_y, custom padding, size 2 with stride 1": "only the SPP pools (odd "
    "size, stride 1) and yolov4-tiny's 2x2 stride-2 pools exist",
    "[upsample] scale != 1, stride < 0 (reorg)": "only 2x nearest upsampling exists",
    "[yolo] new_coords=1": "yolov4-csp / scaled-YOLOv4 decoding ((2 sigmoid)^2 box sizes, logistic activation in the "
    "layer before): a different head; yolov4-csp.cfg therefore parses but does not map (the package's CSP models "
    "use timm backbones, not darknet's)",
    "activations other than linear, leaky, mish, logistic, relu, swish": "no counterpart in get_act",
    "backbone activation other than mish in yolov4 layouts": "timm's cspdarknet53 is used with act_layer='mish' "
    "(yolov4-leaky.cfg does not map)",
    ".weights major > 1000 or minor > 1000": "transposed [connected] weights: only convolutions are read",
}

_ALIASES = {"conv": "convolutional", "max": "maxpool", "network": "net"}

# package activation names -> darknet's
_ACT_TO_DARKNET = {
    "leaky": "leaky",
    "leaky_relu": "leaky",
    "mish": "mish",
    "silu": "swish",
    "swish": "swish",
    "relu": "relu",
    "sigmoid": "logistic",
    "logistic": "logistic",
    "linear": "linear",
    "identity": "linear",
    "none": "linear",
}

# keys each section type may carry; any other key is an error naming it (training-only keys included here)
_KNOWN_KEYS: dict[str, set[str]] = {
    "convolutional": {"filters", "size", "stride", "pad", "padding", "activation", "batch_normalize", "groups",
                      "dilation", "stride_x", "stride_y", "stopbackward", "dontload", "dontloadscales",
                      "train_only_bn", "learning_rate", "flipped"},
    "route": {"layers", "groups", "group_id", "stopbackward"},
    "shortcut": {"from", "activation"},
    "maxpool": {"size", "stride", "stride_x", "stride_y", "padding"},
    "upsample": {"stride", "scale"},
    "sam": {"from", "activation"},
    "yolo": None,  # many training keys; the structural ones are checked, the rest reported as not mapped
}  # fmt: skip


class DarknetError(ValueError):
    """A cfg or weights file that cannot be read or mapped; the message names the file, line and key."""


# ----------------------------------------------------------------------------------------------------------------------
# .cfg


@dataclass
class Section:
    """One ``[type]`` block of a cfg: options as darknet reads them (whitespace removed), with line numbers."""

    type: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0
    key_lines: dict[str, int] = field(default_factory=dict)
    source: str = "<cfg>"

    def where(self, key: str | None = None) -> str:
        line = self.key_lines.get(key, self.line) if key else self.line
        return f"{self.source}:{line}"

    def get(self, key: str, default: Any, kind: type = int) -> Any:
        """Option ``key`` converted with ``kind`` (int, float, str), or ``default``; bad values name file:line."""
        if key not in self.options:
            return default
        raw = self.options[key]
        try:
            return kind(float(raw)) if kind is int and re.fullmatch(r"[-+]?\d+\.0*", raw) else kind(raw)
        except ValueError:
            msg = f"{self.where(key)}: [{self.type}] {key}={raw!r} is not a valid {kind.__name__}"
            raise DarknetError(msg) from None

    def get_list(self, key: str, kind: type = int) -> list[Any]:
        raw = self.options.get(key, "")
        try:
            return [kind(v) for v in raw.split(",") if v != ""]
        except ValueError:
            raise DarknetError(
                f"{self.where(key)}: [{self.type}] {key}={raw!r} is not a comma-separated list of {kind.__name__}"
            ) from None


def parse_cfg(source: str | os.PathLike, text: str | None = None) -> list[Section]:
    """Read a darknet cfg into its sections, ``[net]`` first when present.

    Follows darknet's ``read_cfg``: whitespace is removed from every line, lines starting with ``#`` or ``;`` and
    empty lines are skipped, ``[name]`` opens a section (aliases ``[conv]``, ``[max]``, ``[network]`` are
    normalised), every other line must be ``key=value``.

    Args:
        source: path of the cfg (read when ``text`` is ``None``), or a name for messages.
        text: the cfg text itself.

    Raises:
        FileNotFoundError: no such file.
        DarknetError (a ``ValueError``): a line that is neither a section header nor ``key=value``, an option
            before the first section, a repeated key, or no section at all; the message names file and line.
    """
    name = os.fspath(source)
    if text is None:
        if not os.path.isfile(name):
            raise FileNotFoundError(f"darknet cfg not found: {name!r}")
        text = Path(name).read_text(encoding="utf-8", errors="replace")
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            if not line.endswith("]") or len(line) < 3:
                raise DarknetError(f"{name}:{number}: malformed section header {raw.strip()!r}")
            kind = line[1:-1].lower()
            sections.append(Section(_ALIASES.get(kind, kind), line=number, source=name))
            continue
        if "=" not in line:
            raise DarknetError(f"{name}:{number}: expected key=value or [section], got {raw.strip()!r}")
        if not sections:
            raise DarknetError(f"{name}:{number}: option {raw.strip()!r} before the first [section]")
        key, value = line.split("=", 1)
        key = key.lower()
        section = sections[-1]
        if key in section.options:
            raise DarknetError(
                f"{name}:{number}: [{section.type}] at line {section.line} sets {key!r} twice "
                f"(first at line {section.key_lines[key]})"
            )
        section.options[key] = value
        section.key_lines[key] = number
    if not sections:
        raise DarknetError(f"{name}: no [section] found; not a darknet cfg")
    return sections


def _split_net(sections: list[Section]) -> tuple[Section | None, list[Section]]:
    if sections and sections[0].type == "net":
        return sections[0], sections[1:]
    for s in sections[1:]:
        if s.type == "net":
            raise DarknetError(f"{s.where()}: [net] must be the first section")
    return None, sections


def format_cfg(net: dict[str, Any], layers: Sequence[Section]) -> str:
    """cfg text: a ``[net]`` block with ``net`` options, then each layer with a ``# index`` comment."""
    out = ["[net]"] + [f"{k}={v}" for k, v in net.items()] + [""]
    for i, s in enumerate(layers):
        out.append(f"# {i}")
        out.append(f"[{s.type}]")
        out += [f"{k}={v}" for k, v in s.options.items()]
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------------------
# .weights


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


# ----------------------------------------------------------------------------------------------------------------------
# layouts: the darknet layer list a package network computes, and where each convolution's weights live


@dataclass(frozen=True)
class ConvSlot:
    """Where darknet ``[convolutional]`` layer ``index`` lives in the package's ``state_dict``.

    Attributes:
        index: darknet layer index (0-based, ``[net]`` not counted).
        prefix: module path; BatchNorm convolutions use ``prefix.conv.weight`` and ``prefix.bn.{bias, weight,
            running_mean, running_var}``, plain ones ``prefix.weight`` and ``prefix.bias``.
        batch_normalize: darknet ``batch_normalize``.
        filters, channels, size: darknet's shape of this layer's weights.
        out_start: first output channel of the package tensor this layer fills (timm's ``conv_exp`` holds two
            darknet layers: part 1 in channels ``[0, h)``, part 2 in ``[h, 2h)``).
        swap_in_halves: the package tensor's input channels are darknet's with the two halves swapped (timm's
            ``conv_transition`` reads ``[part 1, blocks]``, darknet's ``[blocks, part 1]``).
    """

    index: int
    prefix: str
    batch_normalize: bool
    filters: int
    channels: int
    size: int
    out_start: int = 0
    swap_in_halves: bool = False

    def keys(self) -> dict[str, str]:
        """darknet field -> state_dict key, in ``.weights`` order."""
        if self.batch_normalize:
            p = self.prefix
            return {"bias": f"{p}.bn.bias", "scale": f"{p}.bn.weight", "mean": f"{p}.bn.running_mean",
                    "var": f"{p}.bn.running_var", "weights": f"{p}.conv.weight"}  # fmt: skip
        return {"bias": f"{self.prefix}.bias", "weights": f"{self.prefix}.weight"}

    @property
    def num_floats(self) -> int:
        return self.filters * (4 if self.batch_normalize else 1) + self.filters * self.channels * self.size**2


@dataclass
class DarknetLayout:
    """A package network as darknet layers.

    Attributes:
        name: ``"yolov4"`` or ``"yolov4-tiny"``.
        layers: the sections darknet computes (no ``[net]``), options as cfg strings.
        convs: one :class:`ConvSlot` per ``[convolutional]``, in layer order.
        yolo_levels: for each ``[yolo]`` section in order, the package level (index into ``cfg.strides``).
    """

    name: str
    layers: list[Section]
    convs: list[ConvSlot]
    yolo_levels: list[int]

    def mapping(self) -> dict[int, str]:
        """darknet layer index -> state_dict prefix (with ``[a:b]`` for a slice of timm's ``conv_exp``)."""
        out = {}
        for s in self.convs:
            tag = f"[{s.out_start}:{s.out_start + s.filters}]" if s.out_start or s.prefix.endswith("conv_exp") else ""
            out[s.index] = s.prefix + tag + (" (input halves swapped)" if s.swap_in_halves else "")
        return out


class _Builder:
    """Appends darknet sections and records conv slots; layer references are absolute indices."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.state = state
        self.layers: list[Section] = []
        self.convs: list[ConvSlot] = []
        self.yolo_levels: list[int] = []

    def _add(self, kind: str, **options: Any) -> int:
        self.layers.append(Section(kind, {k: str(v) for k, v in options.items()}, source="<layout>"))
        return len(self.layers) - 1

    def _rel(self, target: int) -> int:
        return target - len(self.layers)  # relative to the layer being added

    def conv(self, prefix: str, act: str, *, bn: bool = True, out: tuple[int, int] | None = None,
             stride: int = 1, swap_in: bool = False) -> int:  # fmt: skip
        key = f"{prefix}.conv.weight" if bn else f"{prefix}.weight"
        if key not in self.state:
            raise DarknetError(f"the network has no {key!r}: not the module layout expected (a fused model?)")
        weight = self.state[key]
        n_total, channels, size, _ = weight.shape
        start, stop = out if out is not None else (0, n_total)
        index = len(self.layers)
        self.convs.append(ConvSlot(index, prefix, bn, stop - start, channels, size, start, swap_in))
        options: dict[str, Any] = {}
        if bn:
            options["batch_normalize"] = 1
        options.update(filters=stop - start, size=size, stride=stride, pad=1, activation=act)
        return self._add("convolutional", **options)

    def route(self, *targets: int, groups: int = 1, group_id: int = 0) -> int:
        options: dict[str, Any] = {"layers": ",".join(str(self._rel(t)) for t in targets)}
        if groups != 1:
            options.update(groups=groups, group_id=group_id)
        return self._add("route", **options)

    def shortcut(self, target: int) -> int:
        return self._add("shortcut", **{"from": self._rel(target), "activation": "linear"})

    def maxpool(self, size: int, stride: int) -> int:
        return self._add("maxpool", size=size, stride=stride)

    def upsample(self, stride: int = 2) -> int:
        return self._add("upsample", stride=stride)

    def sam(self, target: int) -> int:
        return self._add("sam", **{"from": self._rel(target)})

    def yolo(self, level: int, model: YOLOv4, settings: dict[str, Any]) -> int:
        anchors = model.anchors.anchors
        per_level = anchors.shape[1]
        flat = [v for lvl in anchors.tolist() for wh in lvl for v in wh]
        options: dict[str, Any] = {
            "mask": ",".join(str(level * per_level + a) for a in range(per_level)),
            "anchors": ", ".join(_fmt(v) for v in flat),
            "classes": model.num_classes,
            "num": anchors.shape[0] * per_level,
            "scale_x_y": _fmt(float(model.anchors.scale_x_y[level])),
        }
        options.update(settings)
        self.yolo_levels.append(level)
        return self._add("yolo", **options)

    def head(self, level: int, model: YOLOv4, settings: dict[str, Any], act: str) -> int:
        self.conv(f"head.stems.{level}", act)
        self.conv(f"head.preds.{level}", "linear", bn=False)
        return self.yolo(level, model, settings)


def _fmt(v: float) -> str:
    return f"{v:g}" if float(v) != int(v) else str(int(v))


def _darknet_act(name: str | None, what: str) -> str:
    key = (name or "linear").lower()
    if key not in _ACT_TO_DARKNET:
        raise DarknetError(f"{what}: activation {name!r} has no darknet equivalent")
    return _ACT_TO_DARKNET[key]


def darknet_layout(model: YOLOv4, yolo_settings: dict[str, Any] | None = None) -> DarknetLayout:
    """The darknet layer list ``model`` computes, with the state_dict slot of every convolution.

    Args:
        model: a network with a darknet form: SPP/PAN on timm ``cspdarknet53`` with Mish (``yolov4_cspdarknet53``,
            optionally with SAM, other SPP kernels or none) or ``yolov4_tiny``.
        yolo_settings: extra ``[yolo]`` options to write (``ignore_thresh``, ``iou_loss``, ...).

    Raises:
        DarknetError: the network has no darknet form (another backbone, activation or neck); the message says
            which part.
    """
    cfg = model.cfg
    settings = dict(yolo_settings or {})
    b = _Builder(model.state_dict())
    if cfg.neck == "tiny_fpn" and cfg.backbone == "cspdarknet53_tiny":
        _tiny_layout(b, model, settings)
        name = "yolov4-tiny"
    elif cfg.neck == "pan" and cfg.backbone == "cspdarknet53":
        _pan_layout(b, model, settings)
        name = "yolov4"
    else:
        raise DarknetError(
            f"no darknet form for backbone {cfg.backbone!r} with neck {cfg.neck!r}: darknet files map to "
            "yolov4_cspdarknet53 (timm cspdarknet53 + PAN) and yolov4_tiny"
        )
    return DarknetLayout(name, b.layers, b.convs, b.yolo_levels)


def _pan_layout(b: _Builder, model: YOLOv4, settings: dict[str, Any]) -> None:
    cfg = model.cfg
    if cfg.backbone_act != "mish" or cfg.backbone_width not in (None, 1.0) or cfg.backbone_depth not in (None, 1.0):
        raise DarknetError(
            "the darknet form of the PAN models needs timm cspdarknet53 with act 'mish' at width/depth 1 (yolov4.cfg), "
            f"got act {cfg.backbone_act!r}, width {cfg.backbone_width}, depth {cfg.backbone_depth}"
        )
    if list(cfg.strides) != [8, 16, 32]:
        raise DarknetError(f"the yolov4 darknet form has strides 8, 16, 32, got {list(cfg.strides)}")
    if cfg.neck_attention != "none":
        raise DarknetError(f"neck_attention {cfg.neck_attention!r} (SE / CBAM) has no darknet form in yolov4.cfg")
    mish, act = "mish", _darknet_act(cfg.neck_act, "neck")
    body = model.backbone.body
    stage_names = sorted(
        {k.split(".")[2] for k in b.state if k.startswith("backbone.body.stages_")}, key=lambda s: int(s.split("_")[1])
    )
    b.conv("backbone.body.stem_conv1", mish)
    stage_out: list[int] = []
    for stage in stage_names:
        p = f"backbone.body.{stage}"
        down = b.conv(f"{p}.conv_down", mish, stride=2)
        exp = b.state[f"{p}.conv_exp.conv.weight"].shape[0]
        half = exp // 2
        part1 = b.conv(f"{p}.conv_exp", mish, out=(0, half))
        b.route(down)
        b.conv(f"{p}.conv_exp", mish, out=(half, exp))
        blocks = sorted({int(k.split(".")[4]) for k in b.state if k.startswith(f"{p}.blocks.")})
        for j in blocks:
            start = len(b.layers) - 1
            if f"{p}.blocks.{j}.conv3.conv.weight" in b.state:
                raise DarknetError(f"{p}.blocks.{j}: a bottleneck block, not darknet's 1x1 + 3x3 residual block")
            b.conv(f"{p}.blocks.{j}.conv1", mish)
            b.conv(f"{p}.blocks.{j}.conv2", mish)
            b.shortcut(start)
        b.conv(f"{p}.conv_transition_b", mish)
        b.route(len(b.layers) - 1, part1)
        stage_out.append(b.conv(f"{p}.conv_transition", mish, swap_in=True))
    del body
    levels = model.backbone.level_indices  # features_only list indices: stem is 0 for cspdarknet53
    c3, c4, c5 = (stage_out[i - 1] for i in levels)
    if c5 != len(b.layers) - 1:
        raise DarknetError("the stride-32 feature must be the backbone's last layer")
    neck = model.neck
    b.conv("neck.pre_spp.0", act)
    b.conv("neck.pre_spp.1", act)
    spp_in = b.conv("neck.pre_spp.2", act)
    kernels = sorted(getattr(neck.spp, "kernel_sizes", ()))
    pools = []
    for i, k in enumerate(kernels):
        if i:
            b.route(spp_in)
        pools.append(b.maxpool(k, 1))
    if pools:
        b.route(*reversed(pools), spp_in)
    b.conv("neck.post_spp.0", act)
    b.conv("neck.post_spp.1", act)
    p5 = b.conv("neck.post_spp.2", act)
    b.conv("neck.reduce5", act)
    b.upsample(2)
    b.route(c4)
    b.conv("neck.lateral4", act)
    b.route(len(b.layers) - 1, len(b.layers) - 3)
    p4 = [b.conv(f"neck.td4.{i}", act) for i in range(5)][-1]
    b.conv("neck.reduce4", act)
    b.upsample(2)
    b.route(c3)
    b.conv("neck.lateral3", act)
    b.route(len(b.layers) - 1, len(b.layers) - 3)
    n3 = [b.conv(f"neck.td3.{i}", act) for i in range(5)][-1]

    def level_head(level: int, feat: int) -> None:
        if neck.sam is not None:
            b.conv(f"neck.sam.{level}.attn", "logistic")
            b.sam(feat)
        b.head(level, model, settings, act)

    level_head(0, n3)
    b.route(n3)
    b.conv("neck.down3", act, stride=2)
    b.route(len(b.layers) - 1, p4)
    n4 = [b.conv(f"neck.bu4.{i}", act) for i in range(5)][-1]
    level_head(1, n4)
    b.route(n4)
    b.conv("neck.down4", act, stride=2)
    b.route(len(b.layers) - 1, p5)
    n5 = [b.conv(f"neck.bu5.{i}", act) for i in range(5)][-1]
    level_head(2, n5)


def _tiny_layout(b: _Builder, model: YOLOv4, settings: dict[str, Any]) -> None:
    cfg = model.cfg
    if list(cfg.strides) != [16, 32]:
        raise DarknetError(f"the yolov4-tiny darknet form has strides 16, 32, got {list(cfg.strides)}")
    bb = _darknet_act(cfg.backbone_act or "leaky", "backbone")
    act = _darknet_act(cfg.neck_act, "neck")
    p = "backbone.body"
    b.conv(f"{p}.stem_conv1", bb, stride=2)
    b.conv(f"{p}.stem_conv2", bb, stride=2)
    partial = -1
    for i in range(3):
        s = f"{p}.stages.{i}"
        first = b.conv(f"{s}.conv1", bb)
        b.route(first, groups=2, group_id=1)
        c2 = b.conv(f"{s}.conv2", bb)
        c3 = b.conv(f"{s}.conv3", bb)
        b.route(c3, c2)
        partial = b.conv(f"{s}.conv4", bb)
        b.route(first, partial)
        b.maxpool(2, 2)
    b.conv(f"{p}.conv_last", bb)
    p5 = b.conv("neck.reduce5", act)
    b.head(1, model, settings, act)
    b.route(p5)
    b.conv("neck.lateral5", act)
    b.upsample(2)
    b.route(len(b.layers) - 1, partial)
    b.head(0, model, settings, act)


# ----------------------------------------------------------------------------------------------------------------------
# structure check: the cfg against a layout


def _signature(s: Section, index: int) -> dict[str, Any]:
    """What determines the computation of a section (defaults as darknet's parser), for comparison."""
    t = s.type
    if t == "convolutional":
        size = s.get("size", 1)
        pad = s.get("pad", 0)
        padding = size // 2 if pad else s.get("padding", 0)
        stride = s.get("stride", 1)
        return {"filters": s.get("filters", 1), "size": size, "stride": stride, "padding": padding,
                "batch_normalize": s.get("batch_normalize", 0), "activation": s.get("activation", "logistic", str),
                "groups": s.get("groups", 1), "dilation": s.get("dilation", 1),
                "stride_x": s.get("stride_x", stride), "stride_y": s.get("stride_y", stride)}  # fmt: skip
    if t == "route":
        return {"layers": [v if v >= 0 else index + v for v in s.get_list("layers")],
                "groups": s.get("groups", 1), "group_id": s.get("group_id", 0)}  # fmt: skip
    if t in ("shortcut", "sam"):
        return {"from": [v if v >= 0 else index + v for v in s.get_list("from")],
                "activation": s.get("activation", "linear", str)}  # fmt: skip
    if t == "maxpool":
        size, stride = s.get("size", 1), s.get("stride", 1)
        return {"size": size, "stride": stride, "stride_x": s.get("stride_x", stride),
                "stride_y": s.get("stride_y", stride), "padding": s.get("padding", size - 1)}  # fmt: skip
    if t == "upsample":
        return {"stride": s.get("stride", 2), "scale": s.get("scale", 1.0, float)}
    if t == "yolo":
        return {"classes": s.get("classes", 20), "anchors": _yolo_anchors(s), "new_coords": s.get("new_coords", 0)}
    return {}


def _yolo_anchors(s: Section) -> list[tuple[float, float]]:
    values = s.get_list("anchors", float)
    if len(values) % 2:
        raise DarknetError(f"{s.where('anchors')}: [yolo] anchors has {len(values)} values, not (w, h) pairs")
    pairs = list(zip(values[0::2], values[1::2]))
    mask = s.get_list("mask") if "mask" in s.options else list(range(len(pairs)))
    bad = [m for m in mask if not 0 <= m < len(pairs)]
    if bad:
        raise DarknetError(f"{s.where('mask')}: [yolo] mask {bad} out of range for {len(pairs)} anchors")
    return [pairs[m] for m in mask]


def _check_keys(s: Section, index: int) -> None:
    known = _KNOWN_KEYS.get(s.type, set())
    if known is None:
        return
    extra = [k for k in s.options if k not in known]
    if extra:
        raise DarknetError(
            f"{s.where(extra[0])}: layer {index} [{s.type}]: key {extra[0]!r} is not supported "
            f"(supported: {sorted(known)}); see lightning_yolo.models.darknet.UNSUPPORTED"
        )


def check_structure(layers: Sequence[Section], layout: DarknetLayout, model_name: str) -> None:
    """Raise :class:`DarknetError` at the first cfg section that differs from ``layout``, naming line and key."""
    for i, (got, exp) in enumerate(zip(layers, layout.layers)):
        if got.type not in _KNOWN_KEYS:
            raise DarknetError(
                f"{got.where()}: layer {i} [{got.type}] is not supported (see lightning_yolo.models.darknet."
                f"UNSUPPORTED); the package's {model_name} has [{exp.type}] here"
            )
        _check_keys(got, i)
        if got.type != exp.type:
            raise DarknetError(
                f"{got.where()}: layer {i} is [{got.type}], the package's {model_name} ({layout.name}.cfg layout) "
                f"has [{exp.type}] here"
            )
        gs, es = _signature(got, i), _signature(exp, i)
        for key, value in es.items():
            if gs[key] != value:
                raise DarknetError(
                    f"{got.where(key if key in got.options else None)}: layer {i} [{got.type}]: {key} is {gs[key]}, "
                    f"the package's {model_name} ({layout.name}.cfg layout) has {value}"
                )
    if len(layers) != len(layout.layers):
        if len(layers) > len(layout.layers):
            extra = layers[len(layout.layers)]
            raise DarknetError(
                f"{extra.where()}: layer {len(layout.layers)} [{extra.type}] follows the last layer of the "
                f"package's {model_name} ({layout.name}.cfg layout has {len(layout.layers)} layers)"
            )
        last = layers[-1] if layers else None
        raise DarknetError(
            f"{last.where() if last else '<cfg>'}: the cfg ends after {len(layers)} layers; the package's "
            f"{model_name} ({layout.name}.cfg layout) has {len(layout.layers)}, "
            f"next [{layout.layers[len(layers)].type}]"
        )


# ----------------------------------------------------------------------------------------------------------------------
# weights <-> state_dict


def layout_state_dict(
    layout: DarknetLayout, data: np.ndarray, state: dict[str, torch.Tensor], source: str = "<weights>"
) -> tuple[dict[str, torch.Tensor], int]:
    """Fill copies of ``state``'s convolution tensors from a flat darknet payload.

    Returns:
        ``(tensors, floats_used)``: the state_dict entries written (cloned from ``state``, then filled).

    Raises:
        DarknetError: the payload ends inside a layer (names the layer and its prefix).
    """
    out: dict[str, torch.Tensor] = {}
    pos = 0
    total = int(data.size)
    for slot in layout.convs:
        if pos + slot.num_floats > total:
            raise DarknetError(
                f"{source}: ends inside darknet layer {slot.index} ({slot.prefix}): needs {slot.num_floats} floats "
                f"from offset {pos}, {total - pos} left; the weights belong to another cfg"
            )
        n = slot.filters
        for name, key in slot.keys().items():
            if key not in out:
                out[key] = state[key].detach().clone()
            count = n * slot.channels * slot.size**2 if name == "weights" else n
            values = torch.from_numpy(np.array(data[pos : pos + count], dtype=np.float32))
            pos += count
            if name == "weights":
                values = values.view(n, slot.channels, slot.size, slot.size)
                if slot.swap_in_halves:
                    values = _swap_halves(values)
            out[key][slot.out_start : slot.out_start + n] = values.to(out[key].dtype)
    return out, pos


def state_dict_arrays(layout: DarknetLayout, state: dict[str, torch.Tensor], eps: dict[str, float] | None = None):
    """The flat darknet payload of ``state``, one float32 array per field and layer, in ``.weights`` order.

    Args:
        eps: BatchNorm epsilon per conv prefix; a value other than darknet's 1e-5 is folded into the running
            variance (``var + eps - 1e-5``) so darknet computes the same normalisation.
    """
    arrays: list[np.ndarray] = []
    for slot in layout.convs:
        a, n = slot.out_start, slot.filters
        for name, key in slot.keys().items():
            t = state[key].detach().to("cpu", torch.float32)[a : a + n]
            if name == "weights" and slot.swap_in_halves:
                t = _swap_halves(t)
            if name == "var" and eps is not None and eps.get(slot.prefix, DARKNET_BN_EPS) != DARKNET_BN_EPS:
                t = t + (eps[slot.prefix] - DARKNET_BN_EPS)
            arrays.append(t.contiguous().numpy().reshape(-1))
    return arrays


def _swap_halves(w: torch.Tensor) -> torch.Tensor:
    h = w.shape[1] // 2
    return torch.cat([w[:, h:], w[:, :h]], dim=1)


def _bn_eps(model: YOLOv4) -> dict[str, float]:
    out = {}
    for name, m in model.named_modules():
        bn = getattr(m, "bn", None)
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            out[name] = float(bn.eps)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# import


_IOU_LOSSES = {"ciou", "diou", "giou", "iou", "mse"}  # = training.config.BOX_LOSSES; mse: YOLOv3's coordinate loss
_NMS_KINDS = {"greedynms": "greedy", "diounms": "diou"}


@dataclass
class DarknetImport:
    """A darknet model read into the package.

    Attributes:
        model: the network, weights loaded (eval mode) or randomly initialised when no weights were given.
        model_name: the package variant (``yolov4_cspdarknet53`` or ``yolov4_tiny``).
        model_overrides: :class:`ModelCfg` fields that differ from the variant (anchors, scale_x_y, bn_eps, ...).
        num_classes: ``classes`` of the ``[yolo]`` sections.
        module_hparams: :class:`~lightning_yolo.YOLOModule` arguments from ``[yolo]``: ``loss`` (a
            :class:`~lightning_yolo.training.config.LossCfg` dict: ``box_loss``, ``iou_thresh``, ``ignore_thresh``,
            ``label_smoothing``) and ``nms_kind``.
        img_size: ``[net]`` ``(height, width)``.
        layout: the darknet layout (index -> state_dict mapping in ``layout.mapping()``).
        header: ``.weights`` version and seen images (``None`` without weights).
        not_mapped: ``"[section] key=value"`` options read but without effect here (training settings).
    """

    model: YOLOv4
    model_name: str
    model_overrides: dict[str, Any]
    num_classes: int
    module_hparams: dict[str, Any]
    img_size: tuple[int, int]
    layout: DarknetLayout
    header: dict[str, Any] | None = None
    not_mapped: list[str] = field(default_factory=list)
    extra_floats: int = 0


def find_cfg(weights: str | os.PathLike, cfg: str | os.PathLike | None = None) -> Path:
    """The cfg of a ``.weights`` file: ``cfg`` if given, else ``<stem>.cfg`` next to it (or the only ``.cfg`` there)."""
    if cfg is not None:
        return Path(cfg)
    w = Path(weights)
    same = w.with_suffix(".cfg")
    if same.is_file():
        return same
    others = sorted(w.parent.glob("*.cfg"))
    if len(others) == 1:
        return others[0]
    raise FileNotFoundError(
        f"no darknet cfg for {os.fspath(w)!r}: give it (--model.darknet_cfg / convert CFG WEIGHTS) or put "
        f"{same.name} next to the weights" + (f" (found {[o.name for o in others]})" if others else "")
    )


def model_cfg_from_darknet(sections: Sequence[Section]) -> tuple[str, ModelCfg, int, dict[str, Any], list[str]]:
    """The package variant a cfg describes: ``(model_name, model_cfg, num_classes, module_hparams, not_mapped)``."""
    net, layers = _split_net(list(sections))
    source = sections[0].source if sections else "<cfg>"
    yolos = [s for s in layers if s.type == "yolo"]
    # channel-split routes (groups=2) are CSPDarknet53-tiny's; otherwise the cfg must be yolov4.cfg's family
    split = next((s for s in layers if s.type == "route" and s.get("groups", 1) != 1), None)
    name = "yolov4_tiny" if split is not None else "yolov4_cspdarknet53"
    expected = 2 if split is not None else 3
    if len(yolos) != expected:
        where = yolos[expected].where() if len(yolos) > expected else (yolos[-1].where() if yolos else source)
        why = (
            f"channel-split routes (as at {split.where()}) make it a yolov4-tiny cfg, and the package's yolov4_tiny "
            "has 2 levels (yolov4-tiny-3l is not supported)"
            if split is not None
            else "the package's yolov4_cspdarknet53 (yolov4.cfg) has 3 levels"
        )
        raise DarknetError(f"{where}: the cfg has {len(yolos)} [yolo] sections; {why}")
    base = get_model_cfg(name)
    levels = [0, 1, 2] if name == "yolov4_cspdarknet53" else [1, 0]  # [yolo] order -> level (tiny: stride 32 first)
    classes = {s.get("classes", 20) for s in yolos}
    if len(classes) != 1:
        raise DarknetError(f"{yolos[0].where('classes')}: [yolo] sections disagree on classes: {sorted(classes)}")
    num_classes = classes.pop()
    anchors: list[Any] = [None] * len(yolos)
    scale_x_y: list[float] = [1.0] * len(yolos)
    for s, level in zip(yolos, levels):
        if s.get("new_coords", 0):
            raise DarknetError(
                f"{s.where('new_coords')}: [yolo] new_coords=1 (scaled-YOLOv4 decoding) is not supported"
            )
        anchors[level] = tuple(tuple(wh) for wh in _yolo_anchors(s))
        scale_x_y[level] = s.get("scale_x_y", 1.0, float)
    if len({len(a) for a in anchors}) != 1:
        raise DarknetError(f"{yolos[0].where('mask')}: the [yolo] masks select different anchor counts per level")
    overrides: dict[str, Any] = {"anchors": tuple(anchors), "scale_x_y": tuple(scale_x_y), "bn_eps": DARKNET_BN_EPS}
    if name == "yolov4_cspdarknet53":
        sams = [s for s in layers if s.type == "sam"]
        overrides["sam"] = bool(sams)
        # SPP: the stride-1 max-pools of the neck (none: no SPP)
        overrides["spp_kernels"] = tuple(
            sorted(s.get("size", 1) for s in layers if s.type == "maxpool" and s.get("stride", 1) == 1)
        )
        pools = [s for s in layers if s.type == "maxpool"]
        bad = next((s for s in pools if s.get("stride", 1) != 1 or s.get("size", 1) % 2 == 0), None)
        if bad is not None:
            raise DarknetError(
                f"{bad.where()}: [maxpool] size={bad.get('size', 1)} stride={bad.get('stride', 1)}: the yolov4.cfg "
                "layout has only SPP's odd-size stride-1 pools"
            )
    model_cfg = base.replace(**overrides)

    first = yolos[0]
    loss: dict[str, Any] = {}  # LossCfg fields
    hparams: dict[str, Any] = {"loss": loss}
    not_mapped: list[str] = []
    if "iou_loss" in first.options:
        kind = first.get("iou_loss", "mse", str)
        if kind in _IOU_LOSSES:
            loss["box_loss"] = kind
        else:
            not_mapped.append(f"[yolo] iou_loss={kind} (box losses here: {sorted(_IOU_LOSSES)})")
    loss["iou_thresh"] = first.get("iou_thresh", 1.0, float)
    loss["ignore_thresh"] = first.get("ignore_thresh", 0.5, float)
    if "label_smooth_eps" in first.options:
        loss["label_smoothing"] = first.get("label_smooth_eps", 0.0, float)
    if "nms_kind" in first.options:
        kind = first.get("nms_kind", "default", str)
        if kind in _NMS_KINDS:
            hparams["nms_kind"] = _NMS_KINDS[kind]
        else:
            not_mapped.append(f"[yolo] nms_kind={kind} (NMS here: greedy, diou)")
    mapped = {"mask", "anchors", "classes", "num", "scale_x_y", "iou_loss", "iou_thresh", "ignore_thresh",
              "label_smooth_eps", "nms_kind", "new_coords"}  # fmt: skip
    for key in sorted(set(first.options) - mapped):
        not_mapped.append(f"[yolo] {key}={first.options[key]}")
    if net is not None:
        for key in sorted(set(net.options) - {"width", "height", "channels"}):
            not_mapped.append(f"[net] {key}={net.options[key]}")
    return name, model_cfg, num_classes, hparams, not_mapped


def load_darknet(
    cfg: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    cfg_text: str | None = None,
    strict_size: bool = True,
) -> DarknetImport:
    """Build the package network a darknet cfg describes and load its ``.weights``.

    Args:
        cfg: path of the ``.cfg`` (or a name for messages when ``cfg_text`` is given).
        weights: ``.weights`` file; ``None`` leaves the network randomly initialised (structure check only).
        cfg_text: the cfg text (instead of reading ``cfg``).
        strict_size: a payload longer than the cfg's layers is an error (``False``: ignore the rest, as darknet).

    Raises:
        FileNotFoundError: a file is missing.
        DarknetError (``ValueError``): the cfg does not map to a package model (names the first differing section
            with file line and key), or the weights do not fit it.

    Example:
        >>> imp = load_darknet("yolov4.cfg", "yolov4.weights")
        >>> imp.model_name, imp.num_classes, len(imp.layout.convs)
        ('yolov4_cspdarknet53', 80, 110)
    """
    sections = parse_cfg(cfg, cfg_text)
    net, layers = _split_net(sections)
    for i, s in enumerate(layers):
        if s.type not in _KNOWN_KEYS:
            raise DarknetError(
                f"{s.where()}: layer {i} [{s.type}] is not supported (see lightning_yolo.models.darknet.UNSUPPORTED)"
            )
    height, width, channels = 416, 416, 3
    if net is not None:
        height, width, channels = net.get("height", 416), net.get("width", 416), net.get("channels", 3)
    if channels != 3:
        where = net.where("channels") if net else os.fspath(cfg)
        raise DarknetError(f"{where}: [net] channels={channels}; the package reads RGB (3)")
    name, model_cfg, num_classes, hparams, not_mapped = model_cfg_from_darknet(sections)
    model = YOLOv4(model_cfg, num_classes)
    layout = darknet_layout(model, {})
    check_structure(layers, layout, name)
    base = get_model_cfg(name)
    overrides = {
        f.name: _plain(getattr(model_cfg, f.name))
        for f in dataclasses.fields(ModelCfg)
        if getattr(model_cfg, f.name) != getattr(base, f.name)
    }
    result = DarknetImport(model, name, overrides, num_classes, hparams, (height, width), layout, None, not_mapped)
    if weights is not None:
        w = read_weights(weights)
        state = model.state_dict()
        tensors, used = layout_state_dict(layout, w.data, state, os.fspath(weights))
        extra = int(w.data.size) - used
        if extra and strict_size:
            raise DarknetError(
                f"{os.fspath(weights)}: {extra} float32 values left after the {len(layout.convs)} convolutions of "
                f"{os.fspath(cfg)}; the weights belong to another cfg (pass strict_size=False to ignore the rest)"
            )
        model.load_state_dict(tensors, strict=False)
        result.header = {"version": list(w.version), "seen": w.seen}
        result.extra_floats = extra
    model.eval()
    return result


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v


# ----------------------------------------------------------------------------------------------------------------------
# export


def save_darknet(
    model: YOLOv4,
    cfg_path: str | os.PathLike,
    weights_path: str | os.PathLike,
    img_size: int | tuple[int, int] = 416,
    yolo_settings: dict[str, Any] | None = None,
    seen: int = 0,
) -> DarknetLayout:
    """Write ``model`` as a darknet ``.cfg`` + ``.weights`` pair (darknet, OpenCV DNN).

    Args:
        model: a network with a darknet form (see :func:`darknet_layout`); not fused.
        cfg_path, weights_path: output files.
        img_size: ``[net]`` width/height (``S`` or ``(H, W)``).
        yolo_settings: extra ``[yolo]`` options, e.g. ``{"iou_loss": "ciou", "ignore_thresh": 0.7}``.
        seen: images-seen count of the header.

    A BatchNorm epsilon other than darknet's 1e-5 is folded into the written running variances, so darknet's
    outputs equal this network's.
    """
    layout = darknet_layout(model, yolo_settings)
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    net = {"batch": 64, "subdivisions": 8, "width": width, "height": height, "channels": 3}
    header = f"# written by lightning_yolo from a {model.cfg.backbone} network ({layout.name}.cfg layout)\n"
    Path(cfg_path).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg_path).write_text(header + format_cfg(net, layout.layers), encoding="utf-8")
    write_weights(weights_path, state_dict_arrays(layout, model.state_dict(), _bn_eps(model)), seen=seen)
    return layout


# ----------------------------------------------------------------------------------------------------------------------
# fine-tuning from darknet weights


def init_from_darknet(model: YOLOv4, weights: str | os.PathLike, cfg: str | os.PathLike | None = None):
    """Initialise ``model`` from darknet ``weights`` (``cfg``: given, or found next to the weights).

    The cfg is loaded into its own package network first (checked section by section); then every tensor whose
    key and shape match is copied into ``model``, as for a checkpoint (the head is left re-initialised when the class
    count differs). The anchor buffer is copied too when its shape matches: the darknet anchors are the ones the
    weights were trained with.

    Returns:
        A :class:`lightning_yolo.models.weights.LoadReport`.

    Raises:
        DarknetError: the cfg describes another architecture than ``model`` (e.g. yolov4-tiny weights into
            ``yolov4_cspdarknet53``) or does not map at all.
    """
    cfg_path = find_cfg(weights, cfg)
    imp = load_darknet(cfg_path, weights)
    target_layout = darknet_layout(model)
    if target_layout.name != imp.layout.name:
        raise DarknetError(
            f"{os.fspath(cfg_path)} is a {imp.layout.name}.cfg network ({imp.model_name}); the model being trained "
            f"has the {target_layout.name}.cfg layout: use --model.model_name {imp.model_name}"
        )
    source = imp.model.state_dict()
    target = model.state_dict()
    report = LoadReport()
    matched: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key not in target:
            report.unexpected.append(key)
        elif target[key].shape != value.shape:
            report.shape_mismatch.append(key)
        elif key.startswith("anchors.") and key != "anchors.anchors":
            continue
        else:
            matched[key] = value
    report.missing = [k for k in target if k not in source]
    report.loaded = sorted(matched)
    with torch.no_grad():
        model.load_state_dict(matched, strict=False)
    report.head_reinitialised = any(k.startswith("head.preds") for k in report.shape_mismatch)
    return report
