"""Assigner: hand-computed matches, multi-anchor assignment, duplicates, crowd, neighbour cells, ignore mask."""

from __future__ import annotations

import pytest
import torch

from lightning_yolo.training.assigner import assign_targets, ignore_mask, pad_targets

# Hand-picked anchors (w, h) px for strides 8 / 16 / 32 on a 128 x 128 input.
ANCHORS = torch.tensor(
    [
        [[10.0, 10.0], [20.0, 10.0], [10.0, 20.0]],
        [[30.0, 30.0], [60.0, 30.0], [30.0, 60.0]],
        [[80.0, 80.0], [120.0, 60.0], [60.0, 120.0]],
    ]
)
STRIDES = [8, 16, 32]
SCALE = [1.2, 1.1, 1.05]
SIZES = [(16, 16), (8, 8), (4, 4)]


def _target(boxes, labels, crowd=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels).long()}
    if crowd is not None:
        t["iscrowd"] = torch.tensor(crowd, dtype=torch.bool)
    return t


def _slots(a) -> set[tuple[int, int, int, int, int, int]]:
    """(batch, level, anchor, y, x, gt_index) of every assignment."""
    rows = torch.stack((a.batch_idx, a.level, a.anchor_idx, a.grid_y, a.grid_x, a.gt_index), 1)
    return {tuple(r) for r in rows.tolist()}


def test_hand_computed_two_ground_truths():
    # gt0: 20 x 10 box centred at (22, 25). Shape IoU with the anchors, by hand:
    #   (10,10): 100/200 = 0.5   (20,10): 1.0 (best)   (10,20): 100/300 = 0.333   (30,30): 200/900 = 0.222 > 0.213
    #   (60,30), (30,60): 200/1800 = 0.111; level 2: < 0.05.
    #   cells: stride 8 -> (x, y) = (22 // 8, 25 // 8) = (2, 3); stride 16 -> (1, 1).
    # gt1: 60 x 60 box centred at (70, 90).
    #   (30,30): 900/3600 = 0.25  (60,30), (30,60): 0.5  (80,80): 3600/6400 = 0.5625 (best)  (120,60), (60,120): 0.5
    #   level 0: <= 0.056.  cells: stride 16 -> (70 // 16, 90 // 16) = (4, 5); stride 32 -> (2, 2).
    targets = [_target([[12, 20, 32, 30], [40, 60, 100, 120]], [1, 2])]
    a = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES, iou_thresh=0.213)
    expected = {
        # (batch, level, anchor, y, x, gt)
        (0, 0, 0, 3, 2, 0),
        (0, 0, 1, 3, 2, 0),
        (0, 0, 2, 3, 2, 0),
        (0, 1, 0, 1, 1, 0),
        (0, 1, 0, 5, 4, 1),
        (0, 1, 1, 5, 4, 1),
        (0, 1, 2, 5, 4, 1),
        (0, 2, 0, 2, 2, 1),
        (0, 2, 1, 2, 2, 1),
        (0, 2, 2, 2, 2, 1),
    }
    assert _slots(a) == expected
    assert a.num_assigned == 10
    # labels and boxes travel with their ground truth
    assert torch.equal(a.labels, torch.where(a.gt_index == 0, 1, 2))
    assert torch.equal(a.boxes_xyxy[a.gt_index == 1], torch.tensor([[40.0, 60, 100, 120]]).expand(6, 4))
    by_slot = {
        (int(lv), int(an), int(g)): float(s)
        for lv, an, g, s in zip(a.level, a.anchor_idx, a.gt_index, a.shape_iou, strict=True)
    }
    assert by_slot[(0, 1, 0)] == pytest.approx(1.0)
    assert by_slot[(1, 0, 0)] == pytest.approx(2 / 9)
    assert by_slot[(2, 0, 1)] == pytest.approx(0.5625)


def test_best_anchor_only_and_threshold():
    targets = [_target([[12, 20, 32, 30], [40, 60, 100, 120]], [1, 2])]
    only_best = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES, iou_thresh=1.0)
    assert _slots(only_best) == {(0, 0, 1, 3, 2, 0), (0, 2, 0, 2, 2, 1)}
    # raising the threshold just above 0.2222 drops gt0's stride-16 anchor and nothing else of gt0
    a = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES, iou_thresh=0.23)
    assert (0, 1, 0, 1, 1, 0) not in _slots(a)
    assert {s for s in _slots(a) if s[-1] == 0} == {(0, 0, 0, 3, 2, 0), (0, 0, 1, 3, 2, 0), (0, 0, 2, 3, 2, 0)}


