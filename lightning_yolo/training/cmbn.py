"""Cross mini-batch normalisation (CmBN, YOLOv4 paper section 3.3 and Fig. 4).

With gradient accumulation one optimiser step (a "batch") is made of K mini-batches. Plain BatchNorm normalises each
mini-batch with its own statistics; CmBN normalises the k-th mini-batch of a batch with the statistics of mini-batches
1..k of that batch, so the last one sees the statistics of the whole accumulated batch, and the weights change only
between batches. Statistics of earlier mini-batches enter as constants (their graphs are gone after their backward);
the gradient flows through the current mini-batch's share, as in darknet where each mini-batch is a separate pass.

This is not SyncBatchNorm, which shares statistics across processes within one step (``trainer.sync_batchnorm``).

Use: :func:`convert_cross_minibatch_norm` on a model, :func:`reset_cross_minibatch_norm` at the first mini-batch of
every accumulated batch (``YOLOModule(cross_minibatch_norm=True)`` does both, following
``Trainer(accumulate_grad_batches=K)``). In eval mode the layers are plain BatchNorm on the running statistics, and the
state-dict keys are those of ``BatchNorm2d`` / timm's ``BatchNormAct2d``, so checkpoints load either way.
"""

from __future__ import annotations

import torch
from timm.layers import BatchNormAct2d
from torch import nn

__all__ = [
    "CrossMiniBatchNorm2d",
    "CrossMiniBatchNormAct2d",
    "convert_cross_minibatch_norm",
    "reset_cross_minibatch_norm",
]


class CrossMiniBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics accumulate over the mini-batches since the last :meth:`reset`.

    Shapes: ``x [N, C, H, W] -> [N, C, H, W]``. The running statistics are updated at every mini-batch with the
    accumulated mean and unbiased variance.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True) -> None:  # fmt: skip
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        # not persistent: the state dict stays that of BatchNorm2d
        self.register_buffer("acc_sum", torch.zeros(num_features), persistent=False)
        self.register_buffer("acc_sqsum", torch.zeros(num_features), persistent=False)
        self.register_buffer("acc_count", torch.zeros(()), persistent=False)

    def reset(self) -> None:
        """Start a new accumulated batch: forget the statistics of earlier mini-batches."""
        self.acc_sum.zero_()
        self.acc_sqsum.zero_()
        self.acc_count.zero_()

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        torch._assert(x.dim() == 4, "CrossMiniBatchNorm2d expects [N, C, H, W]")
        xf = x.float()
        count = self.acc_count + xf.numel() / xf.shape[1]
        total = self.acc_sum + xf.sum(dim=(0, 2, 3))
        total_sq = self.acc_sqsum + (xf * xf).sum(dim=(0, 2, 3))
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.acc_sum.copy_(total)
            self.acc_sqsum.copy_(total_sq)
            self.acc_count.copy_(count)
            if self.track_running_stats and self.running_mean is not None:
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (count / (count - 1).clamp_min(1.0))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        shape = (1, -1, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._normalise(x)


class CrossMiniBatchNormAct2d(CrossMiniBatchNorm2d):
    """:class:`CrossMiniBatchNorm2d` followed by the ``drop`` and ``act`` of the timm ``BatchNormAct2d`` it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._normalise(x)
        x = self.drop(x)
        return self.act(x)


def _copy_state(src: nn.modules.batchnorm._BatchNorm, dst: nn.modules.batchnorm._BatchNorm) -> None:
    if src.affine:
        dst.weight = src.weight
        dst.bias = src.bias
    if src.track_running_stats:
        dst.running_mean = src.running_mean
        dst.running_var = src.running_var
        dst.num_batches_tracked = src.num_batches_tracked
    dst.train(src.training)
    device = src.weight.device if src.affine else None
    if device is not None:
        dst.acc_sum = dst.acc_sum.to(device)
        dst.acc_sqsum = dst.acc_sqsum.to(device)
        dst.acc_count = dst.acc_count.to(device)


def convert_cross_minibatch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` (timm ``BatchNormAct2d`` included, keeping its activation) by the CmBN variant;
    parameters and running statistics are shared, not copied. Returns the converted module (in place for children)."""
    out = module
    if isinstance(module, CrossMiniBatchNorm2d):
        return module
    if isinstance(module, BatchNormAct2d):
        out = CrossMiniBatchNormAct2d(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats)  # fmt: skip
        _copy_state(module, out)
        out.act = module.act
        out.drop = module.drop
        return out
    if type(module) is nn.BatchNorm2d:
        out = CrossMiniBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)  # fmt: skip
        _copy_state(module, out)
        return out
    for name, child in module.named_children():
        converted = convert_cross_minibatch_norm(child)
        if converted is not child:
            setattr(module, name, converted)
    return out


def reset_cross_minibatch_norm(module: nn.Module) -> int:
    """:meth:`CrossMiniBatchNorm2d.reset` on every CmBN layer of ``module``; returns how many there are."""
    layers = [m for m in module.modules() if isinstance(m, CrossMiniBatchNorm2d)]
    for m in layers:
        m.reset()
    return len(layers)
