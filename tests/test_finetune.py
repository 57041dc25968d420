"""Fine-tuning: ``init_from`` a checkpoint with another class count, backbone freezing, local timm weights."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from lightning_yolo import YOLODataModule, YOLOModule
from lightning_yolo.callbacks import LastCheckpoint
from lightning_yolo.commands.cli import build_cli
from lightning_yolo.data.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


pytestmark = pytest.mark.usefixtures("cli_env")


def fit(root: Path, *args: str):
    return build_cli(
        [
            "fit", "--config", DEBUG, "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "1",
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
            "--trainer.enable_model_summary", "false", *args,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory, cli_session) -> Path:
    """A 4-class checkpoint (the synthetic dataset of the debug config) after 2 training steps."""
    root = tmp_path_factory.mktemp("base")
    with cli_session():
        cli = fit(root)
    return Path(next(cb for cb in cli.trainer.callbacks if isinstance(cb, LastCheckpoint)).best_model_path)


@pytest.fixture(scope="module")
def two_class_yolo(tmp_path_factory) -> Path:
    """A YOLO-format dataset (data.yaml + images/ + labels/) with 2 classes."""
    root = tmp_path_factory.mktemp("yolo2")
    make_synthetic_dataset(root, num_train=8, num_val=4, img_size=128, num_classes=2, formats=("yolo",))
    return root / "data.yaml"


def network_state(path: Path) -> dict[str, torch.Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("model.") :]: v for k, v in sd.items() if k.startswith("model.")}


def test_init_from_checkpoint_with_other_class_count(base_ckpt, two_class_yolo, caplog):
    source = network_state(base_ckpt)
    dm = YOLODataModule(path=str(two_class_yolo), img_size=128)
    assert dm.num_classes == 2
    with caplog.at_level(logging.INFO, logger="lightning_yolo.inference.checkpoint"):
        module = YOLOModule(num_classes=dm.num_classes, class_names=dm.class_names, init_from=str(base_ckpt))

    # the report names what was loaded and what was re-initialised
    report = " ".join(r.getMessage() for r in caplog.records if r.name == "lightning_yolo.inference.checkpoint")
    assert "head re-initialised: True" in report and "6 skipped for shape mismatch" in report

    # step 0: every tensor but the 3 prediction layers equals the checkpoint's, bit for bit
    target = module.model.state_dict()
    head = {k for k in target if k.startswith("head.preds.")}
    assert len(head) == 6  # weight + bias of 3 levels
    for key, value in target.items():
        if key in head or key.startswith("anchors."):
            continue
        assert torch.equal(value, source[key]), key
    # the prediction layers are freshly initialised for 2 classes: A * (5 + 2) channels with the prior biases
    anchors = module.model.anchors.anchors.shape[1]
    for level in range(3):
        bias = target[f"head.preds.{level}.bias"].view(anchors, 7)
        assert source[f"head.preds.{level}.bias"].numel() == anchors * (5 + 4)
        assert torch.allclose(bias[:, 4], torch.full((anchors,), math.log(0.01 / 0.99)))
        assert torch.allclose(bias[:, 5:], torch.full((anchors, 2), math.log(0.5 / 0.5)))
        assert torch.equal(bias[:, :4], torch.zeros(anchors, 4))


def test_finetune_cli_to_new_classes(base_ckpt, two_class_yolo, tmp_path):
    """`fit --data.path data.yaml --model.init_from ckpt`: trains, and the new checkpoint carries the new classes."""
    cli = fit(tmp_path, "--data.path", str(two_class_yolo), "--model.init_from", str(base_ckpt),
              "--model.freeze_backbone_epochs", "1")  # fmt: skip
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["num_classes"] == 2
    assert ckpt["lightning_yolo"]["class_names"] == ["circle", "square"]
    assert ckpt["state_dict"]["model.head.preds.0.bias"].numel() == cli.model.model.anchors.anchors.shape[1] * 7
    # frozen first epoch: the backbone is still the base checkpoint's
    base = network_state(base_ckpt)
    tuned = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert all(torch.equal(tuned[k], base[k]) for k in tuned if k.startswith("backbone."))
    assert not all(torch.equal(tuned[k], base[k]) for k in tuned if k.startswith("neck."))


class _Snapshots(pl.Callback):
    """Copies of the backbone state (parameters and BatchNorm buffers) at the end of every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})


def test_freeze_backbone_epochs_keeps_backbone_bit_identical(base_ckpt, two_class_yolo, tmp_path):
    module = YOLOModule(num_classes=2, init_from=str(base_ckpt), freeze_backbone_epochs=1)
    start = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    snaps = _Snapshots()
    trainer = pl.Trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[snaps],
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, YOLODataModule(path=str(two_class_yolo), img_size=128, batch_size=4, num_workers=0))

    backbone = [k for k in start if k.startswith("backbone.")]
    bn_buffers = [k for k in backbone if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(bn_buffers) > 10
    frozen, thawed = snaps.states
    for key in backbone:  # epoch 0 (frozen): weights and BatchNorm statistics untouched
        assert torch.equal(frozen[key], start[key]), key
    assert not torch.equal(frozen["head.preds.0.weight"], start["head.preds.0.weight"])  # the rest trained
    # epoch 1 (unfrozen): the backbone trains, and its BatchNorm statistics move again
    assert any(not torch.equal(thawed[k], start[k]) for k in backbone if not k.endswith("num_batches_tracked"))
    assert any(not torch.equal(thawed[k], frozen[k]) for k in bn_buffers)
    assert all(p.requires_grad for p in module.model.backbone.parameters())
    assert all(m.training for m in module.model.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_local_timm_backbone_weights_from_file(tmp_path):
    """`model_overrides: {pretrained_backbone: path}` loads a timm classification state dict, no download."""
    import timm

    torch.manual_seed(1)
    classifier = timm.create_model("cs3darknet_s", pretrained=False)
    with torch.no_grad():
        for p in classifier.parameters():
            p.normal_()  # distinct from any initialisation
    weights = tmp_path / "cs3darknet_s.pth"
    torch.save(classifier.state_dict(), weights)
    # the tiny variant scales the backbone's width and depth; a file of the full timm model needs them at 1.0
    overrides = {"backbone_width": 1.0, "backbone_depth": 1.0, "pretrained_backbone": str(weights)}
    module = YOLOModule(num_classes=2, model_overrides=overrides)
    body = module.model.backbone.body.state_dict()
    source = classifier.state_dict()
    checked = 0
    for key, value in body.items():
        # features_only flattens 'stem.conv1' -> 'stem_conv1' and 'stages.0' -> 'stages_0'
        src_key = key.replace("stem_", "stem.", 1).replace("stages_", "stages.", 1)
        assert torch.equal(value, source[src_key]), key
        checked += 1
    assert checked == len(body) > 100
    with pytest.raises(FileNotFoundError, match="pretrained_backbone: no such file"):
        YOLOModule(num_classes=2, model_overrides={**overrides, "pretrained_backbone": str(tmp_path / "nope.pth")})


def test_init_from_plain_state_dict(tmp_path):
    source = YOLOModule(num_classes=3).model
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    module = YOLOModule(num_classes=3, init_from=str(path))
    for key, value in module.model.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
