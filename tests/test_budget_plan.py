"""A time budget that plans far fewer epochs than configured scales the recipe's epoch counts with the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_yolo.callbacks.recipe import TimeBudget
from lightning_yolo.commands.cli import build_cli

DEBUG = str(Path(__file__).resolve().parents[1] / "configs" / "debug.yaml")


class _FourEpochBudget(TimeBudget):
    """Plans once, inside epoch 0, from a fixed epoch cost: 1000 s at 250 s per epoch -> 4 epochs (no clock)."""

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.current_epoch == 0 and not self.plans:
            self._replan(trainer, pl_module, 250.0)

    def on_validation_end(self, trainer, pl_module):
        pass

    def on_train_epoch_end(self, trainer, pl_module):
        pass


@pytest.mark.usefixtures("cli_env")
def test_short_budget_scales_warmup_and_close_mosaic_and_says_so(tmp_path):
    # the case: a budget for 4 epochs against warmup_epochs 3 (here of a 40-epoch config, close-mosaic 10)
    budget = _FourEpochBudget(seconds=1000.0, margin=0.0)
    cli = build_cli(
        ["--config", DEBUG, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "40",
         "--model.warmup_epochs", "3", "--data.augment.close_mosaic_epochs", "10",
         "--trainer.check_val_every_n_epoch", "4"],
        run=False,
    )  # fmt: skip
    cli.trainer.callbacks.insert(0, budget)
    lrs: list[float] = []

    class RecordLR(__import__("pytorch_lightning").Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    cli.trainer.callbacks.append(RecordLR())
    cli.trainer.fit(cli.model, cli.datamodule)

    assert cli.trainer.max_epochs == 4 and cli.trainer.global_step == 16  # debug config: 4 steps per epoch
    sched = cli.trainer.lr_scheduler_configs[0].scheduler
    assert sched.total_steps == 16
    assert sched.warmup_steps == 16 // 3  # a third of the run, not the configured 3 epochs (12 of 16 steps)
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert 4 <= peak <= 6, lrs  # the learning rate peaks after a third of the run, then the cosine takes 2/3 of it
    assert cli.datamodule.augment.close_mosaic_epochs == 1  # 10 would close Mosaic for the whole run: a quarter
    assert "warmup 1.2 epochs, a third of the run (configured 3)" in budget.plan_line, budget.plan_line
    assert "close-mosaic the last 1 of 4 epochs, a quarter (configured 10)" in budget.plan_line, budget.plan_line
