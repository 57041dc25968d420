"""A corpus of malformed inputs run through the real command line (``lightning_yolo.commands.cli.main``, in-process).

Each case builds its input in a temporary folder (datasets in YOLO, COCO and VOC layouts, images, configs,
checkpoints, predict inputs), runs one command and asserts its outcome category:

* ``error``: exit status 2 and exactly one ``error: ...`` line on stderr that names the file / key;
* ``skip``: the run finishes, and what was skipped is counted in a warning naming the file;
* ``ok``: the run finishes and the input was handled correctly.

Every case also asserts that no traceback was printed and that no ``fit`` finished on a training split without
boxes (the silent background-only run). ``python tests/test_fault_corpus.py`` prints the counts per category.
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightning_yolo.commands.cli as cli_module

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")
LABEL = "0 0.5 0.5 0.5 0.5\n"


# ----------------------------------------------------------------------------------------------------------------------
# builders


def img(path: Path, size: tuple[int, int] = (64, 48), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # the same pictures in every run
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def yolo(root: Path, n: int = 4, ext: str = ".jpg", yaml: str | None = None, label: str | None = LABEL) -> Path:
    """``root/images/train/i.ext`` + ``root/labels/train/i.txt``; train and val are the same folder."""
    for i in range(n):
        img(root / "images" / "train" / f"{i}{ext}")
        if label is not None:
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{i}.txt").write_text(label, encoding="utf-8")
    (root / "data.yaml").write_text(yaml or "train: images/train\nval: images/train\nnames: [thing]\n")
    return root / "data.yaml"


def coco(
    root: Path, n: int = 4, missing: tuple[int, ...] = (), anns: list | None = None, raw: str | None = None
) -> Path:
    images = []
    for i in range(n):
        if i not in missing:
            img(root / "images" / "train" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48})
    if anns is None:
        anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [8, 8, 32, 24], "iscrowd": 0} for i in range(n)]
    path = root / "annotations" / "instances_train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw or json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    return path


def voc(root: Path, n: int = 4, xml: dict[int, str] | None = None, missing_image: tuple[int, ...] = ()) -> Path:
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if i not in missing_image:
            img(root / "JPEGImages" / f"{i}.jpg")
        text = (xml or {}).get(i) or (
            f"<annotation><filename>{i}.jpg</filename><object><name>cat</name><bndbox><xmin>5</xmin><ymin>5</ymin>"
            "<xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>"
        )
        (root / "Annotations" / f"{i}.xml").write_text(text)
    ids = "".join(f"{i}\n" for i in range(n))
    for split in ("train", "val"):
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(ids)
    (root / "labels.txt").write_text("cat\ndog\n")
    return root


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def fit_args(tmp: Path, data: Path | str, *extra: str) -> list[str]:
    return [
        "fit", "--config", DEBUG, "--data.path", str(data), "--data.img_size", "64", "--data.batch_size", "2",
        "--data.augment.mosaic_prob", "0", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", str(tmp / "run"), "--trainer.logger", "false",
        "--trainer.enable_model_summary", "false", "--plots", "false", *extra,
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# the corpus


@dataclass
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]  # (tmp, checkpoint) -> argv
    outcome: str  # "error" | "skip" | "ok"
    expect: tuple[str, ...]  # substrings of the error line / the warnings / stdout
    check: Callable[[Path, object], None] | None = None  # extra assertion on (tmp, cli object)


def _yaml_case(text: str) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, _: Path) -> list[str]:
        yolo(tmp / "ds")
        (tmp / "ds" / "data.yaml").write_text(text)
        return fit_args(tmp, tmp / "ds" / "data.yaml")

    return build


def _with(build_dataset: Callable[[Path], Path], *extra: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, _: fit_args(tmp, build_dataset(tmp), *extra)


def _yolo_then(mutate: Callable[[Path], None], **kw) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        path = yolo(tmp / "ds", **kw)
        mutate(tmp / "ds")
        return path

    return build


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())

    return mutate


def _boxes(n: int) -> Callable[[Path, object], None]:
    def check(tmp: Path, cli) -> None:
        assert cli.datamodule.sources["train"].report.num_boxes == n, cli.datamodule.sources["train"].report.summary()

    return check


def _predictions(n_images: int, skipped: int) -> Callable[[Path, object], None]:
    def check(tmp: Path, cli) -> None:
        from lightning_yolo.callbacks import PredictionWriter

        writer = next(cb for cb in cli.trainer.callbacks if isinstance(cb, PredictionWriter))
        assert writer._num_images == n_images and len(writer.skipped) == skipped
        assert (tmp / "pred" / "predictions.json").is_file()

    return check


def _predict(files: dict[str, bytes | None]) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, ckpt: Path) -> list[str]:
        folder = tmp / "photos"
        for name, data in files.items():
            if data is None:
                img(folder / name, size=(80, 60))
            else:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
        return ["predict", "--config", DEBUG, "--ckpt_path", str(ckpt), "--data.predict_path", str(folder),
                "--writer.output_dir", str(tmp / "pred"), "--trainer.logger", "false"]  # fmt: skip

    return build


def _ckpt_file(data: Callable[[Path], bytes]) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, ckpt: Path) -> list[str]:
        bad = tmp / "bad.ckpt"
        bad.write_bytes(data(ckpt))
        return ["validate", "--config", DEBUG, "--ckpt_path", str(bad), "--trainer.logger", "false"]

    return build


def _config(text: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, _: Path) -> list[str]:
        (tmp / "my.yaml").write_text(text)
        return ["fit", "--config", DEBUG, "--config", str(tmp / "my.yaml"), *extra]

    return build


def _nothing_ran(tmp: Path, cli) -> None:
    """An error case stopped before training: no Trainer ran a step."""
    assert cli is None or getattr(cli, "trainer", None) is None or cli.trainer.global_step == 0


def _no_study(tmp: Path) -> None:
    assert not (tmp / "study").exists()  # stopped before any run of the study


def _no_gpu(argv: list[str]) -> Callable[[Path, Path], list[str]]:
    def build(tmp: Path, _: Path) -> list[str]:
        if torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            pytest.skip("a GPU is present")
        return argv

    return build


def _untrained(tmp: Path, cli) -> None:
    assert cli.trainer.global_step == 0


def _saved(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _flat(root: Path) -> Path:
    """A flat dataset (labels beside the images in imgs/) whose parent folder is called ``images``."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(sorted((root / "images" / "train").iterdir())):
        p.rename(root / "imgs" / p.name)
        (root / "imgs" / f"{p.stem}.txt").write_text(LABEL)
    return root / "data.yaml"


