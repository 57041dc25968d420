"""Export without the [export] extra names the extra to install (issue 10, item 15)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lightning_yolo import create_model
from lightning_yolo.inference.export import check_onnx, export_onnx


def test_missing_export_dependency_names_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    missing = {"onnxscript", "onnxruntime"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a))
    model = create_model("yolov4_pico", num_classes=2)
    extra = r"pip install 'lightning-yolo\[export\]'"
    with pytest.raises(ImportError, match=r"dynamo ONNX exporter needs the onnxscript package: " + extra):
        export_onnx(model, tmp_path / "m.onnx", img_size=64, exporter="dynamo")
    with pytest.raises(ImportError, match=r"onnxruntime package: " + extra):
        check_onnx(tmp_path / "m.onnx", model, torch.rand(1, 3, 64, 64))
