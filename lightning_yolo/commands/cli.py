"""Command line: ``lightning-yolo fit | validate | test | predict`` (LightningCLI) plus ``export`` and ``anchors``.

Without ``--config``, ``fit | validate | test | predict`` start from ``configs/demo.yaml`` (the built-in synthetic
dataset, the tiny variant, CPU-friendly settings), so ``lightning-yolo fit`` alone trains the demo; any other
argument overrides it. With ``--config`` only the given files apply.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from ..callbacks.checkpoints import (
    LastCheckpoint,
    WeightsOnlyBest,
    ensure_last_checkpoint,
    install_atomic_checkpoint_io,
)
from ..callbacks.outputs import PredictionWriter, ResultsFiles
from ..inference.checkpoint import load_checkpoint_dict, moved_hparams, upgrade_module_hparams, upgrade_notice
from ..data.datamodule import YOLODataModule
from ..errors import InterruptNotice, SuggestingArgumentParser, check_config_files, run_reporting_errors
from ..module import YOLOModule
from ..reporting.report import format_metric
from ..runtime import ThreadPlan, auto_precision, local_processes, plan_threads
from . import preflight
from .quiet import quiet_lightning

__all__ = ["YOLOCLI", "build_cli", "demo_config_path", "main"]

#: Subcommands that take the demo config as their base when no ``--config`` is given.
DEMO_COMMANDS = ("fit", "validate", "test", "predict")

#: Subcommands that take the data settings of ``--ckpt_path``'s run as their defaults.
CKPT_DATA_COMMANDS = ("validate", "test", "predict")

#: DataModule settings that define what a checkpoint's model was trained on: validate / test / predict with
#: ``--ckpt_path`` start from the checkpoint's values (the user's ``--config`` files and flags override them).
CKPT_DATA_KEYS = (
    "path",
    "format",
    "img_size",
    "voc_class_names",
    "synthetic_num_train",
    "synthetic_num_val",
    "synthetic_image_size",
    "synthetic_seed",
)

#: Subcommands that are not a Trainer run: name -> module with ``<name>_main(argv)``.
EXTRA_COMMANDS = {
    "export": "lightning_yolo.commands.export",
    "anchors": "lightning_yolo.commands.anchors",
    "convert": "lightning_yolo.commands.convert",
    "ablate": "lightning_yolo.commands.ablate",
    "evolve": "lightning_yolo.commands.evolve",
}

#: Run folder of each subcommand when no ``--name`` is given, as ultralytics names them: ``fit`` ->
#: ``<trainer.default_root_dir>/train`` (then ``train2``, ``train3``, ...), ``validate`` -> ``val``, ...
RUN_NAMES = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}

#: The run folder chosen by the launching process; DDP processes started by Lightning (``LOCAL_RANK`` > 0) reuse it
#: instead of choosing their own (``train`` may already exist for them, made by process 0).
RUN_DIR_ENV = "LIGHTNING_YOLO_RUN_DIR"

#: Warnings about restoring the training callbacks' states (checkpoint folders, best scores), which validate, test and
#: predict never use: silenced there.
QUIET_EVAL_WARNINGS = (
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided",
    r"The dirpath has changed from ",
)

#: ``lightning-yolo --help``: every subcommand, before LightningCLI's own help (which knows only its four).
OVERVIEW = """lightning-yolo: YOLOv4 object detection with PyTorch Lightning