def _damage_jpeg(path: Path) -> None:
    """An invalid marker (FF 97) in the middle of the compressed data: libjpeg still decodes the picture (with a
    "Corrupt JPEG data" line), PIL refuses it (checked on 120 random images: always)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2] = b"\xff\x97"
    path.write_bytes(bytes(data))


def _binary_yaml(tmp: Path, _: Path) -> list[str]:
    yolo(tmp / "ds")
    (tmp / "ds" / "data.yaml").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01")
    return fit_args(tmp, tmp / "ds" / "data.yaml")


def _truncated_predict_png(build):
    def wrapped(tmp: Path, ckpt: Path) -> list[str]:
        argv = build(tmp, ckpt)
        truncate(tmp / "photos" / "z.png")
        return argv

    return wrapped


CASES = [
    # ---------------------------------------------------------------- YOLO datasets
    Case("yolo_path_missing", lambda t, _: fit_args(t, t / "nope" / "data.yaml"), "error",
         ("nope/data.yaml: dataset path does not exist",)),
    Case("yolo_yaml_invalid", _yaml_case("train: [images/train\nnames: [a"), "error", ("data.yaml: not valid YAML",)),
    Case("yolo_yaml_binary", _binary_yaml, "error", ("data.yaml: not a text file",)),
    Case("yolo_yaml_no_names", _yaml_case("train: images/train\nval: images/train\n"), "error",
         ("data.yaml: missing key 'names'",)),
    Case("yolo_names_duplicate", _yaml_case("train: images/train\nval: images/train\nnames: [a, a]\n"), "error",
         ("class name 'a' appears twice",)),
    Case("yolo_nc_mismatch", _yaml_case("train: images/train\nval: images/train\nnc: 3\nnames: [a]\n"), "error",
         ("nc=3 but names has 1 entries",)),
    Case("yolo_train_folder_missing", _yaml_case("train: images/training\nval: images/train\nnames: [a]\n"), "error",
         ("train: 'images/training' resolves to",)),
    Case("yolo_labels_folder_misnamed",
         _with(_yolo_then(lambda r: (r / "labels").rename(r / "label")))
         , "error", ("no label file for any of them", "labels/train/0.txt")),
    Case("yolo_flat_under_parent_named_images",
         _with(lambda t: yolo(t / "images" / "flat", yaml="train: imgs\nval: imgs\nnames: [thing]\n", label=None)
               and _flat(t / "images" / "flat")),
         "ok", (), _boxes(4)),
    Case("yolo_label_with_bom", _with(_yolo_then(_write("labels/train/0.txt", b"\xef\xbb\xbf" + LABEL.encode() * 1
                                                         + b"0 0.2 0.2 0.1 0.1\n"))),
         "ok", (), _boxes(5)),
    Case("yolo_malformed_label_lines",
         _with(_yolo_then(_write("labels/train/1.txt", "0 0.5 0.5\n7 0.5 0.5 0.2 0.2\n0 5 5 20 20\nx y z w h\n"))),
         "skip", ("malformed label line", "labels/train/1.txt:1", "class id out of range", "not normalised"),
         _boxes(3)),
    Case("yolo_every_label_unusable",
         _with(_yolo_then(lambda r: [(r / "labels" / "train" / f"{i}.txt").write_text("3 0.5 0.5 0.2 0.2\n")
                                     for i in range(4)])),
         "error", ("not one usable (non-crowd) box", "class id out of range", "learn only background")),
    Case("yolo_truncated_png", _with(_yolo_then(lambda r: truncate(r / "images" / "train" / "2.png"), ext=".png")),
         "skip", ("unreadable image (skipped)", "images/train/2.png"), _boxes(3)),
    Case("yolo_truncated_jpeg", _with(_yolo_then(lambda r: truncate(r / "images" / "train" / "1.jpg"))),
         "skip", ("unreadable image (skipped)", "images/train/1.jpg"), _boxes(3)),
    Case("yolo_zero_byte_image", _with(_yolo_then(_write("images/train/3.jpg", b""))),
         "skip", ("unreadable image (skipped)", "images/train/3.jpg"), _boxes(3)),
    Case("yolo_text_file_named_jpg", _with(_yolo_then(_write("images/train/0.jpg", "hello, not a picture"))),
         "skip", ("unreadable image (skipped)", "images/train/0.jpg"), _boxes(3)),
    Case("yolo_all_images_unreadable",
         _with(_yolo_then(lambda r: [(r / "images" / "train" / f"{i}.jpg").write_bytes(b"junk") for i in range(4)])),
         "error", ("[train]: the split has no usable images", "4 x unreadable image")),
    Case("yolo_label_without_image", _with(_yolo_then(_write("labels/train/extra.txt", LABEL))),
         "error", ("labels/train/extra.txt: label file has no image",)),
    Case("yolo_empty_image_folder",
         _with(_yolo_then(lambda r: [p.unlink() for p in (r / "images" / "train").iterdir()]
                          or [p.unlink() for p in (r / "labels" / "train").iterdir()])),
         "error", ("contains no images",)),
    Case("yolo_label_not_utf8", _with(_yolo_then(_write("labels/train/2.txt", b"\xff\xfe\x00garbage"))),
         "skip", ("unreadable label file", "labels/train/2.txt"), _boxes(3)),
    Case("yolo_jpeg_damaged_data_verified",
         _with(_yolo_then(lambda r: _damage_jpeg(r / "images" / "train" / "1.jpg")), "--data.verify_images", "true"),
         "skip", ("damaged image data (decodes with artefacts; kept)", "images/train/1.jpg"), _boxes(4)),
    Case("yolo_polygon_labels", _with(_yolo_then(_write("labels/train/0.txt", "0 0.1 0.1 0.6 0.1 0.6 0.7 0.1 0.7\n"))),
         "ok", ("polygon label converted",), _boxes(4)),
    # ---------------------------------------------------------------- COCO datasets
    Case("coco_invalid_json", _with(lambda t: coco(t / "c", raw='{"images": [1, 2,, ]}')), "error",
         ("instances_train.json:1:", "not valid JSON")),
    Case("coco_missing_key", _with(lambda t: coco(t / "c", raw='{"images": [], "categories": []}')), "error",
         ("instances_train.json: missing key 'annotations'",)),
    Case("coco_first_files_missing", _with(lambda t: coco(t / "c", n=6, missing=(0, 1))), "skip",
         ("2 x missing image file (skipped)", "images/train/0.jpg"), _boxes(4)),
    Case("coco_image_folder_missing", _with(lambda t: coco(t / "c", missing=(0, 1, 2, 3))), "error",
         ("cannot find its images (first file_name '0.jpg')", "looked in")),
    Case("coco_bad_annotations",
         _with(lambda t: coco(t / "c", anns=[
             {"id": 0, "image_id": 0, "category_id": 1, "bbox": [8, 8, 32, 24]},
             {"id": 1, "image_id": 1, "category_id": 9, "bbox": [8, 8, 32, 24]},
             {"id": 2, "image_id": 2, "category_id": 1, "bbox": "oops"},
             {"id": 3, "image_id": 77, "category_id": 1, "bbox": [8, 8, 32, 24]},
             {"id": 4, "image_id": 3, "category_id": 1, "bbox": [8, 8, float("nan"), 24]}])),
         "skip", ("unknown category id", "without a valid bbox", "unknown image id", "degenerate box"), _boxes(1)),
    Case("coco_duplicate_image_ids",
         _with(lambda t: coco(t / "c", raw=json.dumps({"images": [{"id": 1, "file_name": "0.jpg"}] * 2,
                                                       "annotations": [], "categories": [{"id": 1, "name": "a"}]}))),
         "error", ("repeats image id 1",)),
    # ---------------------------------------------------------------- VOC datasets
    Case("voc_missing_split_file", _with(lambda t: (voc(t / "v"), (t / "v/ImageSets/Main/train.txt").unlink())[0]),
         "error", ("ImageSets/Main/train.txt: VOC split file not found",)),
    Case("voc_broken_xml", _with(lambda t: voc(t / "v", xml={1: "<annotation><object><name>cat"})), "skip",
         ("unreadable annotation xml", "Annotations/1.xml"), _boxes(3)),
    Case("voc_unknown_class_and_bad_box",
         _with(lambda t: voc(t / "v", xml={2: "<annotation><object><name>horse</name><bndbox><xmin>1</xmin><ymin>1"
                                              "</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object><object><name>cat"
                                              "</name><bndbox><xmin>a</xmin></bndbox></object></annotation>"})),
         "skip", ("unknown class name", "'horse'", "object without a valid bndbox"), _boxes(3)),
    Case("voc_missing_image", _with(lambda t: voc(t / "v", missing_image=(0,))), "skip",
         ("missing image file (skipped)", "JPEGImages/0.jpg"), _boxes(3)),
    # ---------------------------------------------------------------- configs and options
    Case("config_file_missing", lambda t, _: ["fit", "--config", str(t / "nope.yaml")], "error", ("nope.yaml",)),
    Case("config_not_yaml", _config("trainer: [max_epochs: 2\n"), "error", ("my.yaml:2:1: not valid YAML",)),
    Case("config_unknown_key", _config("model:\n  lrr: 0.1\n"), "error", ("model.lrr", "did you mean --model.lr")),
    Case("option_misspelt", lambda t, _: ["fit", "--config", DEBUG, "--model.lrr", "0.1"], "error",
         ("--model.lrr: did you mean --model.lr",)),
    Case("option_bad_value", lambda t, _: ["fit", "--config", DEBUG, "--data.img_size", "100"], "error",
         ("img_size must be a positive multiple of 32, got 100",)),
    Case("root_dir_is_a_file",
         lambda t, _: (t.joinpath("file").write_text("x"), fit_args(t, yolo(t / "ds"), "--trainer.default_root_dir",
                                                                      str(t / "file" / "run")))[1],
         "error", ("file/run: Not a directory",)),
    # ---------------------------------------------------------------- checkpoints
    Case("ckpt_empty", _ckpt_file(lambda c: b""), "error", ("bad.ckpt: checkpoint file is empty (0 bytes",)),
    Case("ckpt_truncated", _ckpt_file(lambda c: c.read_bytes()[: c.stat().st_size // 2]), "error",
         ("bad.ckpt: not a complete PyTorch checkpoint", "truncated")),
    Case("ckpt_text_file", _ckpt_file(lambda c: b"model weights go here\n"), "error",
         ("bad.ckpt: not a complete PyTorch checkpoint",)),
    Case("ckpt_not_found", lambda t, _: ["validate", "--config", DEBUG, "--ckpt_path", str(t / "gone.ckpt")], "error",
         ("gone.ckpt: checkpoint file not found",)),
    Case("ckpt_plain_tensor", _ckpt_file(lambda c: _saved(torch.ones(3))), "error",
         ("bad.ckpt: expected a checkpoint dict",)),
    Case("init_from_truncated",
         lambda t, c: (t.joinpath("half.ckpt").write_bytes(c.read_bytes()[:1000]),
                       fit_args(t, yolo(t / "ds"), "--model.init_from", str(t / "half.ckpt")))[1],
         "error", ("half.ckpt: not a complete PyTorch checkpoint",)),
    # ---------------------------------------------------------------- predict inputs
    Case("predict_one_bad_image", _predict({"a.jpg": None, "b.png": b"\x89PNG\r\n\x1a\nnot really", "c.jpg": None}),
         "skip", ("skipped", "b.png"), _predictions(2, 1)),
    Case("predict_truncated_png", _truncated_predict_png(_predict({"a.png": None, "z.png": None})), "skip",
         ("z.png", "truncated PNG"), _predictions(1, 1)),
    Case("predict_folder_without_images", _predict({"notes.txt": b"hi"}), "error",
         ("photos: folder holds no image files",)),
    Case("predict_path_missing",
         lambda t, c: ["predict", "--config", DEBUG, "--ckpt_path", str(c), "--data.predict_path", str(t / "none")],
         "error", ("none: no such image file, folder or pattern",)),
    # ---------------------------------------------------------------- trainer settings, resuming (issue 19)
    Case("option_max_time_misspelt_key", lambda t, _: ["fit", "--config", DEBUG, "--trainer.max_time", "{minute: 10}"],
         "error", ("--trainer.max_time {'minute': 10}: unknown key(s) ['minute']", "DD:HH:MM:SS", "{minutes: 10}"),
         _nothing_ran),
    Case("option_max_time_not_ddhhmmss", lambda t, _: ["fit", "--config", DEBUG, "--trainer.max_time", "10m"],
         "error", ("--trainer.max_time '10m': give DD:HH:MM:SS",), _nothing_ran),
    Case("option_accelerator_gpu_absent", _no_gpu(["fit", "--config", DEBUG, "--trainer.accelerator", "gpu"]),
         "error", ("--trainer.accelerator gpu: this machine has no GPU", "--trainer.accelerator cpu"), _nothing_ran),
    Case("option_sync_batchnorm_cpu_ddp",
         lambda t, _: ["fit", "--config", DEBUG, "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp",
                       "--trainer.devices", "2", "--trainer.sync_batchnorm", "true"],
         "error", ("--trainer.sync_batchnorm true: SyncBatchNorm needs CUDA", "--model.cross_minibatch_norm true"),
         _nothing_ran),
    Case("ckpt_resume_other_model_size",
         lambda t, c: ["fit", "--config", DEBUG, "--ckpt_path", str(c), "--model.model_name", "yolov4_nano",
                       "--data.img_size", "64", "--trainer.max_epochs", "2", "--trainer.logger", "false",
                       "--trainer.default_root_dir", str(t / "run")],
         "error", ("last.ckpt: holds yolov4_pico, 4 classes", "this run builds yolov4_nano", "--model.init_from"),
         _nothing_ran),
    Case("ckpt_resume_other_classes",
         lambda t, c: fit_args(t, yolo(t / "ds"), "--ckpt_path", str(c), "--trainer.max_epochs", "2"),
         "error", ("last.ckpt: holds yolov4_pico, 4 classes", "1 classes ['thing']", "--model.init_from"),
         _nothing_ran),
    # ---------------------------------------------------------------- ablate / evolve (issue 19 item 10)
    Case("study_ablate_switch_key_misspelt",
         lambda t, _: ["ablate", "--config", DEBUG, "--switch", "model.lrr=0.001", "--seeds", "1", "--budget", "1ep",
                       "--study", str(t / "study")],
         "error", ("--switch model.lrr=0.001", "did you mean --model.lr"), lambda t, _: _no_study(t)),
    Case("study_evolve_flag_misspelt",
         lambda t, _: ["evolve", "--config", DEBUG, "--param", "model.lr=1e-4:1e-2:log", "--budget", "1ep",
                       "--study", str(t / "study"), "--", "--trainer.max_epochz", "2"],
         "error", ("-- --trainer.max_epochz 2", "did you mean --trainer.max_epochs"), lambda t, _: _no_study(t)),
]


# ----------------------------------------------------------------------------------------------------------------------
# datasets as other tools export them (issue 19): Roboflow YOLO and COCO, CVAT COCO, symlinked folders, pose labels,
# string ids, a 200-megapixel photo; predict after the training data is gone


def _roboflow_coco(root: Path, splits: tuple[str, ...] = ("train", "valid", "test"), n: int = 3) -> Path:
    """A Roboflow "COCO" export: ``<split>/_annotations.coco.json`` beside that split's images, a super-category
    0 without annotations (as Roboflow writes it), renamed files ``<name>_jpg.rf.<hash>.jpg``."""
    for split in splits:
        images, anns = [], []
        for i in range(n + (split == "train")):
            name = f"{split}{i}_jpg.rf.{zlib.crc32(f'{split}{i}'.encode()):08x}.jpg"
            img(root / split / name)
            images.append({"id": i, "license": 1, "file_name": name, "height": 48, "width": 64,
                           "date_captured": "2024-05-01T10:00:00+00:00"})  # fmt: skip
            anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [8, 8, 32, 24], "area": 768,
                         "segmentation": [], "iscrowd": 0})  # fmt: skip
        data = {"info": {"year": "2024", "description": "Exported from roboflow.com"}, "licenses": [],
                "categories": [{"id": 0, "name": "things", "supercategory": "none"},
                               {"id": 1, "name": "thing", "supercategory": "things"}],
                "images": images, "annotations": anns}  # fmt: skip
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    (root / "README.roboflow.txt").write_text("Exported via roboflow.com\n")
    return root


def _roboflow_yolo(root: Path) -> Path:
    """A Roboflow "YOLOv8" export: ``data.yaml`` beside ``train/ valid/ test/``, paths written as ``../<split>``."""
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        for i in range(n):
            img(root / split / "images" / f"{split}{i}.jpg")
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            (root / split / "labels" / f"{split}{i}.txt").write_text(LABEL)
    (root / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 1\nnames: ['thing']\n\n"
        "roboflow:\n  workspace: me\n  project: things\n  version: 1\n  license: CC BY 4.0\n"
        "  url: https://universe.roboflow.com/me/things/dataset/1\n"
    )
    return root / "data.yaml"


def _cvat_coco(root: Path, extra_json: bool = False) -> Path:
    """CVAT's "COCO 1.0" export: ``annotations/instances_default.json`` beside ``images/``."""
    images, anns = [], []
    for i in range(4):
        img(root / "images" / f"frame_{i:06d}.png", fmt="PNG")
        images.append({"id": i + 1, "width": 64, "height": 48, "file_name": f"frame_{i:06d}.png", "license": 0,
                       "flickr_url": "", "coco_url": "", "date_captured": 0})  # fmt: skip
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "segmentation": [], "area": 768.0,
                     "bbox": [8.0, 8.0, 32.0, 24.0], "iscrowd": 0, "attributes": {"occluded": False}})  # fmt: skip
    data = {"licenses": [{"name": "", "id": 0, "url": ""}], "info": {"contributor": "", "version": ""},
            "categories": [{"id": 1, "name": "thing", "supercategory": ""}], "images": images, "annotations": anns}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    if extra_json:
        (root / "annotations" / "instances_backup.json").write_text(json.dumps(data))
    return root


