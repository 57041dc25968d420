"""``lightning-yolo ablate``: the base config and each variant, K seeds each, under one budget; a table with
95% confidence intervals of the difference to the base, paired by seed (the library: :mod:`lightning_yolo.study`).

::

    lightning-yolo ablate --config BASE.yaml --switch mosaic=0 --switch box_loss=iou --switch "sat=0.5,sam=true" \\
        --seeds 3 --budget 10ep [--study DIR] [--workers N] [--worker i/n] [-- extra fit flags]

* ``--switch`` (repeatable): one variant each; ``NAME[=VALUE]`` with a registered switch
  (:data:`~lightning_yolo.study.switches.SWITCHES`) or a dotted config path, several joined by ``,`` for one
  variant with all of them (see :mod:`lightning_yolo.study.switches`).
* ``--seeds K`` trains seeds ``0 .. K-1`` (or ``--seed_list 0,7,42``) of the base and of every variant.
* ``--budget``: ``10ep`` / ``10`` epochs, or ``90s`` / ``5m`` / ``DD:HH:MM:SS`` of training time per run.
* flags after ``--`` go to every ``fit`` (``-- --trainer.limit_train_batches 10 --data.path /data/x``).

Writes ``<study>/ablation.md``, ``ablation.csv`` and ``ablation.png`` after every finished run; ``--report`` only
rebuilds them. The study folder, resuming and sharing one study between several processes / machines / GPUs are
described in :mod:`lightning_yolo.study.runner`.
"""

from __future__ import annotations

import argparse
import io
import re
import shlex
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import yaml

from ..study.ablate import ablation_rows, plan_variants, rebuild_report, report_header, run_id, write_report
from ..study.runner import (
    RunResult,
    RunSpec,
    budget_args,
    collect_results,
    load_yaml,
    my_share,
    parse_budget,
    parse_worker,
    read_result,
    resolve_config,
    run_all,
    with_model_defaults,
    write_json,
    write_yaml,
)
from ..study.switches import SWITCHES
from .args import parse_args, split_passthrough

__all__ = ["ablate_main", "build_ablate_parser", "command_line", "checked_fit_config", "base_config_label"]


def build_ablate_parser() -> argparse.ArgumentParser:
    """The ``ablate`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lightning-yolo ablate",
        description="Train the base config and each variant (one --switch each) for K seeds under one budget; write "
        "<study>/ablation.md / .csv / .png: mAP, mAP50, time and the difference to the base with a 95% confidence "
        "interval paired by seed. Re-running resumes; several processes can share one --study folder.",
        epilog="switches: " + ", ".join(SWITCHES) + ". Flags after -- go to every fit (-- --data.path /data/x).",
    )
    parser.add_argument("--config", "-c", help="the base config (a file, or a shipped name: debug, demo, ...)")
    parser.add_argument(
        "--switch",
        action="append",
        default=[],
        help="a variant: NAME[=VALUE] (a registered switch or a dotted config path, VALUE in YAML); NAME alone flips "
        "a registered on/off switch; 'a=1,b=2': one variant with both changes. Repeat for more variants",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. K-1 per variant (default 3)")
    parser.add_argument("--seed_list", default=None, help="explicit seeds instead, e.g. 0,7,42")
    parser.add_argument("--budget", default=None, help="per run: epochs (10ep, 10) or time (90s, 5m, DD:HH:MM:SS)")
    parser.add_argument("--study", default=None, help="the study folder (default runs/ablate/<config name>)")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once by this process (default 1)")
    parser.add_argument("--worker", default=None, help="i/n: train only share i of n (several processes, one study)")
    parser.add_argument("--lock_timeout", type=float, default=600.0, help="seconds after which a lock is stale")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables from the finished runs")
    parser.add_argument("--dry_run", action="store_true", help="print the runs and their fit commands, train nothing")
    return parser


def _seeds(args: argparse.Namespace) -> list[int]:
    if args.seed_list:
        seeds = [int(s) for s in str(args.seed_list).replace(" ", "").split(",") if s]
    else:
        if args.seeds < 1:
            raise ValueError("--seeds: at least 1")
        seeds = list(range(args.seeds))
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seed_list {args.seed_list}: distinct seeds, at least one")
    return seeds


def ablate_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-yolo ablate``."""
    argv, extra = split_passthrough(argv)
    args = parse_args(build_ablate_parser(), argv)
    study_dir = Path(args.study) if args.study else None

    if args.report:
        if study_dir is None:
            raise ValueError("ablate --report: give --study DIR")
        paths = rebuild_report(study_dir)
        print(f"[lightning-yolo ablate] {', '.join(str(p) for p in paths)}")
        return

    if not args.config:
        raise ValueError("ablate: --config BASE.yaml is required (or --report --study DIR)")
    if not args.budget:
        raise ValueError("ablate: --budget is required (10ep, 90s, 5m, DD:HH:MM:SS): every run gets the same budget")
    parse_budget(args.budget)  # errors before any training
    config_path = resolve_config(args.config)
    if study_dir is None:
        study_dir = Path("runs") / "ablate" / config_path.stem
    seeds = _seeds(args)
    worker = parse_worker(args.worker)
    base = load_yaml(config_path)
    # every config of the study is parsed as its fit will parse it, before any training: a misspelt flag after --
    # or switch path fails now with the fit's own message, not after the base config trained
    defaults = checked_fit_config(base, extra, base_config_label("ablate", config_path, extra))
    variants, configs = plan_variants(base, args.switch, defaults_of=lambda: defaults)
    for text, variant in zip(args.switch, variants[1:]):
        checked_fit_config(configs[variant.name], extra, f"--switch {text}")
    fit_extra = [*budget_args(args.budget), *extra]
    info = {
        "kind": "ablate",
        "config": str(config_path),
        "switches": list(args.switch),
        "seeds": seeds,
        "budget": args.budget,
        "fit_extra": fit_extra,
        "variants": [v.__dict__ for v in variants],
        "command": command_line("ablate", argv, extra),
    }
    specs = [
        RunSpec(
            run_id(v.name, seed),
            configs[v.name],
            seed,
            {"variant": v.name, "switches": v.switches, "changes": v.changes},
        )
        for seed in seeds  # seed-major: an interrupted study has every variant at its first seeds
        for v in variants
    ]
    mine = my_share(specs, worker)
    if args.dry_run:
        for spec in mine:
            state = "done" if read_result(study_dir / "runs" / spec.run_id) is not None else "pending"
            print(f"{spec.run_id}  [{state}]  fit --seed_everything {spec.seed} {' '.join(fit_extra)}  "
                  f"changes: {spec.info['changes'] or '-'}")  # fmt: skip
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    write_json(study_dir / "study.json", info)
    print(
        f"[lightning-yolo ablate] {len(variants)} configs x {len(seeds)} seeds = {len(specs)} runs "
        f"({len(mine)} for this worker) in {study_dir}"
    )

    def report(_: RunResult | None = None) -> None:
        write_report(study_dir, ablation_rows(variants, collect_results(study_dir / "runs")), report_header(info))

    run_all(mine, study_dir, fit_extra, workers=args.workers, lock_timeout=args.lock_timeout, on_done=report)
    report()
    missing = [s.run_id for s in specs if read_result(study_dir / "runs" / s.run_id) is None]
    print((study_dir / "ablation.md").read_text(encoding="utf-8"))
    if missing:
        print(f"[lightning-yolo ablate] {len(missing)} runs not finished yet: {', '.join(missing[:8])}"
              f"{' ...' if len(missing) > 8 else ''}; run the same command again to continue")  # fmt: skip
    print(f"[lightning-yolo ablate] results saved to {study_dir}")