def test_a_ground_truth_matching_two_anchors_above_threshold():
    # 14 x 14 box: IoU with (10,10) = 100/196 = 0.51 (best), with (20,10) = 140/256 = 0.547 -> best is (20,10)
    # with (10,20) also 0.547: ties resolved by argmax (first) -> best (20,10); all three > 0.213, (30,30) = 0.218.
    targets = [_target([[0, 0, 14, 14]], [0])]
    a = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES)
    assert {(lv, an) for _, lv, an, *_ in _slots(a)} == {(0, 0), (0, 1), (0, 2), (1, 0)}
    # a box no anchor matches above threshold still gets its best anchor (and only it)
    thin = assign_targets([_target([[0, 0, 2, 100]], [0])], ANCHORS, STRIDES, SCALE, SIZES)
    assert thin.num_assigned == 1 and (int(thin.level), int(thin.anchor_idx)) == (0, 2)


def test_batch_index_cells_clamped_crowd_and_degenerate_dropped():
    targets = [
        _target([[118, 118, 138, 128]], [0]),  # centre (128, 123): x clamps to the last column
        _target([], []),
        _target([[12, 20, 32, 30], [0, 0, 50, 50], [5, 5, 5, 30]], [0, 1, 2], crowd=[False, True, False]),
    ]
    a = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES, iou_thresh=1.0)
    assert _slots(a) == {(0, 0, 1, 15, 15, 0), (2, 0, 1, 3, 2, 0)}  # crowd (row 1) and zero-width (row 2) dropped


def test_duplicate_slot_keeps_one_deterministic_winner():
    # Both gts have their centre in cell (2, 3) at stride 8 and (20,10) as best anchor.
    # gt0 is 20 x 10 (IoU 1.0 with it), gt1 is 18 x 10 (IoU 0.9): gt0 wins the shared slot.
    targets = [_target([[12, 20, 32, 30], [13, 20, 31, 30]], [0, 1])]
    a = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES, iou_thresh=1.0)
    assert _slots(a) == {(0, 0, 1, 3, 2, 0)}
    # identical boxes tie on IoU: the later ground truth wins (darknet: later truths overwrite)
    tie = assign_targets([_target([[12, 20, 32, 30], [12, 20, 32, 30]], [0, 1])], ANCHORS, STRIDES, SCALE, SIZES)
    assert set(tie.gt_index.tolist()) == {1} and torch.equal(tie.labels, torch.ones_like(tie.labels))
    slots = [s[:5] for s in _slots(tie)]
    assert len(slots) == len(set(slots))  # no slot twice
    # the result is sorted by slot, hence independent of the input order of equal-priority claims
    again = assign_targets([_target([[12, 20, 32, 30], [12, 20, 32, 30]], [0, 1])], ANCHORS, STRIDES, SCALE, SIZES)
    assert all(torch.equal(x, y) for x, y in zip(tie, again, strict=True))


def test_neighbour_cells_follow_grid_sensitivity():
    # scale_x_y = 2 at stride 8: a cell reaches centres up to half a cell beyond its borders.
    # centre (21, 27) -> cell (2, 3), fractions (0.625, 0.375): right neighbour (3, 3) and upper neighbour (2, 2).
    targets = [_target([[11, 22, 31, 32]], [0])]
    scale = [2.0, 2.0, 2.0]
    a = assign_targets(targets, ANCHORS, STRIDES, scale, SIZES, iou_thresh=1.0, neighbour_cells=True)
    assert {(y, x) for _, _, _, y, x, _ in _slots(a)} == {(3, 2), (3, 3), (2, 2)}
    # with darknet's scale_x_y = 1.2 the margin is 0.1 cell: these fractions reach no neighbour
    b = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES, iou_thresh=1.0, neighbour_cells=True)
    assert {(y, x) for _, _, _, y, x, _ in _slots(b)} == {(3, 2)}
    # a neighbour claim never displaces a gt whose own cell it is, even from a later gt (later wins only ties):
    # gt0 centre (30, 30) owns cell (y, x) = (3, 3), which is also the right neighbour of gt1 (centre (21, 27)).
    two = [_target([[20, 25, 40, 35], [11, 22, 31, 32]], [0, 1])]
    c = assign_targets(two, ANCHORS, STRIDES, scale, SIZES, iou_thresh=1.0, neighbour_cells=True)
    owner = {(y, x): g for _, _, _, y, x, g in _slots(c)}
    assert owner == {(3, 3): 0, (3, 4): 0, (4, 3): 0, (3, 2): 1, (2, 2): 1}
    # two neighbour claims of equal IoU on one slot: the later gt wins. gt0 centre (21, 27) reaches right to
    # (y, x) = (3, 3); gt1 centre (35, 27), own cell (3, 4), reaches left to (3, 3) as well.
    rival = [_target([[11, 22, 31, 32], [25, 22, 45, 32]], [0, 1])]
    d = assign_targets(rival, ANCHORS, STRIDES, scale, SIZES, iou_thresh=1.0, neighbour_cells=True)
    owner = {(y, x): g for _, _, _, y, x, g in _slots(d)}
    assert owner == {(3, 2): 0, (2, 2): 0, (3, 4): 1, (3, 3): 1, (2, 4): 1}


