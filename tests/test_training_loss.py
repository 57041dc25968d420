"""YOLOLoss: exact values on hand-built head maps, ignore mask, label smoothing, gradients, dtypes, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_yolo.models import create_model
from lightning_yolo.models.anchors import AnchorSet
from lightning_yolo.ops.iou import IOU_KINDS, elementwise_box_iou
from lightning_yolo.ops.postprocess import decode_outputs
from lightning_yolo.training.assigner import assign_targets
from lightning_yolo.training.loss import YOLOLoss

C = 2
A = 3
# 64 x 64 input: maps 8x8, 4x4, 2x2.
ANCHORS = AnchorSet(
    anchors=[[[8, 8], [16, 8], [8, 16]], [[24, 24], [40, 20], [20, 40]], [[48, 48], [64, 32], [32, 64]]],
    strides=[8, 16, 32],
    scale_x_y=[1.2, 1.1, 1.05],
)
SIZES = [(8, 8), (4, 4), (2, 2)]
LEVEL_W = (4.0, 1.0, 0.4)




def _maps(batch: int, fill: float = 0.0, requires_grad: bool = True) -> list[torch.Tensor]:
    maps = [torch.full((batch, A * (5 + C), h, w), fill) for h, w in SIZES]
    for m in maps:
        m.view(batch, A, 5 + C, *m.shape[-2:])[:, :, 4] = -4.0  # objectness logits
    return [m.requires_grad_(requires_grad) for m in maps]


def _v(x) -> float:
    """Python float of a (possibly grad-requiring) scalar tensor."""
    return float(x.detach()) if isinstance(x, torch.Tensor) else float(x)


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long()}


def _assign(targets, loss_fn):
    return assign_targets(targets, ANCHORS.anchors, ANCHORS.strides, ANCHORS.scale_x_y, SIZES, loss_fn.iou_thresh)


def _write_perfect_boxes(maps, assign):
    """Set t_xywh of every assigned slot so that it decodes exactly to its target box."""
    with torch.no_grad():
        for k in range(assign.num_assigned):
            lv, b, a = int(assign.level[k]), int(assign.batch_idx[k]), int(assign.anchor_idx[k])
            gy, gx = int(assign.grid_y[k]), int(assign.grid_x[k])
            x1, y1, x2, y2 = assign.boxes_xyxy[k].tolist()
            s, stride = _v(ANCHORS.scale_x_y[lv]), _v(ANCHORS.strides[lv])
            aw, ah = ANCHORS.anchors[lv, a].tolist()
            v = maps[lv].view(maps[lv].shape[0], A, 5 + C, *maps[lv].shape[-2:])
            for i, (centre, g) in enumerate((((x1 + x2) / 2, gx), ((y1 + y2) / 2, gy))):
                p = (centre / stride - g + (s - 1) / 2) / s
                v[b, a, i, gy, gx] = math.log(p / (1 - p))
            v[b, a, 2, gy, gx] = math.log((x2 - x1) / aw)
            v[b, a, 3, gy, gx] = math.log((y2 - y1) / ah)


TARGETS = [_target([[10, 12, 26, 20], [20, 14, 52, 54]], [0, 1]), _target([[30, 30, 46, 38]], [1])]


def test_image_without_objects_penalises_every_objectness_logit():
    loss_fn = YOLOLoss(C, ANCHORS)
    maps = _maps(2)
    with torch.no_grad():
        for m in maps:
            m.normal_(0, 1)
    out = loss_fn(maps, [_target([], []), _target([], [])])
    assert out["loss"].dtype == torch.float32
    assert _v(out["box"]) == 0.0 and _v(out["cls"]) == 0.0
    expected = sum(
        w * F.softplus(m.view(2, A, 5 + C, *m.shape[-2:])[:, :, 4]).mean() for w, m in zip(LEVEL_W, maps, strict=True)
    )
    assert _v(out["obj"]) == pytest.approx(_v(expected), rel=1e-6)
    assert _v(out["loss"]) == pytest.approx(_v(expected), rel=1e-6)
    out["loss"].backward()  # empty components are still part of the graph
    assert all(torch.isfinite(m.grad).all() for m in maps)


def test_components_finite_positive_and_sum_to_loss():
    loss_fn = YOLOLoss(C, ANCHORS)
    out = loss_fn(_maps(2), TARGETS)
    assert set(out) == {"box", "obj", "cls", "loss"}
    for k in ("box", "obj", "cls"):
        assert out[k].ndim == 0 and out[k].dtype == torch.float32
        assert math.isfinite(_v(out[k])) and _v(out[k]) > 0
    assert _v(out["loss"]) == pytest.approx(_v(out["box"] + out["obj"] + out["cls"]), rel=1e-6)


@pytest.mark.parametrize("kind", IOU_KINDS)  # "mse": tests/test_switches.py
def test_box_loss_kinds_match_ops_iou_on_decoded_boxes(kind):
    loss_fn = YOLOLoss(C, ANCHORS, box_loss=kind, box_weight=1.0)
    torch.manual_seed(0)
    maps = [(m.detach() + 0.5 * torch.randn_like(m)).requires_grad_(True) for m in _maps(2)]
    out = loss_fn(maps, TARGETS)
    # independent path: decode every prediction with ops.postprocess and pick the assigned slots
    a = _assign(TARGETS, loss_fn)
    decoded = decode_outputs(maps, ANCHORS.anchors, ANCHORS.strides, ANCHORS.scale_x_y, C)  # [B, N, 5+C]
    offsets = [0]
    for h, w in SIZES[:-1]:
        offsets.append(offsets[-1] + A * h * w)
    sizes = torch.tensor(SIZES)
    flat = torch.tensor(offsets)[a.level] + (a.anchor_idx * sizes[a.level, 0] + a.grid_y) * sizes[a.level, 1] + a.grid_x
    pred = decoded[a.batch_idx, flat, :4]
    expected = (1 - elementwise_box_iou(pred, a.boxes_xyxy, kind)).mean()
    assert _v(out["box"]) == pytest.approx(_v(expected), rel=1e-5)
    out["loss"].backward()
    assert all(torch.isfinite(m.grad).all() for m in maps)

    # perfect boxes: every kind gives (nearly) zero box loss
    perfect = _maps(2)
    _write_perfect_boxes(perfect, a)
    assert _v(loss_fn(perfect, TARGETS)["box"]) < 1e-5


def test_kinds_order_on_non_overlapping_prediction():
    # One gt; its prediction pushed far right: IoU loss is 1, GIoU / DIoU / CIoU add penalties > 0.
    t = [_target([[4, 4, 12, 12]], [0])]
    values = {}
    for kind in IOU_KINDS:
        loss_fn = YOLOLoss(C, ANCHORS, box_loss=kind, box_weight=1.0, iou_thresh=1.0)
        maps = _maps(1)
        with torch.no_grad():
            maps[0].view(1, A, 5 + C, 8, 8)[0, 0, 0] = 6.0  # centre moves ~0.6 cell right
            maps[0].view(1, A, 5 + C, 8, 8)[0, 0, 2] = -2.0  # and shrinks: no overlap left
        values[kind] = _v(loss_fn(maps, t)["box"])
    assert values["iou"] == pytest.approx(1.0, abs=1e-6)
    assert values["giou"] > 1.0 and values["diou"] > 1.0 and values["ciou"] >= values["diou"]


def test_ignore_mask_removes_objectness_penalty_near_a_ground_truth():
    # Anchor 0 of level 0 is 48 x 48 here; a 48 x 48 gt centred on cell (3, 3) is assigned there. The
    # neighbouring cells' anchor-0 boxes (t = 0) are offset by 8 px: IoU 40/56 = 0.714 > 0.7 -> ignored;
    # two cells away: IoU 32/64 = 0.5 -> penalised.
    anchors = AnchorSet(
        anchors=[
            [[48, 48], [4, 4], [4, 8]],
            [[100, 100], [110, 100], [100, 110]],
            [[200, 200], [210, 200], [200, 210]],
        ],
        strides=[8, 16, 32],
        scale_x_y=[1.2, 1.1, 1.05],
    )
    t = [_target([[4, 4, 52, 52]], [0])]
    grads = {}
    for thresh in (0.7, 1.0):
        loss_fn = YOLOLoss(C, anchors, ignore_thresh=thresh, iou_thresh=0.5)
        maps = _maps(1)
        loss_fn(maps, t)["obj"].backward()
        grads[thresh] = maps[0].grad.view(1, A, 5 + C, 8, 8)[0, 0, 4]  # [H, W] of anchor 0
    g = grads[0.7]
    assert g[3, 3] < 0  # the assigned slot is pushed up
    for y, x in ((3, 4), (4, 3), (2, 3), (3, 2)):
        assert g[y, x] == 0, (y, x)
    assert g[3, 5] > 0 and g[5, 3] > 0
    assert (grads[1.0][3, 4] > 0) and (grads[1.0][2, 3] > 0)


def test_label_smoothing_targets():
    eps = 0.2
    t = [_target([[10, 12, 26, 20]], [1])]
    loss_fn = YOLOLoss(C, ANCHORS, label_smoothing=eps, cls_weight=1.0)
    a = _assign(t, loss_fn)
    maps = _maps(1)
    # logits at the smoothed targets: 1 - eps/2 for the true class, eps/2 for the other -> zero gradient
    pos, neg = math.log((1 - eps / 2) / (eps / 2)), math.log((eps / 2) / (1 - eps / 2))
    with torch.no_grad():
        for k in range(a.num_assigned):
            lv, an, gy, gx = (int(v[k]) for v in (a.level, a.anchor_idx, a.grid_y, a.grid_x))
            maps[lv].view(1, A, 5 + C, *SIZES[lv])[0, an, 5:, gy, gx] = torch.tensor([neg, pos])
    out = loss_fn(maps, t)
    out["cls"].backward()
    cls_grads = torch.cat([m.grad.view(1, A, 5 + C, -1)[:, :, 5:].flatten() for m in maps])
    assert cls_grads.abs().max() < 1e-6
    # the loss value is the entropy of the smoothed targets, summed over the C classes
    h = -((1 - eps / 2) * math.log(1 - eps / 2) + (eps / 2) * math.log(eps / 2))
    assert _v(out["cls"]) == pytest.approx(C * h, rel=1e-5)
    # without smoothing the same logits are not optimal: the true class is pushed up, the other down
    plain = YOLOLoss(C, ANCHORS, label_smoothing=0.0, cls_weight=1.0)
    maps2 = [m.detach().clone().requires_grad_(True) for m in maps]
    plain(maps2, t)["cls"].backward()
    g = maps2[int(a.level[0])].grad.view(1, A, 5 + C, *SIZES[int(a.level[0])])
    an, gy, gx = int(a.anchor_idx[0]), int(a.grid_y[0]), int(a.grid_x[0])
    assert g[0, an, 6, gy, gx] < 0 < g[0, an, 5, gy, gx]


def test_focal_and_iou_aware_objectness():
    maps = _maps(2)
    base = _v(YOLOLoss(C, ANCHORS)(maps, TARGETS)["obj"])
    focal = _v(YOLOLoss(C, ANCHORS, focal_gamma=1.5)(maps, TARGETS)["obj"])
    assert 0 < focal < base  # focal down-weights the easy negatives (p = sigmoid(-4))
    # IoU-aware target with perfect boxes equals target 1
    a = _assign(TARGETS, YOLOLoss(C, ANCHORS))
    perfect = _maps(2)
    _write_perfect_boxes(perfect, a)
    aware = _v(YOLOLoss(C, ANCHORS, obj_iou_ratio=1.0)(perfect, TARGETS)["obj"])
    assert aware == pytest.approx(_v(YOLOLoss(C, ANCHORS, obj_iou_ratio=0.0)(perfect, TARGETS)["obj"]), rel=1e-4)
    # with imperfect boxes (t = 0: anchor-sized boxes at the cell centres, IoU < 1) the IoU-aware target is lower,
    # so a confident objectness (logit 4 at every slot) costs more, and its gradient pushes assigned logits down
    loose = _maps(2)
    with torch.no_grad():
        for m in loose:
            m.view(2, A, 5 + C, *m.shape[-2:])[:, :, 4] = 4.0
    aware = YOLOLoss(C, ANCHORS, obj_iou_ratio=1.0)(loose, TARGETS)["obj"]
    assert _v(aware) > _v(YOLOLoss(C, ANCHORS, obj_iou_ratio=0.0)(loose, TARGETS)["obj"])


def test_crowd_boxes_are_not_assigned():
    loss_fn = YOLOLoss(C, ANCHORS)
    crowd = _target([[10, 12, 26, 20], [20, 14, 52, 54]], [0, 1])
    crowd["iscrowd"] = torch.tensor([False, True])
    only_first = _target([[10, 12, 26, 20]], [0])
    maps = _maps(1)
    a, b = loss_fn(maps, [crowd]), loss_fn(maps, [only_first])
    assert _v(a["box"]) == pytest.approx(_v(b["box"])) and _v(a["cls"]) == pytest.approx(_v(b["cls"]))


def test_one_backward_of_the_sum_equals_separate_backwards():
    # float64 end to end, so that the comparison is not blurred by float32 summation order
    torch.manual_seed(0)
    model = create_model("yolov4_pico", num_classes=3).double()
    loss_fn = YOLOLoss(3, model.anchors, label_smoothing=0.1)
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    targets = [_target([[4, 6, 30, 40], [30, 30, 60, 50]], [0, 2]), _target([[10, 10, 20, 30]], [1])]
    out = loss_fn(model(images), targets)
    params = [p for p in model.parameters() if p.requires_grad]
    total = torch.autograd.grad(out["loss"], params, retain_graph=True, allow_unused=True)
    separate = [torch.zeros_like(p) for p in params]
    for key in ("box", "obj", "cls"):
        for acc, g in zip(
            separate, torch.autograd.grad(out[key], params, retain_graph=True, allow_unused=True), strict=True
        ):
            if g is not None:
                acc += g
    n_nonzero = 0
    for p, g_total, g_sep in zip(params, total, separate, strict=True):
        g_total = torch.zeros_like(p) if g_total is None else g_total
        assert torch.allclose(g_total, g_sep, rtol=1e-10, atol=1e-12)
        n_nonzero += int(g_total.abs().sum() > 0)
    assert n_nonzero > 0.9 * len(params)
    # and the same through .backward() accumulation into .grad
    model.zero_grad(set_to_none=True)
    out["loss"].backward(retain_graph=True)
    once = [p.grad.clone() for p in params]
    model.zero_grad(set_to_none=True)
    for key in ("box", "obj", "cls"):
        out[key].backward(retain_graph=True)
    assert all(torch.allclose(a, p.grad, rtol=1e-10, atol=1e-12) for a, p in zip(once, params, strict=True))


def test_bf16_autocast_loss_is_fp32_and_close():
    torch.manual_seed(0)
    model = create_model("yolov4_pico", num_classes=3)
    loss_fn = YOLOLoss(3, model.anchors)
    images = torch.rand(2, 3, 64, 64)
    targets = [_target([[4, 6, 30, 40]], [0]), _target([[10, 10, 20, 30]], [1])]
    ref = loss_fn(model(images), targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = model(images)
        out = loss_fn(raw, targets)
    assert raw[0].dtype == torch.bfloat16
    assert out["loss"].dtype == torch.float32 and math.isfinite(_v(out["loss"]))
    assert _v(out["loss"]) == pytest.approx(_v(ref["loss"]), rel=0.05)
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_inputs_raise_with_the_key_or_value():
    loss_fn = YOLOLoss(C, ANCHORS)
    maps = _maps(1)
    with pytest.raises(ValueError, match="'boxes'"):
        loss_fn(maps, [{"labels": torch.zeros(0).long()}])
    with pytest.raises(ValueError, match="'labels'"):
        loss_fn(maps, [{"boxes": torch.zeros(0, 4)}])
    with pytest.raises(ValueError, match=r"\['boxes'\] must have shape \[N, 4\]"):
        loss_fn(maps, [{"boxes": torch.zeros(4), "labels": torch.zeros(1).long()}])
    with pytest.raises(ValueError, match=r"\['labels'\]\[0\] = 5 is outside 0..1"):
        loss_fn(maps, [_target([[0, 0, 8, 8]], [5])])
    with pytest.raises(ValueError, match="2 target dicts for a batch of 1"):
        loss_fn(maps, [_target([], []), _target([], [])])
    with pytest.raises(ValueError, match="list of 3 level maps, got 2"):
        loss_fn(maps[:2], [_target([], [])])
    with pytest.raises(
        ValueError, match=r"raw_maps\[1\] must have shape \[B, 3\*\(5\+2\)=21, H, W\], got \[1, 20, 4, 4\]"
    ):
        loss_fn([maps[0], torch.zeros(1, 20, 4, 4), maps[2]], [_target([], [])])
    with pytest.raises(ValueError, match="box_loss must be one of"):
        YOLOLoss(C, ANCHORS, box_loss="l1")
    with pytest.raises(ValueError, match="level_obj_weights needs 3"):
        YOLOLoss(C, ANCHORS, level_obj_weights=(1.0, 1.0))


def test_the_loss_reads_the_network_anchors_and_holds_no_copy():
    """One home for the anchors: the loss reads the network's AnchorSet, so an in-place change of the network's
    buffer (load_state_dict, AutoAnchor, set_anchors) is what the next loss call uses, with no sync code."""
    anchors = AnchorSet(ANCHORS.anchors.tolist(), ANCHORS.strides.tolist(), ANCHORS.scale_x_y.tolist())
    loss_fn = YOLOLoss(C, anchors)
    assert loss_fn.state_dict() == {} and list(loss_fn.children()) == []  # not a submodule: saved with the network
    assert loss_fn.anchors.data_ptr() == anchors.anchors.data_ptr()
    before = _v(loss_fn(_maps(2), TARGETS)["loss"])
    halved = {"anchors": anchors.anchors / 2, "strides": anchors.strides, "scale_x_y": anchors.scale_x_y}
    anchors.load_state_dict(halved)  # as a checkpoint load does: copies into the network's buffer
    after = _v(loss_fn(_maps(2), TARGETS)["loss"])
    fresh = _v(YOLOLoss(C, AnchorSet(halved["anchors"].tolist(), [8, 16, 32], [1.2, 1.1, 1.05]))(_maps(2), TARGETS)["loss"])
    assert after != before and after == pytest.approx(fresh, rel=1e-6)
    assert math.isfinite(_v(loss_fn(_maps(2), TARGETS)["loss"]))


