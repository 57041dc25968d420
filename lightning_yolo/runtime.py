"""What the machine offers this process: CPUs it may use, the torch threads to run, bf16 units.

``torch_threads="auto"`` (the CLI's default) asks :func:`plan_threads` for the intra-op thread count of each
training process: the CPUs this process may run on (its affinity mask, ``os.sched_getaffinity``, further capped by
a cgroup CPU quota such as ``docker --cpus``), divided between the processes that train on this host (DDP ranks),
at least one each. ``num_workers="auto"`` asks :func:`plan_workers`: on a CPU with 2 cores or fewer per process no
worker at all, since the training threads already fill the cores (``benchmarks/train_step.py splits`` on photos,
benchmarks/README.md); the threads are therefore not reduced for workers.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ThreadPlan",
    "auto_precision",
    "cpu_has_bf16",
    "cpus_available",
    "inference_autocast",
    "local_processes",
    "plan_threads",
    "plan_workers",
    "ram_cache_budget",
]


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), ``None`` when unlimited."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def cpus_available() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


def local_processes(devices_on_host: int = 1) -> int:
    """Training processes on this host: ``LOCAL_WORLD_SIZE`` when a launcher (torchrun) set it, else
    ``devices_on_host`` (the Trainer's processes per node)."""
    env = os.environ.get("LOCAL_WORLD_SIZE")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, int(devices_on_host))


@dataclass(frozen=True)
class ThreadPlan:
    """The threads chosen for one training process and why."""

    torch_threads: int
    cpus: int
    processes: int
    requested: int | str | None

    def describe(self) -> str:
        how = "auto" if self.requested in ("auto", None) else "asked"
        per = f", {self.processes} processes on this host" if self.processes > 1 else ""
        return f"torch threads: {self.torch_threads} ({how}; {self.cpus} CPUs available to this process{per})"


def plan_threads(requested: int | str | None, processes: int = 1, cpus: int | None = None) -> ThreadPlan:
    """The intra-op thread count of each of ``processes`` training processes on this host.

    Args:
        requested: ``"auto"`` (or ``None``): the available CPUs divided between the processes; an int: that many,
            capped at the CPUs available to each process (more threads than CPUs only makes OpenMP wait).
        processes: training processes sharing this host's CPUs (DDP ranks on one node).
        cpus: CPUs available (default :func:`cpus_available`).

    Raises:
        ValueError: ``requested`` is neither ``"auto"``, ``None`` nor a positive int.
    """
    n = _count_or_auto(requested, "torch_threads", minimum=1)
    cpus = cpus_available() if cpus is None else max(1, int(cpus))
    processes = max(1, int(processes))
    share = max(1, cpus // processes)
    return ThreadPlan(share if n is None else min(n, share), cpus, processes, "auto" if n is None else n)


def _count_or_auto(requested: int | str | None, key: str, minimum: int) -> int | None:
    """``None`` for ``"auto"`` (or ``None``), else ``requested`` as an int >= ``minimum``; a ValueError naming
    ``key`` otherwise."""
    if requested is None or (isinstance(requested, str) and requested.strip().lower() == "auto"):
        return None
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    try:
        n = int(requested)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected 'auto' or {what}, got {requested!r}") from None
    if n < minimum:
        raise ValueError(f"{key}: expected 'auto' or {what}, got {requested!r}")
    return n


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has bf16 arithmetic units (AVX-512 BF16 or AMX), where oneDNN runs bf16 convolutions at
    about twice the fp32 rate; ``False`` elsewhere (bf16 there is emulated and slower than fp32)."""
    try:
        import torch

        if not torch.backends.mkldnn.is_available():
            return False
        probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if probe is not None and not probe():
            return False
    except Exception:  # noqa: BLE001 - a probe, never a failure
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def plan_workers(requested: int | str | None, device_type: str, processes: int = 1, cpus: int | None = None) -> int:
    """DataLoader workers of each training process.

    ``"auto"``: on a GPU, one per CPU of the process's share, at most 8 (the loader feeds an idle host); on a CPU
    with at most 2 CPUs per process, none: the training threads already fill the cores, and a worker only takes
    time from them (``benchmarks/train_step.py splits`` on photos, 2 CPUs: 2 threads + 0 workers 6.2 s per
    epoch, + 1 worker 6.7 s, + 2 workers 6.9 s); with more CPUs, one worker per 4 of them, at most 4, decodes
    ahead while the threads compute. An int is used as given.
    """
    n = _count_or_auto(requested, "num_workers", minimum=0)
    if n is not None:
        return n
    cpus = cpus_available() if cpus is None else max(1, int(cpus))
    share = max(1, cpus // max(1, int(processes)))
    if device_type != "cpu":
        return min(8, share)
    return 0 if share <= 2 else min(4, share // 4 or 1)


def auto_precision(accelerator: str | None) -> str | None:
    """``trainer.precision`` chosen when the config leaves it ``null``: ``"bf16-mixed"`` when training runs on a
    CPU with bf16 units (:func:`cpu_has_bf16`), else ``None`` (Lightning's default, 32-bit).

    bf16 autocast runs the convolutions at about twice the fp32 rate there (``yolov4_nano`` at 320 px, batch 16,
    forward + backward on 2 cores: 358 ms against 629 ms, benchmarks/README.md).
    """
    import torch

    on_cpu = accelerator == "cpu" or (
        accelerator in (None, "auto")
        and not torch.cuda.is_available()
        and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())
    )
    return "bf16-mixed" if on_cpu and cpu_has_bf16() else None


def inference_autocast(precision: str, device_type: str):
    """The autocast context of an inference forward pass: ``"fp32"`` none, ``"bf16"`` bfloat16, ``"auto"`` bfloat16
    on a CPU with bf16 units (:func:`cpu_has_bf16`), else none. Decoding stays float32 in every case
    (:func:`lightning_yolo.ops.postprocess.decode_outputs` casts the head maps)."""
    import contextlib

    import torch

    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    use = precision == "bf16" or (precision == "auto" and device_type == "cpu" and cpu_has_bf16())
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type if device_type in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16)


def ram_cache_budget() -> int:
    """Bytes the decoded-image caches may take (``YOLODataModule(cache_images="auto")``): a quarter of the memory
    available now (``MemAvailable``), at most 4 GiB; 1 GiB when it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return min(4 << 30, int(line.split()[1]) * 1024 // 4)
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 30
