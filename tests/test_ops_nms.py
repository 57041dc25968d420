"""Greedy NMS against torchvision; DIoU-NMS against a line-by-line port of darknet's diounms_sort."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import ops as tv_ops

from lightning_yolo.ops.nms import batched_nms, diou_nms, diou_nms_suppression


def _boxes(n: int, seed: int, scale: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 4 + 1.0
    scores = (torch.randperm(n, generator=g).float() + 1) / n  # distinct: no tie-order ambiguity
    return torch.cat((xy, xy + wh), dim=1), scores


def _darknet_box_diounms(a: list[float], b: list[float], beta: float) -> float:
    """darknet src/box.c box_diounms(a, b, beta1), on xyxy boxes (darknet uses centre x, y, w, h)."""
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    inter = 0.0 if inter_w < 0 or inter_h < 0 else inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = 0.0 if inter == 0 or union == 0 else inter / union
    c = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    if c == 0:
        return iou
    d = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    return iou - (d / c) ** beta


def _darknet_diounms_sort(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, thresh: float, beta: float):
    """darknet src/box.c diounms_sort with nms_kind == DIOU_NMS, per group; returns kept indices by score."""
    b, s, g = boxes.double().tolist(), scores.tolist(), idxs.tolist()
    kept = []
    for group in sorted(set(g)):
        members = sorted((i for i in range(len(b)) if g[i] == group), key=lambda i: -s[i])
        alive = dict.fromkeys(members, True)
        for pos, i in enumerate(members):
            if not alive[i]:
                continue
            kept.append(i)
            for j in members[pos + 1 :]:
                if alive[j] and _darknet_box_diounms(b[i], b[j], beta) > thresh:
                    alive[j] = False
    return sorted(kept, key=lambda i: -s[i])


def test_greedy_matches_torchvision_nms() -> None:
    boxes, scores = _boxes(500, 0)
    keep = batched_nms(boxes, scores, torch.zeros(500, dtype=torch.int64), 0.5)
    assert keep.dtype == torch.int64
    assert torch.equal(keep, tv_ops.nms(boxes, scores, 0.5))
    assert (scores[keep].diff() < 0).all()


@pytest.mark.parametrize("beta", [0.6, 1.0])
def test_diou_nms_matches_darknet_reference(beta: float) -> None:
    # 700 boxes: one group of ~400 (spans several 256-box blocks) and two smaller ones
    boxes, scores = _boxes(700, 1, scale=150.0)
    idxs = torch.cat((torch.zeros(400), torch.ones(200), torch.full((100,), 7))).long()
    idxs = idxs[torch.randperm(700, generator=torch.Generator().manual_seed(2))]
    keep = diou_nms(boxes, scores, idxs, 0.45, beta=beta)
    assert keep.dtype == torch.int64
    assert keep.tolist() == _darknet_diounms_sort(boxes, scores, idxs, 0.45, beta)
    assert 0 < keep.numel() < 700


def test_diou_nms_with_negligible_penalty_equals_greedy() -> None:
    # (rho^2 / c^2) ** 1e4 underflows to 0 for these boxes, so DIoU-NMS degenerates to greedy IoU NMS
    boxes, scores = _boxes(600, 3, scale=60.0)
    idxs = torch.randint(0, 3, (600,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(diou_nms(boxes, scores, idxs, 0.5, beta=1e4), tv_ops.batched_nms(boxes, scores, idxs, 0.5))


def test_diou_nms_keeps_side_by_side_box_that_greedy_drops() -> None:
    # two neighbouring objects: IoU = 60 / 140 = 3/7 > 0.4, but centres 4 px apart on a 14 x 10 enclosing box
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    idxs = torch.zeros(2, dtype=torch.int64)
    criterion = 3 / 7 - (16 / (14**2 + 10**2)) ** 0.6  # IoU - (rho^2 / c^2)^beta = 0.2549...
    assert diou_nms_suppression(boxes[:1], boxes[1:], beta=0.6).item() == pytest.approx(criterion, abs=1e-6)
    assert criterion == pytest.approx(0.25487, abs=1e-4)
    assert batched_nms(boxes, scores, idxs, 0.4).tolist() == [0]
    assert diou_nms(boxes, scores, idxs, 0.4, beta=0.6).tolist() == [0, 1]
    # concentric boxes: no distance penalty, both kinds suppress (IoU 0.64)
    nested = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 9.0, 9.0]])
    assert diou_nms_suppression(nested[:1], nested[1:]).item() == pytest.approx(0.64)
    assert diou_nms(nested, scores, idxs, 0.4).tolist() == [0]
    assert batched_nms(nested, scores, idxs, 0.4).tolist() == [0]


@pytest.mark.parametrize("nms", [batched_nms, diou_nms])
def test_class_aware_and_sorted(nms) -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3 + [[50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.95])
    # boxes 0 and 1 share a class, box 2 is the same box in another class
    keep = nms(boxes, scores, torch.tensor([0, 0, 1, 0]), 0.5)
    assert keep.tolist() == [3, 1, 2]
    keep = nms(boxes, scores, torch.tensor([0, 0, 0, 0]), 0.5)
    assert keep.tolist() == [3, 1]


@pytest.mark.parametrize("nms", [batched_nms, diou_nms])
def test_empty_input(nms) -> None:
    keep = nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


def test_diou_nms_degenerate_boxes_are_finite() -> None:
    # identical points (c = 0 -> darknet returns the plain IoU, here 0) never suppress each other
    points = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 4.0, 4.0]])
    crit = diou_nms_suppression(points, points)
    assert torch.isfinite(crit).all()
    assert crit[0, 1].item() == 0.0
    assert crit[2, 2].item() == pytest.approx(1.0)
    assert diou_nms(points, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.int64), 0.5).tolist() == [0, 1, 2]


def test_diou_nms_suppression_matches_formula_on_random_boxes() -> None:
    boxes, _ = _boxes(20, 5)
    crit = diou_nms_suppression(boxes, boxes, beta=0.6)
    ref = torch.tensor([[_darknet_box_diounms(a, b, 0.6) for b in boxes.tolist()] for a in boxes.tolist()])
    torch.testing.assert_close(crit, ref.float(), rtol=1e-5, atol=1e-5)
    assert math.isclose(crit.diagonal().min().item(), 1.0, abs_tol=1e-6)


def test_batched_nms_groups_stay_apart_with_negative_coordinates():
    from torchvision.ops import batched_nms as tv_batched_nms

    from lightning_yolo.ops.nms import batched_nms

    # torchvision's "max + 1" shift (11 here) moves the class-1 box onto the class-0 box: IoU 0.81, suppressed.
    boxes = torch.tensor([[-100.0, -100.0, 0.0, 0.0], [-80.0, -80.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    idxs = torch.tensor([1, 0])
    assert tv_batched_nms(boxes, scores, idxs, 0.5).tolist() == [0]
    assert sorted(batched_nms(boxes, scores, idxs, 0.5).tolist()) == [0, 1]


@pytest.mark.parametrize("cap", [1, 7, 100, 300, 5000])
def test_diou_nms_capped_per_segment_equals_best_of_uncapped(cap: int) -> None:
    # 3 "images" of 900 boxes each, 5 classes: segments (images) hold several groups (image * C + class); the cap
    # keeps the best `cap` kept boxes of each image, exactly as truncating the uncapped result would
    boxes, scores = _boxes(2700, 11, scale=200.0)
    image = torch.arange(2700) % 3
    label = torch.randint(0, 5, (2700,), generator=torch.Generator().manual_seed(12))
    groups = image * 5 + label
    full = diou_nms(boxes, scores, groups, 0.5)
    capped = diou_nms(boxes, scores, groups, 0.5, segments=image, max_per_segment=cap)
    expected = torch.cat([full[image[full] == i][:cap] for i in range(3)])
    expected = expected[torch.sort(scores[expected], descending=True, stable=True).indices]
    assert capped.tolist() == expected.tolist()
    assert full.tolist() == _darknet_diounms_sort(boxes, scores, groups, 0.5, 0.6)
