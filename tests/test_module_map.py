"""The module's logged mAP equals pycocotools' COCOeval on the same predictions and targets."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lightning_yolo.module import MAP_KEYS, YOLOModule
from lightning_yolo.reporting.metrics import targets_in_original_pixels

COCO_STATS_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


def _random_case(seed: int, num_images: int = 6, num_classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(num_images):
        n = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 300
        wh = torch.rand(n, 2, generator=g) * 150 + 4
        gt = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, num_classes, (n,), generator=g)
        crowd = torch.rand(n, generator=g) < 0.2
        # predictions: jittered copies of the ground truth plus false positives
        jitter = gt + torch.randn(n, 4, generator=g) * 6
        fp_xy = torch.rand(3, 2, generator=g) * 300
        fp = torch.cat([fp_xy, fp_xy + torch.rand(3, 2, generator=g) * 80 + 4], 1)
        boxes = torch.cat([jitter, fp]).clamp(min=0)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = torch.rand(n + 3, generator=g)
        plabels = torch.cat([labels, torch.randint(0, num_classes, (3,), generator=g)])
        preds.append({"boxes": boxes, "scores": scores, "labels": plabels})
        targets.append({"boxes": gt, "labels": labels, "iscrowd": crowd})
    return preds, targets


def _pycocotools_stats(preds, targets, num_classes: int, category_ids: list[int]) -> dict[str, float]:
    images, anns, dets = [], [], []
    ann_id = 1
    for img_id, (p, t) in enumerate(zip(preds, targets), start=1):
        images.append({"id": img_id, "width": 640, "height": 640})
        for box, label, crowd in zip(t["boxes"].tolist(), t["labels"].tolist(), t["iscrowd"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append(
                {"id": ann_id, "image_id": img_id, "category_id": category_ids[label], "bbox": [box[0], box[1], w, h],
                 "area": w * h, "iscrowd": int(crowd)}
            )
            ann_id += 1
        for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append(
                {"image_id": img_id, "category_id": category_ids[label],
                 "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score}
            )
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in category_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_STATS_KEYS, map(float, ev.stats[: len(COCO_STATS_KEYS)])))


@pytest.mark.parametrize("seed", [0, 1])
def test_logged_map_equals_pycocotools(seed, monkeypatch):
    preds, targets = _random_case(seed)
    module = YOLOModule(model_name="yolov4_pico", num_classes=3)
    logged: dict[str, float] = {}
    monkeypatch.setattr(module, "log", lambda k, v, **kw: logged.__setitem__(k, float(v)))
    for p, t in zip(preds, targets):  # one image per "step"
        module.val_map.update([p], targets_in_original_pixels([t]))
    module._eval_epoch_end(module.val_map, "val")
    # COCO json with non-contiguous category ids: labels 0..2 stand for ids 1, 7, 90.
    ref = _pycocotools_stats(preds, targets, 3, [1, 7, 90])
    assert set(MAP_KEYS) <= set(COCO_STATS_KEYS)
    for key in MAP_KEYS:
        assert logged[f"val/{key}"] == pytest.approx(ref[key], abs=1e-4), key
    assert 0.05 < logged["val/map"] < 0.95  # a non-trivial case


def test_letterbox_targets_mapped_back_to_original_pixels():
    t = {
        "boxes": torch.tensor([[20.0, 30.0, 60.0, 90.0]]),
        "labels": torch.tensor([1]),
        "iscrowd": torch.tensor([False]),
        "ratio": torch.tensor(0.5),
        "pad": torch.tensor([10.0, 20.0]),
        "orig_size": torch.tensor([400, 300]),
    }
    out = targets_in_original_pixels([t])[0]
    np.testing.assert_allclose(out["boxes"].numpy(), [[20.0, 20.0, 100.0, 140.0]])
    assert out["iscrowd"].dtype == torch.int64


def test_map_through_coco_reader_equals_cocoeval_on_the_json(tmp_path, monkeypatch):
    """A COCO json with non-contiguous category ids (3, 7, 90) and crowd boxes, read by YOLODataModule and
    letterboxed at 128 px: the module's mAP (GT mapped back from the letterbox) equals COCOeval on the file."""
    import json

    import cv2

    from lightning_yolo.data.datamodule import YOLODataModule

    rng = np.random.default_rng(0)
    cat_ids = [3, 7, 90]
    images, anns, dets = [], [], []
    img_dir = tmp_path / "val"
    img_dir.mkdir()
    for img_id, (h, w) in enumerate([(150, 200), (260, 120), (96, 96), (300, 220), (140, 140)], start=11):
        cv2.imwrite(str(img_dir / f"{img_id}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        images.append({"id": img_id, "file_name": f"{img_id}.png", "width": w, "height": h})
        for k in range(int(rng.integers(1, 5))):
            bw, bh = rng.uniform(8, w / 2), rng.uniform(8, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            crowd = int(k == 1 and img_id % 2 == 1)
            cat = cat_ids[int(rng.integers(0, 3))]
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": crowd})  # fmt: skip
            # detections: jittered truths (some with the wrong class) plus a false positive per image
            jit = rng.normal(0, 3, 4)
            wrong = rng.random() < 0.2
            dets.append({"image_id": img_id, "category_id": cat_ids[(cat_ids.index(cat) + wrong) % 3],
                         "bbox": [x + jit[0], y + jit[1], bw + jit[2], bh + jit[3]], "score": float(rng.random())})  # fmt: skip
        dets.append({"image_id": img_id, "category_id": cat_ids[0], "bbox": [5.0, 5.0, 30.0, 20.0],
                     "score": float(rng.random())})  # fmt: skip
    ann_file = tmp_path / "instances_val.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": c, "name": n} for c, n in zip(cat_ids, "abc")]}))  # fmt: skip

    gt = COCO(str(ann_file))
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ref = dict(zip(COCO_STATS_KEYS, map(float, ev.stats[: len(COCO_STATS_KEYS)])))

    dm = YOLODataModule(path=str(ann_file), format="coco", img_size=128, batch_size=2, num_workers=0)
    assert dm.class_names == ["a", "b", "c"]
    dm.setup("validate")
    module = YOLOModule(model_name="yolov4_pico", num_classes=3, class_names=dm.class_names)
    by_image: dict[int, dict[str, torch.Tensor]] = {}
    for d in dets:
        e = by_image.setdefault(d["image_id"], {"boxes": [], "scores": [], "labels": []})
        x, y, w, h = d["bbox"]
        e["boxes"].append([x, y, x + w, y + h])
        e["scores"].append(d["score"])
        e["labels"].append(cat_ids.index(d["category_id"]))
    preds = {k: {"boxes": torch.tensor(v["boxes"]), "scores": torch.tensor(v["scores"]),
                 "labels": torch.tensor(v["labels"])} for k, v in by_image.items()}  # fmt: skip
    monkeypatch.setattr(module, "_predict_original", lambda raw, targets: [preds[int(t["image_id"])] for t in targets])
    logged: dict[str, float] = {}
    monkeypatch.setattr(module, "log", lambda k, v, **kw: logged.__setitem__(k, float(v)))
    seen = []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            seen += [int(t["image_id"]) for t in batch["targets"]]
            module.validation_step(batch, 0)
    module.on_validation_epoch_end()
    assert sorted(seen) == [11, 12, 13, 14, 15]
    for key in MAP_KEYS:
        assert logged[f"val/{key}"] == pytest.approx(ref[key], abs=1e-4), key
    assert 0.1 < logged["val/map_50"] < 0.99