def _string_ids(root: Path, image_ids: list, category_id: object = "1") -> Path:
    """A COCO json whose ids are strings (``"id": "img_a"``, ``"category_id": "1"``) or other non-integers."""
    images = [{"id": iid, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i, iid in enumerate(image_ids)]
    for i in range(len(image_ids)):
        img(root / "images" / f"{i}.jpg")
    anns = [{"id": f"ann{i}", "image_id": iid, "category_id": category_id, "bbox": [8, 8, 32, 24], "iscrowd": 0}
            for i, iid in enumerate(image_ids)]  # fmt: skip
    path = root / "instances_train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": category_id, "name": "thing"}]}))  # fmt: skip
    return path


def _symlinked(tmp: Path) -> Path:
    """``images/train/b -> <elsewhere>/images`` and ``labels/train/b -> <elsewhere>/labels`` (2 + 2 images), and a
    link cycle ``images/train/a/again -> ..`` that must not loop nor count an image twice."""
    root = tmp / "ds"
    for i in range(2):
        img(root / "images" / "train" / "a" / f"a{i}.jpg")
        img(tmp / "elsewhere" / "images" / f"b{i}.jpg")
        (root / "labels" / "train" / "a").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "train" / "a" / f"a{i}.txt").write_text(LABEL)
        (tmp / "elsewhere" / "labels").mkdir(parents=True, exist_ok=True)
        (tmp / "elsewhere" / "labels" / f"b{i}.txt").write_text("0 0.3 0.3 0.2 0.2\n0 0.7 0.7 0.2 0.2\n")
    (root / "images" / "train" / "b").symlink_to(tmp / "elsewhere" / "images", target_is_directory=True)
    (root / "labels" / "train" / "b").symlink_to(tmp / "elsewhere" / "labels", target_is_directory=True)
    (root / "images" / "train" / "a" / "again").symlink_to("..", target_is_directory=True)
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [thing]\n")
    return root / "data.yaml"


