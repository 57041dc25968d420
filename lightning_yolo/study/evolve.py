"""Evolution: a genetic search of numeric hyper-parameters, each trial a fit under one budget. The command is
``lightning-yolo evolve`` (:mod:`lightning_yolo.commands.evolve`); this module is its library.

::

    lightning-yolo evolve --config BASE.yaml --param model.lr=1e-4:1e-2:log --param data.augment.hsv_s=0:0.9 \\
        --generations 10 --population 8 --budget 5m --seed 0 --fitness "0.1*map_50+0.9*map" [-- extra fit flags]

The YOLOv4 paper chose its training hyper-parameters with a genetic algorithm; this is the same idea in the
form YOLOv5's ``--evolve`` made common:

* ``--param PATH=LOW:HIGH[:log][:int]``: a dotted config path searched within ``[LOW, HIGH]``; ``log`` mutates
  it in log space (learning rates, weight decay), ``int`` rounds it.
* generation 0: trial 0 is the base config (its values clipped to the bounds; a path the YAML does not set takes
  the value of ``fit --print_config``), the other trials are mutations of it;
* generation ``g > 0``: each trial picks a parent among the ``--parents`` best finished trials so far (weighted by
  fitness) and mutates it: every parameter with probability ``--mutation_prob`` (at least one) moves by a
  Gaussian step of ``--sigma`` x its range (in log space for ``log``), clipped to the bounds;
* the random draws of trial ``t`` of generation ``g`` come from ``random.Random(f"{seed}/{g}/{t}")``, and each trial
  stores its parameters in ``runs/<trial>/trial.json`` when created, so a resumed evolution repeats no finished
  trial and re-creates none differently; every trial trains with ``--seed_everything SEED``;
* fitness: ``--fitness``, an arithmetic expression of ``map``, ``map_50``, ``best_map``, ``best_map_50``,
  ``train_s``, ``epochs`` (default ``0.1*map_50+0.9*map`` as YOLOv5).

Writes ``<study>/evolve.csv`` (generation, trial, parameters, map, map_50, fitness), ``evolve.md`` (the best
parameters as a YAML snippet to paste into a config, and the best trials) and ``evolve.png`` (fitness per
generation: every trial a dot, the best so far a line) after every trial. Several ``evolve`` processes with the same
arguments can share one ``--study`` folder (each trains the trials no other process holds; a generation starts
when the previous one is complete); see :mod:`lightning_yolo.study.runner`.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .runner import (
    CONFIG_FILE,
    TRIAL_FILE,
    Launcher,
    RunResult,
    RunSpec,
    lock_is_stale,
    read_result,
    run_all,
    write_json,
)
from .switches import Change, apply_changes, get_path, has_path, set_path

__all__ = [
    "DEFAULT_FITNESS",
    "FITNESS_NAMES",
    "Param",
    "Trial",
    "parse_param",
    "fitness_function",
    "mutate",
    "evolve",
    "write_evolve_report",
    "best_config",
    "plot_evolution",
]

DEFAULT_FITNESS = "0.1*map_50+0.9*map"

#: Names a ``--fitness`` expression may use.
FITNESS_NAMES = ("map", "map_50", "best_map", "best_map_50", "train_s", "epochs")


@dataclass(frozen=True)
class Param:
    """A searched hyper-parameter: a dotted config path within ``[low, high]``."""

    path: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def to_unit(self, value: float) -> float:
        """The value in the mutation's space (``log10`` for ``log``)."""
        return math.log10(value) if self.log else value

    def from_unit(self, value: float) -> float:
        """Back from the mutation's space, clipped to the bounds (and rounded for ``int``)."""
        out = 10.0**value if self.log else value
        out = min(max(out, self.low), self.high)
        return float(round(out)) if self.integer else out

    @property
    def span(self) -> float:
        """The range in the mutation's space."""
        return self.to_unit(self.high) - self.to_unit(self.low)

    def clip(self, value: Any) -> float:
        """A start value within the bounds; ``None`` or not a number -> the middle of the range."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or (self.log and number <= 0):
            return self.from_unit((self.to_unit(self.low) + self.to_unit(self.high)) / 2.0)
        number = min(max(number, self.low), self.high)
        return float(round(number)) if self.integer else number

    def typed(self, value: float) -> float | int:
        """The value as written into the config."""
        return int(value) if self.integer else float(f"{value:.6g}")


def parse_param(text: str) -> Param:
    """``"model.lr=1e-4:1e-2:log"`` -> ``Param("model.lr", 1e-4, 1e-2, log=True)``."""
    path, sep, spec = text.partition("=")
    parts = [p.strip() for p in spec.split(":")]
    flags = {p.lower() for p in parts[2:]}
    if not sep or "." not in path or len(parts) < 2 or not flags <= {"log", "int", "lin", "linear"}:
        raise ValueError(f"--param {text}: PATH=LOW:HIGH[:log][:int] (model.lr=1e-4:1e-2:log)")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError as err:
        raise ValueError(f"--param {text}: LOW and HIGH are numbers") from err
    if not low < high:
        raise ValueError(f"--param {text}: LOW < HIGH")
    if "log" in flags and low <= 0:
        raise ValueError(f"--param {text}: a log-scale range needs LOW > 0")
    return Param(path.strip(), low, high, log="log" in flags, integer="int" in flags)


def fitness_function(expression: str) -> Any:
    """A ``--fitness`` expression -> a function of a result's metrics (only numbers, ``+ - * / **`` and
    :data:`FITNESS_NAMES`)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"--fitness {expression!r}: not an arithmetic expression ({err.msg})") from err
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Add, ast.Sub, ast.Mult,
               ast.Div, ast.Pow, ast.USub, ast.UAdd)  # fmt: skip
    for node in ast.walk(tree):
        number = not isinstance(node, ast.Constant) or isinstance(node.value, (int, float))
        if not isinstance(node, allowed) or not number:
            raise ValueError(f"--fitness {expression!r}: only numbers, + - * / ** and {', '.join(FITNESS_NAMES)}")
        if isinstance(node, ast.Name) and node.id not in FITNESS_NAMES:
            raise ValueError(f"--fitness {expression!r}: unknown name {node.id!r}; use {', '.join(FITNESS_NAMES)}")
    code = compile(tree, "<fitness>", "eval")

    def fitness(metrics: Mapping[str, float]) -> float:
        values = {k: float(metrics.get(k, math.nan)) for k in FITNESS_NAMES}
        try:
            return float(eval(code, {"__builtins__": {}}, values))  # noqa: S307 - checked above: arithmetic only
        except (ZeroDivisionError, OverflowError):
            return math.nan

    return fitness