def test_torchmetrics_state_layout_that_ddp_padding_relies_on():
    """pad_for_sync counts images by the length of a per-image list state, read through the public metric_state;
    a torchmetrics version that renames or stops gathering it per image fails here, not silently under DDP."""
    from lightning_yolo.reporting.metrics import PER_IMAGE_STATE, make_map_metric, pad_for_sync, per_image_targets

    metric = make_map_metric()
    assert isinstance(metric.metric_state[PER_IMAGE_STATE], list)
    assert metric._reductions[PER_IMAGE_STATE] is None  # gathered element by element: the reason for the padding
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0]])
    labels = torch.tensor([1])
    for n in range(3):
        metric.update(
            [{"boxes": boxes, "scores": torch.tensor([0.9]), "labels": labels}],
            [{"boxes": boxes, "labels": labels, "iscrowd": torch.tensor([n == 2])}],
        )
    gt_labels, crowds = per_image_targets(metric)
    assert len(gt_labels) == len(crowds) == 3 and [bool(c[0]) for c in crowds] == [False, False, True]
    before = metric.compute()["map"]
    assert pad_for_sync(metric, "cpu") == 0  # no process group: nothing added
    # the padding images (no boxes, no detections) leave every COCO statistic unchanged
    empty = torch.zeros(0, 4)
    no_labels = torch.zeros(0, dtype=torch.long)
    metric.update([{"boxes": empty, "scores": torch.zeros(0), "labels": no_labels}],
                  [{"boxes": empty, "labels": no_labels, "iscrowd": no_labels}])  # fmt: skip
    assert len(per_image_targets(metric)[0]) == 4
    assert float(metric.compute()["map"]) == pytest.approx(float(before))