def _images_and_boxes(n_images: int, n_boxes: int) -> Callable[[Path, object], None]:
    def check(tmp: Path, cli) -> None:
        report = cli.datamodule.sources["train"].report
        assert (report.num_images, report.num_boxes) == (n_images, n_boxes), report.summary()

    return check


def _pose(tmp: Path) -> Path:
    """ultralytics pose labels: ``kpt_shape: [4, 2]``, lines ``cls cx cy w h`` + 4 (x, y) keypoints = 13 values,
    the keypoints spread wider than the box (their enclosing box is not the object's box)."""
    path = yolo(tmp / "ds", yaml="train: images/train\nval: images/train\nkpt_shape: [4, 2]\nnames: [person]\n",
                label="0 0.5 0.5 0.25 0.5 0.1 0.1 0.9 0.1 0.9 0.9 0.1 0.9\n")  # fmt: skip
    (tmp / "ds" / "labels" / "train" / "3.txt").write_text("0 0.5 0.5 0.25 0.5 0.1 0.1\n")  # too few values
    return path


def _pose_boxes(tmp: Path, cli) -> None:
    records = cli.datamodule.sources["train"].records
    assert len(records) == 4 and [len(r.boxes) for r in records] == [1, 1, 1, 0]
    np.testing.assert_allclose(records[0].boxes[0], [24.0, 12.0, 40.0, 36.0], atol=1e-4)  # 64 x 48 image


