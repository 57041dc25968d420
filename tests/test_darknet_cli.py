"""darknet files through the package: convert -> checkpoint (validate / predict / export), init_from .weights,
export back to darknet, timm ImageNet backbones on request."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_yolo import YOLOModule
from lightning_yolo.commands.cli import main
from lightning_yolo.data.synthetic import SHAPES
from lightning_yolo.models import create_model
from lightning_yolo.models.darknet import DarknetError, load_darknet, save_darknet
from lightning_yolo.inference.checkpoint import load_predictor

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


@pytest.fixture(scope="module")
def darknet_files(tmp_path_factory):
    """A yolov4-tiny with 4 classes (the synthetic set's) written as darknet files, with trained-looking BatchNorm."""
    root = tmp_path_factory.mktemp("darknet")
    torch.manual_seed(0)
    model = create_model("yolov4_tiny", num_classes=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    save_darknet(model, root / "yolov4-tiny.cfg", root / "yolov4-tiny.weights", img_size=128)
    (root / "obj.names").write_text("\n".join(SHAPES[:4]) + "\n")
    return root


def test_convert_checkpoint_validates_predicts_and_exports_back(darknet_files, tmp_path, cli_env, capsys):
    cfg, weights = darknet_files / "yolov4-tiny.cfg", darknet_files / "yolov4-tiny.weights"
    ckpt_path = tmp_path / "tiny.ckpt"
    main(["convert", str(cfg), str(weights), "-o", str(ckpt_path), "--names", str(darknet_files / "obj.names")])
    assert "[lightning-yolo convert] wrote" in capsys.readouterr().out
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    assert (hp["model_name"], hp["num_classes"], hp["class_names"]) == ("yolov4_tiny", 4, list(SHAPES[:4]))
    assert ckpt["darknet"]["layout"] == "yolov4-tiny" and ckpt["darknet"]["version"] == [0, 2, 5]
    assert ckpt["datamodule_hyper_parameters"] == {"img_size": 128}

    # the checkpoint's network computes exactly what the darknet files describe
    reference = load_darknet(cfg, weights).model
    predictor = load_predictor(ckpt_path, trainable=True)  # as converted: bit-equal to the darknet network
    assert predictor.class_names == list(SHAPES[:4]) and predictor.img_size in (128, (128, 128))
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(predictor.model(x), reference(x)))

    # validate --ckpt_path through the CLI (hyper-parameters and image size from the checkpoint)
    main(["validate", "--config", DEBUG, "--ckpt_path", str(ckpt_path), "--trainer.default_root_dir", str(tmp_path)])
    assert "[lightning-yolo validate] val/map_75=" in capsys.readouterr().out

    # and back to darknet: the same bytes
    main(["export", str(ckpt_path), "--format", "darknet", "-o", str(tmp_path / "back")])
    assert (tmp_path / "back.weights").read_bytes() == weights.read_bytes()
    assert (tmp_path / "back.names").read_text().split() == list(SHAPES[:4])
    assert load_darknet(tmp_path / "back.cfg").model_name == "yolov4_tiny"


def test_init_from_darknet_weights(darknet_files, tmp_path):
    weights = darknet_files / "yolov4-tiny.weights"
    reference = load_darknet(darknet_files / "yolov4-tiny.cfg", weights).model.state_dict()
    # same classes: every tensor, anchors included; the cfg is found next to the weights; darknet's BatchNorm eps
    module = YOLOModule(model_name="yolov4_tiny", num_classes=4, init_from=str(weights))
    assert module.hparams.model_overrides == {"bn_eps": 1e-5}
    assert all(torch.equal(module.model.state_dict()[k], v) for k, v in reference.items())
    # other classes: the head is re-initialised, the rest loaded; the cfg given explicitly under another name
    other_cfg = tmp_path / "renamed.cfg"
    other_cfg.write_text((darknet_files / "yolov4-tiny.cfg").read_text())
    module = YOLOModule(model_name="yolov4_tiny", num_classes=2, init_from=str(weights), darknet_cfg=str(other_cfg))
    state = module.model.state_dict()
    assert state["head.preds.0.weight"].shape[0] == 3 * 7
    assert all(torch.equal(state[k], v) for k, v in reference.items() if not k.startswith("head.preds"))
    # a model without a darknet form
    with pytest.raises(DarknetError, match=r"no darknet form for backbone 'cs3darknet_s'"):
        YOLOModule(model_name="yolov4_pico", num_classes=4, init_from=str(weights))
    (tmp_path / "alone").mkdir()
    lonely = tmp_path / "alone" / "lonely.weights"
    lonely.write_bytes(weights.read_bytes())
    with pytest.raises(FileNotFoundError, match="no darknet cfg for"):
        YOLOModule(model_name="yolov4_tiny", num_classes=4, init_from=str(lonely))


def test_fit_cli_yolov4_tiny_from_darknet_weights(darknet_files, tmp_path, cli_env, capsys):
    """`fit --model.model_name yolov4_tiny --model.init_from x.weights` on the debug config: two levels end to end."""
    main([
        "fit", "--config", DEBUG, "--model.model_name", "yolov4_tiny",
        "--model.init_from", str(darknet_files / "yolov4-tiny.weights"),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.default_root_dir", str(tmp_path),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert "[lightning-yolo fit] val/map_75=" in out
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model_overrides"] == {"bn_eps": 1e-5}
    assert ckpt["state_dict"]["model.anchors.strides"].tolist() == [16.0, 32.0]


def test_pretrained_backbone_true_asks_timm(monkeypatch):
    """`pretrained_backbone: true` passes pretrained=True to timm (its hub download); nothing is downloaded here."""
    import timm

    calls = []
    real = timm.create_model

    def fake(name, pretrained=False, **kwargs):
        calls.append((name, pretrained, "pretrained_cfg_overlay" in kwargs))
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    create_model("yolov4_cs3darknet_s", num_classes=2, pretrained_backbone=True)
    create_model("yolov4_cs3darknet_s", num_classes=2)
    assert calls == [("cs3darknet_s", True, False), ("cs3darknet_s", False, False)]
    with pytest.raises(ValueError, match="has no ImageNet weights"):
        create_model("yolov4_tiny", num_classes=2, pretrained_backbone=True)
    with pytest.raises(ValueError, match="must be a file path, true or false"):
        create_model("yolov4_cs3darknet_s", num_classes=2, pretrained_backbone=3)
