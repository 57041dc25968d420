"""Command line: ``lightning-yolo fit | validate | test | predict`` (LightningCLI) plus ``export`` and ``anchors``.

With no arguments beyond the subcommand, ``lightning-yolo fit`` trains the demo: the built-in synthetic
dataset, the tiny variant, CPU-friendly settings (the defaults of the classes and of :data:`TRAINER_DEFAULTS`,
mirrored in ``configs/demo.yaml``).
"""

from __future__ import annotations

import sys
from typing import Any

from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .data.datamodule import YOLODataModule
from .module import YOLOModule

__all__ = ["YOLOCLI", "TRAINER_DEFAULTS", "main"]

#: Trainer settings of the no-argument demo; configs/demo.yaml repeats them (a test keeps both equal).
TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 30,
    "accelerator": "auto",
    "devices": 1,
    "precision": "32-true",
    "log_every_n_steps": 10,
    "check_val_every_n_epoch": 5,
    "callbacks": [
        {
            "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
            "init_args": {"monitor": "val/map_50", "mode": "max", "save_last": True, "filename": "best"},
        },
        {"class_path": "pytorch_lightning.callbacks.LearningRateMonitor", "init_args": {"logging_interval": "epoch"}},
    ],
}

EXTRA_COMMANDS = ("export", "anchors")


class YOLOCLI(LightningCLI):
    """LightningCLI for :class:`YOLOModule` and :class:`YOLODataModule`.

    ``num_classes`` and ``class_names`` of the model come from the data (linked at instantiation), so they are
    never typed twice.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def after_fit(self) -> None:
        self._print_metrics("fit")

    def after_validate(self) -> None:
        self._print_metrics("validate")

    def after_test(self) -> None:
        self._print_metrics("test")

    def _print_metrics(self, stage: str) -> None:
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if "/map" in k or "/mar" in k}
        if metrics:
            shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
            print(f"[lightning-yolo {stage}] {shown}")
        ckpt = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        if stage == "fit" and ckpt:
            print(f"[lightning-yolo fit] best checkpoint: {ckpt}")


def build_cli(args: list[str] | None = None, run: bool = True) -> YOLOCLI:
    """Create the CLI (``run=False`` instantiates classes without running a subcommand; used in tests)."""
    return YOLOCLI(
        YOLOModule,
        YOLODataModule,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        seed_everything_default=0,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-yolo`` console script and ``python -m lightning_yolo``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        from . import tools

        getattr(tools, f"{argv[0]}_main")(argv[1:])
        return
    build_cli(argv)


if __name__ == "__main__":  # pragma: no cover
    main()