def command_line(command: str, argv: Sequence[str], extra: Sequence[str]) -> str:
    """The command as typed (for the study's record and the table's header)."""
    words = [*argv, *(["--", *extra] if extra else [])]
    return f"lightning-yolo {command} " + " ".join(shlex.quote(w) for w in words)



def base_config_label(command: str, config_path: Path, extra: Sequence[str]) -> str:
    """How an error in the base config or the flags after ``--`` names them."""
    flags = f" with -- {' '.join(extra)}" if extra else ""
    return f"{command}: the base config {config_path.name}{flags}"


def checked_fit_config(config: Mapping[str, Any], extra: Sequence[str], what: str) -> dict[str, Any]:
    """The full config ``fit --config <config> <extra> --print_config`` prints (every default filled in, the model's
    ``model_overrides`` completed by :func:`~lightning_yolo.study.runner.with_model_defaults`), parsed in this process:
    nothing is built or trained.

    Raises:
        ValueError: ``"<what>: <the fit's one-line error>"`` when the fit would refuse the config or a flag (an
            unknown key names itself and the closest valid ones), or a ``model_overrides`` key is no model setting.
    """
    from .cli import build_cli

    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory(prefix="lightning_yolo_check_") as tmp:
        path = Path(tmp) / "config.yaml"
        write_yaml(path, config)
        try:
            with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
                # LightningCLI warns when it gets args while sys.argv holds other ones (the study's own command line)
                warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
                build_cli(["fit", "--config", str(path), *extra, "--print_config"])
        except SystemExit as stop:
            if stop.code not in (0, None):
                lines = [ln[len("error: ") :] for ln in err.getvalue().splitlines() if ln.startswith("error: ")]
                message = lines[-1] if lines else " ".join(err.getvalue().split()) or f"exit status {stop.code}"
                message = re.sub(r"\(all options: .*--help\)", "(all options: lightning-yolo fit --help)", message)
                raise ValueError(f"{what}: {message.replace(str(path), 'the config')}") from None
    try:
        return with_model_defaults(yaml.safe_load(out.getvalue()) or {})
    except ValueError as bad:
        raise ValueError(f"{what}: {bad}") from None