def mutate(
    parent: Mapping[str, float], params: Sequence[Param], rng: random.Random, sigma: float = 0.2, prob: float = 0.8
) -> dict[str, float]:
    """A child of ``parent``: each parameter moves with probability ``prob`` (at least one changes, where any can)
    by a Gaussian step of ``sigma`` x its range, in log space for ``log`` parameters, clipped to the bounds."""
    child = dict(parent)
    for _ in range(100):
        child = dict(parent)
        for p in params:
            if rng.random() < prob:
                child[p.path] = p.from_unit(p.to_unit(parent[p.path]) + rng.gauss(0.0, sigma) * p.span)
        if any(child[p.path] != parent[p.path] for p in params):
            break
    return child


# ----------------------------------------------------------------------------------------------------------- evolution


@dataclass
class Trial:
    """One trial: its place, parameters, parent and (once finished) result."""

    generation: int
    trial: int
    params: dict[str, float]
    parent: str | None = None
    result: RunResult | None = None
    fitness: float = math.nan

    @property
    def run_id(self) -> str:
        return trial_id(self.generation, self.trial)


def trial_id(generation: int, trial: int) -> str:
    """The run folder of a trial."""
    return f"g{generation:02d}_t{trial:02d}"


def _load_or_create(path: Path, make: Any) -> dict[str, Any]:
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    data = make()
    write_json(path, data)
    return data


def _trial_config(base: Mapping[str, Any], params: Sequence[Param], values: Mapping[str, float]) -> dict[str, Any]:
    return apply_changes(base, [Change(p.path, p.typed(values[p.path]), p.path) for p in params])