def _huge(tmp: Path) -> Path:
    """A 200-megapixel photo (20000 x 10000) among ordinary images: PIL calls it a decompression bomb."""
    path = yolo(tmp / "ds", n=2)  # one batch of 2: the training step and the validation decode it
    Image.new("L", (20000, 10000), 90).save(tmp / "ds" / "images" / "train" / "1.jpg", quality=50)
    return path


def _ckpt_data_gone(tmp: Path, ckpt: Path) -> list[str]:
    """A checkpoint trained on a dataset that was deleted since (its saved data.path no longer exists)."""
    data = torch.load(ckpt, map_location="cpu", weights_only=False)
    data["datamodule_hyper_parameters"]["path"] = str(tmp / "deleted_dataset" / "data.yaml")
    moved = tmp / "moved.ckpt"
    torch.save(data, moved)
    img(tmp / "photos" / "a.jpg", size=(80, 60))
    img(tmp / "photos" / "b.jpg", size=(80, 60))
    return ["predict", "--config", DEBUG, "--ckpt_path", str(moved), "--data.predict_path", str(tmp / "photos"),
            "--writer.output_dir", str(tmp / "pred"), "--trainer.logger", "false"]  # fmt: skip


def _split_sources(**expected: str) -> Callable[[Path, object], None]:
    """The json / folder each split was read from ends with the given text."""

    def check(tmp: Path, cli) -> None:
        cli.datamodule.source("test")
        for split, end in expected.items():
            source = cli.datamodule.sources[split].report.source
            assert source.replace("\\", "/").endswith(end), (split, source)

    return check


