"""The automatic thread choice: never more threads than CPUs this process may use, divided between DDP processes."""

from __future__ import annotations

import os

import pytest
import torch

from lightning_yolo import runtime
from lightning_yolo.runtime import cpus_available, local_processes, plan_threads


def test_cpus_available_is_the_affinity_mask_at_most() -> None:
    n = cpus_available()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def test_cpus_available_follows_a_narrowed_affinity_mask() -> None:
    before = os.sched_getaffinity(0)
    one = {min(before)}
    try:
        os.sched_setaffinity(0, one)
        assert cpus_available() == 1
        assert plan_threads("auto").torch_threads == 1
    finally:
        os.sched_setaffinity(0, before)


def test_cgroup_quota_caps_the_cpus(tmp_path, monkeypatch) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    assert runtime._cgroup_cpu_limit(tmp_path) == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert runtime._cgroup_cpu_limit(tmp_path) is None
    monkeypatch.setattr(runtime, "_cgroup_cpu_limit", lambda: 1.5)
    assert cpus_available() == min(2, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("cpus", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("processes", [1, 2, 3, 8])
def test_auto_never_exceeds_the_cpus_and_divides_them_between_processes(cpus: int, processes: int) -> None:
    plan = plan_threads("auto", processes=processes, cpus=cpus)
    assert plan.torch_threads >= 1
    assert plan.torch_threads == max(1, cpus // processes)
    # all processes of the host together use no more threads than CPUs (one each when there are fewer CPUs)
    assert plan.torch_threads * processes <= max(cpus, processes)


def test_explicit_threads_are_capped_at_the_share_and_validated() -> None:
    assert plan_threads(1, cpus=8).torch_threads == 1
    assert plan_threads(16, cpus=8).torch_threads == 8
    assert plan_threads(4, processes=2, cpus=4).torch_threads == 2
    for bad in (0, -1, "many"):
        with pytest.raises(ValueError, match="torch_threads"):
            plan_threads(bad, cpus=2)


def test_local_processes_prefers_the_launchers_count(monkeypatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_processes(2) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_processes(2) == 4


def test_cli_applies_auto_threads_and_says_so(cli_env, monkeypatch, capsys) -> None:
    from lightning_yolo.commands.cli import build_cli, shipped_config

    debug = shipped_config("debug")

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        build_cli(["--config", debug, "--torch_threads", "auto", "--trainer.logger", "false"], run=False)
        assert torch.get_num_threads() == cpus_available()
        assert os.environ["OMP_NUM_THREADS"] == str(cpus_available())
        assert f"torch threads: {cpus_available()} (auto;" in capsys.readouterr().out
        # two DDP processes on this host (as `--trainer.devices 2` on CPU) share the CPUs
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        build_cli(["--config", debug, "--torch_threads", "auto", "--trainer.accelerator", "cpu",
                   "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.logger", "false"],
                  run=False)  # fmt: skip
        assert torch.get_num_threads() == max(1, cpus_available() // 2)
        assert "2 processes on this host" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_cpu_has_bf16_matches_the_cpu_flags() -> None:
    flags = open("/proc/cpuinfo").read()
    if " avx512_bf16" not in flags and " amx_bf16" not in flags:
        assert runtime.cpu_has_bf16() is False
    else:
        assert runtime.cpu_has_bf16() is torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("cpus", [1, 2, 4, 8, 32])
def test_auto_workers_by_device_and_cpus(cpus: int) -> None:
    from lightning_yolo.runtime import plan_workers

    cpu = plan_workers("auto", "cpu", cpus=cpus)
    assert cpu == (0 if cpus <= 2 else min(4, cpus // 4 or 1))  # measured: 2 threads + 0 workers on 2 cores
    assert cpu < cpus
    assert plan_workers("auto", "cuda", cpus=cpus) == min(8, cpus)
    assert plan_workers("auto", "cuda", processes=4, cpus=cpus) == min(8, max(1, cpus // 4))
    assert plan_workers(3, "cpu", cpus=cpus) == 3  # an explicit count is the user's
    with pytest.raises(ValueError, match="num_workers"):
        plan_workers(-1, "cpu")


def test_datamodule_resolves_auto_workers_when_building_loaders(cli_env) -> None:
    from lightning_yolo import YOLODataModule

    with pytest.raises(ValueError, match="num_workers"):
        YOLODataModule(num_workers="many")
    dm = YOLODataModule(num_workers="auto", img_size=64, batch_size=2, synthetic_num_train=4, synthetic_num_val=2,
                        synthetic_image_size=64)  # fmt: skip
    dm.setup("fit")
    from lightning_yolo.runtime import plan_workers

    assert dm.train_dataloader().num_workers == plan_workers("auto", "cpu")


def test_gpu_check_dry_run_runs_every_path_on_cpu(cli_env) -> None:
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "train yolov4_nano:" in out and "images/s" in out
    assert "infer batch 1 (network)" in out and "infer batch 2 (network + decode + DIoU-NMS)" in out
    assert "| paper | YOLOv4 (CSPDarknet53) | 608 px, batch 1, V100 | 62 FPS |" in out


def test_inference_autocast_choice_and_predict_precision(tmp_path) -> None:
    import contextlib

    from lightning_yolo import YOLOPredictor, create_model, predict
    from lightning_yolo.runtime import cpu_has_bf16, inference_autocast

    assert isinstance(inference_autocast("fp32", "cpu"), contextlib.nullcontext)
    assert isinstance(inference_autocast("bf16", "cpu"), torch.autocast)
    auto = inference_autocast("auto", "cpu")
    assert isinstance(auto, torch.autocast) == cpu_has_bf16()
    predictor = YOLOPredictor(create_model("yolov4_pico", num_classes=2), score_thresh=0.0, img_size=64).eval()
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    with pytest.raises(ValueError, match="precision"):
        predict(predictor, image, precision="half")
    fp32, bf16 = predict(predictor, image, precision="fp32")[0], predict(predictor, image, precision="bf16")[0]
    assert fp32["boxes"].dtype == bf16["boxes"].dtype == torch.float32  # decode and NMS stay float32
    assert len(fp32["boxes"]) > 0 and len(bf16["boxes"]) > 0


def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_units(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.auto_precision("cpu") == "bf16-mixed"
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    assert runtime.auto_precision("cpu") is None
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.auto_precision("auto") is None  # a GPU trains: the user's choice (16-mixed or bf16-mixed)
    assert runtime.auto_precision("gpu") is None