def test_ignore_mask_by_hand():
    gts = [_target([[0, 0, 10, 10]], [0]), _target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    boxes, valid = pad_targets(gts)
    assert boxes.shape == (2, 2, 4) and valid.tolist() == [[True, False], [True, True]]
    preds = torch.tensor(
        [
            [[0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 6], [20, 20, 30, 30]],  # IoU 1, 0.8, 0.6, 0 (pad ignored)
            [[0, 0, 10, 10], [1, 0, 10, 10], [21, 21, 30, 30], [50, 50, 60, 60]],  # IoU 1, 0.9, 0.81, 0
        ],
        dtype=torch.float32,
    )
    assert ignore_mask(preds, boxes, valid, 0.7).tolist() == [[True, True, False, False], [True, True, True, False]]
    assert ignore_mask(preds, boxes, valid, 0.85).tolist() == [[True, False, False, False], [True, True, False, False]]
    empty_boxes, empty_valid = pad_targets([_target([], []), _target([], [])])
    assert empty_boxes.shape == (2, 0, 4)
    assert not ignore_mask(preds, empty_boxes, empty_valid, 0.7).any()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({"labels": torch.zeros(1).long()}, "'boxes'"),
        ({"boxes": torch.zeros(1, 4)}, "'labels'"),
        ({"boxes": torch.zeros(1, 5), "labels": torch.zeros(1).long()}, r"\[N, 4\]"),
        ({"boxes": torch.zeros(2, 4), "labels": torch.zeros(1).long()}, "N = 2"),
        ({"boxes": torch.zeros(1, 4), "labels": torch.zeros(1)}, "integer"),
        ([1, 2], "must be a dict"),
    ],
)
def test_bad_targets_name_the_key(target, message):
    with pytest.raises(ValueError, match=message):
        assign_targets([target], ANCHORS, STRIDES, SCALE, SIZES)


def test_level_count_mismatch():
    with pytest.raises(ValueError, match="3 levels"):
        assign_targets([_target([], [])], ANCHORS, STRIDES, SCALE, SIZES[:2])


def test_one_public_api_for_the_loss_and_for_callers():
    """The loss concatenates a batch's targets once (concat_targets) and hands the table to the same public
    assign_targets / pad_targets callers use with per-image dicts; both forms give the same result."""
    import ast
    import inspect

    from lightning_yolo.training import loss as loss_module
    from lightning_yolo.training.assigner import FlatTargets, concat_targets

    targets = [_target([[12, 20, 32, 30], [40, 60, 100, 120]], [1, 2]), _target([], []), _target([[0, 0, 9, 9]], [0])]
    flat = concat_targets(targets)
    assert isinstance(flat, FlatTargets) and flat.num_images == 3
    from_dicts = assign_targets(targets, ANCHORS, STRIDES, SCALE, SIZES, neighbour_cells=True)
    from_flat = assign_targets(flat, ANCHORS, torch.tensor(STRIDES, dtype=torch.float32), SCALE, SIZES, neighbour_cells=True)
    assert all(torch.equal(x, y) for x, y in zip(from_dicts, from_flat))
    assert all(torch.equal(x, y) for x, y in zip(pad_targets(targets), pad_targets(flat)))
    assert pad_targets(flat)[0].shape == (3, 2, 4)
    imported = [
        alias.name
        for node in ast.walk(ast.parse(inspect.getsource(loss_module)))
        if isinstance(node, ast.ImportFrom) and node.module == "assigner"
        for alias in node.names
    ]
    assert imported and not [name for name in imported if name.startswith("_")], imported
