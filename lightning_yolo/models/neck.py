"""YOLOv4 neck: SPP on the deepest level, then PAN (top-down and bottom-up paths joined by concatenation).

Follows darknet ``cfg/yolov4.cfg`` layer for layer; each level's width is half its backbone channels
(times ``width``), so for CSPDarknet53 (256, 512, 1024) the neck runs at (128, 256, 512) as in darknet.

``fpn=True`` is the ablation the paper's PAN is compared with: the top-down path only, each lateral feature
merged with the upsampled coarser one by addition (FPN, Lin et al. 2017), with the same conv stacks, levels and
widths, so the head and the loss do not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import SAM, SPP, ConvNormAct, DropBlock2d, attention_module

__all__ = ["PANNeck"]


def _conv_stack(in_chs: int, width: int, n: int, act: str, eps: float = 1e-3) -> nn.Sequential:
    """Darknet's alternating 1x1 (width) / 3x3 (2*width) convolutions, ``n`` layers, ending on a 1x1."""
    layers = []
    chs = in_chs
    for i in range(n):
        k, out = (1, width) if i % 2 == 0 else (3, width * 2)
        layers.append(ConvNormAct(chs, out, k, act=act, eps=eps))
        chs = out
    return nn.Sequential(*layers)


class PANNeck(nn.Module):
    """SPP + PAN (or FPN) for three levels (strides 8, 16, 32).

    Args:
        in_channels: backbone channels at strides 8, 16, 32.
        width: multiplier on the neck widths.
        act: activation name (darknet: leaky ReLU 0.1).
        spp_kernels: SPP max-pool sizes; empty disables SPP.
        sam: apply modified SAM to each output.
        attention: ``"none"``, ``"se"`` or ``"cbam"`` (timm's modules) on each output, after SAM.
        fpn: top-down path only, merging by addition (FPN) instead of PAN's concatenation and bottom-up path; the
            outputs are the top-down features (``N5`` is the SPP output ``P5``).
        dropblock: DropBlock probability applied to each output while training (0 disables).
        dropblock_size: DropBlock block size.
        bn_eps: BatchNorm epsilon (darknet: 1e-5).

    ``forward(feats) -> [N3, N4, N5]`` with channels :attr:`out_channels`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        width: float = 1.0,
        act: str = "leaky",
        spp_kernels: Sequence[int] = (5, 9, 13),
        sam: bool = False,
        dropblock: float = 0.0,
        dropblock_size: int = 7,
        bn_eps: float = 1e-3,
        attention: str = "none",
        fpn: bool = False,
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"PANNeck expects 3 input levels, got channels {list(in_channels)}")
        c3, c4, c5 = in_channels
        w3, w4, w5 = (max(8, int(round(c * width / 2))) for c in in_channels)
        # Deepest level: 3 convs, SPP, 3 convs (darknet layers 105-116).
        self.pre_spp = _conv_stack(c5, w5, 3, act, bn_eps)
        self.spp = SPP(spp_kernels) if len(spp_kernels) else nn.Identity()
        self.post_spp = _conv_stack(w5 * (len(spp_kernels) + 1), w5, 3, act, bn_eps)
        # Top-down path.
        self.reduce5 = ConvNormAct(w5, w4, 1, act=act, eps=bn_eps)
        self.lateral4 = ConvNormAct(c4, w4, 1, act=act, eps=bn_eps)
        merged = 1 if fpn else 2  # FPN adds the lateral and upsampled maps, PAN concatenates them
        self.fpn = bool(fpn)
        self.td4 = _conv_stack(merged * w4, w4, 5, act, bn_eps)
        self.reduce4 = ConvNormAct(w4, w3, 1, act=act, eps=bn_eps)
        self.lateral3 = ConvNormAct(c3, w3, 1, act=act, eps=bn_eps)
        self.td3 = _conv_stack(merged * w3, w3, 5, act, bn_eps)
        if not fpn:
            # Bottom-up path (PAN, concatenation instead of addition: YOLOv4 paper section 3.4).
            self.down3 = ConvNormAct(w3, w4, 3, stride=2, act=act, eps=bn_eps)
            self.bu4 = _conv_stack(2 * w4, w4, 5, act, bn_eps)
            self.down4 = ConvNormAct(w4, w5, 3, stride=2, act=act, eps=bn_eps)
            self.bu5 = _conv_stack(2 * w5, w5, 5, act, bn_eps)
        self.out_channels: list[int] = [w3, w4, w5]
        self.sam = nn.ModuleList(SAM(c, eps=bn_eps) for c in self.out_channels) if sam else None
        self.attention = (
            nn.ModuleList(attention_module(attention, c) for c in self.out_channels) if attention != "none" else None
        )
        self.dropblock = DropBlock2d(dropblock, dropblock_size) if dropblock > 0 else None

    def _merge(self, lateral: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return lateral + up if self.fpn else torch.cat([lateral, up], dim=1)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x3, x4, x5 = feats
        p5 = self.post_spp(self.spp(self.pre_spp(x5)))
        up5 = F.interpolate(self.reduce5(p5), size=x4.shape[-2:], mode="nearest")
        p4 = self.td4(self._merge(self.lateral4(x4), up5))
        up4 = F.interpolate(self.reduce4(p4), size=x3.shape[-2:], mode="nearest")
        n3 = self.td3(self._merge(self.lateral3(x3), up4))
        if self.fpn:
            outs = [n3, p4, p5]
        else:
            n4 = self.bu4(torch.cat([self.down3(n3), p4], dim=1))
            n5 = self.bu5(torch.cat([self.down4(n4), p5], dim=1))
            outs = [n3, n4, n5]
        if self.sam is not None:
            outs = [sam(o) for sam, o in zip(self.sam, outs)]
        if self.attention is not None:
            outs = [attn(o) for attn, o in zip(self.attention, outs)]
        if self.dropblock is not None:
            outs = [self.dropblock(o) for o in outs]
        return outs
