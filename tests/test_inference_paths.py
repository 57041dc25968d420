"""One inference path (issue 9): the same image file gives the same boxes through ``lightning-yolo predict``'s
``PredictImages`` + ``YOLOModule.predict_step`` and through the Python any-input ``lightning_yolo.predict``; the
exported NMS graph equals eager greedy post-processing on real image files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_yolo import InferenceCfg, YOLOModule
from lightning_yolo.data.collate import collate_detection
from lightning_yolo.data.image_io import decode_image, load_letterboxed, load_resized
from lightning_yolo.data.predict import PredictImages
from lightning_yolo.data.synthetic import draw_synthetic_image
from lightning_yolo.inference.export import export_module, export_onnx
from lightning_yolo.inference.predict import predict
from lightning_yolo.ops.postprocess import postprocess

IMG_SIZE = 128


def _picture(seed: int, width: int, height: int) -> np.ndarray:
    image, _, _ = draw_synthetic_image(np.random.default_rng(seed), size=(width, height), num_classes=3, min_size=20)
    return image


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    """Real files in real formats: JPEG, PNG with alpha, grey PNG and JPEG, an EXIF-rotated JPEG, a large JPEG
    (decoded at a reduced DCT scale) and a 16-bit grey PNG."""
    root = tmp_path_factory.mktemp("inference_paths")
    files = []
    rgb = _picture(0, 200, 150)
    Image.fromarray(rgb).save(root / "a_photo.jpg", quality=90)
    rgba = np.dstack([_picture(1, 160, 120), np.tile(np.linspace(0, 255, 160, dtype=np.uint8), (120, 1))])
    rgba[:30, :40, 3] = 0  # a fully transparent corner
    Image.fromarray(rgba, "RGBA").save(root / "b_alpha.png")
    grey = _picture(2, 180, 140)[..., 1]
    Image.fromarray(grey, "L").save(root / "c_grey.png")
    Image.fromarray(grey, "L").save(root / "d_grey.jpg", quality=92)
    rotated = Image.fromarray(_picture(3, 200, 120))
    exif = rotated.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: 120 x 200
    rotated.save(root / "e_rotated.jpg", exif=exif, quality=90)
    Image.fromarray(_picture(4, 640, 480)).save(root / "f_large.jpg", quality=90)
    Image.fromarray(grey.astype(np.uint16) * 257).save(root / "g_grey16.png")
    files = sorted(root.iterdir())
    assert Image.open(files[-1]).mode.startswith("I")  # really a 16-bit file
    return files


def _letterboxed_batch(files: list[Path]) -> torch.Tensor:
    canvases = [load_letterboxed(p, IMG_SIZE)[0] for p in files]
    return torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2).float().div(255.0)


def _detecting_module(files: list[Path], **kwargs) -> YOLOModule:
    """A random yolov4_pico with BatchNorm statistics of the test images (so its boxes have sane sizes) and a
    spread-out head: it fires."""
    torch.manual_seed(0)
    module = YOLOModule(model_name="yolov4_pico", num_classes=3, class_names=["a", "b", "c"], **kwargs)
    model = module.model
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(_letterboxed_batch(files))
        for conv in model.head.preds:
            torch.nn.init.normal_(conv.weight, std=0.1)
            conv.bias.view(3, 8)[:, 4] = 0.0
    return module.eval()


def test_decoded_files_follow_one_rule(image_files):
    """EXIF orientation applied; transparency over the padding grey; grey and 16-bit files to RGB; the square
    letterbox of a file equals load_resized (training's reader) plus centred padding."""
    by_name = {p.stem: p for p in image_files}
    assert decode_image(by_name["e_rotated"]).shape == (200, 120, 3)
    alpha = decode_image(by_name["b_alpha"])
    assert (alpha[:30, :40] == 114).all()
    grey = decode_image(by_name["c_grey"])
    assert (grey[..., 0] == grey[..., 1]).all()
    assert np.abs(decode_image(by_name["g_grey16"]).astype(int) - grey.astype(int)).max() <= 1
    for path in image_files:
        canvas, ratio, (left, top), (height, width) = load_letterboxed(path, IMG_SIZE)
        resized, ratio2 = load_resized(path, None, IMG_SIZE)
        assert ratio == ratio2 and canvas.shape == (IMG_SIZE, IMG_SIZE, 3)
        assert np.array_equal(canvas[top : top + resized.shape[0], left : left + resized.shape[1]], resized)


@pytest.mark.parametrize("nms_kind", ["diou", "greedy"])
def test_cli_and_python_predict_give_identical_boxes(image_files, nms_kind):
    module = _detecting_module(image_files, inference=InferenceCfg(score_thresh=0.1, nms_kind=nms_kind))
    # lightning-yolo predict: PredictImages -> collate -> the DataModule's float conversion -> predict_step
    dataset = PredictImages(image_files[0].parent, IMG_SIZE)
    batch = collate_detection([dataset[i] for i in range(len(dataset))])
    assert not any("skipped" in t for t in batch["targets"])
    batch["images"] = batch["images"].float().div_(255.0)  # YOLODataModule.on_after_batch_transfer
    with torch.no_grad():
        cli = module.predict_step(batch, 0)
    # Python: any input, the module's own predictor (same thresholds), same batch
    # both in float32 (Python predict's default "auto" runs the network in bf16 on a CPU with bf16 units)
    python = predict(module.predictor(), image_files, img_size=IMG_SIZE, batch_size=len(image_files), precision="fp32")
    assert [d["path"] for d in cli] == [str(p) for p in image_files]
    total = 0
    for path, c, p in zip(image_files, cli, python, strict=True):
        assert len(c["boxes"]) == len(p["boxes"]), path.name
        torch.testing.assert_close(p["boxes"], c["boxes"], atol=1e-4, rtol=0, msg=path.name)
        torch.testing.assert_close(p["scores"], c["scores"], atol=1e-6, rtol=0, msg=path.name)
        assert p["labels"].tolist() == c["labels"].tolist(), path.name
        total += len(c["boxes"])
    assert total >= 5 * len(image_files)  # boxes to compare


def test_user_score_thresh_is_honoured_below_the_default(image_files):
    """predict_step uses the user's inference.score_thresh as given, also below the 0.25 default."""
    low = _detecting_module(image_files, inference=InferenceCfg(score_thresh=0.01))
    high = _detecting_module(image_files, inference=InferenceCfg(score_thresh=0.3))
    dataset = PredictImages(image_files[0], IMG_SIZE)
    batch = collate_detection([dataset[0]])
    batch["images"] = batch["images"].float().div_(255.0)
    with torch.no_grad():
        (det_low,), (det_high,) = low.predict_step(batch, 0), high.predict_step(batch, 0)
    assert float(det_low["scores"].min()) < 0.25 and len(det_low["scores"]) > len(det_high["scores"])
    assert float(det_high["scores"].min()) > 0.3 if len(det_high["scores"]) else True


def _canonical(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows ``(x1, y1, x2, y2, score, label)`` by decreasing score, ties (saturated scores) by position."""
    rows = torch.cat((boxes, scores[:, None], labels[:, None].to(boxes.dtype)), 1)
    order = np.lexsort((rows[:, 1].numpy(), rows[:, 0].numpy(), -rows[:, 4].numpy()))
    return rows[torch.from_numpy(order)]


def _compare_padded(detections, num_detections, reference) -> None:
    assert num_detections.tolist() == [len(r["boxes"]) for r in reference]
    for rows, n, ref in zip(detections, num_detections.tolist(), reference, strict=True):
        got = _canonical(rows[:n, :4], rows[:n, 4], rows[:n, 5])
        expected = _canonical(ref["boxes"], ref["scores"], ref["labels"])
        torch.testing.assert_close(got[:, :4], expected[:, :4], atol=1e-3, rtol=0)
        torch.testing.assert_close(got[:, 4], expected[:, 4], atol=1e-4, rtol=0)
        assert got[:, 5].tolist() == expected[:, 5].tolist()
        assert (rows[n:, 5] == -1).all()


def test_export_nms_equals_eager_greedy_postprocess_on_real_images(image_files, tmp_path):
    module = _detecting_module(image_files)
    predictor = module.predictor(score_thresh=0.25, nms_kind="greedy", nms_iou_thresh=0.45)
    exported, _ = export_module(predictor, with_nms=True)  # fused copy of the network
    images = _letterboxed_batch(image_files)
    with torch.no_grad():
        decoded = exported.predictor.decode(images)
        reference = postprocess(
            decoded, score_thresh=0.25, nms_iou_thresh=0.45, nms_kind="greedy", max_det=predictor.max_det,
            pre_nms_topk=predictor.max_nms,
        )  # fmt: skip
        counts = [len(r["boxes"]) for r in reference]
        assert sum(counts) >= 5 * len(image_files) and max(counts) < predictor.max_det  # boxes, not only the cap
        _compare_padded(*exported(images), reference)  # the graph's code, run eagerly
        traced = torch.jit.trace(exported, (images,), check_trace=False)
        _compare_padded(*traced(images[:3]), reference[:3])  # traced, another batch size
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import onnxruntime as ort

    # ONNX Runtime's convolutions round differently (boxes move by ~1e-4 of their size): the eager reference is
    # taken on ONNX Runtime's own decoded output, so the comparison is of the post-processing alone
    runs = {}
    for with_nms in (False, True):
        path = export_onnx(predictor, tmp_path / f"nms_{with_nms}.onnx", img_size=IMG_SIZE, with_nms=with_nms)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        runs[with_nms] = [torch.from_numpy(a) for a in session.run(None, {"images": images.numpy()})]
    onnx_reference = postprocess(
        runs[False][0], score_thresh=0.25, nms_iou_thresh=0.45, nms_kind="greedy", max_det=predictor.max_det,
        pre_nms_topk=predictor.max_nms,
    )  # fmt: skip
    _compare_padded(*runs[True], onnx_reference)


def test_boxes_wholly_in_the_padding_are_dropped_on_every_path(image_files, tmp_path):
    """Issue 19 item 18: a box that lies in the letterbox padding clips to zero height in the original image. Python
    ``predict`` used to return it (``[442.1, 0, 600, 0]``) while the CLI writer dropped it; the shared mapping
    (``detections_to_original``) drops it for both, so both return the same boxes and none is degenerate."""
    wide = tmp_path / "wide.jpg"  # 512 x 64: at 128 px the picture is 16 rows, 112 rows of padding
    Image.fromarray(_picture(7, 512, 64)).save(wide, quality=90)
    module = _detecting_module(image_files, inference=InferenceCfg(score_thresh=0.001, max_det=300))
    dataset = PredictImages(wide, IMG_SIZE)
    batch = collate_detection([dataset[0]])
    batch["images"] = batch["images"].float().div_(255.0)
    with torch.no_grad():
        (cli,) = module.predict_step(batch, 0)
        raw = module.predictor(score_thresh=0.001, max_det=300)(batch["images"])[0]["boxes"]
    (python,) = predict(module.predictor(), wide, img_size=IMG_SIZE, precision="fp32")
    # the random head does put boxes in the padding (above row 56 or below row 72 of the 128 canvas)
    assert int(((raw[:, 3] <= 56) | (raw[:, 1] >= 72)).sum()) > 0
    for det in (cli, python):
        widths, heights = det["boxes"][:, 2] - det["boxes"][:, 0], det["boxes"][:, 3] - det["boxes"][:, 1]
        assert len(det["boxes"]) > 0 and bool((widths > 0).all()) and bool((heights > 0).all())
    assert len(cli["boxes"]) == len(python["boxes"]) < len(raw)
    torch.testing.assert_close(python["boxes"], cli["boxes"], atol=1e-4, rtol=0)
    assert python["labels"].tolist() == cli["labels"].tolist() and len(python["names"]) == len(python["labels"])


def test_detections_to_original_drops_only_degenerate_boxes():
    from lightning_yolo.ops.postprocess import detections_to_original

    # 100 x 50 image letterboxed to 100 x 100 at ratio 1: 25 rows of padding above and below
    det = {
        "boxes": torch.tensor([[10.0, 30.0, 40.0, 60.0], [10.0, 2.0, 40.0, 20.0], [10.0, 80.0, 40.0, 99.0]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([1, 2, 0]),
        "image_id": 5,
    }
    out = detections_to_original(det, 1.0, (0.0, 25.0), (50, 100))
    assert out["boxes"].tolist() == [[10.0, 5.0, 40.0, 35.0]]
    assert out["scores"].tolist() == [pytest.approx(0.9)] and out["labels"].tolist() == [1] and out["image_id"] == 5
