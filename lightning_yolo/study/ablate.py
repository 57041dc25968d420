"""Ablation studies: the base config and one variant per switch, K seeds each under one budget; a table with 95%
confidence intervals of the difference to the base, paired by seed. The command is ``lightning-yolo ablate``
(:mod:`lightning_yolo.commands.ablate`); this module is its library.

* :func:`plan_variants`: the base and one variant per ``--switch`` (``NAME[=VALUE]`` with a registered switch
  (:data:`~lightning_yolo.study.switches.SWITCHES`) or a dotted config path, several joined by ``,`` for one
  variant with all of them; see :mod:`lightning_yolo.study.switches`).
* :func:`ablation_rows` / :func:`write_report`: ``<study>/ablation.md``, ``ablation.csv`` and ``ablation.png`` (the
  difference in mAP to the base with its interval) from the finished runs; :func:`rebuild_report` from a study
  folder alone.

The study folder, resuming and sharing one study between several processes / machines / GPUs are described in
:mod:`lightning_yolo.study.runner`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import RunResult, collect_results
from .stats import PairedDiff, mean_std, paired_difference
from .switches import apply_changes, needs_defaults, parse_switch, resolve_changes, variant_name

__all__ = [
    "BASE",
    "TABLE_COLUMNS",
    "Variant",
    "plan_variants",
    "run_id",
    "ablation_rows",
    "write_report",
    "plot_ablation",
    "read_study",
    "variants_from_results",
    "report_header",
    "rebuild_report",
]

BASE = "base"

#: Columns of ``ablation.csv``.
TABLE_COLUMNS = (
    "variant",
    "switches",
    "seeds_done",
    "map_mean",
    "map_std",
    "map50_mean",
    "map50_std",
    "train_s_mean",
    "epochs_mean",
    "d_map",
    "d_map_low",
    "d_map_high",
    "d_map50",
    "d_map50_low",
    "d_map50_high",
    "significant",
)


@dataclass
class Variant:
    """A config of the study: ``base`` or the base with ``changes`` (``{dotted path: value}``)."""

    name: str
    switches: str
    changes: dict[str, Any]


def plan_variants(
    base: dict[str, Any], switches: Sequence[str], defaults_of: Any = None
) -> tuple[list[Variant], dict[str, dict[str, Any]]]:
    """The base and one variant per ``--switch`` -> (variants, config of each variant by name).

    ``defaults_of``: a callable returning the full config (``fit --print_config``), called only when a switch
    without ``=VALUE`` flips a path the base YAML does not set.
    """
    variants = [Variant(BASE, "", {})]
    configs = {BASE: base}
    defaults = None
    for text in switches:
        parsed = parse_switch(text)
        if defaults is None and defaults_of is not None and needs_defaults(parsed, base):
            defaults = defaults_of()
        changes = resolve_changes(parsed, base, defaults)
        name = variant_name(changes)
        if name in configs:
            raise ValueError(f"--switch {text}: variant {name!r} given twice (or it is the base)")
        labels = list(dict.fromkeys(c.label for c in changes))
        variants.append(Variant(name, ", ".join(labels), {c.path: c.value for c in changes}))
        configs[name] = apply_changes(base, changes)
    return variants, configs


def run_id(variant: str, seed: int) -> str:
    """The run folder of a variant's seed."""
    return f"{variant}__seed{seed}"


# ----------------------------------------------------------------------------------------------------------- table


def ablation_rows(variants: Sequence[Variant], results: dict[str, RunResult]) -> list[dict[str, Any]]:
    """One row per variant (``TABLE_COLUMNS``) from the finished runs; differences paired by seed with the base."""
    by_variant: dict[str, dict[int, RunResult]] = {v.name: {} for v in variants}
    for result in results.values():
        name = result.info.get("variant")
        if name in by_variant:
            by_variant[name][result.seed] = result
    base = by_variant.get(BASE, {})
    rows = []
    for v in variants:
        runs = by_variant[v.name]
        maps = [r.map for r in runs.values()]
        maps50 = [r.map_50 for r in runs.values()]
        map_mean, map_std = mean_std(maps)
        map50_mean, map50_std = mean_std(maps50)
        row: dict[str, Any] = {
            "variant": v.name,
            "switches": v.switches,
            "seeds_done": len(runs),
            "map_mean": map_mean,
            "map_std": map_std,
            "map50_mean": map50_mean,
            "map50_std": map50_std,
            "train_s_mean": mean_std([r.train_s for r in runs.values()])[0],
            "epochs_mean": mean_std([float(r.epochs) for r in runs.values()])[0],
        }
        if v.name == BASE:
            row.update({k: math.nan for k in TABLE_COLUMNS[9:15]}, significant="")
        else:
            d = paired_difference({s: r.map for s, r in base.items()}, {s: r.map for s, r in runs.items()})
            d50 = paired_difference({s: r.map_50 for s, r in base.items()}, {s: r.map_50 for s, r in runs.items()})
            row.update(
                d_map=d.mean,
                d_map_low=d.low,
                d_map_high=d.high,
                d_map50=d50.mean,
                d_map50_low=d50.low,
                d_map50_high=d50.high,
                significant=_significance(d),
            )
        rows.append(row)
    return rows


