"""Option names are exact in every subcommand: a prefix or a typo is a one-line error with the closest names, never a
guessed option (argparse's default completed ``predict --conf 0.5`` to ``--config`` and ``--trainer.max_epoch 3`` to
``--trainer.max_epochs``)."""

from __future__ import annotations

import pytest

from lightning_yolo.commands.cli import main


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2, argv
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(lines) == 1, captured.err  # one line, no usage text, no traceback
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "argv, given, meant",
    [
        (["predict", "--conf", "0.5"], "--conf", "--config"),
        (["fit", "--trainer.max_epoch", "3"], "--trainer.max_epoch", "--trainer.max_epochs"),
        (["validate", "--trainer.limit_val", "1"], "--trainer.limit_val", "--trainer.limit_val_batches"),
        (["test", "--data.batch", "2"], "--data.batch", "--data.batch_size"),
        (["fit", "--config", "debug", "--data.augment.mosaic_pro=0.3"], "--data.augment.mosaic_pro",
         "--data.augment.mosaic_prob"),
    ],
)  # fmt: skip
def test_lightning_subcommands_refuse_option_prefixes(capsys, argv, given, meant):
    line = _error_line(capsys, argv)
    assert f"unrecognized arguments: {given}" in line and "did you mean" in line and meant in line, line
    assert "File does not exist" not in line  # --conf was read as --config before


@pytest.mark.parametrize(
    "argv, given, meant",
    [
        (["export", "missing.ckpt", "--form", "onnx"], "--form", "--format"),
        (["anchors", "missing/data.yaml", "--img", "320"], "--img", "--img_size"),
        (["convert", "a.cfg", "a.weights", "--nam", "coco.names"], "--nam", "--names"),
        (["ablate", "--seed", "3", "--dry_run"], "--seed", "--seeds"),
        (["evolve", "--gen", "3"], "--gen", "--generations"),
    ],
)
def test_argparse_subcommands_refuse_option_prefixes(capsys, argv, given, meant):
    line = _error_line(capsys, argv)
    assert f"unrecognized arguments: {given}" in line and f"did you mean {meant}" in line, line
    assert f"lightning-yolo {argv[0]} --help" in line


def test_argparse_subcommand_value_errors_are_one_line_too(capsys):
    line = _error_line(capsys, ["export", "missing.ckpt"])
    assert "missing.ckpt: checkpoint file not found" in line and "usage:" not in line


def test_both_spellings_still_work_after_the_change():
    from lightning_yolo.commands.anchors import build_anchors_parser
    from lightning_yolo.commands.args import parse_args

    assert parse_args(build_anchors_parser(), ["--img-size", "320"]).img_size == 320
    assert parse_args(build_anchors_parser(), ["--img_size=320"]).img_size == 320
