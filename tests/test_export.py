"""ONNX / TorchScript export: parity with PyTorch in onnxruntime and torch.jit, dynamic batch, in-graph NMS."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import pytest
import torch

from lightning_yolo.inference.export import export_module, export_onnx, export_torchscript, postprocess_padded
from lightning_yolo.models import create_model
from lightning_yolo.models.predictor import YOLOPredictor
from lightning_yolo.ops.postprocess import postprocess

IMG_HW = (64, 96)  # non-square on purpose


def calibrated_tiny(head_std: float | None = None, seed: int = 0) -> torch.nn.Module:
    """The tiny model with BatchNorm statistics taken from one batch, so features are O(1) instead of vanishing.

    ``head_std`` re-draws the prediction weights so scores spread out and boxes get detections (a "biased" head).
    """
    torch.manual_seed(seed)
    model = create_model("yolov4_pico", num_classes=3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0  # running stats := this batch's stats
    with torch.no_grad():
        model.train()(torch.rand(4, 3, *IMG_HW))
        if head_std is not None:
            for conv in model.head.preds:
                torch.nn.init.normal_(conv.weight, std=head_std)
                conv.bias.view(3, 8)[:, 4] = 0.0  # objectness prior 0.5
    return model.eval()


@pytest.fixture(scope="module")
def plain_model() -> torch.nn.Module:
    return calibrated_tiny()


@pytest.fixture(scope="module")
def detecting_model() -> torch.nn.Module:
    return calibrated_tiny(head_std=0.1)


def run_onnx(path, images: torch.Tensor) -> list[torch.Tensor]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in session.run(None, {"images": images.numpy()})]


def test_raw_model_onnx_dynamic_batch_matches_pytorch(tmp_path, plain_model):
    model = plain_model
    keys = set(model.state_dict())
    path = export_onnx(model, tmp_path / "raw.onnx", img_size=IMG_HW)
    assert set(model.state_dict()) == keys and any(".bn." in k for k in keys)  # the caller's model is not fused
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["raw_s8", "raw_s16", "raw_s32"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    for batch in (1, 3):
        images = torch.rand(batch, 3, *IMG_HW, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(images)  # the unfused original: fusing is part of what is checked
        got = run_onnx(path, images)
        assert (
            [g.shape for g in got]
            == [e.shape for e in expected]
            == [
                (batch, 24, 8, 12),
                (batch, 24, 4, 6),
                (batch, 24, 2, 3),
            ]
        )
        assert max(float(e.std()) for e in expected) > 0.05  # a real signal, not a constant bias
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_predictor_decoded_onnx_matches_pytorch(tmp_path, plain_model):
    predictor = YOLOPredictor(plain_model)
    path = export_onnx(predictor, tmp_path / "decoded.onnx", img_size=IMG_HW)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["decoded"]
    for batch in (1, 3):
        images = torch.rand(batch, 3, *IMG_HW, generator=torch.Generator().manual_seed(10 + batch))
        with torch.no_grad():
            expected = predictor.decode(images)
        (got,) = run_onnx(path, images)
        assert got.shape == (batch, 3 * (8 * 12 + 4 * 6 + 2 * 3), 8)
        torch.testing.assert_close(got[..., 4:], expected[..., 4:], atol=1e-4, rtol=0)  # probabilities
        torch.testing.assert_close(got[..., :4], expected[..., :4], atol=1e-2, rtol=1e-4)  # pixels (0.01 px)


def _assert_detections_match(detections, num_dets, reference, max_det):
    """Padded graph output vs ``postprocess`` dicts: same count, labels, order; boxes and scores within fp error."""
    assert detections.shape == (len(reference), max_det, 6)
    assert num_dets.tolist() == [len(r["scores"]) for r in reference]
    for det, n, ref in zip(detections, num_dets.tolist(), reference, strict=True):
        torch.testing.assert_close(det[:n, :4], ref["boxes"], atol=1e-2, rtol=1e-4)
        torch.testing.assert_close(det[:n, 4], ref["scores"], atol=1e-4, rtol=0)
        assert det[:n, 5].tolist() == ref["labels"].float().tolist()
        assert (det[n:, :5] == 0).all() and (det[n:, 5] == -1).all()  # padding rows


# the torch.export-based exporter (optional) takes ~14 s on an idle 2-core machine, the default one ~2 s: slow
@pytest.mark.parametrize("exporter", [pytest.param("dynamo", marks=pytest.mark.slow), "torchscript"])
def test_onnx_with_nms_matches_greedy_postprocess(tmp_path, detecting_model, exporter):
    predictor = YOLOPredictor(detecting_model, score_thresh=0.3, nms_iou_thresh=0.5, nms_kind="greedy", max_det=60)
    path = export_onnx(predictor, tmp_path / "nms.onnx", img_size=IMG_HW, with_nms=True, exporter=exporter)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["detections", "num_detections"]
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "NonMaxSuppression" in ops
    for batch in (1, 3):
        images = torch.rand(batch, 3, *IMG_HW, generator=torch.Generator().manual_seed(20 + batch))
        with torch.no_grad():
            reference = postprocess(
                predictor.decode(images), score_thresh=0.3, nms_iou_thresh=0.5, nms_kind="greedy", max_det=60
            )
        counts = [len(r["scores"]) for r in reference]
        assert 0 < counts[0] < 60, counts  # detections and padding rows both exercised
        detections, num_dets = run_onnx(path, images)
        _assert_detections_match(detections, num_dets, reference, max_det=60)


def test_nms_export_needs_a_predictor_and_warns_for_diou(tmp_path, plain_model):
    model = plain_model
    with pytest.raises(ValueError, match="with_nms=True needs a YOLOPredictor"):
        export_onnx(model, tmp_path / "x.onnx", img_size=IMG_HW, with_nms=True)
    with pytest.raises(ValueError, match=r"multiples of 32.*\(64, 90\)"):
        export_onnx(model, tmp_path / "x.onnx", img_size=(64, 90))
    with pytest.warns(UserWarning, match="greedy IoU NMS"):
        export_module(YOLOPredictor(model, nms_kind="diou"), with_nms=True)


@pytest.mark.parametrize("multi_label, class_agnostic", [(False, False), (True, False), (False, True)])
def test_postprocess_padded_equals_postprocess(detecting_model, multi_label, class_agnostic):
    images = torch.rand(3, 3, *IMG_HW, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        decoded = YOLOPredictor(detecting_model).decode(images)
    kwargs = dict(score_thresh=0.3, nms_iou_thresh=0.5, multi_label=multi_label, class_agnostic=class_agnostic)
    reference = postprocess(decoded, nms_kind="greedy", max_det=25, **kwargs)
    detections, num_dets = postprocess_padded(decoded, max_det=25, **kwargs)
    assert num_dets.max() == 25 and num_dets.min() < 25, num_dets  # max_det caps one image, another is padded
    _assert_detections_match(detections, num_dets, reference, max_det=25)
    # more rows than candidates: padded to the promised size
    detections, num_dets = postprocess_padded(decoded[:, :10], score_thresh=0.0, nms_iou_thresh=1.0, max_det=16)
    assert detections.shape == (3, 16, 6) and num_dets.tolist() == [10, 10, 10]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("with_nms", [False, True])
def test_torchscript_parity(tmp_path, detecting_model, with_nms):
    predictor = YOLOPredictor(detecting_model, score_thresh=0.3, nms_iou_thresh=0.5, nms_kind="greedy", max_det=60)
    path = export_torchscript(predictor, tmp_path / "model.torchscript", img_size=IMG_HW, with_nms=with_nms)
    scripted = torch.jit.load(str(path))
    for batch in (1, 3):
        images = torch.rand(batch, 3, *IMG_HW, generator=torch.Generator().manual_seed(30 + batch))
        with torch.no_grad():
            decoded = predictor.decode(images)
            got = scripted(images)
        if with_nms:
            reference = postprocess(decoded, score_thresh=0.3, nms_iou_thresh=0.5, nms_kind="greedy", max_det=60)
            assert 0 < len(reference[0]["scores"]) < 60
            _assert_detections_match(*got, reference, max_det=60)
        else:
            torch.testing.assert_close(got[..., 4:], decoded[..., 4:], atol=1e-4, rtol=0)
            torch.testing.assert_close(got[..., :4], decoded[..., :4], atol=1e-2, rtol=1e-4)  # pixels


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_raw_model(tmp_path, plain_model):
    model = plain_model
    scripted = torch.jit.load(str(export_torchscript(model, tmp_path / "raw.pt", img_size=IMG_HW)))
    images = torch.rand(1, 3, *IMG_HW)
    with torch.no_grad():
        for got, expected in zip(scripted(images), model(images), strict=True):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
