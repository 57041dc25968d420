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
import shlex
from collections.abc import Sequence
from pathlib import Path

from ..study.ablate import ablation_rows, plan_variants, rebuild_report, report_header, run_id, write_report
from ..study.runner import (
    RunResult,
    RunSpec,
    budget_args,
    collect_results,
    full_config,
    load_yaml,
    my_share,
    parse_budget,
    parse_worker,
    read_result,
    resolve_config,
    run_all,
    write_json,
)
from ..study.switches import SWITCHES
from .args import parse_args, split_passthrough

__all__ = ["ablate_main", "build_ablate_parser", "command_line"]


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
    variants, configs = plan_variants(base, args.switch, defaults_of=lambda: full_config(config_path, extra))
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

