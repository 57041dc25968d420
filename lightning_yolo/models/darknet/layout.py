"""The darknet layer list a package network computes, and where each convolution's weights live in its ``state_dict``.

:func:`darknet_layout` builds a :class:`DarknetLayout` (sections + one :class:`ConvSlot` per convolution);
:func:`layout_state_dict` and :func:`state_dict_arrays` move a flat ``.weights`` payload in and out through the slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..yolo import YOLOv4
from .cfg import DarknetError, Section

#: darknet's BatchNorm epsilon (``src/blas.c`` ``normalize_cpu``: ``sqrt(variance + .00001f)``).
DARKNET_BN_EPS = 1e-5

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
