"""Runs of a study (``lightning-yolo ablate`` / ``evolve``): one ``fit`` process per run, resumable and shareable.

Study folder::

    <study>/study.json                  what the study is: base config, switches or parameters, seeds, budget, command
    <study>/runs/<run>/trial.json       an evolution trial's parameters, written when the trial is created
    <study>/runs/<run>/config.yaml      the exact config the run trained (the base YAML with the run's changes, the
                                        flags after --, seed and budget); runs on its own: fit --config it trains
                                        in the user's runs/, not in the study
    <study>/runs/<run>/fit.log          the fit's output (stdout and stderr)
    <study>/runs/<run>/results.csv      the fit's per-epoch table (ResultsFiles), checkpoints/, ...
    <study>/runs/<run>/result.json      written only when the run finished: final val mAP, mAP50, seconds, epochs
    <study>/locks/<run>.lock            held while a process trains the run

Ablation runs are named ``<variant>__seed<k>``, evolution trials ``g<generation>_t<trial>``.

**A run** is an independent process,
``python -m lightning_yolo fit --config <run>/config.yaml --seed_everything K --trainer.default_root_dir <study>/runs
--name <run> --exist_ok true --plots false <budget> <extra>``, so it lands in ``<study>/runs/<run>/``. Its
metrics are read from the fit's own ``results.csv``: the last row that validated (``val/map``, ``val/map_50``), i.e.
the model at the end of the budget, which is what a fixed-budget comparison measures (the best epoch's values are
kept too, as ``best_map`` / ``best_map_50``). ``train_s`` is the wall time of the whole process (start-up,
training, validation), the same overhead for every run of a study. ``result.json`` is written after the process
exited with status 0 and its ``results.csv`` holds a validated row; anything else leaves no ``result.json``, so the
run counts as not done.

**Budget**: ``10ep`` or ``10`` -> ``--trainer.max_epochs 10``; ``90s``, ``5m``, ``1.5h`` or ``DD:HH:MM:SS`` ->
``--trainer.max_time`` (``TimeBudget`` then plans epochs, schedule and close-mosaic inside it; the config's
``max_epochs`` stays an upper bound, raise it with ``-- --trainer.max_epochs 1000``).

**Resume**: a run with a ``result.json`` is never run again; an interrupted run (no ``result.json``) starts over
in a cleaned folder (``trial.json`` stays). Re-running the same command continues a study. Ctrl-C and SIGTERM stop
the fits in progress and release their locks (exit status 130 / 143).

**Several workers** share one study folder (a shared disk for several machines, or one machine with several GPUs):
before training a run, a process creates ``locks/<run>.lock`` with ``os.open(O_CREAT | O_EXCL)`` (atomic on local
and NFSv3+ file systems) and touches it every 30 s while the run trains; a lock untouched for ``lock_timeout``
seconds (default 600) is stale (its process died) and taken over, and so is at once a lock written on the same
machine by a process that no longer exists (``kill -9``, a crash). ``--worker i/n`` makes a process try only its
share of the runs (run index modulo ``n`` = ``i - 1``, in the study's fixed run order), ``--workers N`` trains ``N``
runs at once from one process. E.g. two GPUs of one machine::

    CUDA_VISIBLE_DEVICES=0 lightning-yolo ablate ... --worker 1/2 &
    CUDA_VISIBLE_DEVICES=1 lightning-yolo ablate ... --worker 2/2 &

and any of them (or ``ablate --report``) writes the table from the ``result.json`` files that exist.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "RunSpec",
    "RunResult",
    "Launcher",
    "parse_budget",
    "budget_args",
    "parse_worker",
    "resolve_config",
    "load_yaml",
    "print_config",
    "full_config",
    "with_model_defaults",
    "read_results_csv",
    "run_fit",
    "run_all",
    "read_result",
    "try_lock",
    "lock_is_stale",
    "release_lock",
    "clean_run_dir",
    "own_config",
]

RESULT_FILE = "result.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "fit.log"
#: An evolution trial's parameters, written when the trial is created (before it trains).
TRIAL_FILE = "trial.json"
#: Files of a run folder that a new attempt keeps (the study's own records of the run).
KEEP_FILES = (TRIAL_FILE,)


@dataclass
class RunSpec:
    """One run of a study.

    Attributes:
        run_id: folder name under ``<study>/runs``.
        config: the full config it trains (the base YAML with its changes).
        seed: ``--seed_everything``.
        info: what the study records about it in ``result.json`` (variant, switches, trial parameters, ...).
    """

    run_id: str
    config: dict[str, Any]
    seed: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What a finished run reports (``result.json``)."""

    run_id: str
    seed: int
    map: float
    map_50: float
    train_s: float
    epochs: int
    best_map: float = math.nan
    best_map_50: float = math.nan
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` content."""
        out = {k: v for k, v in self.__dict__.items() if k != "info"}
        out.update(self.info)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        """Read a ``result.json``."""
        names = ("run_id", "seed", "map", "map_50", "train_s", "epochs", "best_map", "best_map_50")
        nums = {k: (math.nan if data.get(k) is None else data[k]) for k in names[2:]}
        return cls(
            run_id=str(data["run_id"]),
            seed=int(data["seed"]),
            map=float(nums["map"]),
            map_50=float(nums["map_50"]),
            train_s=float(nums["train_s"]),
            epochs=int(nums["epochs"]) if math.isfinite(float(nums["epochs"])) else 0,
            best_map=float(nums["best_map"]),
            best_map_50=float(nums["best_map_50"]),
            info={k: v for k, v in data.items() if k not in names},
        )


#: Trains one run and returns its result, or ``None`` when it did not finish. :func:`run_fit` by default; tests
#: pass a fake.
Launcher = Callable[[RunSpec, Path, Sequence[str]], "RunResult | None"]


# ----------------------------------------------------------------------------------------------------------- inputs


def parse_budget(text: str) -> tuple[str, float]:
    """``10ep`` / ``10`` -> ``("epochs", 10)``; ``90s`` / ``5m`` / ``1.5h`` / ``00:00:05:00`` -> ``("seconds", s)``."""
    raw = str(text).strip().lower()
    match = re.fullmatch(r"(\d+)\s*(ep|epoch|epochs)?", raw)
    if match:
        epochs = int(match.group(1))
        if epochs < 1:
            raise ValueError(f"--budget {text}: at least 1 epoch")
        return "epochs", float(epochs)
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*(s|sec|m|min|h)", raw)
    if match:
        seconds = float(match.group(1)) * {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}[match.group(2)]
    elif re.fullmatch(r"\d+(:\d+){1,3}", raw):
        parts = [int(p) for p in raw.split(":")]
        parts = [0] * (4 - len(parts)) + parts  # [DD:]HH:MM:SS
        seconds = float(((parts[0] * 24 + parts[1]) * 60 + parts[2]) * 60 + parts[3])
    else:
        raise ValueError(
            f"--budget {text}: epochs (10ep, 10) or time (90s, 5m, 1.5h, DD:HH:MM:SS)"
        )
    if seconds < 1:
        raise ValueError(f"--budget {text}: at least 1 second")
    return "seconds", seconds


def budget_args(budget: str) -> list[str]:
    """The ``fit`` flags of a budget (see :func:`parse_budget`)."""
    kind, amount = parse_budget(budget)
    if kind == "epochs":
        return ["--trainer.max_epochs", str(int(amount))]
    total = int(round(amount))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return ["--trainer.max_time", f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"]


def parse_worker(text: str | None) -> tuple[int, int]:
    """``"2/3"`` -> ``(1, 3)``: this process's share (0-based) of ``n``; ``None`` -> ``(0, 1)``."""
    if not text:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(f"--worker {text}: i/n with 1 <= i <= n (--worker 1/2 and --worker 2/2 share a study)")
    return int(match.group(1)) - 1, int(match.group(2))


def resolve_config(value: str) -> Path:
    """A config file, or the name of a shipped one (``debug``, ``demo``, ``custom_yolo_format``)."""
    if os.path.isfile(value):
        return Path(value).resolve()
    stem = value[: -len(".yaml")] if value.endswith(".yaml") else value
    if stem and "/" not in stem and "\\" not in stem:
        path = resources.files("lightning_yolo.configs").joinpath(f"{stem}.yaml")
        if path.is_file():
            return Path(str(path))
    raise FileNotFoundError(f"--config {value}: no such file (nor a shipped config: demo, debug, ...)")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config as a dict (an empty file -> ``{}``)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config is a YAML mapping, got {type(data).__name__}")
    return data


def write_yaml(path: Path, data: Mapping[str, Any]) -> None:
    """Write a config atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(dict(data), f, sort_keys=False, default_flow_style=None)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def fit_command() -> list[str]:
    """The command that starts ``lightning-yolo`` with this Python."""
    return [sys.executable, "-m", "lightning_yolo"]


def print_config(config_path: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The full config of ``fit --config <config_path> --print_config`` (every default filled in)."""
    proc = subprocess.run(
        [*fit_command(), "fit", "--config", str(config_path), *extra, "--print_config"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        # the fit's own one-line error (it names the key), not a trace around it
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        tail = errors[-1][len("error: ") :] if errors else " ".join(proc.stderr.strip().splitlines()[-1:])
        raise ValueError(f"fit --config {config_path} {' '.join(extra)} refused: {tail}".replace("  ", " "))
    return yaml.safe_load(proc.stdout) or {}


def full_config(config_path: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`print_config` completed by :func:`with_model_defaults`."""
    return with_model_defaults(print_config(config_path, extra))


def with_model_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A printed fit config with ``model.model_overrides`` completed by the fields of the model's ``ModelCfg``
    (``--print_config`` shows only the overrides the config sets), so a flipped ``sam`` / ``spp`` / ``neck`` switch
    reads the model's real default. Raises a ``ValueError`` for overrides that are no ``ModelCfg`` field or have a
    value it refuses (what building the model would raise, before any training)."""
    model = config.get("model") if isinstance(config.get("model"), dict) else None
    if model is None or not model.get("model_name"):
        return config
    from dataclasses import fields

    from ..models.factory import MODEL_CFGS, get_model_cfg

    if str(model["model_name"]) not in MODEL_CFGS:
        return config  # the model's own error names the choices when the fit builds it
    overrides = model.get("model_overrides") or {}
    try:
        cfg = get_model_cfg(str(model["model_name"]), **overrides)
    except (TypeError, ValueError) as err:
        raise ValueError(f"model.model_overrides: {err}") from err
    model["model_overrides"] = {**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, **overrides}
    return config


# ----------------------------------------------------------------------------------------------------------- results


def read_results_csv(path: Path) -> dict[str, float] | None:
    """Final and best validation metrics of a fit's ``results.csv`` (``None`` when no row validated)."""
    if not path.is_file():
        return None
    with open(path, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("val/map") or "").strip()]
    if not rows:
        return None

    def number(row: Mapping[str, str], key: str) -> float:
        text = (row.get(key) or "").strip()
        return float(text) if text else math.nan

    last = rows[-1]
    maps = [number(r, "val/map") for r in rows]
    maps50 = [number(r, "val/map_50") for r in rows]
    return {
        "map": number(last, "val/map"),
        "map_50": number(last, "val/map_50"),
        "epochs": float(last.get("epoch") or len(rows)),
        "best_map": max((m for m in maps if math.isfinite(m)), default=math.nan),
        "best_map_50": max((m for m in maps50 if math.isfinite(m)), default=math.nan),
    }


def read_result(run_dir: Path) -> RunResult | None:
    """The run's ``result.json``, or ``None`` when it has not finished (or the file is unreadable)."""
    path = run_dir / RESULT_FILE
    try:
        with open(path, encoding="utf-8") as f:
            return RunResult.from_json(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_fit(spec: RunSpec, runs_dir: Path, extra: Sequence[str]) -> RunResult | None:
    """Train one run in its own process (see the module docstring); ``None`` when it did not finish."""
    run_dir = runs_dir / spec.run_id
    clean_run_dir(run_dir)  # an interrupted attempt: start over, no rows or checkpoints of it mixed in
    config_path = run_dir / CONFIG_FILE
    write_yaml(config_path, spec.config)
    cmd = [
        *fit_command(),
        "fit",
        "--config",
        str(config_path),
        "--seed_everything",
        str(spec.seed),
        "--trainer.default_root_dir",
        str(runs_dir.resolve()),
        "--name",
        spec.run_id,
        "--exist_ok",
        "true",
        "--plots",
        "false",
        *extra,
    ]
    start = time.perf_counter()
    with open(run_dir / LOG_FILE, "w", encoding="utf-8") as log:
        log.write("# " + " ".join(cmd) + "\n")
        log.flush()
        code = _call(cmd, log)
    seconds = time.perf_counter() - start
    own_config(config_path, spec.config)
    metrics = read_results_csv(run_dir / "results.csv") if code == 0 else None
    if metrics is None:
        print(f"[lightning-yolo study] {spec.run_id}: did not finish (exit status {code}); see {run_dir / LOG_FILE}")
        return None
    return RunResult(
        run_id=spec.run_id,
        seed=spec.seed,
        map=metrics["map"],
        map_50=metrics["map_50"],
        train_s=round(seconds, 2),
        epochs=int(metrics["epochs"]),
        best_map=metrics["best_map"],
        best_map_50=metrics["best_map_50"],
        info=dict(spec.info),
    )


def clean_run_dir(run_dir: Path) -> None:
    """Empty a run's folder for a new attempt, keeping the study's own records of the run (:data:`KEEP_FILES`,
    e.g. an evolution trial's ``trial.json``, written before the run trains)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for path in run_dir.iterdir():
        if path.name in KEEP_FILES:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


#: Keys of a run's ``config.yaml`` that only place the run inside the study (set by the study's flags, saved by
#: Lightning's config dump): put back to the study config's values (or the defaults) after the fit, so that
#: ``fit --config <run>/config.yaml`` trains in the user's own ``runs/`` and never writes into the study.
STUDY_PLACEMENT_KEYS = {"trainer.default_root_dir": None, "name": None, "exist_ok": False, "plots": True}


def own_config(config_path: Path, study_config: Mapping[str, Any]) -> None:
    """Make the ``config.yaml`` a fit left in its run folder (Lightning's dump of every setting: the base config, the
    run's changes, the flags after ``--``, the seed and budget) runnable on its own: the keys of
    :data:`STUDY_PLACEMENT_KEYS` get the study config's values, or their defaults."""
    try:
        with open(config_path, encoding="utf-8") as f:
            dumped = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return
    if not isinstance(dumped, dict):
        return
    from .switches import get_path, has_path, set_path

    for path, default in STUDY_PLACEMENT_KEYS.items():
        if has_path(dumped, path) or has_path(study_config, path):
            set_path(dumped, path, get_path(study_config, path, default))
    write_yaml(config_path, dumped)


# ----------------------------------------------------------------------------------------------------------- processes


_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
#: Set by SIGTERM (see :func:`run_all`): no further run starts.
_STOP = threading.Event()

#: Seconds a fit gets to shut down cleanly after the study passed it a SIGTERM, before it is killed.
CHILD_GRACE_S = 60.0


def _call(cmd: Sequence[str], log: Any) -> int:
    """``subprocess.call`` that stops the fit when this process is interrupted (Ctrl-C, or SIGTERM through
    :func:`run_all`), so that the run's lock is released only once nothing trains the run any more."""
    proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT)
    with _CHILDREN_LOCK:
        _CHILDREN.add(proc)
    try:
        return proc.wait()
    except BaseException:
        _stop_child(proc)
        raise
    finally:
        with _CHILDREN_LOCK:
            _CHILDREN.discard(proc)


def _stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.terminate()  # the fit's own SIGTERM handling: a clean shutdown, its DataLoader workers included
        proc.wait(timeout=CHILD_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------------------- locks


def try_lock(lock_path: Path, timeout: float) -> bool:
    """Create ``lock_path`` atomically; a stale lock (:func:`lock_is_stale`) is taken over."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not lock_path.exists():
                continue  # released meanwhile: try again
            if not lock_is_stale(lock_path, timeout):
                return False
            # stale: move it aside under a unique name (only one process wins the rename), then try again
            try:
                os.replace(lock_path, lock_path.with_name(f"{lock_path.name}.stale.{os.getpid()}"))
                os.remove(lock_path.with_name(f"{lock_path.name}.stale.{os.getpid()}"))
            except OSError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
        return True
    return False


def lock_is_stale(lock_path: Path, timeout: float) -> bool:
    """A lock whose process is gone: untouched for ``timeout`` seconds (its holder stopped touching it, on any
    machine), or written on this machine by a process that no longer exists (``kill -9``, a crash: free at once).
    A missing lock counts as stale."""
    try:
        age = time.time() - lock_path.stat().st_mtime
    except FileNotFoundError:
        return True
    return age >= timeout or _holder_gone(lock_path)


def _holder_gone(lock_path: Path) -> bool:
    try:
        info = json.loads(lock_path.read_text(encoding="utf-8"))
        host, pid = info["host"], int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # being written, or not ours to judge: the timeout decides
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: a process of another user has this pid
        return False
    return False


def release_lock(lock_path: Path) -> None:
    """Remove a lock this process holds."""
    try:
        os.remove(lock_path)
    except FileNotFoundError:
        pass


class _Heartbeat:
    """Touches a lock file every ``period`` seconds while a run trains, so other workers see it is alive."""

    def __init__(self, lock_path: Path, period: float = 30.0) -> None:
        self.lock_path, self.period = lock_path, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            try:
                os.utime(self.lock_path)
            except OSError:
                pass

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------------------------------- running


def my_share(specs: Sequence[RunSpec], worker: tuple[int, int]) -> list[RunSpec]:
    """The runs of worker ``i`` of ``n``: index modulo ``n`` in the study's run order (the same on every machine)."""
    index, count = worker
    return [s for k, s in enumerate(specs) if k % count == index]


def run_all(
    specs: Iterable[RunSpec],
    study_dir: Path,
    extra: Sequence[str] = (),
    workers: int = 1,
    lock_timeout: float = 600.0,
    launcher: Launcher | None = None,
    on_done: Callable[[RunResult], None] | None = None,
) -> dict[str, RunResult]:
    """Train every run without a ``result.json`` that no other process holds; returns the runs this call finished.

    ``workers`` runs train at once (threads, each waiting on its own process).
    """
    launch = launcher or run_fit
    runs_dir = study_dir / "runs"
    locks_dir = study_dir / "locks"
    done: dict[str, RunResult] = {}
    pending = [s for s in specs if read_result(runs_dir / s.run_id) is None]
    lock = threading.Lock()

    def one(spec: RunSpec) -> None:
        if _STOP.is_set():
            return  # SIGTERM: start nothing more
        lock_path = locks_dir / f"{spec.run_id}.lock"
        if not try_lock(lock_path, lock_timeout):
            print(f"[lightning-yolo study] {spec.run_id}: held by another worker ({lock_path}); skipped")
            return
        try:
            if read_result(runs_dir / spec.run_id) is not None:  # finished by another worker meanwhile
                return
            print(f"[lightning-yolo study] {spec.run_id}: training (seed {spec.seed})", flush=True)
            with _Heartbeat(lock_path, period=min(30.0, lock_timeout / 4)):
                result = launch(spec, runs_dir, extra)
            if result is None:
                return
            write_json(runs_dir / spec.run_id / RESULT_FILE, result.to_json())
            print(
                f"[lightning-yolo study] {spec.run_id}: mAP {result.map:.4f}, mAP50 {result.map_50:.4f}, "
                f"{result.epochs} epochs, {result.train_s:.0f} s",
                flush=True,
            )
            with lock:
                done[spec.run_id] = result
                if on_done is not None:
                    on_done(result)
        finally:
            release_lock(lock_path)

    with _stop_on_sigterm():
        if workers <= 1:
            for spec in pending:
                one(spec)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(one, pending))
    return done


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (``kill``, Slurm, systemd) stops a study as Ctrl-C does: the fits it started are stopped, no run
    starts, every lock it holds is released (the ``finally`` blocks run), and the process exits with status 143.
    Without this, Python's default SIGTERM action ends the process at once and its locks stay behind."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        first = not _STOP.is_set()
        _STOP.set()
        with _CHILDREN_LOCK:
            children = list(_CHILDREN)
        for proc in children:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except OSError:
                    pass
        if first:
            print("[lightning-yolo study] interrupted by SIGTERM: stopping the runs in progress and releasing their "
                  "locks; run the same command again to continue", file=sys.stderr, flush=True)  # fmt: skip
            raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _STOP.clear()


def collect_results(runs_dir: Path) -> dict[str, RunResult]:
    """Every finished run of a study folder, by run id."""
    out: dict[str, RunResult] = {}
    if not runs_dir.is_dir():
        return out
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        result = read_result(run_dir)
        if result is not None:
            out[result.run_id] = result
    return out