def _significance(d: PairedDiff) -> str:
    if d.n == 0:
        return ""
    return "n/a" if d.significant is None else ("yes" if d.significant else "no")


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _pm(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.4f}" if not math.isfinite(std) else f"{mean:.4f} ± {std:.4f}"


def _delta(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "-"
    text = f"{mean:+.4f}"
    return f"{text} [{low:+.4f}, {high:+.4f}]" if math.isfinite(low) else f"{text} [n/a]"


def write_report(study_dir: Path, rows: Sequence[dict[str, Any]], header: str = "") -> list[Path]:
    """Write ``ablation.csv``, ``ablation.md`` and ``ablation.png``; returns the files written."""
    csv_path, md_path = study_dir / "ablation.csv", study_dir / "ablation.md"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(TABLE_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _num(row[k], 6) for k in TABLE_COLUMNS})
    lines = [
        "# Ablation",
        "",
        header,
        "",
        "| variant | switches | seeds | mAP | mAP50 | train s | Δ mAP [95% CI] | Δ mAP50 [95% CI] | significant |",
        "|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        is_base = r["variant"] == BASE
        lines.append(
            f"| {r['variant']} | {r['switches'] or '(base config)'} | {r['seeds_done']} | "
            f"{_pm(r['map_mean'], r['map_std'])} | {_pm(r['map50_mean'], r['map50_std'])} | "
            f"{_num(r['train_s_mean'], 0) or '-'} | "
            f"{'' if is_base else _delta(r['d_map'], r['d_map_low'], r['d_map_high'])} | "
            f"{'' if is_base else _delta(r['d_map50'], r['d_map50_low'], r['d_map50_high'])} | {r['significant']} |"
        )
    lines += [
        "",
        "mAP is COCO mAP50-95 on the validation split at the end of each run (mean ± sample std over seeds). Δ is "
        "variant minus base paired by seed, with a Student-t 95% confidence interval over the paired seeds "
        "(n/a with one seed); significant: the interval excludes 0.",
        "",
    ]
    md_path.write_text("\n".join(line for line in lines if line is not None), encoding="utf-8")
    written = [csv_path, md_path]
    png = plot_ablation(study_dir / "ablation.png", rows)
    if png is not None:
        written.append(png)
    return written


def plot_ablation(path: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    """Bar chart of Δ mAP per variant with its confidence interval as error bars (``None`` without matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    variants = [r for r in rows if r["variant"] != BASE]
    fig = Figure(figsize=(max(6.0, 0.9 * len(variants) + 2.5), 4.5))
    ax = fig.add_subplot(1, 1, 1)
    names = [r["variant"] for r in variants]
    means = [r["d_map"] if math.isfinite(r["d_map"]) else 0.0 for r in variants]
    lower = [m - r["d_map_low"] if math.isfinite(r["d_map_low"]) else 0.0 for m, r in zip(means, variants)]
    upper = [r["d_map_high"] - m if math.isfinite(r["d_map_high"]) else 0.0 for m, r in zip(means, variants)]
    colors = ["tab:green" if m >= 0 else "tab:red" for m in means]
    x = list(range(len(variants)))
    ax.bar(x, means, color=colors, alpha=0.8, yerr=[lower, upper], capsize=4, ecolor="black")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("Δ mAP50-95 vs base")
    base = next((r for r in rows if r["variant"] == BASE), None)
    title = "ablation: variant - base, 95% CI paired by seed"
    if base is not None and math.isfinite(base["map_mean"]):
        title += f"\nbase mAP {base['map_mean']:.3f}, {base['seeds_done']} seeds"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    from ..reporting.plots import save_figure  # FIGURE_DPI, as every picture of the package

    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------------------- study folder


def read_study(study_dir: Path) -> dict[str, Any]:
    """The study's ``study.json`` (``{}`` when there is none)."""
    path = study_dir / "study.json"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def variants_from_results(study_dir: Path) -> list[Variant]:
    """The variants named by the finished runs of a study folder (when ``study.json`` is missing)."""
    seen: dict[str, Variant] = {BASE: Variant(BASE, "", {})}
    for result in collect_results(study_dir / "runs").values():
        name = str(result.info.get("variant", ""))
        if name and name not in seen:
            seen[name] = Variant(name, str(result.info.get("switches", "")), dict(result.info.get("changes") or {}))
    return list(seen.values())


def report_header(info: dict[str, Any]) -> str:
    """The table's header: base config, seeds, budget and the command of a study (its ``study.json``)."""
    if not info:
        return ""
    return (
        f"Base config `{info.get('config')}`, seeds {info.get('seeds')}, budget {info.get('budget')} per run.\n\n"
        f"Command: `{info.get('command')}`"
    )


def rebuild_report(study_dir: Path) -> list[Path]:
    """Write the tables of a study folder again from its finished runs (``ablate --report``); returns the files."""
    info = read_study(study_dir)
    variants = [Variant(**v) for v in info.get("variants", [])] or variants_from_results(study_dir)
    return write_report(study_dir, ablation_rows(variants, collect_results(study_dir / "runs")), report_header(info))
