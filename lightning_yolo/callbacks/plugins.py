"""Lightning plugins.

:class:`TimmSyncBatchNorm` replaces Lightning's ``TorchSyncBatchNorm`` for ``Trainer(sync_batchnorm=True)``.
``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` turns timm's fused norm + activation layer ``BatchNormAct2d``
into a plain ``SyncBatchNorm``, which never calls the ``act`` it keeps as a child: the backbone then trains without
its Mish / SiLU / leaky activations, while ``load_predictor`` rebuilds the model with them. timm's own
``convert_sync_batchnorm`` keeps norm + activation (``SyncBatchNormAct``). The command line adds this plugin where
it builds the Trainer (``sync_batchnorm: true`` in a config or ``--trainer.sync_batchnorm true``,
:func:`lightning_yolo.commands.cli.timm_sync_batchnorm`); in Python pass it yourself:
``pl.Trainer(strategy="ddp", sync_batchnorm=True, plugins=[TimmSyncBatchNorm()])``.
"""

from __future__ import annotations

import torch
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from timm.layers import BatchNormAct2d
from timm.layers.norm_act import SyncBatchNormAct, convert_sync_batchnorm
from torch import nn

__all__ = ["TimmSyncBatchNorm", "revert_sync_batchnorm"]


def _copy_norm_state(src: nn.modules.batchnorm._BatchNorm, dst: nn.modules.batchnorm._BatchNorm) -> None:
    if src.affine:
        with torch.no_grad():
            dst.weight = src.weight
            dst.bias = src.bias
    dst.running_mean = src.running_mean
    dst.running_var = src.running_var
    dst.num_batches_tracked = src.num_batches_tracked
    dst.train(src.training)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Inverse of timm's ``convert_sync_batchnorm``: ``SyncBatchNormAct`` -> ``BatchNormAct2d`` (same activation
    and drop modules), ``SyncBatchNorm`` -> ``BatchNorm2d``; parameters and buffers are shared, not copied."""
    out = module
    if isinstance(module, SyncBatchNormAct):
        out = BatchNormAct2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        _copy_norm_state(module, out)
        out.act = module.act
        out.drop = module.drop
    elif isinstance(module, nn.SyncBatchNorm):
        out = nn.BatchNorm2d(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        _copy_norm_state(module, out)
    for name, child in module.named_children():
        if out is not module and name in ("act", "drop"):
            continue
        out.add_module(name, revert_sync_batchnorm(child))
    return out


class TimmSyncBatchNorm(TorchSyncBatchNorm):
    """``LayerSync`` plugin that synchronises batch norms across processes and keeps timm's fused activations.

    A subclass of Lightning's ``TorchSyncBatchNorm``, so ``Trainer(sync_batchnorm=True, plugins=[TimmSyncBatchNorm()])``
    is accepted too. Like Lightning's, it only acts under a distributed strategy (DDP / FSDP, while fitting).
    """

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_sync_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_sync_batchnorm(model)
