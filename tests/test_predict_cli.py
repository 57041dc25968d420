"""`lightning-yolo predict`: an image, a folder or a glob -> COCO-style results json (+ drawn images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_yolo.callbacks import LastCheckpoint, PredictionWriter
from lightning_yolo.commands.cli import build_cli
from lightning_yolo.data.synthetic import draw_synthetic_image, make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture(scope="module")
def confident_ckpt(tmp_path_factory, cli_session) -> Path:
    """A debug-config checkpoint whose head is biased to fire everywhere (class 2 'triangle'): predictions exist.

    A 2-step model scores below predict's 0.25 threshold; the biased objectness and class logits make every cell
    a confident detection of class 2, so the test sees hundreds of boxes through NMS and the writer.
    """
    root = tmp_path_factory.mktemp("predict_base")
    with cli_session():
        cli = build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(root), "--trainer.max_epochs",
                         "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"])  # fmt: skip
    path = Path(next(cb for cb in cli.trainer.callbacks if isinstance(cb, LastCheckpoint)).best_model_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    anchors, classes = cli.model.model.anchors.anchors.shape[1], cli.model.hparams.num_classes
    for level in range(3):
        bias = ckpt["state_dict"][f"model.head.preds.{level}.bias"].view(anchors, 5 + classes)
        bias[:, 4] = 6.0  # objectness ~0.998
        bias[:, 5:] = -6.0
        bias[:, 5 + 2] = 6.0  # class 2 ~0.998
    out = root / "confident.ckpt"
    torch.save(ckpt, out)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """a.png (128 x 96: letterbox padding only) and b.png, the same picture upscaled 2x (256 x 192).

    At img_size 128 the loader shrinks b.png by exactly 2 (linear interpolation of equal neighbours), so both give
    the same network input and b's boxes must be exactly twice a's.
    """
    folder = tmp_path_factory.mktemp("images")
    img, _, _ = draw_synthetic_image(np.random.default_rng(0), (128, 96), 4)
    Image.fromarray(img).save(folder / "a.png")
    Image.fromarray(img.repeat(2, axis=0).repeat(2, axis=1)).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict(ckpt: Path, source: str, out: Path, *args: str) -> list[dict]:
    build_cli(["predict", "--config", DEBUG, "--ckpt_path", str(ckpt), "--data.predict_path", source,
               "--writer.output_dir", str(out), *args])  # fmt: skip
    return json.loads((out / "predictions.json").read_text())


def by_image(results: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in results:
        out.setdefault(r["image_id"], []).append(r)
    return out


def test_predict_folder_writes_coco_results_and_images(confident_ckpt, images, tmp_path):
    results = predict(confident_ckpt, str(images), tmp_path / "out", "--writer.save_images", "true")
    assert results and set(results[0]) == {"image_id", "file_name", "category_id", "bbox", "score"}
    per_image = by_image(results)
    assert sorted(per_image) == [0, 1]  # sorted file list: a.png, b.png (notes.txt is not an image)
    assert {r["file_name"] for r in per_image[0]} == {str(images / "a.png")}
    assert {r["category_id"] for r in results} == {2}  # no COCO dataset: category_id is the class index
    assert all(r["score"] >= 0.25 for r in results)
    a, b = per_image[0], per_image[1]
    assert 20 < len(a) == len(b) <= 300
    # boxes in original pixels: inside each image, and b's are exactly 2x a's (same network input)
    box_a = np.array([r["bbox"] for r in a])
    box_b = np.array([r["bbox"] for r in b])
    assert (box_a[:, :2] >= 0).all() and (box_a[:, 0] + box_a[:, 2] <= 128 + 1e-3).all()
    assert (box_a[:, 1] + box_a[:, 3] <= 96 + 1e-3).all() and (box_a[:, 2:] > 0).all()
    np.testing.assert_allclose(box_b, 2 * box_a, atol=2e-3)
    np.testing.assert_allclose([r["score"] for r in b], [r["score"] for r in a], atol=1e-5)
    # drawn images at the original sizes
    drawn = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert drawn == ["a.jpg", "b.jpg"]
    assert Image.open(tmp_path / "out" / "images" / "b.jpg").size == (256, 192)


def test_predict_single_file_and_glob(confident_ckpt, images, tmp_path):
    single = predict(confident_ckpt, str(images / "b.png"), tmp_path / "one")
    assert {r["image_id"] for r in single} == {0} and {r["file_name"] for r in single} == {str(images / "b.png")}
    globbed = predict(confident_ckpt, str(images / "*.png"), tmp_path / "glob")
    assert sorted(by_image(globbed)) == [0, 1]
    assert len(list((tmp_path / "glob" / "images").iterdir())) == 2  # drawn images by default
    predict(confident_ckpt, str(images / "*.png"), tmp_path / "json_only", "--writer.save_images", "false")
    assert not (tmp_path / "json_only" / "images").exists()  # --writer.save_images false: the json alone


def test_predict_uses_coco_category_ids(confident_ckpt, images, tmp_path):
    """With a COCO dataset of the same classes as data.path, category_id is the dataset's id (here label + 1)."""
    coco = make_synthetic_dataset(tmp_path / "coco", num_train=2, num_val=2, img_size=64, formats=("coco",))
    results = predict(confident_ckpt, str(images / "a.png"), tmp_path / "out",
                      "--data.path", str(coco / "annotations" / "instances_val.json"))  # fmt: skip
    assert {r["category_id"] for r in results} == {3}


def test_prediction_writer_category_ids_must_match_classes():
    writer = PredictionWriter(category_ids=[5, 7])

    class _Module:
        class_names = ["a", "b", "c"]
        hparams = type("H", (), {"num_classes": 3})()

    class _Trainer:
        datamodule = None
        default_root_dir = "."

    with pytest.raises(ValueError, match="category_ids has 2 ids for 3 classes"):
        writer.on_predict_start(_Trainer(), _Module())


def test_predict_without_images_says_what_to_set(confident_ckpt):
    with pytest.raises(ValueError, match="data.predict_path"):
        build_cli(["predict", "--config", DEBUG, "--ckpt_path", str(confident_ckpt)])
