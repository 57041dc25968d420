"""trainer.sync_batchnorm keeps timm's fused norm + activation layers (issue 10, item 1)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm
from timm.layers import BatchNormAct2d
from timm.layers.norm_act import SyncBatchNormAct

from lightning_yolo import YOLOModule
from lightning_yolo.callbacks.plugins import TimmSyncBatchNorm

DEBUG = Path(__file__).resolve().parents[1] / "configs" / "debug.yaml"


def _outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        return model(x)


def test_timm_sync_batchnorm_keeps_outputs_and_reverts():
    torch.manual_seed(0)
    module = YOLOModule(model_name="yolov4_pico", num_classes=3)
    x = torch.rand(2, 3, 64, 64)
    before = _outputs(module.model, x)
    assert any(isinstance(m, BatchNormAct2d) for m in module.modules())

    converted = TimmSyncBatchNorm().apply(module)
    assert not any(type(m) is BatchNormAct2d for m in converted.modules())
    assert any(isinstance(m, SyncBatchNormAct) for m in converted.modules())
    for a, b in zip(before, _outputs(converted.model, x), strict=True):
        torch.testing.assert_close(a, b)
    # same state-dict keys: checkpoints of a SyncBN run load into a plain model
    assert set(converted.state_dict()) == set(YOLOModule(model_name="yolov4_pico", num_classes=3).state_dict())

    reverted = TimmSyncBatchNorm().revert(converted)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in reverted.modules())
    for a, b in zip(before, _outputs(reverted.model, x), strict=True):
        torch.testing.assert_close(a, b)


def test_lightning_conversion_drops_activations_and_the_documented_plugin_keeps_them():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    module = YOLOModule(model_name="yolov4_pico", num_classes=3)
    before = _outputs(module.model, x)
    # what Trainer(sync_batchnorm=True) does by default: the activations are gone, the outputs change
    stripped = TorchSyncBatchNorm().apply(YOLOModule(model_name="yolov4_pico", num_classes=3))
    stripped.load_state_dict(module.state_dict())
    assert not torch.allclose(before[0], _outputs(stripped.model, x)[0])

    trainer = pl.Trainer(
        strategy="ddp", accelerator="cpu", devices=1, sync_batchnorm=True, logger=False, enable_checkpointing=False
    )
    assert type(trainer.strategy._layer_sync) is TorchSyncBatchNorm  # Lightning's: what the README warns about
    # the README's Python form: the package's plugin next to the flag
    trainer = pl.Trainer(
        strategy="ddp", accelerator="cpu", devices=1, sync_batchnorm=True, plugins=[TimmSyncBatchNorm()],
        logger=False, enable_checkpointing=False,
    )  # fmt: skip
    assert isinstance(trainer.strategy._layer_sync, TimmSyncBatchNorm)
    converted = trainer.strategy._layer_sync.apply(module)
    for a, b in zip(before, _outputs(converted.model, x), strict=True):
        torch.testing.assert_close(a, b)


def test_cli_installs_the_timm_plugin_where_it_builds_the_trainer(tmp_path, cli_env):
    from lightning_yolo.commands.cli import build_cli, timm_sync_batchnorm

    base = ["--config", str(DEBUG), "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(tmp_path)]
    on = build_cli([*base, "--trainer.sync_batchnorm", "true"], run=False)
    assert isinstance(on.trainer.strategy._layer_sync, TimmSyncBatchNorm)
    off = build_cli(base, run=False)
    assert off.trainer.strategy._layer_sync is None
    # the module no longer touches the strategy: no setup() swap
    assert "setup" not in vars(YOLOModule)
    # a LayerSync plugin of the user's own is kept; without sync_batchnorm nothing is added
    own = TorchSyncBatchNorm()
    assert timm_sync_batchnorm({"sync_batchnorm": True, "plugins": [own]}) == {}
    assert timm_sync_batchnorm({"sync_batchnorm": False}) == {}
    added = timm_sync_batchnorm({"sync_batchnorm": True, "plugins": None})["plugins"]
    assert len(added) == 1 and isinstance(added[0], TimmSyncBatchNorm)