def _coco_predictions_keep_ids(tmp: Path, ckpt: Path) -> list[str]:
    path = _string_ids(tmp / "c", ["img_a", "img_b", "img_c"])
    return ["predict", "--config", DEBUG, "--ckpt_path", str(ckpt), "--data.path", str(path),
            "--data.predict_path", str(tmp / "c" / "images"), "--writer.output_dir", str(tmp / "pred"),
            "--model.inference.score_thresh", "0.0", "--trainer.logger", "false"]  # fmt: skip


def _string_ids_in_predictions(tmp: Path, cli) -> None:
    results = json.loads((tmp / "pred" / "predictions.json").read_text())
    assert results and {r["image_id"] for r in results} <= {"img_a", "img_b", "img_c"}
    assert {r["file_name"].rsplit("/", 1)[-1]: r["image_id"] for r in results}.get("0.jpg", "img_a") == "img_a"


CASES += [
    Case("yolo_symlinked_folders", lambda t, _: fit_args(t, _symlinked(t)), "ok", (), _images_and_boxes(4, 6)),
    Case("yolo_pose_labels_kpt_shape", lambda t, _: fit_args(t, _pose(t)), "skip",
         ("pose label: box read, keypoints ignored", "malformed pose label line (kpt_shape [4, 2]: expected 13",
          "labels/train/3.txt:1"), _pose_boxes),
    Case("yolo_pose_kpt_shape_invalid",
         _yaml_case("train: images/train\nval: images/train\nkpt_shape: [17, 4]\nnames: [a]\n"), "error",
         ("data.yaml: kpt_shape must be [K, D]", "[17, 4]")),
    Case("yolo_roboflow_data_yaml", lambda t, _: fit_args(t, _roboflow_yolo(t / "rf")), "ok", (),
         _split_sources(train="data.yaml", val="data.yaml")),
    Case("coco_roboflow_export_folder", lambda t, _: fit_args(t, _roboflow_coco(t / "rf")), "ok", (),
         _split_sources(train="train/_annotations.coco.json", val="valid/_annotations.coco.json",
                        test="test/_annotations.coco.json")),
    Case("coco_roboflow_train_json", lambda t, _: fit_args(t, _roboflow_coco(t / "rf") / "train" /
                                                           "_annotations.coco.json"), "ok", (),
         _split_sources(train="train/_annotations.coco.json", val="valid/_annotations.coco.json")),
    Case("coco_roboflow_train_folder", lambda t, _: fit_args(t, _roboflow_coco(t / "rf") / "train"), "ok", (),
         _split_sources(train="train/_annotations.coco.json", val="valid/_annotations.coco.json")),
    Case("coco_one_json_validates_on_training_images",
         lambda t, _: fit_args(t, _roboflow_coco(t / "rf", splits=("train",)) / "train" / "_annotations.coco.json"),
         "skip", ("validation reads the training images", "--data.val_json"),
         _split_sources(train="train/_annotations.coco.json", val="train/_annotations.coco.json")),
    Case("coco_val_json_named",
         lambda t, _: fit_args(t, _roboflow_coco(t / "rf", splits=("train", "other")) / "train" /
                               "_annotations.coco.json", "--data.val_json",
                               str(t / "rf" / "other" / "_annotations.coco.json")),
         "ok", (), _split_sources(val="other/_annotations.coco.json")),
    Case("coco_val_json_missing", lambda t, _: fit_args(t, _roboflow_coco(t / "rf") / "train", "--data.val_json",
                                                        str(t / "rf" / "nope.json")),
         "error", ("val_json", "nope.json': file not found")),
    Case("coco_cvat_export", lambda t, _: fit_args(t, _cvat_coco(t / "cvat")), "skip",
         ("instances_default.json: the training json", "validation reads the training images"), _boxes(4)),
    Case("coco_cvat_several_jsons", lambda t, _: fit_args(t, _cvat_coco(t / "cvat", extra_json=True)), "error",
         ("2 COCO jsons and none named for a split", "instances_backup.json, instances_default.json")),
    Case("coco_string_ids", lambda t, _: fit_args(t, _string_ids(t / "c", ["img_a", "img_b", "img_c", "img_d"])),
         "skip", ("validation reads the training images",), _boxes(4)),
    Case("coco_numeric_string_ids", lambda t, _: fit_args(t, _string_ids(t / "c", ["1", "2", 3, "4"], 1)),
         "skip", ("validation reads the training images",), _boxes(4)),
    Case("coco_float_image_id", lambda t, _: fit_args(t, _string_ids(t / "c", [1, 2.5, 3])), "error",
         ("instances_train.json: images[1].id is 2.5", "integers")),
    Case("coco_null_category_id", lambda t, _: fit_args(t, _string_ids(t / "c", [1, 2], None)), "error",
         ("instances_train.json: categories[0].id is None",)),
    Case("predict_coco_string_ids_kept", _coco_predictions_keep_ids, "ok", (), _string_ids_in_predictions),
    Case("yolo_200_megapixel_image", lambda t, _: fit_args(t, _huge(t)), "ok", (), _images_and_boxes(2, 2)),
    Case("predict_training_data_gone", _ckpt_data_gone, "ok", ("its training data", "no longer exists"),
         _predictions(2, 0)),
]


