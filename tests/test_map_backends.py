"""faster_coco_eval as the torchmetrics backend gives pycocotools' numbers (issue 10, item 10)."""

from __future__ import annotations

import pytest
import torch

from lightning_yolo import YOLOModule
from lightning_yolo.reporting.metrics import make_map_metric, resolve_map_backend
from lightning_yolo.module import MAP_KEYS



def _random_case(seed: int, num_images: int, num_classes: int = 3):
    """Jittered ground truth (some crowd) plus false positives, in pixels."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(num_images):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 300
        gt = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 150 + 4], 1)
        labels = torch.randint(0, num_classes, (n,), generator=g)
        fp_xy = torch.rand(3, 2, generator=g) * 300
        boxes = torch.cat([gt + torch.randn(n, 4, generator=g) * 6, torch.cat([fp_xy, fp_xy + 40], 1)]).clamp(min=0)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        plabels = torch.cat([labels, torch.randint(0, num_classes, (3,), generator=g)])
        preds.append({"boxes": boxes, "scores": torch.rand(n + 3, generator=g), "labels": plabels})
        targets.append({"boxes": gt, "labels": labels, "iscrowd": torch.rand(n, generator=g) < 0.2})
    return preds, targets


def test_faster_coco_eval_backend_equals_pycocotools():
    pytest.importorskip("faster_coco_eval")
    results = {}
    for backend in ("pycocotools", "faster_coco_eval"):
        metric = make_map_metric(backend)
        for seed in range(4):
            preds, targets = _random_case(seed, num_images=8)
            metric.update(preds, [{**t, "iscrowd": t["iscrowd"].long()} for t in targets])
        results[backend] = {k: float(v) for k, v in metric.compute().items() if k in MAP_KEYS}
    assert set(results["pycocotools"]) == set(MAP_KEYS)
    for key in MAP_KEYS:
        assert results["faster_coco_eval"][key] == pytest.approx(results["pycocotools"][key], abs=1e-6), key
    assert 0.05 < results["pycocotools"]["map_50"] < 0.99


def test_map_backend_is_checked():
    with pytest.raises(ValueError, match="map_backend"):
        YOLOModule(model_name="yolov4_pico", num_classes=2, map_backend="cocoapi")
    module = YOLOModule(model_name="yolov4_pico", num_classes=2)
    assert module.hparams.map_backend == "auto"  # faster_coco_eval (a dependency), pycocotools' numbers
    assert resolve_map_backend("auto") == "faster_coco_eval"
    assert module.val_map._coco_backend.backend == "faster_coco_eval"  # torchmetrics' private field: no public one
    reference = YOLOModule(model_name="yolov4_pico", num_classes=2, map_backend="pycocotools")
    assert reference.val_map._coco_backend.backend == "pycocotools"
