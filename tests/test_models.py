"""Network tests: shapes, strides, gradients, parameter/FLOP budget of the paper model, fusing, export."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_yolo import create_model, list_models
from lightning_yolo.models import MODEL_CFGS, ModelCfg, get_model_cfg
from lightning_yolo.models.backbone import Backbone


def test_list_models_has_all_variants():
    names = list_models()
    for n in ("yolov4_cspdarknet53", "yolov4_cs3darknet_s", "yolov4_cs3darknet_m", "yolov4_cs3darknet_l", "yolov4_pico"):
        assert n in names
    assert list_models("*cs3*") == ["yolov4_cs3darknet_l", "yolov4_cs3darknet_m", "yolov4_cs3darknet_s"]


@pytest.mark.parametrize("name", sorted(MODEL_CFGS))
@pytest.mark.parametrize("hw", [(64, 64), (64, 96)])
def test_output_shapes_every_variant(name, hw):
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        outs = model(torch.rand(2, 3, *hw))
    strides = [16, 32] if name == "yolov4_tiny" else [8, 16, 32]  # darknet's yolov4-tiny has two levels
    assert [tuple(o.shape) for o in outs] == [(2, 3 * 8, hw[0] // s, hw[1] // s) for s in strides]
    assert model.strides == strides
    assert model.backbone.strides == strides


def test_paper_model_parameters_flops_and_shapes():
    model = create_model("yolov4_cspdarknet53", num_classes=80).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params / 64.4e6 - 1) < 0.03, n_params  # YOLOv4 paper: 64.4M
    assert isinstance(model.backbone.body.stem_conv1.bn.act, torch.nn.Mish)  # CSPDarknet53-Mish
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        outs = model(torch.zeros(1, 3, 416, 416))
    gflops = counter.get_total_flops() / 1e9
    assert abs(gflops / 60.1 - 1) < 0.10, gflops  # paper: 60.1 GFLOPs at 416
    assert [tuple(o.shape) for o in outs] == [(1, 255, 52, 52), (1, 255, 26, 26), (1, 255, 13, 13)]
    leaky = model.neck.td3[0].act
    assert isinstance(leaky, torch.nn.LeakyReLU) and leaky.negative_slope == 0.1


def test_every_parameter_gets_a_gradient():
    model = create_model("yolov4_pico", num_classes=2, sam=True).train()
    outs = model(torch.rand(2, 3, 64, 64))
    sum(o.float().square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    # timm zero-initialises the last norm of each residual block (zero_init_last), which leaves the convs before
    # it with exactly-zero gradients at step 0; the neck and head have no such blocks.
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0 and not n.startswith("backbone.")]
    assert not zero


def test_head_bias_prior_init():
    model = create_model("yolov4_pico", num_classes=4)
    b = model.head.preds[0].bias.view(3, 9)
    assert torch.allclose(b[:, 4].sigmoid(), torch.full((3,), 0.01), atol=1e-6)
    assert torch.allclose(b[:, 5:].sigmoid(), torch.full((3, 4), 0.25), atol=1e-6)
    assert torch.equal(b[:, :4], torch.zeros(3, 4))


def test_reset_head_changes_class_count_only():
    model = create_model("yolov4_pico", num_classes=3).eval()
    neck_before = {k: v.clone() for k, v in model.neck.state_dict().items()}
    model.reset_head(7)
    assert model.num_classes == 7
    assert [o.shape[1] for o in model(torch.rand(1, 3, 64, 64))] == [36, 36, 36]
    for k, v in model.neck.state_dict().items():
        assert torch.equal(v, neck_before[k])
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        model.reset_head(0)


@pytest.mark.parametrize("name,overrides", [("yolov4_pico", {"sam": True}), ("yolov4_cspdarknet53", {})])
def test_fused_equals_unfused(name, overrides):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **overrides).train()
    # Give BatchNorm non-trivial running statistics first.
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(2, 3, 64, 64))
    model.eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse()
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        got = fused(x)
    assert n_bn == 0
    for r, g in zip(ref, got):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_overrides_and_errors():
    cfg = get_model_cfg("yolov4_pico", sam=True, spp_kernels=[3, 5], anchors=None)
    assert cfg.sam and cfg.spp_kernels == (3, 5)
    assert cfg.anchors == MODEL_CFGS["yolov4_pico"].anchors  # None never clobbers a default
    assert ModelCfg.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model 'yolov5'"):
        create_model("yolov5")
    with pytest.raises(TypeError, match=r"unknown model config key\(s\) \['depth_multiple'\]"):
        create_model("yolov4_pico", depth_multiple=0.3)
    with pytest.raises(ValueError, match="anchor sizes must be positive"):
        create_model("yolov4_pico", anchors=[[[1, 2]] * 3, [[-1, 2]] * 3, [[1, 2]] * 3])
    with pytest.raises(ValueError, match="unknown timm model 'nope'"):
        create_model("yolov4_pico", backbone="nope", backbone_width=None)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_model("yolov4_cs3darknet_s", pretrained_backbone="/nonexistent/missing.pth")


def test_non_multiple_of_32_input_is_rejected():
    model = create_model("yolov4_pico", num_classes=1)
    with pytest.raises(AssertionError, match="multiples of the largest stride"):
        model(torch.rand(1, 3, 64, 70))


def test_local_pretrained_backbone_file(tmp_path):
    import timm

    torch.manual_seed(1)
    full = timm.create_model("cs3darknet_s", pretrained=False)
    path = tmp_path / "cs3darknet_s.pth"
    torch.save(full.state_dict(), path)
    bb = Backbone("cs3darknet_s", pretrained=str(path))
    w_ref = full.state_dict()["stem.conv1.conv.weight"]
    w_got = dict(bb.body.named_parameters())["stem_conv1.conv.weight"]  # features_only flattens names
    assert torch.equal(w_ref, w_got)


def test_dropblock_switch_is_train_only():
    model = create_model("yolov4_pico", num_classes=1, dropblock=0.3, dropblock_size=3)
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert all(torch.equal(i, j) for i, j in zip(a, b))
    model.train()
    torch.manual_seed(0)
    c = model(x)
    assert not all(torch.allclose(i, j) for i, j in zip(a, c))
