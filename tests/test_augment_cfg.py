"""Augmentation settings as data: every AugmentCfg field is a ``--data.augment.*`` key, reaches the pipeline, survives
hparams.yaml and checkpoints; the old flat keys name their new place; close-mosaic follows a re-planned max_epochs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.core.saving import load_hparams_from_yaml, save_hparams_to_yaml

from lightning_yolo.commands.cli import build_cli
from lightning_yolo.data import AugmentCfg, YOLODataModule
from lightning_yolo.data.mixing import MixUp, Mosaic
from lightning_yolo.data.steps import RandomHorizontalFlip, RandomHSV
from lightning_yolo.data.synthetic import make_synthetic_dataset

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")

pytestmark = pytest.mark.filterwarnings("ignore::lightning_yolo.data.formats.base.DatasetWarning")


@pytest.fixture(scope="module")
def synthetic_dataset_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, num_train=8, num_val=4, img_size=(96, 72), seed=1)
    return root / "data.yaml"


@pytest.fixture(scope="module")
def printed_config(cli_session):
    """``fit --config debug --print_config`` with two augmentation fields changed on the command line."""
    out = io.StringIO()
    with cli_session(), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", "--config", DEBUG, "--data.augment.sat_prob", "0.25", "--data.augment.multiscale_range",
                   "[0.75, 1.25]", "--print_config"])  # fmt: skip
    return yaml.safe_load(out.getvalue())


def test_every_augment_field_is_a_cli_key(printed_config):
    augment = printed_config["data"]["augment"]
    names = [f.name for f in dataclasses.fields(AugmentCfg)]
    assert sorted(augment) == sorted(names)
    assert augment["sat_prob"] == 0.25 and augment["multiscale_range"] == [0.75, 1.25]
    assert augment["mosaic_prob"] == 0.5  # debug.yaml's data: augment: mosaic_prob
    defaults = AugmentCfg()
    for name in set(names) - {"sat_prob", "multiscale_range", "mosaic_prob"}:
        assert augment[name] == getattr(defaults, name), name
    flat = set(printed_config["data"]) & set(names)
    assert not flat, f"augmentation knobs still flat on the DataModule: {sorted(flat)}"


def _pipeline(cli_session, *flags: str):
    with cli_session():
        cli = build_cli(["--config", DEBUG, *flags], run=False)
    dm = cli.datamodule
    dm.setup("fit")
    return dm, dm.train_dataset


def test_a_cli_flag_changes_the_built_pipeline(cli_session):
    dm, on = _pipeline(cli_session, "--data.augment.mosaic_prob", "1", "--data.augment.mosaic_buffer", "0")
    assert isinstance(dm.augment, AugmentCfg) and dm.augment.mosaic_prob == 1.0
    assert isinstance(on.stage, Mosaic) and on.stage.prob == 1.0 and on.stage.buffer_size == 0
    assert [type(s) for s in on.steps.steps] == [RandomHSV, RandomHorizontalFlip]
    _, off = _pipeline(cli_session, "--data.augment.mosaic_prob", "0", "--data.augment.mosaic_buffer", "0",
                       "--data.augment.mixup_prob", "0.5", "--data.augment.flip_prob", "0")  # fmt: skip
    assert isinstance(off.stage, MixUp) and off.stage.prob == 0.5
    assert isinstance(off.stage.stage, Mosaic) and off.stage.stage.prob == 0.0
    assert [type(s) for s in off.steps.steps] == [RandomHSV]
    # what the samples show: with mosaic_prob 0 a sample is the single-image one (the close-mosaic form), with 1 not
    _, single = _pipeline(cli_session, "--data.augment.mosaic_prob", "0", "--data.augment.mosaic_buffer", "0")
    for seed in range(3):
        a, b = single[(seed, True, seed)][0], single[(seed, False, seed)][0]
        assert torch.equal(a, b)
        assert not torch.equal(on[(seed, True, seed)][0], on[(seed, False, seed)][0])


def test_disabled_augmentation_trains_on_letterboxed_images(cli_session):
    from lightning_yolo.data.pipelines import EvalDataset

    dm, ds = _pipeline(cli_session, "--data.augment.enabled", "false")
    assert not dm.augment.enabled and isinstance(ds, EvalDataset)


def test_hparams_and_checkpoint_keep_the_augment_cfg(tmp_path, synthetic_dataset_path):
    cfg = AugmentCfg(mosaic_prob=0.3, multiscale=True, multiscale_range=(0.75, 1.25), sat_prob=0.5, hsv_h=0.0)
    dm = YOLODataModule(str(synthetic_dataset_path), img_size=64, augment=cfg)
    assert dm.hparams["augment"] == cfg.to_dict() and isinstance(dm.hparams["augment"], dict)
    assert dm.hparams_initial["augment"] == cfg.to_dict()  # what loggers write to hparams.yaml
    # hparams.yaml: plain YAML (no python tags), read back into the same settings
    save_hparams_to_yaml(tmp_path / "hparams.yaml", dm.hparams)
    text = (tmp_path / "hparams.yaml").read_text()
    assert "!!python" not in text and "mosaic_prob: 0.3" in text
    again = YOLODataModule(**load_hparams_from_yaml(tmp_path / "hparams.yaml"))
    assert again.augment == cfg
    # a checkpoint's datamodule_hyper_parameters load back through Lightning
    ckpt = tmp_path / "x.ckpt"
    torch.save({YOLODataModule.CHECKPOINT_HYPER_PARAMS_KEY: dict(dm.hparams),
                "pytorch-lightning_version": pl.__version__}, ckpt)  # fmt: skip
    loaded = YOLODataModule.load_from_checkpoint(ckpt)
    assert loaded.augment == cfg and loaded.hparams["augment"] == cfg.to_dict()
    assert YOLODataModule(str(synthetic_dataset_path), img_size=64, augment=None).augment == AugmentCfg()


def test_augment_cfg_validates_and_round_trips():
    cfg = AugmentCfg(mixup_prob=0.2, multiscale_range=[0.5, 2.0])  # a YAML list becomes the tuple
    assert cfg.multiscale_range == (0.5, 2.0)
    assert AugmentCfg.from_dict(cfg.to_dict()) == cfg and hash(cfg) == hash(AugmentCfg.from_dict(cfg.to_dict()))
    assert cfg.replace(sat_prob=0.5).sat_prob == 0.5
    bad = (("mosaic_prob", 1.5, r"\[0, 1\]"), ("scale", 1.0, r"\[0, 1\)"), ("multiscale_every", 0, ">= 1"),
           ("sat_step_size", 0.0, r"\(0, 1\]"), ("close_mosaic_epochs", -1, ">= 0"),
           ("multiscale_range", (1.5, 0.5), "lo <= hi"))  # fmt: skip
    for field, value, allowed in bad:
        with pytest.raises(ValueError, match=rf"AugmentCfg\.{field} must .*{allowed}"):
            AugmentCfg(**{field: value})
    with pytest.raises(TypeError, match="unknown augmentation key.*'mosaic'"):
        AugmentCfg.from_dict({"mosaic": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mosaic_prob = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("how", ["flag", "config file"])
def test_an_old_flat_key_names_the_new_one(how, cli_session, tmp_path, capsys):
    if how == "flag":
        extra = ["--data.mosaic_prob", "0.5"]
    else:
        (tmp_path / "old.yaml").write_text("data:\n  mosaic_prob: 0.5\n")
        extra = ["--config", str(tmp_path / "old.yaml")]
    with cli_session(), pytest.raises(SystemExit) as exc:
        build_cli(["fit", "--config", DEBUG, *extra, "--print_config"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--data.mosaic_prob is now --data.augment.mosaic_prob" in err and len(err.strip().splitlines()) == 1


class _MaxEpochsReplan(pl.Callback):
    """What TimeBudget does after the first epoch: a new ``fit_loop.max_epochs``."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            trainer.fit_loop.max_epochs = self.max_epochs


class _Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - 1).square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("replan", [None, 3])
def test_close_mosaic_follows_a_replanned_max_epochs(replan, synthetic_dataset_path):
    cfg = AugmentCfg(close_mosaic_epochs=1, mosaic_buffer=0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)
    dm = YOLODataModule(str(synthetic_dataset_path), img_size=64, batch_size=4, num_workers=0, augment=cfg)
    dm.setup("fit")
    mosaic = dm.train_dataset.stage
    seen: dict[int, set[bool]] = {}
    get = mosaic.get

    def recording_get(index, ctx):
        seen.setdefault(trainer.current_epoch, set()).add(ctx.multi_image)
        return get(index, ctx)

    mosaic.get = recording_get
    trainer = pl.Trainer(
        max_epochs=5, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_train_batches=1, limit_val_batches=0,
        callbacks=[_MaxEpochsReplan(replan)] if replan else [],
    )  # fmt: skip
    trainer.fit(_Recorder(), datamodule=dm)
    last = (replan or 5) - 1
    assert sorted(seen) == list(range(last + 1))
    assert all(seen[e] == {True} for e in range(last)) and seen[last] == {False}
