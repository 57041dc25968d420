"""`lightning-yolo export` (ONNX / TorchScript, parity with PyTorch) and `lightning-yolo anchors`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lightning_yolo import YOLOModule, create_model
from lightning_yolo.commands.cli import main
from lightning_yolo.data.synthetic import make_synthetic_dataset
from lightning_yolo.inference.checkpoint import load_predictor
from lightning_yolo.inference.export import export_module
from lightning_yolo.commands.anchors import anchors_main, format_anchors_yaml
from lightning_yolo.commands.export import export_main

CLASSES = ["cat", "dog", "fox"]




@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A YOLOModule checkpoint (the keys Lightning writes that export reads) whose head fires confidently."""
    torch.manual_seed(0)
    module = YOLOModule(num_classes=3, class_names=CLASSES)
    anchors = module.model.anchors.anchors.shape[1]
    with torch.no_grad():
        # BatchNorm statistics of real-looking activations, so that features (and scores) vary over the image
        module.model.train()
        for _ in range(3):
            module.model(torch.rand(2, 3, 128, 128))
        module.model.eval()
        for level, conv in enumerate(module.model.head.preds):
            conv.weight.normal_(0.0, 0.3)  # distinct scores: no ties whose order the runtimes may break differently
            bias = conv.bias.view(anchors, 8)
            bias[:, 4] = 1.0
            bias[:, 5 + level] = 2.0  # a different class per level: per-class NMS groups in the graph
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "datamodule_hyper_parameters": {"img_size": 128},
    }
    module.on_save_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save(checkpoint, path)
    return path


def images(batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(1))


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort((rows[:, 1], rows[:, 0], rows[:, 5], -rows[:, 4].round(5)))]


def test_export_onnx_with_nms_matches_pytorch(ckpt, tmp_path, capsys):
    import onnxruntime as ort

    path = export_main([str(ckpt), "--with-nms", "--output", str(tmp_path / "det.onnx"), "--max-det", "50"])
    assert path == tmp_path / "det.onnx" and "wrote" in capsys.readouterr().out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["detections", "num_detections"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == CLASSES and json.loads(meta["img_size"]) == 128
    x = images(3)  # dynamic batch: exported with 2, run with 3
    dets, counts = session.run(None, {"images": x.numpy()})
    predictor = load_predictor(ckpt, nms_kind="greedy", max_det=50)
    reference, _ = export_module(predictor, with_nms=True)
    with torch.no_grad():
        ref_dets, ref_counts = reference(x)
    assert dets.shape == (3, 50, 6) and counts.tolist() == ref_counts.tolist() and counts.min() > 5
    # rows are sorted by score; rows with exactly equal scores may come in either order: compare row sets
    for got, exp in zip(dets, ref_dets.numpy(), strict=True):
        np.testing.assert_allclose(sorted_rows(got), sorted_rows(exp), rtol=0, atol=1e-4)
    np.testing.assert_allclose(dets[..., 4], ref_dets[..., 4].numpy(), rtol=0, atol=1e-6)  # the score order itself
    assert set(np.unique(dets[..., 5])) <= {-1.0, 0.0, 1.0, 2.0}


def test_export_onnx_decoded_and_torchscript_match_pytorch(ckpt, tmp_path):
    import onnxruntime as ort

    onnx_path = export_main([str(ckpt), "--output", str(tmp_path / "dec.onnx")])
    ts_path = export_main([str(ckpt), "--format", "torchscript", "--output", str(tmp_path / "dec.torchscript")])
    reference, _ = export_module(load_predictor(ckpt, trainable=True))  # as the export command loads it
    x = images(2)
    with torch.no_grad():
        expected = reference(x)
        scripted = torch.jit.load(str(ts_path))(x)
    (decoded,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()}
    )
    anchors_total = 3 * (16 * 16 + 8 * 8 + 4 * 4)
    assert decoded.shape == (2, anchors_total, 5 + 3)
    np.testing.assert_allclose(decoded, expected.numpy(), rtol=0, atol=1e-4)
    torch.testing.assert_close(scripted, expected, rtol=0, atol=1e-5)


def test_export_through_main_and_errors(ckpt, tmp_path, capsys):
    main(["export", str(ckpt), "--raw", "--img-size", "96", "128", "--output", str(tmp_path / "raw.onnx"), "--check"])
    out = capsys.readouterr().out
    assert "raw head maps" in out and "[B, 3, 96, 128]" in out and "raw_s32=" in out
    with pytest.raises(SystemExit) as err:
        export_main([str(tmp_path / "missing.ckpt")])
    assert err.value.code == 2 and "checkpoint file not found" in capsys.readouterr().err


def test_anchors_command_prints_a_usable_snippet(tmp_path, capsys):
    root = make_synthetic_dataset(tmp_path / "data", num_train=16, num_val=2, img_size=128, formats=("yolo",))
    result = anchors_main([str(root / "data.yaml"), "--img-size", "128", "--iters", "50"])
    out = capsys.readouterr().out
    assert f"{result['num_boxes']} training boxes at 128 px" in out
    assert result["num_boxes"] >= 16 and 0 < result["fitness_default"] < result["fitness"] <= 1
    snippet = out[out.index("model:") :]
    parsed = yaml.safe_load(snippet)["model"]["model_overrides"]["anchors"]
    assert np.asarray(parsed).shape == (3, 3, 2)
    areas = np.asarray(parsed).prod(-1).reshape(-1)
    assert (np.diff(areas) >= 0).all()  # smallest anchors on the stride-8 level
    model = create_model("yolov4_pico", 4, anchors=parsed)
    assert torch.allclose(model.anchors.anchors, torch.tensor(parsed, dtype=torch.float32))


def test_format_anchors_yaml():
    text = format_anchors_yaml([[[1, 2], [3.5, 4]], [[5, 6], [7, 8]], [[9, 10], [11, 12]]])
    assert text.splitlines()[3] == "      - [[1, 2], [3.5, 4]]"
    assert yaml.safe_load(text)["model"]["model_overrides"]["anchors"][2] == [[9, 10], [11, 12]]
