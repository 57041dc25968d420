"""darknet's YOLOv4-tiny: the CSPDarknet53-tiny backbone and its two-level FPN neck (``cfg/yolov4-tiny.cfg``).

CSPDarknet53-tiny is not in timm, so it is built here from this package's :class:`~.layers.ConvNormAct`, module for
module in darknet's layer order (see :mod:`.darknet` for the index -> ``state_dict`` key mapping):

* stem: two 3x3 stride-2 convolutions (32, 64 channels);
* three CSP-tiny stages, each ``conv3x3 (c)`` -> take the second half of its channels (darknet ``[route] groups=2
  group_id=1``) -> ``conv3x3 (c/2)`` -> ``conv3x3 (c/2)`` -> concat of the two -> ``conv1x1 (c)`` -> concat with
  the first ``conv3x3`` -> 2x2 max-pool; ``c`` = 64, 128, 256;
* a final 3x3 convolution (512 channels) at stride 32.

The neck: ``conv1x1`` 512 -> 256 at stride 32 (the stride-32 head input), then ``conv1x1`` 256 -> 128, 2x nearest
upsampling and concatenation with the last stage's ``conv1x1`` output (256 channels at stride 16): 384 channels
for the stride-16 head, whose 3x3 convolution maps them to 256 (the stride-32 one maps 256 -> 512).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .layers import ConvNormAct

__all__ = ["CSPDarknetTiny", "TinyCSPStage", "TinyFPNNeck"]


class TinyCSPStage(nn.Module):
    """One CSP-tiny stage (darknet yolov4-tiny layers 2-9, 10-17, 18-25).

    ``forward(x) -> (pooled, partial)``: ``pooled`` ``[B, 2c, H/2, W/2]`` goes to the next stage, ``partial``
    ``[B, c, H, W]`` (the ``conv1x1`` output) is the stage's feature for the neck.
    """

    def __init__(self, in_chs: int, channels: int, act: str = "leaky", eps: float = 1e-5) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"CSP-tiny stage channels must be even (split in two), got {channels}")
        half = channels // 2
        self.channels = channels
        self.conv1 = ConvNormAct(in_chs, channels, 3, act=act, eps=eps)
        self.conv2 = ConvNormAct(half, half, 3, act=act, eps=eps)
        self.conv3 = ConvNormAct(half, half, 3, act=act, eps=eps)
        self.conv4 = ConvNormAct(channels, channels, 1, act=act, eps=eps)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.conv1(x)
        b = self.conv2(a[:, self.channels // 2 :])  # [route] groups=2 group_id=1: the second half
        c = self.conv3(b)
        partial = self.conv4(torch.cat([c, b], dim=1))  # [route] layers=-1,-2
        return self.pool(torch.cat([a, partial], dim=1)), partial  # [route] layers=-6,-1; [maxpool] size=2


class CSPDarknetTiny(nn.Module):
    """CSPDarknet53-tiny (darknet yolov4-tiny.cfg layers 0-26) with a timm-like ``feature_info``.

    Args:
        act: activation (darknet: leaky ReLU 0.1).
        eps: BatchNorm epsilon (darknet 1e-5).
        width: channel multiplier (1.0: darknet's 32, 64, 64/128/256, 512).

    ``forward(x) -> [f8, f16, f32]``: the ``conv1x1`` outputs of the second and third stage (strides 8 and 16)
    and the last 3x3 convolution (stride 32).
    """

    def __init__(self, act: str = "leaky", eps: float = 1e-5, width: float = 1.0) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        self.stem_conv1 = ConvNormAct(3, ch(32), 3, stride=2, act=act, eps=eps)
        self.stem_conv2 = ConvNormAct(ch(32), ch(64), 3, stride=2, act=act, eps=eps)
        self.stages = nn.ModuleList(
            [
                TinyCSPStage(ch(64), ch(64), act, eps),
                TinyCSPStage(2 * ch(64), ch(128), act, eps),
                TinyCSPStage(2 * ch(128), ch(256), act, eps),
            ]
        )
        self.conv_last = ConvNormAct(2 * ch(256), ch(512), 3, act=act, eps=eps)
        self._channels = [ch(128), ch(256), ch(512)]
        self._reductions = [8, 16, 32]

    def reductions(self) -> list[int]:
        return list(self._reductions)

    def channels(self) -> list[int]:
        return list(self._channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem_conv2(self.stem_conv1(x))
        x, _ = self.stages[0](x)
        x, f8 = self.stages[1](x)
        x, f16 = self.stages[2](x)
        return [f8, f16, self.conv_last(x)]


class TinyFPNNeck(nn.Module):
    """yolov4-tiny's neck for two levels (strides 16, 32): darknet layers 27 and 31-34.

    Args:
        in_channels: backbone channels at strides 16 and 32 (CSPDarknet53-tiny: 256, 512).
        act: activation (darknet: leaky ReLU 0.1).
        bn_eps: BatchNorm epsilon.

    ``forward([f16, f32]) -> [cat(up(lateral(p5)), f16), p5]`` with channels :attr:`out_channels` (384, 256);
    :attr:`head_channels` are the widths of the head's 3x3 convolutions (256, 512).
    """

    def __init__(self, in_channels: Sequence[int], act: str = "leaky", bn_eps: float = 1e-5) -> None:
        super().__init__()
        if len(in_channels) != 2:
            raise ValueError(f"TinyFPNNeck expects 2 input levels (strides 16, 32), got channels {list(in_channels)}")
        c4, c5 = (int(c) for c in in_channels)
        self.reduce5 = ConvNormAct(c5, c5 // 2, 1, act=act, eps=bn_eps)
        self.lateral5 = ConvNormAct(c5 // 2, c5 // 4, 1, act=act, eps=bn_eps)
        self.out_channels: list[int] = [c5 // 4 + c4, c5 // 2]
        self.head_channels: list[int] = [c4, c5]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x4, x5 = feats
        p5 = self.reduce5(x5)
        up = F.interpolate(self.lateral5(p5), size=x4.shape[-2:], mode="nearest")
        return [torch.cat([up, x4], dim=1), p5]
