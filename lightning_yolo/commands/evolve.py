"""``lightning-yolo evolve``: a genetic search of numeric hyper-parameters, each trial a fit under one budget (the
library and the algorithm: :mod:`lightning_yolo.study.evolve`).

::

    lightning-yolo evolve --config BASE.yaml --param model.lr=1e-4:1e-2:log --param data.augment.hsv_s=0:0.9 \\
        --generations 10 --population 8 --budget 5m --seed 0 --fitness "0.1*map_50+0.9*map" [-- extra fit flags]

Writes ``<study>/evolve.csv``, ``evolve.md`` and ``evolve.png`` after every trial; re-running resumes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

from ..study.evolve import DEFAULT_FITNESS, FITNESS_NAMES, best_config, evolve, fitness_function, parse_param
from ..study.runner import budget_args, load_yaml, parse_budget, resolve_config, write_json
from ..study.switches import Change, apply_changes, set_path
from .ablate import base_config_label, checked_fit_config, command_line
from .args import parse_args, split_passthrough

__all__ = ["evolve_main", "build_evolve_parser"]


def build_evolve_parser() -> argparse.ArgumentParser:
    """The ``evolve`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="lightning-yolo evolve",
        description="Genetic search of numeric hyper-parameters (the YOLOv4 paper's GA, YOLOv5's --evolve): each "
        "generation mutates the best trials so far; every trial is a fit under the same budget. Writes "
        "<study>/evolve.csv / .md / .png; re-running resumes.",
        epilog="Flags after -- go to every fit (-- --trainer.limit_train_batches 20).",
    )
    parser.add_argument("--config", "-c", help="the base config (a file, or a shipped name: debug, demo, ...)")
    parser.add_argument("--param", action="append", default=[],
                        help="PATH=LOW:HIGH[:log][:int], e.g. model.lr=1e-4:1e-2:log (repeat)")  # fmt: skip
    parser.add_argument("--generations", type=int, default=10, help="generations (default 10)")
    parser.add_argument("--population", type=int, default=8, help="trials per generation (default 8)")
    parser.add_argument("--budget", default=None, help="per trial: epochs (10ep, 10) or time (90s, 5m, DD:HH:MM:SS)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations and of every trial's fit")
    parser.add_argument("--fitness", default=DEFAULT_FITNESS, help=f"expression of {', '.join(FITNESS_NAMES)}")
    parser.add_argument("--parents", type=int, default=5, help="the best trials children are drawn from (default 5)")
    parser.add_argument("--sigma", type=float, default=0.2, help="mutation step, a fraction of the range (0.2)")
    parser.add_argument("--mutation_prob", type=float, default=0.8, help="probability a parameter mutates (0.8)")
    parser.add_argument("--study", default=None, help="the study folder (default runs/evolve/<config name>)")
    parser.add_argument("--workers", type=int, default=1, help="trials trained at once by this process (default 1)")
    parser.add_argument("--lock_timeout", type=float, default=600.0, help="seconds after which a lock is stale")
    return parser


def evolve_main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``lightning-yolo evolve``."""
    argv, extra = split_passthrough(argv)
    args = parse_args(build_evolve_parser(), argv)
    if not args.config or not args.param or not args.budget:
        raise ValueError("evolve: --config, at least one --param PATH=LOW:HIGH[:log] and --budget are required")
    if args.generations < 1 or args.population < 1:
        raise ValueError("evolve: --generations and --population are at least 1")
    params = [parse_param(p) for p in args.param]
    if len({p.path for p in params}) != len(params):
        raise ValueError("evolve: a --param path given twice")
    parse_budget(args.budget)
    fitness_function(args.fitness)  # errors before any training
    config_path = resolve_config(args.config)
    study_dir = Path(args.study) if args.study else Path("runs") / "evolve" / config_path.stem
    base = load_yaml(config_path)
    for p in params:  # the paths must be settable before hours of training
        set_path(apply_changes(base, []), p.path, 0.0)
    # the base config, the flags after -- and each searched path are parsed as the trials' fits will parse them,
    # before any training: a misspelt key fails now with the fit's own message
    defaults = checked_fit_config(base, extra, base_config_label("evolve", config_path, extra))
    for text, p in zip(args.param, params):
        checked_fit_config(apply_changes(base, [Change(p.path, p.typed(p.low), p.path)]), extra, f"--param {text}")
    fit_extra = [*budget_args(args.budget), *extra]
    command = command_line("evolve", argv, extra)
    study_dir.mkdir(parents=True, exist_ok=True)
    write_json(study_dir / "study.json", {
        "kind": "evolve", "config": str(config_path), "params": args.param, "generations": args.generations,
        "population": args.population, "budget": args.budget, "seed": args.seed, "fitness": args.fitness,
        "fit_extra": fit_extra, "command": command,
    })  # fmt: skip
    header = f"Base config `{config_path}`, budget {args.budget} per trial, seed {args.seed}.\n\nCommand: `{command}`"
    trials = evolve(
        base, params, study_dir, args.generations, args.population, fit_extra, seed=args.seed, fitness=args.fitness,
        parents=args.parents, sigma=args.sigma, prob=args.mutation_prob, workers=args.workers,
        lock_timeout=args.lock_timeout, defaults_of=lambda: defaults, header=header,
    )  # fmt: skip
    print((study_dir / "evolve.md").read_text(encoding="utf-8"))
    finished = [t for t in trials if t.result is not None and math.isfinite(t.fitness)]
    if finished:
        best = max(finished, key=lambda t: t.fitness)
        print(f"[lightning-yolo evolve] best trial {best.run_id}; train its config with: lightning-yolo fit --config "
              f"{best_config(study_dir, best)}")  # fmt: skip
    missing = [t.run_id for t in trials if t.result is None]
    if missing:
        print(f"[lightning-yolo evolve] {len(missing)} trials not finished: {', '.join(missing[:8])}; run the same "
              "command again to continue")  # fmt: skip
    print(f"[lightning-yolo evolve] results saved to {study_dir}")
