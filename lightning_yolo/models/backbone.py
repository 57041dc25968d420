"""timm backbones with ``features_only``: the stride 8 / 16 / 32 levels picked from ``feature_info``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import timm
import torch
from torch import nn

__all__ = ["Backbone", "PACKAGE_BACKBONES"]

#: Backbones built by this package (not timm models): darknet's CSPDarknet53-tiny (:mod:`.tiny`).
PACKAGE_BACKBONES = ("cspdarknet53_tiny",)


def _scaled_cspnet_cfg(name: str, width: float | None, depth: float | None):
    """A timm CSPNet config with channels and block counts scaled (timm's own ``_cs3_cfg`` multipliers)."""
    from timm.layers import make_divisible
    from timm.models import cspnet

    if name not in cspnet.model_cfgs:
        raise ValueError(
            f"backbone_width / backbone_depth apply to timm CSPNet models only ({sorted(cspnet.model_cfgs)}), "
            f"got backbone {name!r}"
        )
    cfg = cspnet.model_cfgs[name]
    w = 1.0 if width is None else float(width)
    d = 1.0 if depth is None else float(depth)
    if w <= 0 or d <= 0:
        raise ValueError(f"backbone_width and backbone_depth must be > 0, got {width!r} and {depth!r}")
    stem_chs = cfg.stem.out_chs
    stem_chs = tuple(make_divisible(c * w) for c in stem_chs) if isinstance(stem_chs, tuple) else make_divisible(stem_chs * w)
    stages = dataclasses.replace(
        cfg.stages,
        out_chs=tuple(make_divisible(c * w) for c in cfg.stages.out_chs),
        depth=tuple(max(1, round(n * d)) for n in cfg.stages.depth),
    )
    return dataclasses.replace(cfg, stem=dataclasses.replace(cfg.stem, out_chs=stem_chs), stages=stages)


class Backbone(nn.Module):
    """A timm model used as a feature extractor for the given strides.

    Args:
        name: timm model name (must support ``features_only``).
        strides: output strides to return, e.g. ``(8, 16, 32)``.
        act: activation override passed to timm as ``act_layer`` (``"mish"``, ``"leaky_relu"``, ...).
        width: channel multiplier for timm CSPNet models (``None`` keeps the named model).
        depth: block-count multiplier for timm CSPNet models.
        pretrained: ``None`` / ``False``: random initialisation; a path: a local checkpoint file (a timm state
            dict of the full classification model), read offline; ``True``: timm's ImageNet weights, downloaded
            through timm's own hub support (Hugging Face Hub) on first use and cached.
        bn_eps: BatchNorm epsilon of the package's own backbones (timm models keep theirs, 1e-5).
    """

    def __init__(
        self,
        name: str,
        strides: Sequence[int] = (8, 16, 32),
        act: str | None = None,
        width: float | None = None,
        depth: float | None = None,
        pretrained: str | bool | None = None,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if pretrained is False:
            pretrained = None
        if name in PACKAGE_BACKBONES:
            self._init_package_backbone(name, strides, act, width, depth, pretrained, bn_eps)
            return
        kwargs: dict = {"features_only": True}
        if act is not None:
            kwargs["act_layer"] = act
        if isinstance(pretrained, str | os.PathLike):
            if not os.path.isfile(pretrained):
                raise FileNotFoundError(
                    f"pretrained_backbone: no such file {pretrained!r} (a path is read offline; "
                    "pretrained_backbone: true downloads timm's ImageNet weights)"
                )
            kwargs["pretrained_cfg_overlay"] = {"file": os.fspath(pretrained)}
        elif pretrained is not None and pretrained is not True:
            raise ValueError(f"pretrained_backbone must be a file path, true or false/null, got {pretrained!r}")
        if not timm.is_model(name):
            raise ValueError(f"backbone: unknown timm model {name!r}; see timm.list_models('*darknet*')")
        scaled = width not in (None, 1.0) or depth not in (None, 1.0)
        if scaled:
            from timm.models import build_model_with_cfg, cspnet

            cfg = _scaled_cspnet_cfg(name, width, depth)
            if pretrained is not None:
                raise ValueError("pretrained_backbone cannot be combined with backbone_width / backbone_depth")
            out_indices = (0, 1, 2, 3, 4, 5) if name.startswith(("darknet", "cspdarknet")) else (0, 1, 2, 3, 4)
            self.body = build_model_with_cfg(
                cspnet.CspNet,
                name,
                pretrained=False,
                model_cfg=cfg,
                feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
                **kwargs,
            )
        else:
            # a path: timm reads the file (pretrained_cfg_overlay); True: timm downloads through its hub support
            self.body = timm.create_model(name, pretrained=pretrained is not None, **kwargs)
        self._pick_levels(name, strides, list(self.body.feature_info.reduction()), self.body.feature_info.channels())

    def _init_package_backbone(self, name, strides, act, width, depth, pretrained, bn_eps) -> None:
        from .tiny import CSPDarknetTiny

        if pretrained is not None:
            raise ValueError(
                f"pretrained_backbone: backbone {name!r} has no ImageNet weights; start from darknet weights instead "
                "(lightning-yolo convert, or --model.init_from yolov4-tiny.weights)"
            )
        if depth not in (None, 1.0):
            raise ValueError(f"backbone_depth does not apply to backbone {name!r} (fixed depth), got {depth!r}")
        self.body = CSPDarknetTiny(act=act or "leaky", eps=bn_eps, width=1.0 if width is None else float(width))
        self._pick_levels(name, strides, self.body.reductions(), self.body.channels())

    def _pick_levels(self, name: str, strides: Sequence[int], reductions: list[int], channels: list[int]) -> None:
        missing = [s for s in strides if s not in reductions]
        if missing:
            raise ValueError(f"backbone {name!r} has feature strides {reductions}; strides {missing} are missing")
        #: indices into the features_only output list of the requested strides
        self.level_indices: list[int] = [reductions.index(s) for s in strides]
        self.out_channels: list[int] = [channels[i] for i in self.level_indices]
        self.strides: list[int] = list(strides)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self.level_indices]
