"""Validation ground truth is the annotation file as written, at every input size (issue 10, item 9)."""

from __future__ import annotations

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lightning_yolo import YOLOModule
from lightning_yolo.data.datamodule import YOLODataModule
from lightning_yolo.reporting.metrics import targets_in_original_pixels


def _write_coco(tmp_path):
    """Two 640 x 480 images; image 1 holds a 1.2 x 13 px box (0.12 px wide at 64 px input) next to normal boxes."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "val"
    img_dir.mkdir()
    images, anns = [], []
    boxes = {1: [[100.0, 200.0, 1.2, 13.0], [300.0, 100.0, 80.0, 60.0]], 2: [[50.0, 60.0, 200.0, 150.0]]}
    for img_id, bbs in boxes.items():
        cv2.imwrite(str(img_dir / f"{img_id}.png"), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
        images.append({"id": img_id, "file_name": f"{img_id}.png", "width": 640, "height": 480})
        for bb in bbs:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1, "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0})  # fmt: skip
    ann_file = tmp_path / "instances_val.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "thing"}]}))  # fmt: skip
    return ann_file, anns


@pytest.mark.parametrize("img_size", [64, 640])
def test_tiny_box_stays_in_validation_targets_and_map_equals_cocoeval(tmp_path, monkeypatch, img_size):
    ann_file, anns = _write_coco(tmp_path)
    # detections: every annotation found exactly, the tiny box with the highest score
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9 - 0.1 * i}
            for i, a in enumerate(anns)]  # fmt: skip
    gt = COCO(str(ann_file))
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # all found: COCOeval gives 1.0

    dm = YOLODataModule(path=str(ann_file), format="coco", img_size=img_size, batch_size=2, num_workers=0)
    dm.setup("validate")
    module = YOLOModule(model_name="yolov4_pico", num_classes=1, class_names=dm.class_names)
    preds = {}
    for d in dets:
        x, y, w, h = d["bbox"]
        e = preds.setdefault(d["image_id"], {"boxes": [], "scores": [], "labels": []})
        e["boxes"].append([x, y, x + w, y + h])
        e["scores"].append(d["score"])
        e["labels"].append(0)
    preds = {k: {n: torch.tensor(v) for n, v in e.items()} for k, e in preds.items()}
    monkeypatch.setattr(module, "_predict_original", lambda raw, targets: [preds[int(t["image_id"])] for t in targets])
    logged: dict[str, float] = {}
    monkeypatch.setattr(module, "log", lambda k, v, **kw: logged.__setitem__(k, float(v)))
    counted = 0
    with torch.no_grad():
        for batch in dm.val_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            targets = targets_in_original_pixels(batch["targets"])
            counted += sum(len(t["boxes"]) for t in targets)
            module.validation_step(batch, 0)
    module.on_validation_epoch_end()
    assert counted == len(anns)  # the 1.2-px-wide box is a validation target at every size
    assert logged["val/map"] == pytest.approx(float(ev.stats[0]), abs=1e-4)
    assert logged["val/map_small"] == pytest.approx(float(ev.stats[3]), abs=1e-4)
