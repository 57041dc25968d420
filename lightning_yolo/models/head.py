"""YOLO detection head: per level a 3x3 ConvNormAct then a 1x1 prediction conv with ``A * (5 + C)`` outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConvNormAct

__all__ = ["YOLOHead"]


class YOLOHead(nn.Module):
    """Anchor-based head, one 3x3 stem and one 1x1 prediction convolution per level.

    Args:
        in_channels: neck channels per level.
        num_classes: number of classes ``C``.
        anchors_per_level: anchors ``A`` per level.
        act: activation of the 3x3 convolutions.
        prior_prob: initial objectness probability.
        cls_prior_prob: initial class probability (``None``: ``1 / C``).
        stem_channels: output channels of each level's 3x3 convolution (``None``: twice its input, yolov4.cfg;
            yolov4-tiny's stride-16 level maps 384 -> 256).
        bn_eps: BatchNorm epsilon of the 3x3 convolutions (darknet: 1e-5).

    ``forward(feats) -> list[Tensor[B, A*(5+C), H, W]]``; per anchor the channels are
    ``(t_x, t_y, t_w, t_h, objectness, class_0 .. class_{C-1})``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        anchors_per_level: int = 3,
        act: str = "leaky",
        prior_prob: float = 0.01,
        cls_prior_prob: float | None = None,
        stem_channels: Sequence[int] | None = None,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.anchors_per_level = anchors_per_level
        self.prior_prob = prior_prob
        self.cls_prior_prob = cls_prior_prob
        if stem_channels is None:
            stem_channels = [2 * c for c in self.in_channels]
        if len(stem_channels) != len(self.in_channels):
            raise ValueError(f"stem_channels {list(stem_channels)} must have one value per level {self.in_channels}")
        self.stem_channels = [int(c) for c in stem_channels]
        self.stems = nn.ModuleList(
            ConvNormAct(c, s, 3, act=act, eps=bn_eps) for c, s in zip(self.in_channels, self.stem_channels)
        )
        self.num_classes = 0
        self.preds = nn.ModuleList()
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        """(Re)create and initialise the prediction convolutions for ``num_classes`` classes."""
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.num_classes = int(num_classes)
        device = self.stems[0].conv.weight.device
        outs = self.anchors_per_level * (5 + self.num_classes)
        self.preds = nn.ModuleList(nn.Conv2d(c, outs, 1, bias=True) for c in self.stem_channels).to(device)
        self.init_bias()

    @torch.no_grad()
    def init_bias(self) -> None:
        """Prior-probability bias initialisation (RetinaNet, Lin et al. 2017) for objectness and classes.

        Starting from p=0.01 objectness keeps the thousands of background cells from swamping the loss at
        step 0; box biases start at 0 (anchor-sized boxes at the cell centre).
        """
        cls_p = self.cls_prior_prob if self.cls_prior_prob is not None else 1.0 / max(self.num_classes, 1)
        cls_p = min(max(cls_p, 1e-4), 1 - 1e-4)
        for conv in self.preds:
            nn.init.normal_(conv.weight, std=0.01)
            b = conv.bias.view(self.anchors_per_level, 5 + self.num_classes)
            b.zero_()
            b[:, 4] = math.log(self.prior_prob / (1 - self.prior_prob))
            b[:, 5:] = math.log(cls_p / (1 - cls_p))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [pred(stem(f)) for f, stem, pred in zip(feats, self.stems, self.preds)]
