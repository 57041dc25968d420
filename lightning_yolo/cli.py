"""Command line: ``lightning-yolo fit | validate | test | predict`` (LightningCLI) plus ``export`` and ``anchors``.

Without ``--config``, ``fit | validate | test | predict`` start from ``configs/demo.yaml`` (the built-in synthetic
dataset, the tiny variant, CPU-friendly settings), so ``lightning-yolo fit`` alone trains the demo; any other
argument overrides it. With ``--config`` only the given files apply.
"""

from __future__ import annotations

import sys
import warnings
from importlib import resources
from typing import Any, Optional

import torch
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .callbacks import LastCheckpoint, PredictionWriter, ensure_last_checkpoint
from .data.datamodule import YOLODataModule
from .module import YOLOModule

__all__ = ["YOLOCLI", "build_cli", "demo_config_path", "main"]

#: Subcommands that take the demo config as their base when no ``--config`` is given.
DEMO_COMMANDS = ("fit", "validate", "test", "predict")

EXTRA_COMMANDS = ("export", "anchors")


class YOLOCLI(LightningCLI):
    """LightningCLI for :class:`YOLOModule` and :class:`YOLODataModule`.

    ``num_classes`` and ``class_names`` of the model come from the data (linked at instantiation), so they are
    never typed twice.
    """

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        # remember which subcommand's parser add_arguments_to_parser is building (LightningCLI does not pass it)
        self._building_subcommand = subcommand
        try:
            return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        finally:
            self._building_subcommand = None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--torch_threads",
            type=Optional[int],
            default=None,
            help="torch intra-op threads of the main process (None: torch's default). On small CPUs one thread "
            "plus one DataLoader worker avoids oversubscribing the cores: the demo's tiny model trains ~5x faster "
            "with 1 thread than with 2 when anything else runs.",
        )
        if getattr(self, "_building_subcommand", None) == "predict":
            # predict: the classes are the checkpoint's (LightningCLI reads the model's hyperparameters from
            # --ckpt_path), whatever dataset data.path names; --writer.* configures the results writer
            parser.add_lightning_class_args(PredictionWriter, "writer")
            return
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None and config.get("torch_threads"):
            torch.set_num_threads(int(config["torch_threads"]))
        # With --ckpt_path the weights come from the checkpoint (resume, extend, validate, test, predict): do not
        # re-run fine-tuning initialisation or read backbone weights, whose files may no longer exist.
        sub = self.config.get(self.subcommand) if self.subcommand else None
        if not sub or not sub.get("ckpt_path") or sub.get("model") is None:
            return
        model = sub["model"]
        if model.get("init_from"):
            model["init_from"] = None
        overrides = model.get("model_overrides")
        if isinstance(overrides, dict) and overrides.get("pretrained_backbone"):
            model["model_overrides"] = {k: v for k, v in overrides.items() if k != "pretrained_backbone"}

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand in (None, "fit"):
            ensure_last_checkpoint(trainer.callbacks)  # last.ckpt = the last epoch, for fit --ckpt_path
        return trainer

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
            shown = ", ".join(f"{k}={v:.6f}" for k, v in sorted(metrics.items()))
            print(f"[lightning-yolo {stage}] {shown}")
        ckpt = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        if stage == "fit" and ckpt:
            print(f"[lightning-yolo fit] best checkpoint: {ckpt}")
        last = next((cb for cb in self.trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
        if stage == "fit" and last is not None and last.best_model_path:
            print(f"[lightning-yolo fit] last checkpoint: {last.best_model_path}")


def build_cli(args: list[str] | None = None, run: bool = True) -> YOLOCLI:
    """Create the CLI (``run=False`` instantiates classes without running a subcommand; used in tests)."""
    return YOLOCLI(
        YOLOModule,
        YOLODataModule,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        seed_everything_default=0,
    )


def demo_config_path() -> str:
    """Path of ``configs/demo.yaml`` (installed as the data package ``lightning_yolo.configs``)."""
    return str(resources.files("lightning_yolo.configs").joinpath("demo.yaml"))


def with_demo_config(argv: list[str]) -> list[str]:
    """Insert ``--config demo.yaml`` after a LightningCLI subcommand that was given no ``--config``."""
    if not argv or argv[0] not in DEMO_COMMANDS:
        return argv
    if any(a == "--config" or a.startswith("--config=") or a in ("-h", "--help") for a in argv[1:]):
        return argv
    return [argv[0], "--config", demo_config_path(), *argv[1:]]


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-yolo`` console script and ``python -m lightning_yolo``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        from . import tools

        getattr(tools, f"{argv[0]}_main")(argv[1:])
        return
    with warnings.catch_warnings():
        # LightningCLI warns when it gets args= while sys.argv holds arguments too; here they are the same arguments
        # (with the demo config inserted). sys.argv itself must stay: DDP launches the other ranks from it.
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
        build_cli(with_demo_config(argv))


if __name__ == "__main__":  # pragma: no cover
    main()
