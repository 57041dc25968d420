"""Augmentation geometry checked on pixels: every box filled with its class colour must still cover mostly that
colour after Mosaic / MixUp / CutMix / affine / letterbox, and lie inside the canvas."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from lightning_yolo.data.collate import collate_detection
from lightning_yolo.data.formats import (
    DetectionDataset,
    load_split,
    resolve_dataset,
    write_data_yaml,
    write_yolo_labels,
)
from lightning_yolo.data.config import AugmentCfg
from lightning_yolo.data.mixing import CutMix, MixUp, Mosaic
from lightning_yolo.data.pipelines import TrainDataset, build_eval_dataset, build_train_dataset
from lightning_yolo.data.sample import RawSample, raw_to_sample
from lightning_yolo.data.steps import AugmentContext, Letterbox, RandomAffine, RandomHSV
from lightning_yolo.data.tiles import Tile, clipped_quad_bounds

COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)
BG = (40, 40, 40)
S = 128


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory) -> DetectionDataset:
    """Non-square images with non-overlapping rectangles filled with their class colour."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for i in range(10):
        w, h = (160, 120) if i % 2 else (90, 150)
        img = np.full((h, w, 3), BG, np.uint8)
        boxes, labels = [], []
        for _ in range(60):
            if len(boxes) == 5:
                break
            bw = int(rng.integers(10, 50))
            bh = min(int(bw * rng.uniform(0.5, 2.0)), h - 2)
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            b = np.array([x, y, x + bw, y + bh])
            if any(min(b[2], o[2]) - max(b[0], o[0]) > -3 and min(b[3], o[3]) - max(b[1], o[1]) > -3 for o in boxes):
                continue
            c = int(rng.integers(0, 4))
            img[y : y + bh, x : x + bw] = COLORS[c]
            boxes.append(b)
            labels.append(c)
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / "train" / f"{i}.png"), img[..., ::-1])
        write_yolo_labels(root / "labels" / "train" / f"{i}.txt", np.array(boxes), np.array(labels), w, h)
    write_data_yaml(root / "data.yaml", ["r", "g", "b", "y"], "images/train", "images/train")
    return DetectionDataset(load_split(resolve_dataset(root / "data.yaml"), "train"), load_size=S, drop_crowd=True)


def coverage(img: np.ndarray, box, label: int, mix: float | None = None) -> float:
    """Fraction of the box interior (1 px in from each side) showing the class colour; with MixUp weight ``mix``
    a pixel counts when it can be ``r * colour + (1 - r) * anything`` for ``r`` in (mix, 1 - mix)."""
    x0, y0, x1, y1 = box
    xi0, yi0, xi1, yi1 = int(np.ceil(x0)) + 1, int(np.ceil(y0)) + 1, int(np.floor(x1)) - 1, int(np.floor(y1)) - 1
    if xi1 <= xi0 or yi1 <= yi0:
        return 1.0
    p = img[yi0:yi1, xi0:xi1].astype(float)
    c = COLORS[label].astype(float)
    if mix is None:
        return float((np.abs(p - c).max(-1) < 60).mean())
    best = 0.0
    for r in (mix, 1 - mix):
        ok = (p >= r * c - 3) & (p <= r * c + (1 - r) * 255 + 3)
        best = max(best, float(ok.all(-1).mean()))
    return best


