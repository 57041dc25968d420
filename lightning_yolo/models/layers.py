"""Building blocks of the neck and head: ConvNormAct presets, SPP, modified SAM, SE / CBAM, DropBlock, fusing."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from timm.layers import SEModule
from timm.layers.cbam import CbamModule  # not re-exported by timm.layers
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_conv_bn_weights
from torchvision.ops import drop_block2d

__all__ = [
    "get_act", "ConvNormAct", "SPP", "SAM", "attention_module", "DropBlock2d", "fuse_conv_bn_", "FusedMirror",
]  # fmt: skip


def get_act(name: str | None) -> nn.Module:
    """Activation module by name.

    ``"leaky"`` is leaky ReLU with slope 0.1 as in darknet (PyTorch and timm default to 0.01).
    """
    key = (name or "linear").lower()
    if key in ("leaky", "leaky_relu"):
        return nn.LeakyReLU(0.1, inplace=True)
    if key == "mish":
        return nn.Mish(inplace=True)
    if key in ("silu", "swish"):
        return nn.SiLU(inplace=True)
    if key == "relu":
        return nn.ReLU(inplace=True)
    if key in ("sigmoid", "logistic"):
        return nn.Sigmoid()
    if key in ("linear", "identity", "none"):
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}; expected one of leaky, mish, silu, relu, sigmoid, linear")


class ConvNormAct(nn.Module):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> activation: darknet's ``[convolutional]``.

    State-dict keys are ``conv.*`` and ``bn.*``; :func:`fuse_conv_bn_` folds ``bn`` into ``conv``.
    """

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, act: str = "leaky", eps: float = 1e-3
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2, bias=False)
        # momentum as YOLOX; eps 1e-3 as YOLOX by default, 1e-5 for darknet's own networks and weights
        # (darknet normalises with sqrt(var + 1e-5)); see ModelCfg.bn_eps.
        self.bn: nn.Module = nn.BatchNorm2d(out_chs, eps=eps, momentum=0.03)
        self.act = get_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv4 / darknet): concat of stride-1 max-pools and the input.

    Channels grow from ``C`` to ``C * (len(kernel_sizes) + 1)``. Order follows darknet's route layer
    (largest pool first, input last) so darknet weights map one to one.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        for k in kernel_sizes:
            if k % 2 != 1:
                raise ValueError(f"SPP kernel sizes must be odd to keep the map size, got {list(kernel_sizes)}")
        self.kernel_sizes = tuple(sorted(kernel_sizes, reverse=True))
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in self.kernel_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([pool(x) for pool in self.pools] + [x], dim=1)


class SAM(nn.Module):
    """Modified spatial attention module (YOLOv4 paper, fig. 5): point-wise, no pooling.

    ``y = x * sigmoid(BN(conv1x1(x)))`` (darknet ``yolov4-sam`` cfgs: a logistic ``[convolutional]`` then ``[sam]``).
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.attn = ConvNormAct(channels, channels, 1, act="sigmoid", eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attn(x)


def attention_module(kind: str, channels: int) -> nn.Module:
    """timm's attention block by name: ``"se"`` -> ``SEModule`` (Hu et al. 2018), ``"cbam"`` -> ``CbamModule``
    (Woo et al. 2018: channel attention on average- and max-pooled features, then a 7x7 spatial attention).

    Both with timm's defaults (reduction 1/16, ReLU, sigmoid gate); ``y = x * gate``, so shapes are unchanged.
    """
    if kind == "se":
        return SEModule(channels)
    if kind == "cbam":
        return CbamModule(channels)
    raise ValueError(f"attention must be 'se' or 'cbam', got {kind!r}")


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al. 2018) via ``torchvision.ops.drop_block2d``, active only while training.

    The block size is capped at the largest odd size that fits the map, so small inputs (64 px: 2x2 maps at
    stride 32) work where torchvision's module would reject an even, clipped block.
    """

    def __init__(self, p: float, block_size: int = 7) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropblock probability must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.block_size = int(block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        size = min(self.block_size, x.shape[-1], x.shape[-2])
        size = size if size % 2 == 1 else size - 1
        return drop_block2d(x, self.p, max(size, 1), inplace=False, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"


def _conv_bn_pairs(module: nn.Module) -> list[str]:
    """Names of the submodules whose ``conv`` (``nn.Conv2d``) is directly followed by a foldable ``bn``."""
    names = []
    for name, parent in module.named_modules():
        conv, bn = getattr(parent, "conv", None), getattr(parent, "bn", None)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        if bn.running_mean is None or not bn.track_running_stats:
            continue
        names.append(name)
    return names


@torch.no_grad()
def fuse_conv_bn_(module: nn.Module) -> int:
    """Fold every BatchNorm that directly follows a convolution into it, in place (inference only).

    Works on this package's :class:`ConvNormAct` and on timm's ``ConvNormAct`` (``conv`` + ``bn``, where
    ``bn`` may be a ``BatchNormAct2d`` carrying its own activation, which is kept).

    Returns:
        The number of convolutions fused.
    """
    names = _conv_bn_pairs(module)
    for name in names:
        parent = module.get_submodule(name)
        bn = parent.bn
        parent.conv = fuse_conv_bn_eval(parent.conv.eval(), bn.eval())
        # timm's BatchNormAct2d applies drop + act after normalising: keep those.
        tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
        parent.bn = nn.Sequential(*tail) if tail else nn.Identity()
    return len(names)


class FusedMirror:
    """A Conv+BN-fused copy of a network, for evaluation, kept in step with it.

    Each call returns the copy holding the network's current weights (the EMA weights while an EMA callback has
    swapped them in): the first call deep-copies and fuses; later calls copy the weights and buffers into the
    same copy and recompute the fused convolutions, several times cheaper than a new deep copy, which would cost
    as much as the fusing saves on a small validation set. A network whose tensors changed name, shape, dtype or
    device (a new head, a move to the GPU) is copied anew. The network itself is never modified. Call it with the
    network in eval mode.
    """

    def __init__(self) -> None:
        self.net: nn.Module | None = None
        self._pairs: list[str] = []
        self._signature: list[tuple[str, tuple[int, ...], torch.dtype, torch.device]] | None = None

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> nn.Module:
        state = model.state_dict()
        signature = [(k, tuple(v.shape), v.dtype, v.device) for k, v in state.items()]
        if self.net is None or signature != self._signature:
            net = copy.deepcopy(model).eval()
            net.requires_grad_(False)
            self._pairs = _conv_bn_pairs(net)
            fuse_conv_bn_(net)
            self.net, self._signature = net, signature
            return net
        target = self.net.state_dict()
        for key, value in state.items():
            if key in target:
                target[key].copy_(value)
        for name in self._pairs:
            src, dst = model.get_submodule(name), self.net.get_submodule(name)
            bn = src.bn
            weight, bias = fuse_conv_bn_weights(src.conv.weight, src.conv.bias, bn.running_mean, bn.running_var,
                                                bn.eps, bn.weight, bn.bias)  # fmt: skip
            dst.conv.weight.copy_(weight)
            dst.conv.bias.copy_(bias)
        return self.net
