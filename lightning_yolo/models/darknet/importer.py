"""darknet files into the package: map a cfg onto a package network, check it section by section, load weights.

:func:`load_darknet` builds the network a cfg describes; :func:`init_from_darknet` initialises a network being
trained from darknet weights; :data:`UNSUPPORTED` lists what does not map, and why.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import ModelCfg
from ..factory import get_model_cfg
from ..weights import LoadReport
from ..yolo import YOLOv4
from .cfg import DarknetError, Section, parse_cfg, split_net
from .layout import DARKNET_BN_EPS, DarknetLayout, darknet_layout, layout_state_dict
from .weights_file import read_weights

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
            ``label_smoothing``) and ``inference`` (an :class:`~lightning_yolo.ops.postprocess.InferenceCfg` dict:
            ``nms_kind``).
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
    net, layers = split_net(list(sections))
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
            hparams["inference"] = {"nms_kind": _NMS_KINDS[kind]}  # an InferenceCfg dict
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
    net, layers = split_net(sections)
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