def run_and_check(ds, n: int, min_cov: float, mix: float | None = None) -> tuple[list[float], int]:
    covs = []
    for i in range(n):
        img, tgt = ds[(i % len(ds), True, 1000 + i)]
        assert isinstance(img, tv_tensors.Image) and img.dtype == torch.uint8 and img.shape == (3, S, S)
        boxes = tgt["boxes"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.canvas_size == (S, S)
        b = boxes.as_subclass(torch.Tensor)
        assert (b >= 0).all() and (b[:, 0::2] <= S).all() and (b[:, 1::2] <= S).all(), b
        assert (b[:, 2:] - b[:, :2] >= 1).all()  # SanitizeBoundingBoxes ran
        assert len(tgt["labels"]) == len(b) == len(tgt["iscrowd"])
        arr = img.permute(1, 2, 0).numpy()
        for box, lab in zip(b.tolist(), tgt["labels"].tolist(), strict=True):
            covs.append(coverage(arr, box, lab, mix))
    assert min(covs) >= min_cov, (min(covs), np.argmin(covs))
    return covs, len(covs)


NO_COLOUR = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


def train_pipeline(base: DetectionDataset, size: int, **augment) -> TrainDataset:
    """The training pipeline with these ``AugmentCfg`` fields (no Mosaic buffer unless asked)."""
    return build_train_dataset(base, size, AugmentCfg(**{"mosaic_buffer": 0, **augment}))


def test_mosaic_with_scale_translate_keeps_boxes_on_their_colour(colour_dataset) -> None:
    ds = train_pipeline(colour_dataset, S, mosaic_prob=1.0, translate=0.2, scale=0.5, **NO_COLOUR)
    covs, n = run_and_check(ds, 60, min_cov=0.9)
    assert n > 150 and np.mean(covs) > 0.98


def test_single_image_letterbox_affine_and_flip(colour_dataset) -> None:
    ds = train_pipeline(colour_dataset, S, mosaic_prob=0.0, flip_prob=1.0, **NO_COLOUR)
    covs, n = run_and_check(ds, 30, min_cov=0.9)
    assert n > 50


def test_rotation_and_shear_keep_boxes_on_their_colour(colour_dataset) -> None:
    ds = train_pipeline(colour_dataset, S, degrees=10.0, shear=3.0, **NO_COLOUR)
    covs, n = run_and_check(ds, 60, min_cov=0.35)
    # a rotated rectangle fills ~75% of its axis-aligned box; thin cut-off slivers fill less
    assert np.mean(covs) > 0.75 and np.median(covs) > 0.75


def test_mixup_keeps_boxes_of_both_images(colour_dataset) -> None:
    ds = train_pipeline(colour_dataset, S, mixup_prob=1.0, **NO_COLOUR)
    assert isinstance(ds.stage, MixUp)
    ds.stage.ratio = 0.6
    covs, n = run_and_check(ds, 40, min_cov=0.85, mix=0.6)
    # boxes of both images: about twice as many as a Mosaic alone
    _, n_mosaic = run_and_check(train_pipeline(colour_dataset, S, **NO_COLOUR), 40, min_cov=0.9)
    assert n > 1.6 * n_mosaic


def test_cutmix_keeps_visible_boxes_of_both_images(colour_dataset) -> None:
    ds = train_pipeline(colour_dataset, S, cutmix_prob=1.0, **NO_COLOUR)
    assert isinstance(ds.stage, CutMix)
    covs, _ = run_and_check(ds, 60, min_cov=0.5)  # min_visible=0.6 of a box may remain uncovered
    assert np.mean(covs) > 0.9


def test_eval_letterbox_records_ratio_and_pad(colour_dataset) -> None:
    ev = build_eval_dataset(colour_dataset, S)
    covs, _ = run_and_check(ev, len(ev), min_cov=0.9)
    img, tgt = ev[1]  # 160x120 image -> ratio 0.8, 128x96, padded 16 px top and bottom
    assert tgt["orig_size"].tolist() == [120, 160]
    assert float(tgt["ratio"]) == pytest.approx(0.8) and tgt["pad"].tolist() == [0.0, 16.0]
    orig = colour_dataset.records[1].boxes
    back = (tgt["boxes"].as_subclass(torch.Tensor) - tgt["pad"].repeat(2)) / tgt["ratio"]
    np.testing.assert_allclose(back.numpy(), orig, atol=1e-4)  # the contract's inverse map is exact
    assert (img[:, :16] == 114).all() and (img[:, -16:] == 114).all()


def test_letterbox_shrinks_large_images() -> None:
    raw = RawSample(np.zeros((100, 300, 3), np.uint8), np.array([[30, 10, 60, 40]]), np.array([0]), ratio=0.5)
    out = Letterbox(150)(raw)
    assert out.image.shape == (150, 150, 3) and out.ratio == pytest.approx(0.25)
    np.testing.assert_allclose(out.boxes, [[15, 55, 30, 70]])
    assert out.pad == (0.0, 50.0)


def test_affine_boxes_match_a_reference_warp() -> None:
    """Axis-aligned affine (fast resize path) agrees with cv2.warpAffine of the same matrix."""
    img = np.zeros((64, 96, 3), np.uint8)
    img[10:30, 20:50] = 255
    raw = RawSample(img, np.array([[20, 10, 50, 30]]), np.array([0]))
    aff = RandomAffine(S, translate=0.1, scale=0.4)
    rng = np.random.default_rng(1)
    for _ in range(5):
        m = aff.sample_matrix((96, 64), np.random.default_rng(rng.integers(1 << 30)))
        tile = Tile(img, raw.boxes, raw.labels, raw.iscrowd, (0, 0))
        out, boxes, *_ = aff.render([tile], (96, 64), m)
        white = np.argwhere(out[..., 0] > 127)
        (y0, x0), (y1, x1) = white.min(0), white.max(0) + 1
        np.testing.assert_allclose(boxes[0], [x0, y0, x1, y1], atol=1.0)


def test_clipped_quad_bounds() -> None:
    quads = np.array(
        [
            [[2, 2], [6, 2], [6, 6], [2, 6]],  # inside
            [[-4, 5], [5, -4], [14, 5], [5, 14]],  # diamond cut by all four sides
            [[-10, -10], [-5, -10], [-5, -5], [-10, -5]],  # outside
            [[3, 3], [3, 3], [3, 3], [3, 3]],  # collapsed
        ],
        float,
    )
    boxes, vis = clipped_quad_bounds(quads, 10.0)
    assert vis.tolist() == [True, True, False, False]
    np.testing.assert_allclose(boxes[0], [2, 2, 6, 6])
    np.testing.assert_allclose(boxes[1], [0, 0, 10, 10])
    # a rotated box poking out of the top: only its visible part counts
    b, v = clipped_quad_bounds(np.array([[[4, -6], [8, -2], [4, 2], [0, -2]]], float), 10.0)
    assert v[0]
    np.testing.assert_allclose(b[0], [2, 0, 6, 2])


def test_hsv_changes_colours_not_geometry_and_never_touches_the_source() -> None:
    img = np.full((8, 8, 3), (200, 60, 30), np.uint8)
    src = img.copy()
    raw = RawSample(img, np.zeros((0, 4)), np.zeros(0))
    out = RandomHSV(0.1, 0.7, 0.4)(raw, np.random.default_rng(0))
    assert out.image.shape == img.shape and out.image.dtype == np.uint8
    assert not np.array_equal(out.image, src)
    np.testing.assert_array_equal(img, src)  # the input (possibly a cached image) is untouched
    same = RandomHSV(0, 0, 0)(RawSample(src.copy(), np.zeros((0, 4)), np.zeros(0)), np.random.default_rng(0))
    np.testing.assert_array_equal(same.image, src)


def test_hsv_equals_the_three_channel_table_reference() -> None:
    # the step looks up each HSV plane on its own (faster); the bytes must be those of YOLOv5 / ultralytics'
    # augment_hsv form: one 3-channel cv2.LUT over the interleaved HSV image
    rng = np.random.default_rng(5)
    x = np.arange(256, dtype=np.float32)
    for seed in range(12):
        img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
        img[:5] = 114  # grey, as Mosaic's fill
        gains = (0.015, 0.7, 0.4) if seed % 2 else (0.5, 0.9, 0.9)
        out = RandomHSV(*gains)(RawSample(img.copy(), np.zeros((0, 4)), np.zeros(0)), np.random.default_rng(seed))
        dh, gs, gv = np.random.default_rng(seed).uniform(-1, 1, 3) * gains + (0.0, 1.0, 1.0)
        lut = np.stack([np.mod(x + dh * 180.0, 180.0).astype(np.uint8), np.clip(x * gs, 0, 255).astype(np.uint8),
                        np.clip(x * gv, 0, 255).astype(np.uint8)], -1).reshape(256, 1, 3)  # fmt: skip
        ref = cv2.cvtColor(cv2.LUT(cv2.cvtColor(img, cv2.COLOR_RGB2HSV), lut), cv2.COLOR_HSV2RGB)
        np.testing.assert_array_equal(out.image, ref)


def test_same_seed_same_sample_and_cache_is_not_modified(colour_dataset) -> None:
    colour_dataset.fill_cache()
    try:
        before = [img.copy() for img in colour_dataset._cache]
        ds = train_pipeline(colour_dataset, S, mixup_prob=0.5, cutmix_prob=0.5, degrees=5)
        a = ds[(3, True, 42)]
        b = ds[(3, True, 42)]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
        c = ds[(3, True, 43)]
        assert not torch.equal(a[0], c[0])
        for x, y in zip(before, colour_dataset._cache, strict=True):
            np.testing.assert_array_equal(x, y)
    finally:
        colour_dataset._cache, colour_dataset._fully_cached = None, False


def test_multi_image_switch_off_gives_single_images(colour_dataset) -> None:
    ds = train_pipeline(colour_dataset, S, mosaic_prob=1.0, mixup_prob=1.0, cutmix_prob=1.0, translate=0.0,
                        scale=0.0, flip_prob=0.0, **NO_COLOUR)  # fmt: skip
    for i in range(4):
        img, tgt = ds[(i, False, i)]
        ref, rtgt = build_eval_dataset(colour_dataset, S)[i]
        assert torch.equal(img, ref)  # letterboxed single image, nothing mixed in
        np.testing.assert_allclose(tgt["boxes"].numpy(), rtgt["boxes"].numpy(), atol=1e-4)


def test_mosaic_buffer_draws_partners_from_recent_images(colour_dataset) -> None:
    mosaic = Mosaic(colour_dataset, S, buffer_size=4)
    ctx = AugmentContext(np.random.default_rng(0))
    for i in range(8):
        mosaic.get(i, ctx)
    assert len(mosaic._buffer) == 4 and list(mosaic._buffer)[-1] == 7
    # once the buffer is full, a Mosaic loads only its own image: partners come from the buffer
    calls = []
    orig = colour_dataset.load_raw
    colour_dataset.load_raw = lambda i: calls.append(i) or orig(i)
    try:
        mosaic.get(9, ctx)
    finally:
        del colour_dataset.load_raw
    assert calls == [9]


def test_mosaic_keeps_decoded_images_that_leave_the_window(colour_dataset) -> None:
    # A window of 3 over 10 images: without kept images most samples decode their own image again; with them each
    # image is decoded once, and every sample is the same (same draws, same pixels, same boxes).
    def run(keep_bytes: int) -> tuple[list, list[int]]:
        mosaic = Mosaic(colour_dataset, S, buffer_size=3, keep_bytes=keep_bytes)
        ctx = AugmentContext(np.random.default_rng(3))
        order = np.random.default_rng(4).permutation(np.tile(np.arange(10), 4))
        calls: list[int] = []
        orig = colour_dataset.load_raw
        colour_dataset.load_raw = lambda i: calls.append(i) or orig(i)
        try:
            outs = [mosaic.get(int(i), ctx) for i in order]
        finally:
            del colour_dataset.load_raw
        return outs, calls

    kept, kept_calls = run(2**30)
    plain, plain_calls = run(0)
    assert sorted(kept_calls) == list(range(10)) and len(plain_calls) > 25
    for a, b in zip(kept, plain, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.labels, b.labels)
    # the budget bounds what is held: room for two images keeps at most two beyond the window
    mosaic = Mosaic(colour_dataset, S, buffer_size=3, keep_bytes=2 * S * S * 3)
    ctx = AugmentContext(np.random.default_rng(0))
    for i in range(10):
        mosaic.get(i, ctx)
    assert len(mosaic._buffer) == 3 and 1 <= len(mosaic._kept) <= 2
    assert mosaic._kept_bytes == sum(r.image.nbytes for r in mosaic._kept.values()) <= 2 * S * S * 3
    assert not set(mosaic._kept) & set(mosaic._buffer)


def test_collate_contract(colour_dataset) -> None:
    ds = train_pipeline(colour_dataset, S)
    batch = collate_detection([ds[(i, True, i)] for i in range(3)])
    images = batch["images"]
    assert images.shape == (3, 3, S, S) and images.dtype == torch.uint8
    assert images.is_contiguous(memory_format=torch.channels_last)
    t = batch["targets"][0]
    assert set(t) >= {"boxes", "labels", "iscrowd", "image_id", "orig_size", "ratio", "pad"}
    assert type(t["boxes"]) is torch.Tensor and t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
    assert t["labels"].dtype == torch.int64 and t["iscrowd"].dtype == torch.bool
    assert t["image_id"].dtype == torch.int64 and t["image_id"].ndim == 0
    assert t["orig_size"].dtype == torch.int64 and t["orig_size"].shape == (2,)
    assert t["ratio"].dtype == torch.float32 and t["pad"].shape == (2,)
    with pytest.raises(ValueError, match="one size"):
        empty = (np.zeros((0, 4)), np.zeros(0))
        small = raw_to_sample(RawSample(np.zeros((4, 4, 3), np.uint8), *empty))
        large = raw_to_sample(RawSample(np.zeros((8, 8, 3), np.uint8), *empty))
        collate_detection([small, large])


def test_training_samples_have_no_crowd_boxes(colour_dataset) -> None:
    rec = colour_dataset.records[0]
    saved = rec.iscrowd.copy()
    rec.iscrowd[:] = True  # every box of image 0 is crowd
    try:
        ds = train_pipeline(colour_dataset, S, mosaic_prob=0.0, translate=0.0, scale=0.0, flip_prob=0.0)
        _, tgt = ds[(0, True, 0)]
        assert len(tgt["labels"]) == 0 and not tgt["iscrowd"].any()
        _, ev = build_eval_dataset(DetectionDataset(colour_dataset.source, S), S)[0]  # evaluation keeps them, flagged
        assert len(ev["labels"]) == len(saved) and ev["iscrowd"].all()
    finally:
        rec.iscrowd[:] = saved


def test_warp_path_agrees_with_resize_path() -> None:
    """The canvas + warpAffine path (used with rotation / shear) matches the resize path on the same map."""
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), (7, 7), 0)
    img[10:40, 20:50] = 255
    boxes = np.array([[20, 10, 50, 40]], np.float32)
    m = np.array([[1.3, 0.0, 7.0], [0.0, 1.3, -5.0], [0, 0, 1]])
    fast = Tile(img, boxes, np.array([0]), np.array([False]), (0, 0))
    out_fast, b_fast, *_ = RandomAffine(S).render([fast], (80, 60), m)
    m_warp = m.copy()
    m_warp[0, 1] = 1e-12  # not axis-aligned any more: the warp path
    slow = Tile(img, boxes, np.array([0]), np.array([False]), (0, 0))
    out_slow, b_slow, *_ = RandomAffine(S).render([slow], (80, 60), m_warp)
    np.testing.assert_allclose(b_slow, [[33, 8, 72, 47]], atol=1e-6)  # 1.3 * box + (7, -5)
    np.testing.assert_allclose(b_fast, b_slow, atol=0.5)
    inner = (slice(10, 45), slice(30, 70))
    assert np.abs(out_fast[inner].astype(int) - out_slow[inner]).mean() < 2.0
