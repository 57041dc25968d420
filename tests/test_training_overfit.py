"""Issue 4 "done when": overfitting one synthetic batch, the loss falls >= 90% within 200 CPU steps and the
post-processed predictions recover every ground-truth box with IoU >= 0.8.

Measured (yolov4_pico, 4 synthetic images of 128 px with 16 shapes, default YOLOLoss, AdamW 6e-3 with 10 warmup
steps then cosine to 1%, 200 steps, eval mode, score > 0.3, DIoU-NMS): over 4 initialisation seeds the loss fell
97.8-98.3% and the worst box was recovered with IoU 0.91-0.95 (mean 0.96-0.98; 0.99 with train-mode BatchNorm),
every box with its class and no false positive; 10-16 s on one thread of the (shared) 2-core machine.
"""

from __future__ import annotations

import numpy as np
import torch

from lightning_yolo.data.synthetic import draw_synthetic_image
from lightning_yolo.models import create_model
from lightning_yolo.ops.iou import box_iou
from lightning_yolo.ops.postprocess import decode_outputs, postprocess
from lightning_yolo.training import WarmupCosineLR, YOLOLoss, param_groups

NUM_CLASSES = 3




def _batch(num_images: int = 4, size: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(num_images):
        img, boxes, labels = draw_synthetic_image(
            rng, size=size, num_classes=NUM_CLASSES, max_objects=4, min_size=12, max_size=size // 2
        )
        images.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0)
        targets.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)})
    return torch.stack(images), targets


def _overfit(steps: int, lr: float = 6e-3, seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("yolov4_pico", num_classes=NUM_CLASSES)
    loss_fn = YOLOLoss(NUM_CLASSES, model.anchors)
    images, targets = _batch()
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.0), lr=lr)
    # a falling learning rate at the end also lets the BatchNorm running statistics catch up with the weights
    sched = WarmupCosineLR(opt, total_steps=steps, warmup_steps=10)
    losses = []
    model.train()
    for _ in range(steps):
        out = loss_fn(model(images), targets)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        sched.step()
        losses.append(float(out["loss"].detach()))
    model.eval()
    with torch.inference_mode():
        a = model.anchors
        decoded = decode_outputs(model(images), a.anchors, a.strides, a.scale_x_y, NUM_CLASSES)
        detections = postprocess(decoded, score_thresh=0.3, nms_iou_thresh=0.5)
    best_iou, false_positives = [], 0
    for det, tgt in zip(detections, targets, strict=True):
        iou = box_iou(tgt["boxes"], det["boxes"]) * (tgt["labels"][:, None] == det["labels"][None, :])
        if iou.shape[1] == 0:
            best_iou += [0.0] * iou.shape[0]
            continue
        best_iou += iou.max(dim=1).values.tolist()
        false_positives += int((iou.max(dim=0).values < 0.5).sum())
    return losses, best_iou, false_positives


def test_overfit_one_batch_recovers_every_box():
    losses, best_iou, false_positives = _overfit(steps=200)
    assert len(best_iou) >= 10
    drop = 1 - losses[-1] / losses[0]
    assert drop >= 0.90, f"loss fell only {drop:.1%} ({losses[0]:.4f} -> {losses[-1]:.4f})"
    assert min(best_iou) >= 0.8, f"worst recovered box IoU {min(best_iou):.3f}; all: {np.round(best_iou, 3)}"
    assert false_positives <= 1
