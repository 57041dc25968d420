"""Inference I/O: letterbox, predict on files / PIL / numpy / tensors in original pixels, load_predictor, drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_yolo.data.image_io import decode_image, letterbox, letterbox_params, list_image_files
from lightning_yolo.inference.checkpoint import load_predictor
from lightning_yolo.inference.predict import compiled_network, predict
from lightning_yolo.models import create_model
from lightning_yolo.models.predictor import YOLOPredictor
from lightning_yolo.reporting.visualize import class_color, draw_detections, save_image

NAMES = ["cat", "dog", "bird"]


def detecting_tiny(seed: int = 0) -> torch.nn.Module:
    """Tiny model with BatchNorm statistics from one batch and a spread-out head, so it outputs detections."""
    torch.manual_seed(seed)
    model = create_model("yolov4_pico", num_classes=3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 64, 64))
        for conv in model.head.preds:
            torch.nn.init.normal_(conv.weight, std=0.1)
            conv.bias.view(3, 8)[:, 4] = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def detecting_predictor() -> YOLOPredictor:
    return YOLOPredictor(detecting_tiny(), score_thresh=0.3, nms_kind="greedy", class_names=NAMES, img_size=64)


def photo(height: int = 90, width: int = 150, seed: int = 0) -> torch.Tensor:
    """A smooth random uint8 ``[3, H, W]`` image (smooth so JPEG keeps it close)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 6, 10, generator=g)
    return (torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear")[0] * 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------- letterbox


def test_letterbox_geometry_and_pixels():
    img = np.full((100, 50, 3), 7, dtype=np.uint8)  # H=100, W=50
    ratio, new_hw, pad, canvas = letterbox_params((100, 50), 64)
    assert (ratio, new_hw, pad, canvas) == (0.64, (64, 32), (16, 0), (64, 64))
    out, ratio, pad = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and pad == (16, 0)
    assert (out[:, :16] == 114).all() and (out[:, 48:] == 114).all() and (out[:, 16:48] == 7).all()
    # rect: only pad to the next multiple of 32; odd padding goes right / bottom (round(d / 2 - 0.1))
    assert letterbox_params((100, 50), 64, rect=True)[2:] == ((0, 0), (64, 32))
    assert letterbox_params((100, 45), 64, rect=True) == (0.64, (64, 29), (1, 0), (64, 32))
    # float images pad with 114 / 255; no scale-up when disabled
    out, ratio, pad = letterbox(np.zeros((20, 40, 3), np.float32), 64, scale_up=False)
    assert ratio == 1.0 and pad == (12, 22) and out.shape == (64, 64, 3)
    assert out[0, 0, 0] == pytest.approx(114 / 255)


# ---------------------------------------------------------------------------------------------- predict mapping


@pytest.mark.parametrize("rect, expected_input_hw", [(True, (32, 64)), (False, (64, 64))])
def test_predict_maps_a_known_input_box_to_original_pixels(monkeypatch, rect, expected_input_hw):
    """decode() is replaced by one known box in letterboxed-input pixels; predict must return it in original pixels.

    Original 100 x 200 (H x W), img_size 64: ratio 0.32, resized 32 x 64; rect canvas 32 x 64 (no padding), square
    canvas 64 x 64 with 16 px at the top. Original box (50, 30, 150, 90) -> input (16, 9.6 + top, 48, 28.8 + top).
    """
    predictor = YOLOPredictor(create_model("yolov4_pico", num_classes=3), score_thresh=0.5, class_names=NAMES)
    top = 0 if rect else 16
    seen = []

    def fake_decode(images):
        seen.append(tuple(images.shape))
        row = torch.tensor([16.0, 9.6 + top, 48.0, 28.8 + top, 0.9, 0.1, 0.95, 0.2])  # class 1, score 0.855
        decoded = torch.zeros(images.shape[0], 5, 8)
        decoded[:, 2] = row
        return decoded

    monkeypatch.setattr(predictor, "decode", fake_decode)
    (result,) = predict(predictor, torch.zeros(3, 100, 200, dtype=torch.uint8), img_size=64, rect=rect)
    assert seen == [(1, 3, *expected_input_hw)]
    torch.testing.assert_close(result["boxes"], torch.tensor([[50.0, 30.0, 150.0, 90.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(result["scores"], torch.tensor([0.9 * 0.95]))
    assert result["labels"].tolist() == [1] and result["names"] == ["dog"]


def test_predict_clips_to_the_original_image(monkeypatch):
    predictor = YOLOPredictor(create_model("yolov4_pico", num_classes=3), score_thresh=0.5)
    decoded = torch.zeros(1, 1, 8)
    decoded[0, 0] = torch.tensor([-5.0, -5.0, 70.0, 70.0, 1.0, 1.0, 0.0, 0.0])  # beyond the 64 x 64 canvas
    monkeypatch.setattr(predictor, "decode", lambda images: decoded.expand(images.shape[0], -1, -1))
    (result,) = predict(predictor, torch.zeros(3, 100, 200, dtype=torch.uint8), img_size=64, rect=False)
    assert result["boxes"].tolist() == [[0.0, 0.0, 200.0, 100.0]]
    assert "names" not in result


# ---------------------------------------------------------------------------------------------- predict inputs


def test_predict_on_files_pil_numpy_and_tensors_agree(tmp_path, detecting_predictor):
    predictor = detecting_predictor
    img = photo(90, 150)
    hwc = img.permute(1, 2, 0).numpy()
    png, jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(hwc).save(png)
    Image.fromarray(hwc).save(jpg, quality=95)

    from_tensor = predict(predictor, img)[0]
    assert len(from_tensor["scores"]) > 0  # the test model does detect
    assert (from_tensor["boxes"][:, 2] <= 150).all() and (from_tensor["boxes"][:, 3] <= 90).all()
    assert from_tensor["boxes"].max() > 64  # original pixels, not the 64-px input
    assert from_tensor["names"] == [NAMES[i] for i in from_tensor["labels"].tolist()]
    # lossless inputs give identical results
    for same in (predict(predictor, png)[0], predict(predictor, Image.fromarray(hwc))[0], predict(predictor, hwc)[0]):
        torch.testing.assert_close(same["boxes"], from_tensor["boxes"])
        assert same["labels"].tolist() == from_tensor["labels"].tolist()
    # float [0, 1] tensors (resized in float, so not bit-equal to uint8) and a batch [B, 3, H, W]
    float_batch = predict(predictor, torch.stack([img, img]).float() / 255)
    assert len(float_batch) == 2 and len(float_batch[0]["scores"]) > 0
    torch.testing.assert_close(float_batch[1]["boxes"], float_batch[0]["boxes"])
    # a JPEG decodes to nearly the same pixels: boxes within the image, same image size
    from_jpg = predict(predictor, str(jpg))[0]
    assert len(from_jpg["scores"]) > 0 and (from_jpg["boxes"][:, 2] <= 150).all()
    # folder and glob: sorted files, one result each, order kept in a mixed list
    assert [p.name for p in list_image_files(tmp_path)] == ["a.png", "b.jpg"]
    assert len(predict(predictor, tmp_path)) == 2 and len(predict(predictor, str(tmp_path / "*.png"))) == 1
    mixed = predict(predictor, [png, img, Image.fromarray(hwc)], batch_size=2)
    assert len(mixed) == 3
    for m in mixed:  # batch size changes conv kernels: equal up to float rounding
        torch.testing.assert_close(m["boxes"], from_tensor["boxes"], atol=1e-3, rtol=1e-5)


def test_predict_batches_images_of_different_sizes(detecting_predictor):
    predictor = detecting_predictor
    big, small = photo(90, 150, seed=1), photo(40, 30, seed=2)
    together = predict(predictor, [big, small], batch_size=2)
    alone = [predict(predictor, big)[0], predict(predictor, small)[0]]
    for t, a in zip(together, alone, strict=True):
        # padding right / bottom to the batch's canvas does not move boxes (it only adds grey context)
        assert len(t["scores"]) > 0 and len(a["scores"]) > 0
    assert (together[1]["boxes"][:, 2] <= 30).all() and (together[1]["boxes"][:, 3] <= 40).all()


def test_compiled_predict_gives_the_eager_boxes_and_compiles_once():
    predictor = YOLOPredictor(detecting_tiny(), score_thresh=0.3, nms_kind="greedy", img_size=64).fuse()
    images = [photo(90, 150, seed=s) for s in range(3)]
    eager = predict(predictor, images, batch_size=2, precision="fp32")
    compiled = predict(predictor, images, batch_size=2, precision="fp32", compile=True)  # 2 + 1 (padded to 2)
    net = compiled_network(predictor)
    assert net is compiled_network(predictor) and net is not predictor.model  # made once, kept on the predictor
    assert "_compiled_network" not in dict(predictor.named_modules())
    assert sum(len(e["scores"]) for e in eager) > 0
    for e, c in zip(eager, compiled, strict=True):
        assert len(e["scores"]) == len(c["scores"])
        torch.testing.assert_close(c["boxes"], e["boxes"], atol=1e-3, rtol=1e-4)  # Inductor reorders sums
        torch.testing.assert_close(c["scores"], e["scores"], atol=1e-4, rtol=0)


def test_predict_input_errors(tmp_path):
    predictor = YOLOPredictor(create_model("yolov4_pico", num_classes=3))
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\].*255"):
        predict(predictor, torch.full((3, 32, 32), 255.0))
    with pytest.raises(ValueError, match=r"\[3, H, W\].*\[4, 32, 32\]"):
        predict(predictor, torch.zeros(4, 32, 32))
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        predict(predictor, tmp_path / "nothing_here.jpg")
    with pytest.raises(TypeError, match="cannot predict on a int"):
        predict(predictor, 3)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.jpg"):
        decode_image(tmp_path / "bad.jpg")


def test_decode_image_rgb_and_exif_orientation(tmp_path):
    hwc = photo(20, 30).permute(1, 2, 0).numpy()
    Image.fromarray(hwc[..., 0]).save(tmp_path / "grey.png")
    assert decode_image(tmp_path / "grey.png").shape == (20, 30, 3)
    im = Image.fromarray(hwc)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert decode_image(tmp_path / "rot.jpg").shape == (30, 20, 3)


# ---------------------------------------------------------------------------------------------- checkpoints


def _lightning_checkpoint(model, path, with_meta=False, **hparams):
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["loss.balance"] = torch.ones(3)  # loss / metric entries must be ignored
    state["val_map.some_state"] = torch.zeros(2)
    ckpt = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.6.6",
        "state_dict": state,
        "hyper_parameters": {
            "model_name": "yolov4_pico",
            "num_classes": 3,
            "class_names": NAMES,
            "model_overrides": {"sam": True, "pretrained_backbone": "/gone/backbone.pth"},
            "nms_kind": "greedy",
            "nms_iou_thresh": 0.5,
            "lr": 0.01,
            **hparams,
        },
    }
    if with_meta:
        ckpt["lightning_yolo"] = {"model_cfg": model.cfg.to_dict(), "num_classes": 3, "class_names": NAMES}
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("with_meta", [False, True])
def test_from_checkpoint_rebuilds_the_network(tmp_path, with_meta):
    model = create_model("yolov4_pico", num_classes=3, sam=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # not the init: the weights must really be loaded
    path = _lightning_checkpoint(model.eval(), tmp_path / "last.ckpt", with_meta=with_meta)
    ckpt = torch.load(path, weights_only=True)
    ckpt["datamodule_hyper_parameters"] = {"img_size": 96, "batch_size": 8}  # what a YOLODataModule stores
    torch.save(ckpt, path)
    predictor = load_predictor(path, score_thresh=0.1, trainable=True)  # as trained: bit-equal outputs
    assert predictor.class_names == NAMES and predictor.nms_kind == "greedy" and predictor.nms_iou_thresh == 0.5
    assert predictor.score_thresh == 0.1 and predictor.img_size == 96 and predictor.model.cfg.sam
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(predictor.model(images), model(images), strict=True):
            assert torch.equal(a, b)
    # the default form: Conv+BN folded, channels_last weights, eval mode; same outputs to float rounding
    fused = load_predictor(path, score_thresh=0.1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.model.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.model.modules())
    assert not fused.training
    with torch.no_grad():
        for a, b in zip(fused.model(images), model(images), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_from_plain_state_dict(tmp_path):
    model = create_model("yolov4_pico", num_classes=5).eval()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    predictor = load_predictor(tmp_path / "weights.pt", model_name="yolov4_pico", trainable=True)
    assert predictor.num_classes == 5  # read from the head's shape
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(predictor.model(images)[0], model(images)[0])


def test_from_checkpoint_errors_name_path_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_predictor(tmp_path / "missing.ckpt")
    model = create_model("yolov4_pico", num_classes=3)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match=r"plain.pt.*model_name"):
        load_predictor(tmp_path / "plain.pt")
    ckpt = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "hyper_parameters": {}}
    torch.save(ckpt, tmp_path / "no_name.ckpt")
    with pytest.raises(ValueError, match=r"no_name.ckpt.*'model_name'"):
        load_predictor(tmp_path / "no_name.ckpt")
    torch.save(
        {"state_dict": {"loss.x": torch.zeros(1)}, "hyper_parameters": {"model_name": "yolov4_pico"}},
        tmp_path / "no_model.ckpt",
    )
    with pytest.raises(ValueError, match=r"no_model.ckpt.*'model\.'"):
        load_predictor(tmp_path / "no_model.ckpt")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(ValueError, match=r"text.ckpt.*not a complete PyTorch checkpoint"):
        load_predictor(tmp_path / "text.ckpt")
    with pytest.raises(ValueError, match=r"plain.pt.*do not fit"):
        load_predictor(tmp_path / "plain.pt", model_name="yolov4_pico", num_classes=4)


# ---------------------------------------------------------------------------------------------- drawing


def test_draw_detections_tensor_and_numpy(tmp_path):
    img = torch.zeros(3, 60, 80, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 12.0, 50.0, 40.0]])
    out = draw_detections(img, boxes, torch.tensor([1]), torch.tensor([0.87]), class_names=NAMES, width=2)
    assert out.shape == (3, 60, 80) and out.dtype == torch.uint8 and img.sum() == 0  # input untouched
    colour = torch.tensor(class_color(1), dtype=torch.uint8)
    assert torch.equal(out[:, 30, 10], colour) and torch.equal(out[:, 40, 30], colour)  # left and bottom edges
    assert (out[:, 35, 30] == 0).all() and (out[:, 55, 70] == 0).all()  # inside and outside stay untouched
    assert (out[:, 14:24, 13:48] != 0).any()  # caption "dog 0.87" inside the box's top-left corner
    hwc = draw_detections(img.permute(1, 2, 0).numpy(), boxes.numpy(), [1], None, class_names=None)
    assert isinstance(hwc, np.ndarray) and hwc.shape == (60, 80, 3) and hwc.dtype == np.uint8
    assert tuple(hwc[30, 10]) == class_color(1)
    assert torch.equal(draw_detections(img, torch.zeros(0, 4), torch.zeros(0)), img)
    with pytest.raises(ValueError, match="label 3 has no name"):
        draw_detections(img, boxes, [3], class_names=NAMES)
    path = save_image(out, tmp_path / "out" / "drawn.png")
    assert torch.equal(torch.from_numpy(decode_image(path)).permute(2, 0, 1), out)


def test_fused_channels_last_predictor_predicts_the_same(detecting_predictor):
    img = photo(90, 150, seed=3)
    expected = predict(detecting_predictor, img, precision="fp32")[0]
    fused = YOLOPredictor(detecting_tiny(), score_thresh=0.3, nms_kind="greedy", img_size=64).fuse()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())  # timm BatchNormAct2d too
    got = predict(fused, img, precision="fp32")[0]
    assert got["labels"].tolist() == expected["labels"].tolist()
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-2, rtol=1e-4)
