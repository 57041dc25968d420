"""IoU variants: torchvision agreement, hand-computed values, finite gradients on degenerate boxes."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import ops as tv_ops

from lightning_yolo.ops import iou as iou_ops
from lightning_yolo.ops.iou import elementwise_box_iou, shape_iou

PAIRWISE = {
    "iou": (iou_ops.box_iou, tv_ops.box_iou),
    "giou": (iou_ops.generalized_box_iou, tv_ops.generalized_box_iou),
    "diou": (iou_ops.distance_box_iou, tv_ops.distance_box_iou),
    "ciou": (iou_ops.complete_box_iou, tv_ops.complete_box_iou),
}


def _boxes(n: int, seed: int, scale: float = 50.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 2 + 0.5
    return torch.cat((xy, xy + wh), dim=1)


def _special_boxes() -> torch.Tensor:
    """Disjoint, nested, identical, touching and degenerate (zero width / height / area) boxes."""
    return torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],  # disjoint from the first
            [2.0, 3.0, 6.0, 8.0],  # nested in the first
            [0.0, 0.0, 10.0, 10.0],  # identical to the first
            [10.0, 0.0, 15.0, 10.0],  # touches the first
            [5.0, 5.0, 5.0, 9.0],  # zero width, inside the first
            [1.0, 4.0, 7.0, 4.0],  # zero height, inside the first
            [3.0, 3.0, 3.0, 3.0],  # a point
            [3.0, 3.0, 3.0, 3.0],  # the same point
            [40.0, 40.0, 40.0, 40.0],  # a far point
        ]
    )


@pytest.mark.parametrize("kind", list(PAIRWISE))
def test_pairwise_matches_torchvision(kind: str) -> None:
    ours_fn, tv_fn = PAIRWISE[kind]
    boxes1 = torch.cat((_boxes(40, 0), _special_boxes()))
    boxes2 = torch.cat((_boxes(30, 1), _special_boxes()))
    ours, ref = ours_fn(boxes1, boxes2), tv_fn(boxes1, boxes2)
    assert ours.shape == (50, 40)
    assert torch.isfinite(ours).all(), "NaN from 0/0 must become 0"
    finite = torch.isfinite(ref)
    assert finite[:40, :30].all()
    torch.testing.assert_close(ours[finite], ref[finite])
    # two zero-area boxes that do not overlap (torchvision: 0/0) -> plain IoU 0 (darknet box_iou convention)
    if kind == "iou":
        assert ours[-1, -2].item() == 0.0 and not finite[-1, -2]


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_elementwise_matches_torchvision(kind: str) -> None:
    _, tv_fn = PAIRWISE[kind]
    boxes1 = torch.cat((_boxes(64, 2), _special_boxes()[:5])).double()
    boxes2 = torch.cat((_boxes(64, 3), _special_boxes()[[3, 2, 1, 0, 0]])).double()
    ours = elementwise_box_iou(boxes1, boxes2, kind=kind, eps=1e-12)
    ref = (tv_fn(boxes1, boxes2, eps=1e-12) if kind in ("diou", "ciou") else tv_fn(boxes1, boxes2)).diagonal()
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    # and the float32 default eps stays within float tolerance of torchvision's loss functions
    loss_fn = {
        "giou": tv_ops.generalized_box_iou_loss,
        "diou": tv_ops.distance_box_iou_loss,
        "ciou": tv_ops.complete_box_iou_loss,
    }.get(kind)
    if loss_fn is not None:
        torch.testing.assert_close(
            1 - elementwise_box_iou(boxes1.float(), boxes2.float(), kind=kind),
            loss_fn(boxes1.float(), boxes2.float()),
            rtol=1e-5,
            atol=1e-5,
        )


def test_elementwise_broadcasts_leading_dims() -> None:
    boxes1 = _boxes(24, 4).view(2, 3, 4, 4)
    boxes2 = _boxes(4, 5)  # broadcast over the leading dims
    out = elementwise_box_iou(boxes1, boxes2, kind="ciou")
    assert out.shape == (2, 3, 4)
    ref = tv_ops.complete_box_iou(boxes1.view(-1, 4), boxes2)
    torch.testing.assert_close(out.view(-1), ref[torch.arange(24), torch.arange(24) % 4], rtol=1e-5, atol=1e-5)


def test_hand_computed_values() -> None:
    unit = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    # offset by 0.5 in x: intersection 0.5, union 1.5, enclosing box 1.5 x 1 (= union, so GIoU = IoU)
    shifted_x = torch.tensor([[0.5, 0.0, 1.5, 1.0]])
    # offset by 0.5 in x and y: intersection 0.25, union 1.75, enclosing 1.5 x 1.5
    shifted_xy = torch.tensor([[0.5, 0.5, 1.5, 1.5]])
    expected = {
        # IoU, GIoU, DIoU (rho^2 / c^2), CIoU (same aspect ratio: v = 0)
        "x": (1 / 3, 1 / 3, 1 / 3 - 0.25 / 3.25, 1 / 3 - 0.25 / 3.25),
        "xy": (1 / 7, 1 / 7 - 0.5 / 2.25, 1 / 7 - 0.5 / 4.5, 1 / 7 - 0.5 / 4.5),
    }
    for name, other in (("x", shifted_x), ("xy", shifted_xy)):
        for kind, value in zip(("iou", "giou", "diou", "ciou"), expected[name], strict=True):
            got = elementwise_box_iou(unit, other, kind=kind).item()
            assert got == pytest.approx(value, abs=1e-6), (name, kind)
            assert PAIRWISE[kind][0](unit, other).item() == pytest.approx(value, abs=1e-6), (name, kind)

    # CIoU with different aspect ratios: 2x1 box vs the unit square at the same corner
    wide = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    iou, rho2_c2 = 0.5, 0.25 / 5.0
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (1 - iou + v)
    assert elementwise_box_iou(wide, unit, kind="ciou").item() == pytest.approx(iou - rho2_c2 - alpha * v, abs=1e-6)
    assert elementwise_box_iou(wide, unit, kind="diou").item() == pytest.approx(iou - rho2_c2, abs=1e-6)


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_gradients_finite_on_degenerate_boxes(kind: str) -> None:
    special = _special_boxes()
    # every special box against every other one, including itself (identical points, zero width vs zero height)
    boxes1 = special[:, None, :].expand(-1, len(special), -1).reshape(-1, 4).clone().requires_grad_(True)
    boxes2 = special[None, :, :].expand(len(special), -1, -1).reshape(-1, 4).clone().requires_grad_(True)
    value = elementwise_box_iou(boxes1, boxes2, kind=kind)
    assert torch.isfinite(value).all()
    (1 - value).sum().backward()
    assert torch.isfinite(boxes1.grad).all() and torch.isfinite(boxes2.grad).all()
    # a degenerate prediction still gets a gradient towards a proper target (for all but plain IoU, which is 0)
    if kind != "iou":
        point = torch.tensor([[3.0, 3.0, 3.0, 3.0]], requires_grad=True)
        (1 - elementwise_box_iou(point, torch.tensor([[10.0, 10.0, 20.0, 20.0]]), kind=kind)).sum().backward()
        assert torch.isfinite(point.grad).all() and point.grad.abs().sum() > 0


def test_elementwise_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="'eiou'"):
        elementwise_box_iou(torch.zeros(1, 4), torch.zeros(1, 4), kind="eiou")  # type: ignore[arg-type]


def test_shape_iou_hand_case() -> None:
    wh1 = torch.tensor([[2.0, 4.0], [1.0, 1.0], [0.0, 0.0]])
    wh2 = torch.tensor([[4.0, 2.0], [2.0, 2.0], [0.0, 0.0]])
    out = shape_iou(wh1, wh2)
    assert out.shape == (3, 3)
    # (2,4) vs (4,2): intersection 2x2 = 4, union 8 + 8 - 4 = 12; (1,1) vs (2,2): 1 / 4; (2,4) vs (2,2): 4 / 8
    assert out[0, 0].item() == pytest.approx(1 / 3)
    assert out[1, 1].item() == pytest.approx(1 / 4)
    assert out[0, 1].item() == pytest.approx(1 / 2)
    assert out[2, 2].item() == 0.0 and torch.isfinite(out).all()
    # equals box IoU of the shapes placed at a common centre
    centred1 = torch.cat((-wh1[:2] / 2, wh1[:2] / 2), 1)
    centred2 = torch.cat((-wh2[:2] / 2, wh2[:2] / 2), 1)
    torch.testing.assert_close(out[:2, :2], tv_ops.box_iou(centred1, centred2))