def evolve(
    base: dict[str, Any],
    params: Sequence[Param],
    study_dir: Path,
    generations: int,
    population: int,
    fit_extra: Sequence[str] = (),
    seed: int = 0,
    fitness: str = DEFAULT_FITNESS,
    parents: int = 5,
    sigma: float = 0.2,
    prob: float = 0.8,
    workers: int = 1,
    lock_timeout: float = 600.0,
    defaults_of: Any = None,
    launcher: Launcher | None = None,
    poll_s: float = 10.0,
    header: str = "",
) -> list[Trial]:
    """Run (or continue) an evolution in ``study_dir``; returns every trial with its result where finished."""
    score = fitness_function(fitness)
    runs_dir = study_dir / "runs"
    defaults = None
    start: dict[str, float] = {}
    for p in params:
        value = get_path(base, p.path)
        if not has_path(base, p.path) and defaults_of is not None:
            defaults = defaults if defaults is not None else defaults_of()
            value = get_path(defaults, p.path)
        start[p.path] = p.clip(value)
    trials: list[Trial] = []
    for g in range(generations):
        finished = sorted(
            (t for t in trials if t.result is not None and math.isfinite(t.fitness)), key=lambda t: -t.fitness
        )
        if g > 0 and not finished:
            raise RuntimeError(f"evolve: no trial of generations 0..{g - 1} finished; see the fit.log files in "
                               f"{runs_dir}")  # fmt: skip
        pool = finished[: max(1, parents)]
        generation: list[Trial] = []
        for t in range(population):
            rid = trial_id(g, t)

            def make(g: int = g, t: int = t) -> dict[str, Any]:
                rng = random.Random(f"{seed}/{g}/{t}")
                if g == 0:
                    values = dict(start) if t == 0 else mutate(start, params, rng, sigma, prob)
                    return {"generation": g, "trial": t, "parent": None if t == 0 else "base", "params": values}
                low = pool[-1].fitness
                weights = [f.fitness - low + 1e-6 for f in pool]
                parent = rng.choices(pool, weights=weights, k=1)[0]
                values = mutate(parent.params, params, rng, sigma, prob)
                return {"generation": g, "trial": t, "parent": parent.run_id, "params": values}

            data = _load_or_create(runs_dir / rid / TRIAL_FILE, make)
            generation.append(Trial(g, t, {k: float(v) for k, v in data["params"].items()}, data.get("parent")))
        specs = [
            RunSpec(
                tr.run_id,
                _trial_config(base, params, tr.params),
                seed,
                {"generation": tr.generation, "trial": tr.trial, "parent": tr.parent, "params": tr.params},
            )
            for tr in generation
        ]
        _train_generation(specs, study_dir, fit_extra, workers, lock_timeout, launcher, poll_s,
                          on_done=lambda _: write_evolve_report(study_dir, _with_results(trials + generation, runs_dir,
                                                                                         score), params, fitness,
                                                                header))  # fmt: skip
        trials.extend(generation)
        _with_results(trials, runs_dir, score)
        write_evolve_report(study_dir, trials, params, fitness, header)
        best = max((t for t in trials if math.isfinite(t.fitness)), key=lambda t: t.fitness, default=None)
        if best is not None:
            print(f"[lightning-yolo evolve] generation {g}: best so far {best.run_id} fitness {best.fitness:.4f}",
                  flush=True)  # fmt: skip
    return trials


def _with_results(trials: list[Trial], runs_dir: Path, score: Any) -> list[Trial]:
    for tr in trials:
        if tr.result is None:
            tr.result = read_result(runs_dir / tr.run_id)
            if tr.result is not None:
                tr.fitness = score(_metrics(tr.result))
    return trials


def _metrics(result: RunResult) -> dict[str, float]:
    return {k: float(getattr(result, k)) for k in FITNESS_NAMES}


def _train_generation(
    specs: Sequence[RunSpec],
    study_dir: Path,
    fit_extra: Sequence[str],
    workers: int,
    lock_timeout: float,
    launcher: Launcher | None,
    poll_s: float,
    on_done: Any,
) -> None:
    """Train the generation's trials; wait for those other processes hold (a stale lock is taken over)."""
    runs_dir, locks_dir = study_dir / "runs", study_dir / "locks"
    attempted: set[str] = set()
    while True:
        pending = [s for s in specs if read_result(runs_dir / s.run_id) is None]
        todo = [s for s in pending if s.run_id not in attempted]
        if todo:
            run_all(todo, study_dir, fit_extra, workers=workers, lock_timeout=lock_timeout, launcher=launcher,
                    on_done=on_done)  # fmt: skip
            # each was tried here, or skipped because another process holds it (then waited for below)
            attempted |= {s.run_id for s in todo}
            continue
        held = [s for s in pending if (locks_dir / f"{s.run_id}.lock").exists()]
        if not held:
            return  # every trial finished, or failed here (a failed trial is retried by the next evolve command)
        stale = {s.run_id for s in held if lock_is_stale(locks_dir / f"{s.run_id}.lock", lock_timeout)}
        if stale:
            attempted -= stale  # its process is gone: take it over
            continue
        time.sleep(poll_s)


