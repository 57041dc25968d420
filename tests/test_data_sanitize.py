"""The numpy box sanitizer keeps exactly the boxes torchvision's SanitizeBoundingBoxes keeps."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from lightning_yolo.data.sample import SANITIZE_MIN_AREA, SANITIZE_MIN_SIZE, sanitize_mask


def test_sanitize_mask_matches_torchvision():
    rng = np.random.default_rng(0)
    transform = v2.SanitizeBoundingBoxes(min_size=SANITIZE_MIN_SIZE, min_area=SANITIZE_MIN_AREA)
    for _ in range(100):
        h, w = int(rng.integers(8, 200)), int(rng.integers(8, 200))
        n = int(rng.integers(0, 12))
        xy = rng.uniform(-20, max(h, w) + 20, (n, 2))
        wh = rng.uniform(-3, 60, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        if n:
            boxes[rng.random(n) < 0.1, 0] = np.nan
            zero = rng.random(n) < 0.1
            boxes[zero, 2] = boxes[zero, 0]  # zero width
        tv_boxes = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(h, w))
        out = transform({"boxes": tv_boxes, "labels": torch.arange(n)})
        expected = np.zeros(n, dtype=bool)
        expected[out["labels"].numpy()] = True
        np.testing.assert_array_equal(sanitize_mask(boxes, (h, w)), expected)
