"""Test-wide settings."""

from __future__ import annotations

import contextlib

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and one thread never oversubscribes a small CI machine
    (two threads made 64-128 px steps 100x slower or worse whenever another process was busy)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def cli_env(tmp_path_factory, monkeypatch):
    """In-process CLI runs: a shared synthetic-data cache under pytest's temp dir and a clean ``sys.argv``
    (LightningCLI reads its arguments from ``args=``, not from pytest's command line)."""
    monkeypatch.setenv("LIGHTNING_YOLO_CACHE", str(tmp_path_factory.getbasetemp() / "yolo_cache"))
    monkeypatch.setattr("sys.argv", ["lightning-yolo"])
    # --torch_threads auto takes a set OMP_NUM_THREADS as the user's choice: one thread for tiny test models
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def cli_session(tmp_path_factory):
    """``with cli_session():`` gives module-scoped fixtures what ``cli_env`` and ``_one_torch_thread`` give a test
    (the shared synthetic-data cache, a clean ``sys.argv``, one torch thread); fixtures wider than a function cannot
    use ``monkeypatch``."""

    @contextlib.contextmanager
    def session():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LIGHTNING_YOLO_CACHE", str(tmp_path_factory.getbasetemp() / "yolo_cache"))
            mp.setattr("sys.argv", ["lightning-yolo"])
            mp.setenv("OMP_NUM_THREADS", "1")
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                yield
            finally:
                torch.set_num_threads(threads)

    return session
