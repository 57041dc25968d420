"""Resume (`fit --ckpt_path last.ckpt`) continues exactly; extending a finished run re-plans the learning rate.

The CLI runs in-process on the debug config with tiny limits (2 training batches of 4 images at 128 px per epoch).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_yolo.callbacks import LastCheckpoint, ensure_last_checkpoint
from lightning_yolo.commands.cli import build_cli
from lightning_yolo.callbacks.random_state import get_rng_state, set_rng_state
from lightning_yolo.module import YOLOModule
from lightning_yolo.training.optim import warmup_cosine_factor

ROOT = Path(__file__).resolve().parents[1]
DEBUG = str(ROOT / "configs" / "debug.yaml")


pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture(autouse=True)
def _undo_deterministic():
    yield
    torch.use_deterministic_algorithms(False)  # --trainer.deterministic sets it process-wide


def fit(root: Path, *args: str) -> object:
    """``lightning-yolo fit`` on the debug config in this process; returns the CLI object (trainer, model)."""
    return build_cli(
        [
            "fit",
            "--config", DEBUG,
            "--trainer.default_root_dir", str(root),
            "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1",
            "--trainer.enable_model_summary", "false",
            *args,
        ]
    )  # fmt: skip


def last_ckpt(cli) -> Path:
    last = next(cb for cb in cli.trainer.callbacks if isinstance(cb, LastCheckpoint))
    return Path(last.best_model_path)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_two_plus_two_epochs_equals_four(tmp_path, monkeypatch):
    # Mosaic's partner buffer (augment.mosaic_buffer > 0) lives in the loading process and is not checkpointed:
    # exact resume needs augment.mosaic_buffer=0 (or cache_images=true). Everything else (sampler order, per-sample
    # augmentation seeds, multiscale counter, SAT stream, LR schedule, optimizer momenta) is a function of the
    # checkpoint.
    exact = ["--trainer.deterministic", "true", "--data.augment.mosaic_buffer", "0", "--seed_everything", "7"]
    full = fit(tmp_path / "full", *exact, "--trainer.max_epochs", "4")

    def interrupt(self):  # the 4-epoch run dies after its second epoch (after last.ckpt was written)
        if self.current_epoch == 1:
            self.trainer.should_stop = True

    with monkeypatch.context() as patch:
        patch.setattr(YOLOModule, "on_train_epoch_end", interrupt, raising=False)
        half = fit(tmp_path / "half", *exact, "--trainer.max_epochs", "4")
    first_half = last_ckpt(half)
    half_state = load(first_half)  # the resumed run continues in its run folder and rewrites this last.ckpt
    assert half_state["epoch"] == 1 and half_state["global_step"] == 4  # the last epoch, not the best
    resumed = fit(tmp_path / "half", *exact, "--trainer.max_epochs", "4", "--ckpt_path", str(first_half))
    assert last_ckpt(resumed) == first_half

    a, b = load(last_ckpt(full)), load(last_ckpt(resumed))
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"]) == (3, 8)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    # the optimizer state (AdamW moments / SGD momenta) and the schedule are where the uninterrupted run has them
    opt_a, opt_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert opt_a.keys() == opt_b.keys() and len(opt_a) > 0
    for index, state in opt_a.items():
        for name, value in state.items():
            torch.testing.assert_close(opt_b[index][name], value, rtol=0, atol=1e-6, msg=f"{index}.{name}")
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 8
    assert a["lr_schedulers"][0]["_last_lr"] == b["lr_schedulers"][0]["_last_lr"]
    # the weights moved in the second half (a resume that trained nothing would also "match" the checkpoint)
    moved = max((b["state_dict"][k].float() - v.float()).abs().max().item()
                for k, v in half_state["state_dict"].items() if v.is_floating_point())  # fmt: skip
    assert moved > 1e-4


def test_extend_finished_run_replans_cosine(tmp_path, monkeypatch):
    """A finished 2-epoch run extended to 4 epochs: the LR follows the cosine re-planned over 8 steps."""
    lrs: dict[int, float] = {}

    def record(self, batch, batch_idx):
        lrs[self.global_step] = self.trainer.optimizers[0].param_groups[0]["lr"]

    monkeypatch.setattr(YOLOModule, "on_train_batch_start", record, raising=False)
    first = fit(tmp_path, "--trainer.max_epochs", "2")
    done = load(last_ckpt(first))
    lr, min_ratio = first.model.hparams.lr, first.model.hparams.min_lr_ratio  # debug: warmup 0.5 epochs = 1 step
    assert done["lr_schedulers"][0]["_last_lr"][0] == pytest.approx(lr * min_ratio)  # finished: at the minimum

    lrs.clear()
    extended = fit(tmp_path, "--trainer.max_epochs", "4", "--ckpt_path", str(last_ckpt(first)))
    assert sorted(lrs) == [4, 5, 6, 7]  # exactly M = 2 more epochs of 2 steps
    for step, value in lrs.items():
        assert value == pytest.approx(lr * warmup_cosine_factor(step, 8, 1, 4.0, min_ratio), rel=1e-9), step
    assert lrs[4] > 10 * lr * min_ratio  # back up the re-planned curve, not stuck at the old minimum
    final = load(last_ckpt(extended))
    assert (final["epoch"], final["global_step"]) == (3, 8)
    assert final["lr_schedulers"][0]["total_steps"] == 8


def test_save_last_gets_a_true_last_checkpoint():
    best = ModelCheckpoint(monitor="val/map_50", mode="max", save_last=True, filename="best")
    plain = ModelCheckpoint(monitor=None, save_last=True)  # saves every epoch: its last.ckpt is fine
    callbacks = [best, plain]
    added = ensure_last_checkpoint(callbacks)
    assert isinstance(added, LastCheckpoint) and callbacks[-1] is added and len(callbacks) == 3
    assert best.save_last is False and plain.save_last is True
    assert added.monitor is None and added.save_top_k == 1 and added._save_on_train_epoch_end is True
    assert ensure_last_checkpoint(callbacks) is added and len(callbacks) == 3  # idempotent
    assert ensure_last_checkpoint([plain]) is None


def test_rng_state_survives_weights_only_checkpoint():
    """The global random streams stored by ResumeRandomState.on_save_checkpoint come back bit-identical."""
    state = get_rng_state()
    expected = (torch.rand(3), __import__("numpy").random.rand(2).tolist(), __import__("random").random())
    buf = io.BytesIO()
    torch.save({"lightning_yolo_rng": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)["lightning_yolo_rng"]
    torch.manual_seed(123)
    set_rng_state(loaded)
    got = (torch.rand(3), __import__("numpy").random.rand(2).tolist(), __import__("random").random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