commands:
  fit        train (no --config: the demo, configs/demo.yaml); --ckpt_path resumes
  validate   COCO mAP and the per-class table on the val split (--ckpt_path alone: the checkpoint's data)
  test       the same on the test split
  predict    detections of images -> predictions.json (+ drawn images)
  export     a checkpoint -> ONNX / TorchScript / darknet files   (lightning-yolo export --help)
  anchors    k-means anchors for a dataset                        (lightning-yolo anchors --help)
  convert    darknet .cfg + .weights -> a checkpoint              (lightning-yolo convert --help)
  ablate     base vs one-switch variants, K seeds, paired 95% CIs (lightning-yolo ablate --help)
  evolve     genetic search of hyper-parameters                   (lightning-yolo evolve --help)

shipped configs, by name or path: --config demo | debug | custom_yolo_format | yolov4_coco
runs land in runs/detect/<name>/ (--name; default train, val, test, predict; an existing name gets 2, 3, ...
unless --exist_ok); fit --ckpt_path resumes in the checkpoint's run; validate / predict --ckpt_path write
next to that run
"""


class YOLOCLI(LightningCLI):
    """LightningCLI for :class:`YOLOModule` and :class:`YOLODataModule`.

    ``num_classes`` and ``class_names`` of the model come from the data (linked at instantiation), so they are
    never typed twice.

    With ``--ckpt_path``, LightningCLI replaces the ``model`` settings by the checkpoint's hyperparameters; here the
    ``--model.*`` flags typed on the command line still win (e.g. ``predict --model.inference.score_thresh 0.05``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        if argv is None:
            argv = sys.argv[1:]
        self._argv = [str(a) for a in argv] if isinstance(argv, (list, tuple)) else []
        super().__init__(*args, **kwargs)

    def _typed_model_keys(self) -> list[str]:
        """The ``--model.*`` keys typed, full dotted paths (``inference.score_thresh``: only that field wins over
        the checkpoint, not the whole group)."""
        keys = []
        for arg in self._argv:
            if arg.startswith("--model."):
                key = arg[len("--model.") :].split("=", 1)[0]
                if key and key not in keys:
                    keys.append(key)
        return keys

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand") if self.config is not None else None
        typed: dict[str, Any] = {}
        if sub and self.config.get(f"{sub}.model") is not None:
            for key in self._typed_model_keys():
                if f"{sub}.model.{key}" in self.config:
                    typed[key] = self.config[f"{sub}.model.{key}"]
        ckpt_path = self.config.get(f"{sub}.ckpt_path") if sub else None
        upgraded_on_load = False
        if ckpt_path and str(ckpt_path) not in ("last", "best", "hpc", "registry"):
            # load_checkpoint_dict: errors naming the file, not torch's EOFError / zip error
            ckpt = load_checkpoint_dict(ckpt_path, mmap=True)
            if sub == "fit" and "state_dict" in ckpt and "optimizer_states" not in ckpt:
                raise ValueError(
                    f"{ckpt_path}: holds the weights only (as best.ckpt does), not the training state to resume; "
                    f"resume from the run's last.ckpt, or train from these weights with --model.init_from {ckpt_path}"
                )
            hparams = ckpt.get("hyper_parameters") or {}
            upgraded, moved = upgrade_module_hparams(dict(hparams))
            if moved:  # the policy of YOLOModule.load_from_checkpoint too: upgrade on load, say so in one line
                from pytorch_lightning.utilities import rank_zero_info

                rank_zero_info(upgrade_notice(ckpt_path, moved))
                upgraded.pop("_instantiator", None)
                self.config = self.parser.parse_object({sub: {"model": upgraded}}, self.config)
                upgraded_on_load = True  # Lightning's own reading (below) would meet the old keys
        try:
            if not upgraded_on_load:
                super()._parse_ckpt_path()
        except (RuntimeError, EOFError, OSError, AttributeError) as err:
            raise ValueError(
                f"{ckpt_path}: cannot be read as a checkpoint of this package ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})"
            ) from err
        for key, value in typed.items():
            self.config[f"{sub}.model.{key}"] = value

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--torch_threads",
            type=Union[int, Literal["auto"], None],
            default="auto",
            help="torch intra-op threads of each training process. auto: the CPUs this process may use "
            "(affinity mask, cgroup quota) divided between the DDP processes on this host (OMP_NUM_THREADS, when "
            "set, wins); an int: that many, at most the process's share; null: torch's own default. The choice is printed at start",
        )
        # which subcommand's parser this is: build_cli names each one "lightning-yolo <subcommand>" through
        # LightningCLI's per-subcommand parser_kwargs (LightningCLI does not pass the subcommand here)
        sub = _subcommand_of(parser)
        parser.add_argument(
            "--name",
            type=Optional[str],
            default=None,
            help="run folder under trainer.default_root_dir (the shipped configs: runs/detect), holding the logs, "
            f"checkpoints/, results and pictures; default: {RUN_NAMES.get(sub or '', 'the subcommand')!r}. A name "
            "that exists gets a number (train2, train3, ...) unless --exist_ok. fit --ckpt_path without --name "
            "resumes in the checkpoint's run folder",
        )
        parser.add_argument(
            "--exist_ok",
            type=bool,
            default=False,
            help="write into the --name folder even if it exists (no train2, train3, ...)",
        )
        if sub != "predict":
            parser.add_argument(
                "--plots",
                type=bool,
                default=True,
                help="write the pictures of a run (labels overview, training / validation batches, confusion matrix, "
                "PR curves) next to results.csv / results.png in the run folder (ResultsFiles); false: only the "
                "results files",
            )
        if sub == "predict":
            # predict: the classes are the checkpoint's (LightningCLI reads the model's hyperparameters from
            # --ckpt_path), whatever dataset data.path names; --writer.* configures the results writer
            parser.add_lightning_class_args(PredictionWriter, "writer")
            return
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        self._auto_precision()
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None and config.get("trainer") is not None:  # Lightning's errors name neither key nor fix
            preflight.check_max_time(config["trainer"].get("max_time"))
            preflight.check_accelerator(config["trainer"].get("accelerator"))
        if config is not None and "verbose" in config and not any(a.split("=")[0] == "--verbose" for a in self._argv):
            # validate / test: the metrics are printed once, by _print_metrics (the per-class table and the other
            # COCO metrics), not also as Lightning's table of 16-digit floats; --verbose true brings that back
            config["verbose"] = False
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

    def _auto_precision(self) -> None:
        """``trainer.precision: null`` (the own-data config): bf16-mixed on a CPU with bf16 units, said once."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        trainer = config.get("trainer") if config is not None else None
        if trainer is None or trainer.get("precision") is not None:
            return
        choice = auto_precision(trainer.get("accelerator"))
        if choice is None:
            return
        trainer["precision"] = choice
        if os.environ.get("LOCAL_RANK", "0") == "0" and int(os.environ.get("NODE_RANK", "0") or 0) == 0:
            print(
                f"[lightning-yolo {self.subcommand or 'fit'}] precision: {choice} (auto: the CPU has bf16 units; "
                "--trainer.precision 32-true for fp32)",
                flush=True,
            )

    def after_instantiate_classes(self) -> None:
        self._check_checkpoint_classes()
        sub = self.config.get(self.subcommand) if self.subcommand else None
        ckpt_path = sub.get("ckpt_path") if sub is not None else None
        if ckpt_path and os.path.isfile(ckpt_path):  # resume / evaluate another network: one line, not 300
            preflight.check_checkpoint_model(ckpt_path, load_checkpoint_dict(ckpt_path, mmap=True), self.model)
        if sub is not None and sub.get("trainer") is not None:
            preflight.check_sync_batchnorm(self.trainer, bool(sub["trainer"].get("sync_batchnorm")))

    def _check_checkpoint_classes(self) -> None:
        """validate / test with a checkpoint of other classes than the dataset's: one clear error, not a 40-line
        state-dict size mismatch (predict uses the checkpoint's classes whatever the dataset)."""
        if self.subcommand not in ("validate", "test"):
            return
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not ckpt_path or not os.path.isfile(ckpt_path):
            return
        ckpt = load_checkpoint_dict(ckpt_path, mmap=True)  # errors name the file; hyperparameters only
        hp = ckpt.get("hyper_parameters") or {}
        names = hp.get("class_names") or [str(i) for i in range(int(hp.get("num_classes", 0)))]
        data = self.datamodule
        if names and list(data.class_names) != list(names):
            where = data.path if data.path is not None else "the synthetic dataset"
            raise ValueError(
                f"{ckpt_path}: the model was trained on {len(names)} classes {list(names)}, but {where} has "
                f"{data.num_classes} classes {data.class_names}; give the dataset it was trained on (--data.path) "
                "or fine-tune on this one (fit --model.init_from)"
            )

    def run_dir(self) -> Path | None:
        """The run folder of this command (see :data:`RUN_NAMES`), or ``None`` when a ``trainer.logger`` is
        configured (its own ``save_dir`` / ``name`` / ``version`` place the run)."""
        sub = self.subcommand or "fit"  # no subcommand: build_cli(run=False), a fit's settings
        if sub not in RUN_NAMES:
            return None
        config = self.config[self.subcommand] if self.subcommand else self.config
        name = config.get("name")
        if config.trainer.get("logger") not in (None, True, False):
            if name:
                raise ValueError(
                    f"--name {name}: names the run folder of the default logger, but trainer.logger is set; name "
                    "the run with that logger's save_dir / name / version"
                )
            return None
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
            return Path(inherited)  # a DDP process started by Lightning: the launching process's choice
        ckpt_path = config.get("ckpt_path")
        if sub == "fit" and not name and ckpt_path and os.path.isfile(str(ckpt_path)):
            resumed = checkpoint_run_dir(str(ckpt_path))
            if resumed is not None:
                return resumed  # resume continues in the checkpoint's run (its results.csv, checkpoints/)
        root = Path(os.path.expanduser(str(config.trainer.get("default_root_dir") or os.getcwd()))).resolve()
        # processes started by an outside launcher (torchrun, srun) choose at the same time: no numbering there
        exist_ok = bool(config.get("exist_ok")) or _launched_externally()
        return next_run_dir(root, name or RUN_NAMES[sub], exist_ok=exist_ok)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        run_dir = self.run_dir()
        if run_dir is not None:
            # the run folder is the logger's folder (Lightning's <save_dir>/<name>/<version> with name = the run's
            # name and version ""): checkpoints/ and the results land inside it, as with lightning_logs/version_N
            kwargs.setdefault("default_root_dir", str(run_dir))
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.trainer.get("logger") in (None, True):
                # predict logs nothing: no TensorBoard events or hparams.yaml next to predictions.json
                kwargs.setdefault("logger", False if self.subcommand == "predict" else default_logger(run_dir))
            os.environ[RUN_DIR_ENV] = str(run_dir)
        self._run_dir = run_dir
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        kwargs.update(timm_sync_batchnorm(config.get("trainer") or {}))  # sync_batchnorm: true keeps timm's activations
        trainer = super().instantiate_trainer(**kwargs)
        if run_dir is not None:
            for cb in trainer.callbacks:
                if isinstance(cb, PredictionWriter) and cb.output_dir is None:
                    cb.output_dir = run_dir  # predictions.json (+ images/) in runs/detect/predict
        config = self.config[self.subcommand] if self.subcommand else self.config
        apply_threads(config.get("torch_threads", "auto"), trainer, self.subcommand or "fit")
        install_atomic_checkpoint_io(trainer)  # a crash mid-write never destroys the previous last.ckpt
        _use_detection_progress_bar(trainer)  # box, obj, cls, loss, instances, size in 80 columns
        trainer.callbacks.append(InterruptNotice(getattr(self, "_argv", None)))  # Ctrl-C / SIGTERM: how to resume
        if self.subcommand in (None, "fit"):
            ensure_last_checkpoint(trainer.callbacks)  # last.ckpt = the last epoch, for fit --ckpt_path
            trainer.callbacks.append(WeightsOnlyBest())  # best.ckpt: the (averaged) weights alone, 1/4 of the size
            _plan_by_time(trainer)  # --trainer.max_time: epochs, schedule and close-mosaic planned over it
        if self.subcommand in ("fit", "validate", "test") and not any(
            isinstance(cb, ResultsFiles) for cb in trainer.callbacks
        ):
            # results.csv / results.png and, unless --plots false, the pictures of the run: by default, as
            # detection tools do
            plots = self.config[self.subcommand].get("plots", True)
            trainer.callbacks.append(ResultsFiles(pictures=bool(plots)))
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        quiet = list(QUIET_EVAL_WARNINGS) if subcommand in CKPT_DATA_COMMANDS else []
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand in self.config else None
        run_dir = getattr(self, "_run_dir", None)
        if subcommand == "fit" and ckpt_path and run_dir is not None and os.path.isfile(str(ckpt_path)):
            if checkpoint_run_dir(str(ckpt_path)) == run_dir:  # resumed in its own run: its checkpoints are expected
                quiet.append(r"Checkpoint directory .* exists and is not empty")
        with warnings.catch_warnings():
            for message in quiet:
                warnings.filterwarnings("ignore", message=message)
            super()._run_subcommand(subcommand)

    def before_fit(self) -> None:
        # what the scan found (format, images, boxes, backgrounds, skipped files by reason, classes), before training
        if self.trainer.is_global_zero and hasattr(self.datamodule, "summary"):
            print(f"[lightning-yolo fit] {self.datamodule.summary()}")

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
        report = getattr(self.model, "eval_report", None)
        if report is not None:
            print(f"[lightning-yolo {stage}] {report.stage} results\n{report.format()}")
        if report is not None:  # mAP50 and mAP50-95 are the table's "all" row: not printed twice
            metrics = {k: v for k, v in metrics.items() if not k.endswith(("/map", "/map_50"))}
        if metrics:
            # COCO's -1 ("does not apply", e.g. no small objects) prints as "-"
            shown = ", ".join(f"{k}={format_metric(v)}" for k, v in sorted(metrics.items()))
            print(f"[lightning-yolo {stage}] {shown}")
        ckpt = getattr(self.trainer.checkpoint_callback, "best_model_path", "")
        if stage == "fit" and ckpt:
            print(f"[lightning-yolo fit] best checkpoint: {shown_path(ckpt)}")
        last = next((cb for cb in self.trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
        if stage == "fit" and last is not None and last.best_model_path:
            print(f"[lightning-yolo fit] last checkpoint: {shown_path(last.best_model_path)}")
        # not trainer.log_dir: it broadcasts, and only process 0 gets here under DDP
        logger = self.trainer.logger
        folder = getattr(self, "_run_dir", None) or getattr(logger, "log_dir", None) or self.trainer.default_root_dir
        if folder:
            print(f"[lightning-yolo {stage}] results saved to {shown_path(folder)}")


def shown_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it lies inside it (``runs/detect/train``), else as is."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def next_run_dir(root: str | os.PathLike, name: str, exist_ok: bool = False) -> Path:
    """``root/name``, or with ``name`` taken the first free ``root/name2``, ``root/name3``, ... (as ultralytics numbers
    its runs); ``exist_ok``: ``root/name`` whether it exists or not."""
    path = Path(root) / name
    if exist_ok or not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.name}{n}").exists():
        n += 1
    return path.with_name(f"{path.name}{n}")


def checkpoint_run_dir(ckpt_path: str | os.PathLike) -> Path | None:
    """The run folder holding a checkpoint (``<run>/checkpoints/x.ckpt`` -> ``<run>``, also Lightning's
    ``lightning_logs/version_N``), absolute; ``None`` for a checkpoint outside a ``checkpoints`` folder."""
    path = Path(ckpt_path).resolve()
    if len(path.parents) > 2 and path.parent.name == "checkpoints":
        return path.parents[1]
    return None


def default_logger(run_dir: Path) -> Any:
    """Lightning's default logger (TensorBoard when installed, else CSV) writing into ``run_dir`` itself."""
    import importlib.util

    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    installed = any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))
    cls = TensorBoardLogger if installed else CSVLogger
    # <save_dir>/<name>/<version> with version "": the run folder itself, and no "v_num" in the progress bar
    return cls(save_dir=str(run_dir.parent), name=run_dir.name, version="")


def timm_sync_batchnorm(trainer_config: Any) -> dict[str, Any]:
    """``{"plugins": [..., TimmSyncBatchNorm()]}`` when the Trainer settings ask for ``sync_batchnorm`` and name no
    ``LayerSync`` plugin of their own, else ``{}``.

    Lightning's own plugin (``TorchSyncBatchNorm``) turns timm's fused norm + activation layers into plain
    ``SyncBatchNorm`` and drops their activations (:mod:`lightning_yolo.callbacks.plugins`); Python users pass
    ``plugins=[TimmSyncBatchNorm()]`` to the Trainer themselves (README, "Multi-GPU").
    """
    from pytorch_lightning.plugins import LayerSync

    from ..callbacks.plugins import TimmSyncBatchNorm

    if not trainer_config.get("sync_batchnorm"):
        return {}
    plugins = trainer_config.get("plugins")
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if any(isinstance(p, LayerSync) for p in plugins):
        return {}
    return {"plugins": [*plugins, TimmSyncBatchNorm()]}


def apply_threads(requested: int | str | None, trainer: Any, subcommand: str) -> ThreadPlan | None:
    """Set torch's intra-op threads for this process (``--torch_threads``) and print the choice once.

    ``auto`` divides the CPUs this process may use between the training processes the Trainer starts on this host
    (:func:`lightning_yolo.runtime.plan_threads`); a user's ``OMP_NUM_THREADS`` counts as an explicit choice.
    ``OMP_NUM_THREADS`` is exported with the result, so that the DDP processes Lightning starts begin with it and
    Lightning's launcher keeps it (it only sets threads where the variable is unset).
    """
    if requested is None:
        return None
    processes = local_processes(trainer.num_devices if trainer.world_size > 1 else 1)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if requested == "auto" and omp.isdigit() and int(omp) > 0:
        requested = int(omp)
    plan = plan_threads(requested, processes=processes)
    torch.set_num_threads(plan.torch_threads)
    os.environ["OMP_NUM_THREADS"] = str(plan.torch_threads)
    if os.environ.get("LOCAL_RANK", "0") == "0" and int(os.environ.get("NODE_RANK", "0") or 0) == 0:
        print(f"[lightning-yolo {subcommand}] {plan.describe()}", flush=True)
    return plan


def _launched_externally() -> bool:
    """Several processes started by torchrun / srun (each parses the command line at the same time)."""
    env = os.environ
    if env.get("LOCAL_RANK") is not None and env.get(RUN_DIR_ENV) is None:
        return int(env.get("WORLD_SIZE", "1") or 1) > 1
    return int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def _use_detection_progress_bar(trainer: Any) -> None:
    """Replace Lightning's default ``TQDMProgressBar`` (every logged metric, twice: ~390 characters) by
    :class:`~lightning_yolo.callbacks.progress.DetectionProgressBar`; a progress bar of the user's own stays."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    from ..callbacks.progress import DetectionProgressBar

    for i, cb in enumerate(trainer.callbacks):
        if type(cb) is TQDMProgressBar:
            trainer.callbacks[i] = DetectionProgressBar(
                refresh_rate=cb.refresh_rate, process_position=cb.process_position
            )


def _plan_by_time(trainer: Any) -> None:
    """With ``--trainer.max_time``, plan epochs, schedule and close-mosaic over it (:class:`TimeBudget`)."""
    from ..callbacks.recipe import TimeBudget, max_time_seconds

    if max_time_seconds(trainer) is None:
        return
    if not any(isinstance(cb, TimeBudget) for cb in trainer.callbacks):
        trainer.callbacks.insert(0, TimeBudget())


#: The command's name (the subcommand parsers are named ``lightning-yolo fit`` and so on).
PROG = "lightning-yolo"


def _subcommand_of(parser: Any) -> str | None:
    """The subcommand of a parser built by :func:`build_cli` (``None`` for any other parser)."""
    prog = str(getattr(parser, "prog", "") or "")
    first, _, sub = prog.partition(" ")
    return sub if first == PROG and sub in DEMO_COMMANDS else None


def build_cli(args: list[str] | None = None, run: bool = True, parser_kwargs: dict | None = None) -> YOLOCLI:
    """Create the CLI (``run=False`` instantiates classes without running a subcommand; used in tests)."""
    kwargs: dict[str, Any] = {sub: {"prog": f"{PROG} {sub}"} for sub in DEMO_COMMANDS}
    for key, value in (parser_kwargs or {}).items():
        kwargs[key] = {**kwargs[key], **value} if key in DEMO_COMMANDS else value
    return YOLOCLI(
        YOLOModule,
        YOLODataModule,
        parser_kwargs=kwargs,
        save_config_kwargs={"overwrite": True},
        parser_class=SuggestingArgumentParser,
        args=args,
        run=run,
        seed_everything_default=0,
        # one documented way to set the optimizer: --model.optimizer_name / --model.lr. LightningCLI's top-level
        # --optimizer / --lr_scheduler would replace configure_optimizers and silently drop warmup, cosine and the
        # no-decay groups.
        auto_configure_optimizers=False,
    )


def demo_config_path() -> str:
    """Path of ``configs/demo.yaml`` (installed as the data package ``lightning_yolo.configs``)."""
    return str(resources.files("lightning_yolo.configs").joinpath("demo.yaml"))


def _is_config_flag(arg: str) -> bool:
    return arg in ("--config", "-c") or arg.startswith(("--config=", "-c="))


def with_demo_config(argv: list[str]) -> list[str]:
    """Insert ``--config demo.yaml`` after a LightningCLI subcommand that was given no ``--config`` (or ``-c``)."""
    if not argv or argv[0] not in DEMO_COMMANDS:
        return argv
    if any(_is_config_flag(a) or a in ("-h", "--help") for a in argv[1:]):
        return argv
    return [argv[0], "--config", demo_config_path(), *argv[1:]]


def _flag_value(argv: list[str], flag: str) -> str | None:
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value


def checkpoint_data_args(ckpt_path: str, subcommand: str | None = None) -> list[str]:
    """``--data.*`` flags holding the data settings saved in a checkpoint (:data:`CKPT_DATA_KEYS`), and
    ``--trainer.default_root_dir`` = the root of the checkpoint's run when it lies in a Lightning run folder.

    For ``predict`` the saved dataset path is only a default: predict needs the classes, which the checkpoint
    holds, so a training dataset that no longer exists is left out (``--data.path=null``, with a one-line notice)
    instead of ending the run with "dataset path does not exist"."""
    ckpt = load_checkpoint_dict(ckpt_path, mmap=True)  # errors name the file (empty, truncated, not a checkpoint)
    saved = dict(ckpt.get("datamodule_hyper_parameters") or {})
    gone = saved.get("path")
    if subcommand == "predict" and gone is not None and not Path(os.path.expanduser(str(gone))).exists():
        print(f"[lightning-yolo predict] {ckpt_path}: its training data {gone} no longer exists; the classes come "
              "from the checkpoint")  # fmt: skip
        saved["path"] = None
    out = []
    for key in CKPT_DATA_KEYS:
        if key not in saved:
            continue
        value = saved[key]
        text = "null" if value is None else json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
        out.append(f"--data.{key}={text}")
    # runs land next to the checkpoint's run: <root>/train/checkpoints/x.ckpt -> <root> (validate writes <root>/val,
    # predict <root>/predict), not the config's runs/detect; Lightning's <root>/lightning_logs/version_N -> <root>
    run = checkpoint_run_dir(ckpt_path)
    if run is not None:
        old_layout = run.name.startswith("version_") and run.parent.name == "lightning_logs"
        out.append(f"--trainer.default_root_dir={run.parents[1] if old_layout else run.parent}")
    return out


def with_checkpoint_data(argv: list[str]) -> list[str]:
    """``validate | test | predict --ckpt_path X``: the data settings of X's run (dataset path, format, image size,
    synthetic set) become the defaults. They go right after the subcommand and the demo config, so ``--config``
    files and flags that the user typed override them."""
    if not argv or argv[0] not in CKPT_DATA_COMMANDS or any(a in ("-h", "--help") for a in argv[1:]):
        return argv
    ckpt_path = _flag_value(argv[1:], "--ckpt_path")
    if not ckpt_path or not os.path.isfile(ckpt_path):
        return argv
    at = 3 if argv[1:3] == ["--config", demo_config_path()] else 1
    return [*argv[:at], *checkpoint_data_args(ckpt_path, argv[0]), *argv[at:]]


#: ``--model.*`` keys that have no effect in a subcommand, and what to use there instead: typing one is an error.
NO_EFFECT_KEYS: dict[str, dict[str, str]] = {
    "predict": {
        "inference.val_score_thresh": "the validation / test threshold; predict uses --model.inference.score_thresh",
        "inference.val_max_det": "the validation / test cap; predict uses --model.inference.max_det",
    },
    **{
        sub: {
            "inference.score_thresh": f"the predict threshold; {sub} uses --model.inference.val_score_thresh",
            "inference.max_det": f"the predict cap; {sub} uses --model.inference.val_max_det",
        }
        for sub in ("validate", "test")
    },
}


def _config_paths(argv: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith(("--config=", "-c=")):
            paths.append(arg.split("=", 1)[1])
    return [p for p in paths if os.path.isfile(p)]


def _moved_message(old: str, new: str) -> str:
    hint = f" (validation / test; the predict one is --model.{new.replace('val_', '')})" if ".val_" in new else ""
    return f"{old} moved: it is model.{new} now{hint}"


def check_model_keys(argv: list[str]) -> None:
    """Raise a ``ValueError`` (one line) for a model key that moved (:func:`~lightning_yolo.inference.checkpoint.
    moved_hparams`), typed or in a ``--config`` file, naming its new place, and for a typed key that has no effect
    in the subcommand (:data:`NO_EFFECT_KEYS`)."""
    moved = moved_hparams()
    sub = argv[0] if argv else ""
    for arg in argv[1:]:
        if arg.startswith("--model."):
            key = arg[len("--model.") :].split("=", 1)[0]
            if key in moved:
                raise ValueError(_moved_message(f"--model.{key}", moved[key]).replace(" model.", " --model.", 1))
            why = NO_EFFECT_KEYS.get(sub, {}).get(key)
            if why:
                raise ValueError(f"--model.{key} has no effect in {sub}: it is {why}")
    import yaml

    for path in _config_paths(argv[1:]):
        with open(path, encoding="utf-8-sig") as f:
            config = yaml.safe_load(f)
        model = config.get("model") if isinstance(config, dict) else None
        if isinstance(model, dict) and isinstance(model.get("init_args"), dict):
            model = model["init_args"]
        for key in model if isinstance(model, dict) else ():
            if key in moved:
                raise ValueError(f"{path}: {_moved_message(f'model.{key}', moved[key])}")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-yolo`` console script and ``python -m lightning_yolo``.

    User errors (data, config, checkpoint, paths, disk) end with one ``error: ...`` line on stderr and exit status 2
    (``SystemExit``, whose ``__cause__`` is the original exception); ``--traceback`` or ``LIGHTNING_YOLO_TRACEBACK=1``
    shows the full trace. See :mod:`lightning_yolo.errors`.
    """
    run_reporting_errors(_run, list(sys.argv[1:] if args is None else args))