# ----------------------------------------------------------------------------------------------------------- report


def _nested(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in values.items():
        set_path(out, path, value)
    return out


def write_evolve_report(
    study_dir: Path, trials: Sequence[Trial], params: Sequence[Param], fitness: str, header: str = ""
) -> list[Path]:
    """Write ``evolve.csv``, ``evolve.md`` and ``evolve.png`` of the finished trials; returns the files."""
    study_dir.mkdir(parents=True, exist_ok=True)
    done = [t for t in trials if t.result is not None]
    csv_path, md_path = study_dir / "evolve.csv", study_dir / "evolve.md"
    columns = ["generation", "trial", "run", "parent", *[p.path for p in params], "map", "map_50", "fitness"]
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for t in done:
            assert t.result is not None
            writer.writerow([t.generation, t.trial, t.run_id, t.parent or "",
                             *[f"{p.typed(t.params[p.path]):.6g}" for p in params],
                             f"{t.result.map:.6f}", f"{t.result.map_50:.6f}", f"{t.fitness:.6f}"])  # fmt: skip
    ranked = sorted((t for t in done if math.isfinite(t.fitness)), key=lambda t: -t.fitness)
    lines = ["# Evolution", "", header, "", f"Fitness: `{fitness}`; {len(done)} of {len(trials)} trials finished.", ""]
    if ranked:
        best = ranked[0]
        assert best.result is not None
        snippet = yaml.safe_dump(_nested({p.path: p.typed(best.params[p.path]) for p in params}), sort_keys=False)
        lines += [
            f"Best: trial {best.run_id} (generation {best.generation}), fitness {best.fitness:.4f}, "
            f"mAP {best.result.map:.4f}, mAP50 {best.result.map_50:.4f}. Its parameters, for a config:",
            "",
            "```yaml",
            snippet.rstrip(),
            "```",
            "",
            f"The trial's whole config (the base config, these parameters, the flags after `--`, seed and budget): "
            f"`{best_config(study_dir, best)}`; `lightning-yolo fit --config {best_config(study_dir, best)}` trains "
            "it again in your own run folder (runs/detect/train by default), not in the study.",
            "",
            "| trial | " + " | ".join(p.path for p in params) + " | mAP | mAP50 | fitness |",
            "|---|" + "---:|" * (len(params) + 3),
        ]
        for t in ranked[:10]:
            assert t.result is not None
            lines.append(
                f"| {t.run_id} | " + " | ".join(f"{p.typed(t.params[p.path]):.4g}" for p in params)
                + f" | {t.result.map:.4f} | {t.result.map_50:.4f} | {t.fitness:.4f} |"
            )
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written = [csv_path, md_path]
    png = plot_evolution(study_dir / "evolve.png", trials)
    if png is not None:
        written.append(png)
    return written


def best_config(study_dir: Path, trial: Trial) -> Path:
    """The ``config.yaml`` a trial trained (runnable on its own, see :func:`.runner.own_config`)."""
    return study_dir / "runs" / trial.run_id / CONFIG_FILE


def plot_evolution(path: Path, trials: Sequence[Trial]) -> Path | None:
    """Fitness per generation: every finished trial a dot, the best so far a line."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    done = [t for t in trials if t.result is not None and math.isfinite(t.fitness)]
    ax.scatter([t.generation for t in done], [t.fitness for t in done], s=18, alpha=0.7, label="trial")
    generations = sorted({t.generation for t in trials})
    best, xs, ys = -math.inf, [], []
    for g in generations:
        scores = [t.fitness for t in done if t.generation == g]
        if scores:
            best = max(best, max(scores))
        if math.isfinite(best):
            xs.append(g)
            ys.append(best)
    ax.plot(xs, ys, color="tab:red", marker="o", label="best so far")
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    if generations:
        ax.set_xticks(generations)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"evolution: {len(done)} trials", fontsize=9)
    fig.tight_layout()
    from ..reporting.plots import save_figure  # FIGURE_DPI, as every picture of the package

    return save_figure(fig, path)
