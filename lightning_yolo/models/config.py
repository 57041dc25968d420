"""Model configurations: architecture as data.

A variant is a frozen :class:`ModelCfg`; overrides are applied with :func:`dataclasses.replace`, and an
override left at ``None`` never clobbers a default (timm's convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..settings import Settings
from .anchors import COCO_ANCHORS, SCALE_X_Y, STRIDES

__all__ = ["ModelCfg", "MODEL_CFGS", "NECKS", "NECK_ATTENTIONS"]

#: ``ModelCfg.neck`` choices.
NECKS: tuple[str, ...] = ("pan", "fpn", "tiny_fpn")
#: ``ModelCfg.neck_attention`` choices.
NECK_ATTENTIONS: tuple[str, ...] = ("none", "se", "cbam")


@dataclass(frozen=True)
class ModelCfg(Settings):
    """Everything that defines a YOLOv4 network.

    Attributes:
        backbone: timm model name; any model that supports ``features_only`` and has stride 8/16/32 levels.
        backbone_act: activation override passed to timm as ``act_layer`` (``"mish"`` for CSPDarknet53-Mish);
            ``None`` keeps the timm default.
        backbone_width: channel multiplier applied to a timm CSPNet config (``None`` or 1.0: the named model as is).
        backbone_depth: block-count multiplier applied to a timm CSPNet config.
        pretrained_backbone: ``None`` / ``False`` (default): no ImageNet weights (offline); a path: a local timm
            checkpoint for the backbone, read offline; ``True``: timm's ImageNet weights through timm's hub support
            (downloaded once, then cached).
        neck_act: activation of the neck and head convolutions (``"leaky"`` = leaky ReLU slope 0.1, darknet).
        neck_width: multiplier on the neck widths (each level's neck width is half its backbone channels).
        neck: ``"pan"`` (SPP + PAN, three levels, yolov4.cfg), ``"fpn"`` (SPP + the top-down path only, merging by
            addition: the FPN the paper's concatenating PAN is compared with; same levels and widths, so the head and
            loss are unchanged; no darknet form) or ``"tiny_fpn"`` (yolov4-tiny.cfg, two levels).
        neck_attention: channel attention on each PAN / FPN output level, after SAM (the paper's "bag of specials"
            attention modules): ``"none"``, ``"se"`` (squeeze-and-excitation, timm ``SEModule``) or ``"cbam"``
            (channel + spatial attention, timm ``CbamModule``); no darknet form.
        bn_eps: BatchNorm epsilon of the neck, the head and the package's own backbones (darknet: 1e-5; 1e-3, the
            YOLOX value, is the default of the timm-backbone variants trained here; darknet weights load with 1e-5).
        spp_kernels: max-pool kernel sizes of SPP (darknet yolov4.cfg: 5, 9, 13); empty disables SPP.
        sam: modified (point-wise) spatial attention on each PAN output (YOLOv4 paper, section 3.4).
        dropblock: DropBlock probability in the neck (0 disables); ``dropblock_size`` is its block size.
        anchors: per level, per anchor ``(w, h)`` in input pixels.
        strides: output strides of the detection levels.
        scale_x_y: grid-sensitivity factor per level.
        prior_prob: initial objectness probability (bias initialisation, RetinaNet-style).
        cls_prior_prob: initial class probability; ``None`` uses ``1 / num_classes``.
    """

    _what = "model config key"  # in the error for an unknown name (not a field: no annotation)

    backbone: str = "cspdarknet53"
    backbone_act: str | None = "mish"
    backbone_width: float | None = None
    backbone_depth: float | None = None
    pretrained_backbone: str | bool | None = None
    neck_act: str = "leaky"
    neck_width: float = 1.0
    neck: str = "pan"
    neck_attention: str = "none"
    bn_eps: float = 1e-3
    spp_kernels: tuple[int, ...] = (5, 9, 13)
    sam: bool = False
    dropblock: float = 0.0
    dropblock_size: int = 7
    anchors: tuple[tuple[tuple[float, float], ...], ...] = COCO_ANCHORS
    strides: tuple[int, ...] = STRIDES
    scale_x_y: tuple[float, ...] = SCALE_X_Y
    prior_prob: float = 0.01
    cls_prior_prob: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, allowed in (("neck", NECKS), ("neck_attention", NECK_ATTENTIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"ModelCfg.{name} must be one of {list(allowed)}, got {value!r}")

    def replace(self, **overrides: Any) -> ModelCfg:
        """Return a copy with the given fields replaced; ``None`` values are ignored (timm's convention)."""
        self.check_names(overrides)
        return super().replace(**{k: v for k, v in overrides.items() if v is not None})


# Anchors for small inputs: the COCO anchors scaled from 608 px to 256 px, for the pico test/demo variant.
_SMALL_ANCHORS = tuple(tuple((round(w * 256 / 608, 1), round(h * 256 / 608, 1)) for w, h in lvl) for lvl in COCO_ANCHORS)

MODEL_CFGS: dict[str, ModelCfg] = {
    # The paper model: CSPDarknet53 with Mish, SPP, PAN, leaky ReLU 0.1 in the neck (darknet yolov4.cfg).
    "yolov4_cspdarknet53": ModelCfg(),
    # Smaller timm CS3Darknet backbones (SiLU in timm); the neck keeps darknet's leaky ReLU.
    "yolov4_cs3darknet_s": ModelCfg(backbone="cs3darknet_s", backbone_act=None),
    "yolov4_cs3darknet_m": ModelCfg(backbone="cs3darknet_m", backbone_act=None),
    "yolov4_cs3darknet_l": ModelCfg(backbone="cs3darknet_l", backbone_act=None),
    # Scaled members for small data and CPUs: timm's cs3darknet_s with width / depth multipliers (timm's own
    # CSPNet scaling), the neck at half the backbone widths as above. nano: 3.1M parameters, 6.3 GFLOPs at 640;
    # small: 7.0M, 14.0 GFLOPs at 640 (80 classes).
    "yolov4_nano": ModelCfg(backbone="cs3darknet_s", backbone_act=None, backbone_width=0.5, backbone_depth=1.0),
    "yolov4_small": ModelCfg(backbone="cs3darknet_s", backbone_act=None, backbone_width=0.75, backbone_depth=1.0),
    # A quarter-width, one-block-per-stage CS3Darknet for tests and the CPU demo (~0.3M parameters). Not darknet's
    # yolov4-tiny: a test-size network.
    "yolov4_pico": ModelCfg(
        backbone="cs3darknet_s",
        backbone_act=None,
        backbone_width=0.25,
        backbone_depth=0.34,
        neck_width=0.5,
        anchors=_SMALL_ANCHORS,
    ),
    # darknet's yolov4-tiny (cfg/yolov4-tiny.cfg): CSPDarknet53-tiny with channel-split routes, leaky ReLU, two
    # levels (strides 16, 32) with darknet's anchors and masks 1,2,3 / 3,4,5; ~6.1M parameters, ~6.9 GFLOPs at 416.
    "yolov4_tiny": ModelCfg(
        backbone="cspdarknet53_tiny",
        backbone_act="leaky",
        neck="tiny_fpn",
        bn_eps=1e-5,
        spp_kernels=(),
        anchors=(((23, 27), (37, 58), (81, 82)), ((81, 82), (135, 169), (344, 319))),
        strides=(16, 32),
        scale_x_y=(1.05, 1.05),
    ),
}