def shipped_config(name: str) -> str | None:
    """Path of a config shipped with the package (``configs/<name>.yaml``, installed as ``lightning_yolo.configs``),
    or ``None``."""
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if not stem or "/" in stem or "\\" in stem:
        return None
    path = resources.files("lightning_yolo.configs").joinpath(f"{stem}.yaml")
    return str(path) if path.is_file() else None


def with_shipped_configs(argv: list[str]) -> list[str]:
    """``--config NAME`` / ``-c NAME`` naming a shipped config (``custom_yolo_format``) instead of an existing file
    -> its installed path, so the configs work from a wheel install as from a checkout."""
    out = list(argv)
    for i, arg in enumerate(out):
        value, prefix = None, ""
        if arg in ("--config", "-c") and i + 1 < len(out):
            value, index = out[i + 1], i + 1
        elif arg.startswith(("--config=", "-c=")):
            prefix, value = arg.split("=", 1)[0] + "=", arg.split("=", 1)[1]
            index = i
        if value is None or os.path.exists(value):
            continue
        path = shipped_config(value)
        if path is not None:
            out[index] = prefix + path
            continue
        packaged = shipped_config(Path(value).name) if value.endswith(".yaml") else None
        if packaged is not None:  # configs/custom_yolo_format.yaml outside a checkout of the repository
            stem = Path(value).stem
            raise FileNotFoundError(
                errno.ENOENT,
                f"--config {value}: no such file here ({os.getcwd()}); the package ships a config of that name: "
                f"--config {stem} works from any folder",
            )
    return out


