"""The end-of-validation table (issue 10, item 11): per-class numbers equal COCOeval restricted to the class."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lightning_yolo.reporting.metrics import make_map_metric, per_image_targets
from lightning_yolo.reporting.report import build_report, count_instances, format_metric


def _case(seed: int, num_images: int = 10):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(num_images):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 300
        gt = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 150 + 8], 1)
        labels = torch.randint(0, 2, (n,), generator=g)  # class 2 ("c") never appears
        crowd = torch.rand(n, generator=g) < 0.15
        fp_xy = torch.rand(2, 2, generator=g) * 300
        boxes = torch.cat([gt + torch.randn(n, 4, generator=g) * 8, torch.cat([fp_xy, fp_xy + 50], 1)]).clamp(min=0)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        plabels = torch.cat([labels, torch.randint(0, 2, (2,), generator=g)])
        preds.append({"boxes": boxes, "scores": torch.rand(n + 2, generator=g), "labels": plabels})
        targets.append({"boxes": gt, "labels": labels, "iscrowd": crowd.long()})
    return preds, targets


def _cocoeval_per_class(preds, targets, category: int) -> tuple[float, float]:
    images, anns, dets = [], [], []
    for img_id, (p, t) in enumerate(zip(preds, targets), start=1):
        images.append({"id": img_id, "width": 640, "height": 640})
        for b, lab, c in zip(t["boxes"].tolist(), t["labels"].tolist(), t["iscrowd"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": lab + 1, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": int(c)})  # fmt: skip
        for b, s, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": img_id, "category_id": lab + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": s})  # fmt: skip
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i + 1} for i in range(3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.catIds = [category + 1]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[1]), float(ev.stats[0])  # AP50, AP50-95


def test_per_class_table_equals_cocoeval_per_class():
    preds, targets = _case(0)
    metric = make_map_metric()
    metric.update(preds, targets)
    result = metric.compute()
    images, instances = count_instances(*per_image_targets(metric), 3)
    report = build_report(result, images, instances, len(targets), ["a", "b", "c"])
    rows = {r.name: r for r in report.rows}
    assert list(rows) == ["all", "a", "b"]  # "c" has neither ground truth nor detections
    for label, name in enumerate(["a", "b"]):
        ap50, ap = _cocoeval_per_class(preds, targets, label)
        assert rows[name].map50 == pytest.approx(ap50, abs=1e-6)
        assert rows[name].map50_95 == pytest.approx(ap, abs=1e-6)
        lab = torch.cat([t["labels"][t["iscrowd"] == 0] for t in targets])
        assert rows[name].instances == int((lab == label).sum())
        assert rows[name].images == sum(bool(((t["labels"] == label) & (t["iscrowd"] == 0)).any()) for t in targets)
        assert 0 < rows[name].precision <= 1 and 0 < rows[name].recall <= 1
    assert rows["all"].map50 == pytest.approx(float(result["map_50"]))
    assert rows["all"].map50_95 == pytest.approx(float(result["map"]))
    assert rows["all"].instances == rows["a"].instances + rows["b"].instances and rows["all"].images == 10
    assert rows["all"].precision == pytest.approx((rows["a"].precision + rows["b"].precision) / 2)
    text = report.format()
    assert text.splitlines()[0].split() == ["class", "images", "instances", "P", "R", "mAP50", "mAP50-95"]


def test_perfect_class_and_missing_values_print_as_dash():
    box = torch.tensor([[10.0, 10.0, 60.0, 50.0]])
    preds = [{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}]
    targets = [{"boxes": torch.cat([box, box + 100]), "labels": torch.tensor([0, 1]), "iscrowd": torch.tensor([0, 0])}]
    metric = make_map_metric()
    metric.update(preds, targets)
    result = metric.compute()
    images, instances = count_instances(*per_image_targets(metric), 2)
    report = build_report(result, images, instances, 1, ["a", "b"])
    rows = {r.name: r for r in report.rows}
    a = rows["a"]
    assert [a.precision, a.recall, a.map50, a.map50_95] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert (rows["b"].precision, rows["b"].recall, rows["b"].map50) == (0.0, 0.0, 0.0)
    assert float(result["map_small"]) == -1  # no small objects: COCO says -1 ...
    assert format_metric(float(result["map_small"])) == "-"  # ... printed as "-"
    report.speed_ms = {"inference": 12.5}
    assert "Speed: 12.5 ms inference per image" in report.format()
    assert np.isnan(build_report({}, images, instances, 1, ["a", "b"]).rows[1].map50)
    assert "-" in build_report({}, images, instances, 1, ["a", "b"]).format().splitlines()[2]
