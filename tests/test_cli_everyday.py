"""Everyday CLI use (issue 10): -c equals --config, validate/test/predict take the checkpoint's data settings,
typed --model flags beat the checkpoint's, predict honours its thresholds and writes the dataset's image ids."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from lightning_yolo.callbacks import LastCheckpoint
from lightning_yolo.commands.cli import build_cli, demo_config_path, main, with_checkpoint_data, with_demo_config
from lightning_yolo.data.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory, cli_session) -> Path:
    """A debug-config checkpoint trained at 96 px on a 8 + 6 image synthetic set (settings the demo does not use)."""
    root = tmp_path_factory.mktemp("everyday")
    with cli_session():
        cli = build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(root),
                         "--data.img_size", "96", "--data.synthetic_num_train", "8",
                         "--data.synthetic_num_val", "6", "--trainer.max_epochs", "1",
                         "--trainer.limit_train_batches", "2"])  # fmt: skip
    return Path(next(cb for cb in cli.trainer.callbacks if isinstance(cb, LastCheckpoint)).best_model_path)


def test_short_config_flag_does_not_merge_the_demo():
    for argv in (["fit", "-c", "x.yaml"], ["fit", "-c=x.yaml"], ["validate", "--config=x.yaml"]):
        assert with_demo_config(argv) == argv
    assert with_demo_config(["fit"]) == ["fit", "--config", demo_config_path()]


def test_validate_with_ckpt_path_alone_uses_the_checkpoints_data(small_ckpt, tmp_path, capsys):
    argv = with_checkpoint_data(with_demo_config(["validate", "--ckpt_path", str(small_ckpt)]))
    assert argv[:3] == ["validate", "--config", demo_config_path()]  # demo first, the checkpoint's data after it
    # the run lands next to the checkpoint's run (<root>/train/checkpoints/last.ckpt -> <root>/val), not runs/detect
    assert f"--trainer.default_root_dir={small_ckpt.resolve().parents[2]}" in argv
    cli = build_cli([*argv, "--trainer.default_root_dir", str(tmp_path)])
    assert cli.datamodule.img_size == 96 and cli.datamodule.hparams.synthetic_num_val == 6
    # flags typed by the user win over the checkpoint's settings
    argv = ["validate", "--ckpt_path", str(small_ckpt), "--data.img_size", "128"]
    argv = with_checkpoint_data(with_demo_config(argv))
    cli = build_cli([*argv, "--trainer.default_root_dir", str(tmp_path)])
    assert cli.datamodule.img_size == 128
    # the whole command: runs on the checkpoint's 6 validation images at 96 px and prints the metrics
    main(["validate", "--ckpt_path", str(small_ckpt), "--trainer.default_root_dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "[lightning-yolo validate]" in out and "val/map_75=" in out and "val/map_50=" not in out  # once: the table
    # the per-class table and the speed per image (issue 10 item 11); COCO's -1 prints as "-"
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["class", "images"])
    assert lines[header + 1].split()[:2] == ["all", "6"]
    assert any(line.startswith("Speed:") and "ms inference" in line and "at 96x96" in line for line in lines)
    assert "=-1" not in out


def test_validate_with_other_classes_is_one_clear_error(small_ckpt, tmp_path):
    ckpt = torch.load(small_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["num_classes"] = 2
    ckpt["hyper_parameters"]["class_names"] = ["cat", "dog"]
    other = tmp_path / "two_classes.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(ValueError, match=r"trained on 2 classes \['cat', 'dog'\], but the synthetic dataset has 4"):
        build_cli(["validate", "--config", DEBUG, "--ckpt_path", str(other), "--trainer.default_root_dir",
                   str(tmp_path)])  # fmt: skip


def test_typed_model_flags_beat_the_checkpoint(small_ckpt, tmp_path):
    """A typed field of a settings group wins over the checkpoint; the group's other fields stay the checkpoint's."""
    ckpt = torch.load(small_ckpt, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["inference"]["nms_kind"] = "greedy"  # not the config's diou
    greedy = tmp_path / "greedy.ckpt"
    torch.save(ckpt, greedy)
    run = ["--trainer.default_root_dir", str(tmp_path)]
    cli = build_cli(["validate", "--config", DEBUG, "--ckpt_path", str(greedy), *run,
                     "--model.inference.nms_iou_thresh", "0.3", "--model.inference.val_score_thresh=0.05"])  # fmt: skip
    assert cli.model.inference.nms_iou_thresh == 0.3 and cli.model.inference.val_score_thresh == 0.05
    assert cli.model.inference.nms_kind == "greedy"  # the checkpoint's, not the whole group from the config
    cli = build_cli(["validate", "--config", DEBUG, "--ckpt_path", str(small_ckpt), *run])
    assert cli.model.inference.nms_iou_thresh == 0.6  # the checkpoint's


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "--model.score_thresh", "0.5"],
         r"--model\.score_thresh moved: it is --model\.inference\.val_score_thresh now \(validation / test; the "
         r"predict one is --model\.inference\.score_thresh\)"),
        (["fit", "--model.predict_score_thresh=0.3"], r"--model\.predict_score_thresh moved: .*--model\.inference\.score_thresh"),
        (["fit", "--model.nms_kind", "greedy"], r"--model\.nms_kind moved: it is --model\.inference\.nms_kind now"),
        (["fit", "--model.box_loss", "giou"], r"--model\.box_loss moved: it is --model\.loss\.box_loss now"),
        (["predict", "--model.inference.val_score_thresh", "0.5"],
         r"--model\.inference\.val_score_thresh has no effect in predict: .*--model\.inference\.score_thresh"),
        (["validate", "--model.inference.score_thresh", "0.5"],
         r"--model\.inference\.score_thresh has no effect in validate: .*--model\.inference\.val_score_thresh"),
        (["test", "--model.inference.max_det=5"], r"no effect in test: .*--model\.inference\.val_max_det"),
    ],
)  # fmt: skip
def test_moved_and_ineffective_model_keys_fail_naming_the_key_to_use(argv, message, capsys):
    """Every model key that moved into a settings group fails with one line naming its new key (it never silently
    does nothing, as `predict --model.score_thresh 0.5` did), and so does a threshold without effect in the
    subcommand."""
    with pytest.raises(SystemExit) as err:
        main([*argv, "--config", DEBUG])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), lines


def test_a_moved_key_in_a_config_file_names_file_and_new_key(tmp_path, capsys):
    config = tmp_path / "old.yaml"
    config.write_text("model:\n  model_name: yolov4_pico\n  nms_iou_thresh: 0.5\n")
    with pytest.raises(SystemExit) as err:
        main(["fit", "--config", DEBUG, "--config", str(config)])
    assert err.value.code == 2
    assert f"{config}: model.nms_iou_thresh moved: it is model.inference.nms_iou_thresh now" in capsys.readouterr().err


def test_predict_thresholds_and_coco_image_ids_load_in_pycocotools(small_ckpt, tmp_path):
    from pycocotools.coco import COCO

    coco_root = make_synthetic_dataset(tmp_path / "coco", num_train=2, num_val=3, img_size=96, formats=("coco",))
    ann = coco_root / "annotations" / "instances_val.json"
    images = json.loads(ann.read_text())["images"]
    val_dir = coco_root / "images" / "val"
    out = tmp_path / "out"
    build_cli(["predict", "--config", DEBUG, "--ckpt_path", str(small_ckpt), "--data.path", str(ann),
               "--data.predict_path", str(val_dir), "--writer.output_dir", str(out),
               "--trainer.default_root_dir", str(tmp_path),
               "--model.inference.score_thresh", "0.0", "--model.inference.max_det", "7"])  # fmt: skip
    results = json.loads((out / "predictions.json").read_text())
    ids = {r["image_id"] for r in results}
    assert ids == {img["id"] for img in images}  # the json's ids (1..3), not file positions (0..2)
    per_image = [sum(r["image_id"] == i for r in results) for i in sorted(ids)]
    assert per_image == [7, 7, 7]  # a 2-step model has thousands of candidates: max_det is honoured
    assert min(r["score"] for r in results) < 0.25  # the user's threshold, not 0.25
    gt = COCO(str(ann))
    dt = gt.loadRes(str(out / "predictions.json"))
    assert len(dt.getAnnIds()) == len(results)


def test_one_way_to_set_the_optimizer(tmp_path, capsys):
    """No top-level --optimizer (it silently replaced warmup, cosine and the no-decay groups); another torch.optim
    class is chosen by name through --model.optimizer_name and keeps both."""
    with pytest.raises(SystemExit) as err:
        build_cli(["fit", "--config", DEBUG, "--optimizer", "torch.optim.Adam", "--print_config"])
    assert err.value.code != 0
    with pytest.raises(SystemExit):
        build_cli(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert "--model.optimizer_name" in help_text and "--optimizer " not in help_text.replace("--model.optimizer ", "")

    from lightning_yolo.training.optim import WarmupCosineLR

    cli = build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1",
                     "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
                     "--model.optimizer_name", "torch.optim.RAdam", "--model.lr", "0.001"])  # fmt: skip
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer).__name__ == "RAdam"
    assert optimizer.param_groups[0]["initial_lr"] == 0.001 and optimizer.defaults["betas"][0] == 0.937
    assert sorted({g["weight_decay"] for g in optimizer.param_groups}) == [0.0, cli.model.hparams.weight_decay]
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, WarmupCosineLR)


def test_short_fit_validates_at_the_end_and_says_close_mosaic_covers_it(tmp_path):
    """2 epochs with check_val_every_n_epoch=6 (the demo's period): the last epoch still validates, prints metrics
    and writes best.ckpt; close_mosaic_epochs=4 >= 2 epochs is said, not silent."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    with pytest.warns(UserWarning, match="close_mosaic_epochs=4 covers the whole run"):
        cli = build_cli(["fit", "--config", DEBUG, "--trainer.default_root_dir", str(tmp_path),
                         "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "6",
                         "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
                         "--data.augment.close_mosaic_epochs", "4", "--plots", "false"])  # fmt: skip
    assert "val/map_50" in cli.trainer.callback_metrics
    best = next(cb for cb in cli.trainer.callbacks if type(cb) is ModelCheckpoint).best_model_path
    assert best.endswith("best.ckpt") and Path(best).is_file()


def test_help_lists_every_subcommand_and_configs_by_name(capsys):
    from lightning_yolo.commands.cli import with_shipped_configs

    with pytest.raises(SystemExit) as err:
        main(["--help"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "export", "anchors", "convert"):
        assert f"\n  {command} " in out, command
    # fit --help shows the defaults that run without --config: the demo's (img_size 256, not the class's 640)
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--data.img_size IMG_SIZE network input side ``S`` (multiple of 32, the largest stride of the models here). (type: int, default: 256)" in help_text
    debug = with_shipped_configs(["fit", "--config", "debug"])[2]
    assert Path(debug).name == "debug.yaml" and Path(debug).is_file()
    assert with_shipped_configs(["fit", "-c=custom_yolo_format.yaml"])[1].endswith("custom_yolo_format.yaml")
    assert with_shipped_configs(["fit", "-c=custom_yolo_format.yaml"])[1].startswith("-c=/")
    assert with_shipped_configs(["fit", "--config", "nope"]) == ["fit", "--config", "nope"]  # left to the parser


def test_export_anchors_convert_help_use_the_img_size_style_and_take_both_spellings(capsys):
    from lightning_yolo.commands.anchors import build_anchors_parser
    from lightning_yolo.commands.args import parse_args
    from lightning_yolo.commands.export import build_export_parser

    for command in ("export", "anchors", "convert"):
        with pytest.raises(SystemExit) as err:
            main([command, "--help"])
        assert err.value.code == 0
        out = capsys.readouterr().out
        assert "--img_size" in out and "--img-size" not in out, command
    dashed = parse_args(build_export_parser(), ["my-run.ckpt", "--img-size", "96", "128", "--with-nms", "--max-det=5"])
    styled = parse_args(build_export_parser(), ["my-run.ckpt", "--img_size", "96", "128", "--with_nms", "--max_det=5"])
    assert vars(dashed) == vars(styled)
    assert styled.checkpoint == "my-run.ckpt" and styled.img_size == [96, 128]
    assert styled.with_nms and styled.max_det == 5
    assert parse_args(build_anchors_parser(), ["--num-anchors", "6", "--img_size", "320"]).num_anchors == 6