def _run(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(OVERVIEW)
        if not argv:
            return
    if argv and argv[0] in EXTRA_COMMANDS:
        import importlib

        # the flag style of the other subcommands (--img_size; --img-size works too, see commands.args.parse_args)
        command = importlib.import_module(EXTRA_COMMANDS[argv[0]])
        getattr(command, f"{argv[0]}_main")(argv[1:])
        return
    with warnings.catch_warnings():
        # LightningCLI warns when it gets args= while sys.argv holds arguments too; here they are the same arguments
        # (with the demo config inserted). sys.argv itself must stay: DDP launches the other ranks from it.
        warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
        argv = with_shipped_configs(argv)
        check_config_files(argv)  # YAML errors name the file and line
        check_model_keys(argv)  # moved keys name their new place; keys without effect in the subcommand fail
        if argv[0] in DEMO_COMMANDS and any(a in ("-h", "--help") for a in argv[1:]) and not any(
            _is_config_flag(a) for a in argv[1:]
        ):
            # `fit --help` shows the defaults that run without --config: the demo config's (only for the help: as
            # a parser default the demo would merge under every --config file)
            build_cli(argv, parser_kwargs={argv[0]: {"default_config_files": [demo_config_path()]}})
            return
        with quiet_lightning():  # no litlogger tip, no "Total Flops 0", ... (commands/quiet.py)
            build_cli(with_checkpoint_data(with_demo_config(argv)))


if __name__ == "__main__":  # pragma: no cover
    main()
