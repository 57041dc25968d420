"""Paper switches (issue 13 item 1), each flipped on the tiny ``yolov4_pico`` and checked on what it builds or
computes: neck attention (SE / CBAM), FPN vs PAN, SAM, SPP off, grid sensitivity, the MSE box loss and hard
negative mining of objectness."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers import SEModule
from timm.layers.cbam import CbamModule

from lightning_yolo.models import create_model
from lightning_yolo.models.anchors import AnchorSet
from lightning_yolo.models.layers import SAM
from lightning_yolo.ops.postprocess import decode_outputs
from lightning_yolo.training.loss import BOX_LOSSES, YOLOLoss

NUM_CLASSES = 2
X = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
PAN_NECK_MODULES = {
    "pre_spp", "spp", "post_spp", "reduce5", "lateral4", "td4", "reduce4", "lateral3", "td3", "down3", "bu4", "down4",
    "bu5",
}  # fmt: skip


def _pico(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("yolov4_pico", num_classes=NUM_CLASSES, **overrides).eval()


def _shapes(model) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [tuple(o.shape) for o in model(X)]


def _feats(model) -> list[torch.Tensor]:
    """Unit-scale backbone features (a fresh backbone's are tiny: timm zero-initialises its residual branches)."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(1, c, 64 // s, 64 // s, generator=g) for c, s in zip(model.backbone.out_channels, (8, 16, 32))]


def _calls(modules) -> list[int]:
    """Attach a counting forward hook to each module; returns the list the counts go to."""
    counts = [0] * len(modules)
    for i, m in enumerate(modules):
        m.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


@pytest.fixture(scope="module")
def default_pico():
    model = _pico()
    return model, _shapes(model), dict(model.state_dict())


def test_default_neck_is_pan_without_attention(default_pico):
    model, shapes, state = default_pico
    assert model.cfg.neck == "pan" and model.cfg.neck_attention == "none"
    assert {name for name, _ in model.neck.named_children()} == PAN_NECK_MODULES
    assert not any(k.startswith(("neck.attention", "neck.sam")) for k in state)
    assert shapes == [(1, 3 * (5 + NUM_CLASSES), 64 // s, 64 // s) for s in (8, 16, 32)]


@pytest.mark.parametrize("kind,cls", [("se", SEModule), ("cbam", CbamModule)])
def test_neck_attention_adds_timm_blocks_on_each_output(default_pico, kind, cls):
    base, base_shapes, base_state = default_pico
    model = _pico(neck_attention=kind)
    blocks = model.neck.attention
    assert [type(b) for b in blocks] == [cls] * 3
    assert [b.channel.fc2.out_channels if kind == "cbam" else b.fc2.out_channels for b in blocks] == list(
        model.neck.out_channels
    )
    state = model.state_dict()
    # the default's keys and shapes are untouched; the attention weights come on top
    assert {k: v.shape for k, v in state.items() if not k.startswith("neck.attention.")} == {
        k: v.shape for k, v in base_state.items()
    }
    assert any(k.startswith("neck.attention.2.") for k in state)
    counts = _calls(blocks)
    model.load_state_dict(base_state, strict=False)  # same other weights as the default: only the gates differ
    assert _shapes(model) == base_shapes and counts == [1, 1, 1]
    with torch.no_grad():
        outs = model.neck(_feats(model))
        ref = base.neck(_feats(base))
    assert all((o - r).abs().max() > 0.1 * r.abs().max() for o, r in zip(outs, ref))  # the gates act


def test_neck_attention_fuses_and_validates():
    model = _pico(neck_attention="cbam", sam=True)
    feats = _feats(model)
    with torch.no_grad():
        ref = model.neck(feats)
        model.fuse()
        got = model.neck(feats)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # CBAM's spatial conv+BN too
    for r, g in zip(ref, got):
        scale = r.abs().max()
        torch.testing.assert_close(g / scale, r / scale, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"ModelCfg.neck_attention must be one of \['none', 'se', 'cbam'\], got 'eca'"):
        create_model("yolov4_pico", num_classes=1, neck_attention="eca")
    with pytest.raises(ValueError, match="neck_attention"):
        create_model("yolov4_tiny", num_classes=1, neck_attention="se")


def test_neck_attention_has_no_darknet_form():
    from lightning_yolo.models.darknet import DarknetError, darknet_layout

    torch.manual_seed(0)
    model = create_model("yolov4_cspdarknet53", num_classes=1, neck_attention="se")
    with pytest.raises(DarknetError, match="neck_attention 'se'"):
        darknet_layout(model)


def test_fpn_neck_is_top_down_with_addition(default_pico):
    _, base_shapes, base_state = default_pico
    model = _pico(neck="fpn")
    neck = model.neck
    assert {name for name, _ in neck.named_children()} == PAN_NECK_MODULES - {"down3", "bu4", "down4", "bu5"}
    w3, w4, w5 = neck.out_channels
    # addition: the merged map keeps the level width (PAN concatenates: twice the width)
    assert neck.td4[0].conv.in_channels == w4 and neck.td3[0].conv.in_channels == w3
    pan_td4 = base_state["neck.td4.0.conv.weight"]
    assert pan_td4.shape[1] == 2 * w4
    assert _shapes(model) == base_shapes  # the head and the loss see the same levels

    seen = {}

    def keep(name):
        return lambda _m, args, out: seen.__setitem__(name, (args[0], out))

    for name in ("lateral4", "reduce5", "td4", "post_spp"):
        getattr(neck, name).register_forward_hook(keep(name))
    with torch.no_grad():
        outs = neck(_feats(model))
    lateral4, up5 = seen["lateral4"][1], F.interpolate(seen["reduce5"][1], scale_factor=2.0, mode="nearest")
    torch.testing.assert_close(seen["td4"][0], lateral4 + up5)
    assert torch.equal(outs[1], seen["td4"][1]) and torch.equal(outs[2], seen["post_spp"][1])

    with pytest.raises(ValueError, match=r"ModelCfg.neck must be one of \['pan', 'fpn', 'tiny_fpn'\], got 'bifpn'"):
        create_model("yolov4_pico", num_classes=1, neck="bifpn")


def test_sam_switch_adds_point_wise_attention_on_each_output(default_pico):
    base, base_shapes, _ = default_pico
    assert base.neck.sam is None
    model = _pico(sam=True)
    assert [type(m) for m in model.neck.sam] == [SAM] * 3
    assert [m.attn.conv.kernel_size for m in model.neck.sam] == [(1, 1)] * 3  # modified SAM: point-wise, no pooling
    counts = _calls(model.neck.sam)
    assert _shapes(model) == base_shapes and counts == [1, 1, 1]


def test_spp_off_leaves_the_deepest_level_unpooled(default_pico):
    base, base_shapes, _ = default_pico
    w5 = base.neck.out_channels[2]
    assert base.neck.spp.kernel_sizes == (13, 9, 5) and base.neck.post_spp[0].conv.in_channels == 4 * w5
    model = _pico(spp_kernels=())
    assert isinstance(model.neck.spp, torch.nn.Identity)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules() if m is not None)
    assert model.neck.post_spp[0].conv.in_channels == w5
    assert _shapes(model) == base_shapes


def test_grid_sensitivity_switch_changes_the_decoded_centres():
    on, off = _pico(), _pico(scale_x_y=(1.0, 1.0, 1.0))
    assert on.anchors.scale_x_y.tolist() == pytest.approx([1.2, 1.1, 1.05])
    assert off.anchors.scale_x_y.tolist() == [1.0, 1.0, 1.0]
    # a saturated t_x: the centre reaches (1 + s) / 2 cells from the cell's corner; s = 1 never leaves the cell
    maps = [torch.zeros(1, 3 * (5 + NUM_CLASSES), 64 // s, 64 // s) for s in (8, 16, 32)]
    for m in maps:
        m.view(1, 3, 5 + NUM_CLASSES, *m.shape[-2:])[:, :, 0] = 30.0
    centres = {}
    for name, model in (("on", on), ("off", off)):
        a = model.anchors
        decoded = decode_outputs(maps, a.anchors, a.strides, a.scale_x_y, NUM_CLASSES)
        centres[name] = decoded[0, 0, 0:4:2].mean().item()  # xyxy; level 0 (stride 8), anchor 0, cell (0, 0)
        loss = YOLOLoss(NUM_CLASSES, a)
        assert loss.scale_x_y.tolist() == a.scale_x_y.tolist()  # the loss decodes with the same factor
    assert centres["off"] == pytest.approx(8.0) and centres["on"] == pytest.approx(1.1 * 8.0)


# ---------------------------------------------------------------------------------------------------- the loss side

A = 3
ANCHORS = AnchorSet(
    anchors=[[[8, 8], [16, 8], [8, 16]], [[24, 24], [40, 20], [20, 40]], [[48, 48], [64, 32], [32, 64]]],
    strides=[8, 16, 32],
    scale_x_y=[1.2, 1.1, 1.05],
)
SIZES = [(8, 8), (4, 4), (2, 2)]  # a 64 x 64 input
LEVEL_W = (4.0, 1.0, 0.4)


def _maps(batch: int, seed: int | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    maps = []
    for h, w in SIZES:
        m = torch.zeros(batch, A * (5 + NUM_CLASSES), h, w)
        if g is not None:
            m.normal_(0, 1, generator=g)
        maps.append(m.requires_grad_(True))
    return maps


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long()}


def test_mse_box_loss_is_yolov3_coordinate_loss():
    assert "mse" in BOX_LOSSES
    # one box 16 x 8 centred at (18, 16): anchor (16, 8) of stride 8, cell (2, 2), offsets (0.25, 0.0), t_wh = 0
    targets = [_target([[10, 12, 26, 20]], [0])]
    loss = YOLOLoss(NUM_CLASSES, ANCHORS, box_loss="mse", box_weight=1.0, iou_thresh=1.0)
    out = loss(_maps(1), targets)
    # raw 0: decoded offsets 0.5 (any scale_x_y), t_wh 0; weight 2 - w h / image area
    expected = (2 - 16 * 8 / 64**2) * ((0.5 - 0.25) ** 2 + (0.5 - 0.0) ** 2)
    assert out["box"].item() == pytest.approx(expected, rel=1e-6)

    maps = _maps(2, seed=1)
    targets = [_target([[10, 12, 26, 20], [20, 14, 52, 54]], [0, 1]), _target([[30, 30, 46, 38]], [1])]
    mse = YOLOLoss(NUM_CLASSES, ANCHORS, box_loss="mse")(maps, targets)
    ciou = YOLOLoss(NUM_CLASSES, ANCHORS, box_loss="ciou")(maps, targets)
    assert math.isfinite(mse["box"].item()) and mse["box"].item() > 0
    assert mse["box"].item() != pytest.approx(ciou["box"].item(), rel=1e-3)
    assert torch.equal(mse["cls"], ciou["cls"])  # only the box term changes
    mse["loss"].backward()
    grads = [m.grad.view(2, A, 5 + NUM_CLASSES, *m.shape[-2:])[:, :, :4] for m in maps]
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0

    with pytest.raises(ValueError, match=r"box_loss must be one of .*'mse'.*got 'l2'"):
        YOLOLoss(NUM_CLASSES, ANCHORS, box_loss="l2")


def _hnm_example():
    """2 images, 1 and 2 ground truths (1 and 2 positives: best anchor only); nothing ignored; random logits."""
    targets = [_target([[10, 12, 26, 20]], [0]), _target([[0, 0, 16, 8], [20, 30, 60, 50]], [1, 0])]
    maps = _maps(2, seed=3)
    with torch.no_grad():
        for m in maps:
            m.view(2, A, 5 + NUM_CLASSES, *m.shape[-2:])[:, :, 4].mul_(3.0)  # spread the objectness logits
    kwargs = dict(iou_thresh=1.0, ignore_thresh=1.0, obj_iou_ratio=0.0)
    return maps, targets, kwargs


def _positives(loss: YOLOLoss, maps, targets) -> list[torch.Tensor]:
    """Per level [B, A, H, W] bool: the assigned slots, found as the only cells with obj target 1."""
    from lightning_yolo.training.assigner import assign_targets

    a = assign_targets(targets, ANCHORS.anchors, ANCHORS.strides, ANCHORS.scale_x_y, SIZES, loss.iou_thresh)
    pos = [torch.zeros(2, A, h, w, dtype=torch.bool) for h, w in SIZES]
    for lv, b, an, gy, gx in zip(a.level, a.batch_idx, a.anchor_idx, a.grid_y, a.grid_x):
        pos[int(lv)][int(b), int(an), int(gy), int(gx)] = True
    return pos


@pytest.mark.parametrize("ratio", [0.0, 1.5, 2.0])
def test_hard_negative_mining_counts_the_hardest_negatives_per_image(ratio):
    maps, targets, kwargs = _hnm_example()
    loss = YOLOLoss(NUM_CLASSES, ANCHORS, hard_negative_ratio=ratio, **kwargs)
    pos = _positives(loss, maps, targets)
    assert [int(sum(p[i].sum() for p in pos)) for i in range(2)] == [1, 2]
    logits = [m.detach().view(2, A, 5 + NUM_CLASSES, *m.shape[-2:])[:, :, 4] for m in maps]
    neg_loss = [F.softplus(z) for z in logits]  # BCE against 0
    pos_loss = [F.softplus(-z) for z in logits]  # BCE against 1
    keep = [torch.ones_like(p) if ratio == 0 else p.clone() for p in pos]
    if ratio > 0:
        for i, quota in enumerate((math.ceil(ratio * 1), math.ceil(ratio * 2))):  # 2 / 2 and 3 / 4 negatives
            flat = torch.cat([(n[i] * ~p[i]).flatten() - p[i].flatten().float() for n, p in zip(neg_loss, pos)])
            hardest = flat.topk(quota).indices
            chosen = torch.zeros_like(flat, dtype=torch.bool)
            chosen[hardest] = True
            start = 0
            for k in keep:
                k[i] |= chosen[start : start + k[i].numel()].view_as(k[i])
                start += k[i].numel()
            assert int(sum(k[i].sum() for k in keep)) == (1, 2)[i] + quota
    expected = 0.0
    for lv, (k, p) in enumerate(zip(keep, pos)):
        per_cell = torch.where(p, pos_loss[lv], neg_loss[lv])
        expected += LEVEL_W[lv] * float((per_cell * k).sum() / k.sum().clamp(min=1))
    out = loss(maps, targets)
    assert out["obj"].item() == pytest.approx(expected, rel=1e-5)
    out["loss"].backward()
    obj_grad = [m.grad.view(2, A, 5 + NUM_CLASSES, *m.shape[-2:])[:, :, 4] for m in maps]
    # exactly the counted cells get an objectness gradient
    assert all(torch.equal(g != 0, k) for g, k in zip(obj_grad, keep))


def test_hard_negative_ratio_zero_is_the_plain_loss_and_large_ratio_keeps_every_negative():
    maps, targets, kwargs = _hnm_example()
    plain = YOLOLoss(NUM_CLASSES, ANCHORS, **kwargs)(maps, targets)
    off = YOLOLoss(NUM_CLASSES, ANCHORS, hard_negative_ratio=0.0, **kwargs)(maps, targets)
    every = YOLOLoss(NUM_CLASSES, ANCHORS, hard_negative_ratio=1e6, **kwargs)(maps, targets)
    assert all(torch.equal(plain[k], off[k]) for k in plain)
    assert every["obj"].item() == pytest.approx(plain["obj"].item(), rel=1e-6)
    # an image without ground truth has no positives and so contributes no negatives
    empty = YOLOLoss(NUM_CLASSES, ANCHORS, hard_negative_ratio=3.0, **kwargs)(_maps(1, seed=0), [_target([], [])])
    assert empty["obj"].item() == 0.0
    with pytest.raises(ValueError, match="hard_negative_ratio must be >= 0"):
        YOLOLoss(NUM_CLASSES, ANCHORS, hard_negative_ratio=-1.0)
