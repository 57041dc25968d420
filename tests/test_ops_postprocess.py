"""decode_outputs (hand-made raw maps, ONNX export), postprocess, letterbox box mapping."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_yolo.ops.boxes import clip_boxes, scale_boxes_to_input, scale_boxes_to_original
from lightning_yolo.ops.postprocess import decode_outputs, postprocess

# two levels, two anchors each, two classes
ANCHORS = torch.tensor([[[10.0, 20.0], [6.0, 4.0]], [[30.0, 40.0], [50.0, 60.0]]])
STRIDES = torch.tensor([8.0, 16.0])
SCALE_X_Y = torch.tensor([1.2, 1.1])
NUM_CLASSES = 2


def _raw_maps(batch: int = 1) -> list[torch.Tensor]:
    """Level 0: 2 x 3 cells, level 1: 1 x 1; all logits 0 except a few set by hand."""
    level0 = torch.zeros(batch, 2 * 7, 2, 3)
    level1 = torch.zeros(batch, 2 * 7, 1, 1)
    # level 0, anchor 1 (channels 7..13), cell y=1, x=2
    level0[0, 7 + 1, 1, 2] = math.log(3.0)  # t_y: sigmoid = 0.75
    level0[0, 7 + 2, 1, 2] = math.log(2.0)  # t_w: w = 2 * 6
    level0[0, 7 + 4, 1, 2] = 2.0  # objectness logit
    level0[0, 7 + 5, 1, 2] = math.log(4.0)  # class 0: sigmoid = 0.8
    level0[0, 7 + 6, 1, 2] = -math.log(4.0)  # class 1: sigmoid = 0.2
    # level 1, anchor 0, the only cell: t_x = -inf-ish
    level1[0, 0, 0, 0] = -30.0
    return [level0, level1]


def test_decode_hand_made_raw_map() -> None:
    out = decode_outputs(_raw_maps(), ANCHORS, STRIDES, SCALE_X_Y, NUM_CLASSES)
    assert out.shape == (1, 2 * 6 + 2 * 1, 5 + NUM_CLASSES) and out.dtype == torch.float32
    # level 0, anchor 1, y=1, x=2 -> index 1 * 6 + 1 * 3 + 2 = 11
    # cx = (0.5 * 1.2 - 0.1 + 2) * 8 = 20; cy = (0.75 * 1.2 - 0.1 + 1) * 8 = 14.4; w = 2 * 6 = 12; h = 4
    expected_box = [20 - 6, 14.4 - 2, 20 + 6, 14.4 + 2]
    torch.testing.assert_close(out[0, 11, :4], torch.tensor(expected_box))
    obj = 1 / (1 + math.exp(-2.0))
    torch.testing.assert_close(out[0, 11, 4:], torch.tensor([obj, 0.8, 0.2]))
    # level 0, anchor 0, y=0, x=0, all logits 0: cx = cy = (0.5 * 1.2 - 0.1) * 8 = 4, w x h = anchor 10 x 20
    torch.testing.assert_close(out[0, 0], torch.tensor([-1.0, -6.0, 9.0, 14.0, 0.5, 0.5, 0.5]))
    # level 0, anchor 0, y=1, x=2 -> index 5: cx = 2.5 * 8 = 20, cy = 1.5 * 8 = 12
    torch.testing.assert_close(out[0, 5, :4], torch.tensor([15.0, 2.0, 25.0, 22.0]))
    # level 1 (index 12): sigmoid(-30) ~ 0 -> cx = (0 * 1.1 - 0.05 + 0) * 16 = -0.8 (grid sensitivity reaches
    # past the cell border); cy = 0.5 * 16 = 8; anchor 30 x 40
    torch.testing.assert_close(out[0, 12, :4], torch.tensor([-0.8 - 15, 8 - 20, -0.8 + 15, 8 + 20]), atol=1e-4, rtol=0)
    # level 1, anchor 1 (index 13): anchor 50 x 60
    torch.testing.assert_close(out[0, 13, :4], torch.tensor([-17.0, -22.0, 33.0, 38.0]))


def test_decode_batch_and_low_precision_input() -> None:
    maps = [torch.cat((m, torch.zeros_like(m))) for m in _raw_maps()]
    out = decode_outputs(maps, ANCHORS, STRIDES, SCALE_X_Y, NUM_CLASSES)
    assert out.shape == (2, 14, 7)
    assert not torch.equal(out[0], out[1])
    out_bf16 = decode_outputs([m.bfloat16() for m in maps], ANCHORS, STRIDES, SCALE_X_Y, NUM_CLASSES)
    assert out_bf16.dtype == torch.float32
    torch.testing.assert_close(out_bf16, out, atol=0.1, rtol=0.02)


def test_decode_rejects_wrong_channels() -> None:
    maps = _raw_maps()
    with pytest.raises(ValueError, match=r"raw map 0 has shape \[1, 14, 2, 3\], expected \[B, 2\*\(5\+3\)=16"):
        decode_outputs(maps, ANCHORS, STRIDES, SCALE_X_Y, 3)
    with pytest.raises(ValueError, match="got 1 raw maps for anchors of 2 levels"):
        decode_outputs(maps[:1], ANCHORS, STRIDES, SCALE_X_Y, NUM_CLASSES)


class _Decode(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchors", ANCHORS.clone())
        self.register_buffer("strides", STRIDES.clone())
        self.register_buffer("scale_x_y", SCALE_X_Y.clone())

    def forward(self, p3: torch.Tensor, p4: torch.Tensor) -> torch.Tensor:
        return decode_outputs([p3, p4], self.anchors, self.strides, self.scale_x_y, NUM_CLASSES)


@pytest.mark.filterwarnings("ignore:# The axis name")
def test_decode_exports_to_onnx_with_dynamic_batch_and_size(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    module = _Decode().eval()
    example = (torch.randn(1, 14, 4, 4), torch.randn(1, 14, 2, 2))
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    path = tmp_path / "decode.onnx"
    torch.onnx.export(
        module,
        example,
        str(path),
        dynamo=True,
        input_names=["p3", "p4"],
        dynamic_shapes=({0: batch, 2: 2 * height, 3: 2 * width}, {0: batch, 2: height, 3: width}),
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = (torch.randn(3, 14, 6, 10), torch.randn(3, 14, 3, 5))  # other batch, height and width
    (got,) = session.run(None, {"p3": inputs[0].numpy(), "p4": inputs[1].numpy()})
    expected = module(*inputs)
    assert got.shape == tuple(expected.shape) == (3, 2 * 60 + 2 * 15, 7)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-4)


def _decoded(rows: list[list[float]]) -> torch.Tensor:
    """One image; rows are (x1, y1, x2, y2, objectness, p_class0, p_class1)."""
    return torch.tensor(rows, dtype=torch.float32)[None]


@pytest.mark.parametrize("nms_kind", ["diou", "greedy"])
def test_postprocess_score_threshold_and_labels(nms_kind: str) -> None:
    decoded = _decoded(
        [
            [0, 0, 10, 10, 0.9, 0.2, 0.8],  # score 0.72, class 1
            [20, 20, 30, 30, 0.5, 0.6, 0.1],  # score 0.30, class 0
            [40, 40, 50, 50, 0.1, 0.5, 0.5],  # score 0.05: below 0.1
        ]
    )
    (det,) = postprocess(decoded, score_thresh=0.1, nms_kind=nms_kind)
    torch.testing.assert_close(det["scores"], torch.tensor([0.72, 0.30]))
    assert det["labels"].tolist() == [1, 0] and det["labels"].dtype == torch.int64
    torch.testing.assert_close(det["boxes"], torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]))


def test_postprocess_class_aware_vs_agnostic() -> None:
    decoded = _decoded([[0, 0, 10, 10, 1.0, 0.9, 0.0], [0, 0, 10, 10, 1.0, 0.0, 0.8]])
    (aware,) = postprocess(decoded, score_thresh=0.1)
    assert aware["labels"].tolist() == [0, 1]
    (agnostic,) = postprocess(decoded, score_thresh=0.1, class_agnostic=True)
    assert agnostic["labels"].tolist() == [0]
    torch.testing.assert_close(agnostic["scores"], torch.tensor([0.9]))


def test_postprocess_multi_label() -> None:
    decoded = _decoded([[0, 0, 10, 10, 1.0, 0.9, 0.6], [20, 20, 30, 30, 1.0, 0.05, 0.3]])
    (single,) = postprocess(decoded, score_thresh=0.1)
    assert single["labels"].tolist() == [0, 1]
    torch.testing.assert_close(single["scores"], torch.tensor([0.9, 0.3]))
    (multi,) = postprocess(decoded, score_thresh=0.1, multi_label=True)
    # box 0 appears with both classes (class-aware NMS keeps both), box 1 only with class 1 (0.05 < 0.1)
    torch.testing.assert_close(multi["scores"], torch.tensor([0.9, 0.6, 0.3]))
    assert multi["labels"].tolist() == [0, 1, 1]
    torch.testing.assert_close(multi["boxes"][0], multi["boxes"][1])


@pytest.mark.parametrize("nms_kind", ["diou", "greedy"])
def test_postprocess_max_det_and_pre_nms_topk(nms_kind: str) -> None:
    # 20 disjoint boxes with decreasing scores
    rows = [[30.0 * i, 0, 30.0 * i + 10, 10, 1.0, 0.9 - 0.01 * i, 0.0] for i in range(20)]
    decoded = _decoded(rows)
    (det,) = postprocess(decoded, score_thresh=0.01, max_det=5, nms_kind=nms_kind)
    torch.testing.assert_close(det["scores"], torch.tensor([0.9, 0.89, 0.88, 0.87, 0.86]))
    torch.testing.assert_close(det["boxes"][:, 0], torch.tensor([0.0, 30, 60, 90, 120]))
    (det,) = postprocess(decoded, score_thresh=0.01, pre_nms_topk=3, nms_kind=nms_kind)
    assert det["scores"].numel() == 3


def test_postprocess_nms_kinds_on_neighbouring_objects() -> None:
    # side-by-side boxes with IoU 3/7: greedy at 0.4 drops the second, DIoU-NMS keeps it (criterion 0.255)
    decoded = _decoded([[0, 0, 10, 10, 1.0, 0.9, 0.0], [4, 0, 14, 10, 1.0, 0.8, 0.0]])
    (greedy,) = postprocess(decoded, score_thresh=0.1, nms_iou_thresh=0.4, nms_kind="greedy")
    (diou,) = postprocess(decoded, score_thresh=0.1, nms_iou_thresh=0.4, nms_kind="diou", beta_nms=0.6)
    assert greedy["scores"].numel() == 1 and diou["scores"].numel() == 2


def test_postprocess_batch_images_are_independent() -> None:
    same_box = [0, 0, 10, 10, 1.0, 0.9, 0.0]
    decoded = torch.tensor(
        [
            [same_box, [1, 0, 11, 10, 1.0, 0.8, 0.0], [50, 50, 60, 60, 1.0, 0.0, 0.7]],
            [same_box, [0, 0, 0, 0, 0.0, 0.0, 0.0], [0, 0, 0, 0, 0.0, 0.0, 0.0]],
            [[0, 0, 0, 0, 0.0, 0.0, 0.0]] * 3,  # nothing above threshold
        ]
    )
    dets = postprocess(decoded, score_thresh=0.1, max_det=1)
    assert len(dets) == 3
    assert dets[0]["scores"].tolist() == pytest.approx([0.9]) and dets[0]["labels"].tolist() == [0]
    assert dets[1]["scores"].tolist() == pytest.approx([0.9])  # not suppressed by image 0's identical box
    assert dets[2]["boxes"].shape == (0, 4) and dets[2]["labels"].dtype == torch.int64
    dets = postprocess(decoded, score_thresh=0.1)
    assert [d["scores"].numel() for d in dets] == [2, 1, 0]  # image 0: overlapping pair -> 1, plus class 1 box


def test_postprocess_on_decoded_maps_and_bad_arguments() -> None:
    decoded = decode_outputs(_raw_maps(), ANCHORS, STRIDES, SCALE_X_Y, NUM_CLASSES)
    (det,) = postprocess(decoded, score_thresh=0.5)
    obj = 1 / (1 + math.exp(-2.0))
    torch.testing.assert_close(det["scores"], torch.tensor([obj * 0.8]))
    torch.testing.assert_close(det["boxes"], torch.tensor([[14.0, 12.4, 26.0, 16.4]]))
    with pytest.raises(ValueError, match="'soft'"):
        postprocess(decoded, nms_kind="soft")
    with pytest.raises(ValueError, match=r"\[1, 14\]"):
        postprocess(decoded[..., 0])


def test_scale_boxes_hand_case_and_clip() -> None:
    # letterbox: input = original * 0.5 + (10, 20)
    boxes = torch.tensor([[20.0, 30.0, 60.0, 70.0]])
    original = scale_boxes_to_original(boxes, 0.5, (10.0, 20.0), (80, 90))
    # ((20 - 10) / 0.5, (30 - 20) / 0.5, (60 - 10) / 0.5, (70 - 20) / 0.5) = (20, 20, 100, 100), clipped to W=90, H=80
    torch.testing.assert_close(original, torch.tensor([[20.0, 20.0, 90.0, 80.0]]))
    torch.testing.assert_close(
        clip_boxes(torch.tensor([[-5.0, -1.0, 200.0, 50.0]]), (40, 100)), torch.tensor([[0.0, 0.0, 100.0, 40.0]])
    )


def test_scale_boxes_round_trip_with_target_tensors() -> None:
    # the tensors a target dict carries: ratio float32 scalar, pad float32 [2], orig_size int64 [2] (H, W)
    ratio, pad, orig_size = torch.tensor(0.64), torch.tensor([0.0, 48.0]), torch.tensor([300, 500])
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * torch.tensor([400.0, 250.0])
    boxes = torch.cat((xy, xy + torch.rand(50, 2, generator=g) * 50 + 1), dim=1)  # inside the 500 x 300 image
    on_input = scale_boxes_to_input(boxes, ratio, pad)
    assert (on_input[:, [1, 3]] >= 48).all()
    torch.testing.assert_close(scale_boxes_to_original(on_input, ratio, pad, orig_size), boxes)
    # (ratio_x, ratio_y) for a non-uniform resize
    ratio_xy = torch.tensor([0.5, 0.25])
    back = scale_boxes_to_original(scale_boxes_to_input(boxes, ratio_xy, pad), ratio_xy, pad, orig_size)
    torch.testing.assert_close(back, boxes)