# ----------------------------------------------------------------------------------------------------------------------
# running a case


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A debug checkpoint at 64 px (for the checkpoint and predict cases)."""
    tmp = tmp_path_factory.mktemp("corpus_ckpt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIGHTNING_YOLO_CACHE", str(tmp_path_factory.getbasetemp() / "yolo_cache"))
        mp.setattr("sys.argv", ["lightning-yolo"])
        cli_module.main(["fit", "--config", DEBUG, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                         "--trainer.limit_val_batches", "1", "--data.img_size", "64", "--trainer.logger", "false",
                         "--trainer.default_root_dir", str(tmp), "--plots", "false"])  # fmt: skip
    return next(tmp.rglob("last.ckpt"))


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    warnings: str
    cli: object


def run_case(case: Case, tmp: Path, ckpt: Path, capsys, monkeypatch) -> Result:
    argv = case.build(tmp, ckpt)
    built = []
    original = cli_module.build_cli
    monkeypatch.setattr(cli_module, "build_cli", lambda args, run=True: built.append(original(args, run)) or built[-1])
    code = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cli_module.main(argv)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
    out = capsys.readouterr()
    text = "\n".join(str(w.message) for w in caught)
    return Result(code, out.out, out.err, text, built[-1] if built else None)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, tmp_path, checkpoint, capsys, monkeypatch, cli_env):
    result = run_case(case, tmp_path, checkpoint, capsys, monkeypatch)
    assert "Traceback" not in result.stderr, result.stderr
    if case.outcome == "error":
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
        assert result.code == 2, (result.code, result.stderr[-2000:])
        assert len(lines) == 1, result.stderr
        for part in case.expect:
            assert part in lines[0], (part, lines[0])
        if case.check is not None:
            case.check(tmp_path, result.cli)
        return
    assert result.code == 0, (result.code, result.stderr[-3000:])
    reported = result.warnings + "\n" + result.stdout + "\n" + result.stderr
    for part in case.expect:
        assert part in reported, (part, reported[-3000:])
    cli = result.cli
    if cli is not None and cli.subcommand == "fit":
        # never a silent background-only run: the training split that was fitted has boxes
        assert cli.datamodule.sources["train"].report.num_boxes > 0
        assert cli.trainer.global_step > 0
    if case.check is not None:
        case.check(tmp_path, cli)


def test_corpus_is_large_and_covers_every_kind():
    kinds = Counter(c.name.split("_")[0] for c in CASES)
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
    assert {"yolo", "coco", "voc", "config", "option", "ckpt", "predict", "study"} <= set(kinds)
    assert set(Counter(c.outcome for c in CASES)) == {"error", "skip", "ok"}


if __name__ == "__main__":  # pragma: no cover
    # python tests/test_fault_corpus.py [--list]: runs every case (a few minutes) and prints the counts by outcome,
    # then the tracebacks and the wrong results (a case whose outcome or check failed without a traceback)
    import sys

    counts = Counter(c.outcome for c in CASES)
    print(f"{len(CASES)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if "--list" not in sys.argv:
        failures: dict[str, str] = {}

        class _Tally:
            def pytest_runtest_logreport(self, report) -> None:
                if report.failed:
                    crash = getattr(report.longrepr, "reprcrash", None)
                    failures[report.nodeid] = crash.message if crash is not None else str(report.longrepr)

        pytest.main([__file__, "-q", "-p", "no:cacheprovider", "-k", "test_corpus_case"], plugins=[_Tally()])
        # test_corpus_case asserts "no traceback" first, with stderr as the message: a traceback fails there
        tracebacks = sorted(n for n, m in failures.items() if "Traceback" in m)
        wrong = sorted(set(failures) - set(tracebacks))
        print(f"{len(CASES)} cases run: {len(tracebacks)} tracebacks, {len(wrong)} silent wrong results")
        for name in tracebacks + wrong:
            print(f"  {name}")
        sys.exit(1 if failures else 0)
