"""Batch-1 CPU inference latency of a YOLOv4 variant, next to the machine's matrix-multiply throughput.

Measures, in one process and on the same threads:

* ``sgemm``: a 2048 x 2048 fp32 matrix multiply (``2 n^3`` FLOPs), the practical fp32 ceiling of the machine;
* ``eager fp32 NCHW``: the network as built (``model.eval()``, ``torch.no_grad``);
* ``fused + channels_last``: Conv+BN folded (:meth:`YOLOv4.fuse`), ``channels_last`` weights and input,
  ``torch.inference_mode`` (DESIGN section 6);
* ``decode + NMS only``: what :class:`YOLOPredictor` adds to the network (decode, greedy or DIoU NMS) on
  precomputed maps, with ``score_thresh=0`` so all ``pre_nms_topk`` = 10,000 candidates enter NMS (an untrained
  network scores below COCO's 0.001 everywhere; this is the worst case for NMS);
* optionally ``bf16 autocast`` and bf16-stored weights (``--bf16``), ``torch.compile`` with Inductor freezing
  (``--compile``; about 20 s to compile on 2 idle cores), ONNX Runtime on the exported fused network (``--onnx``),
  the WongKinYiu/PyTorch_YOLOv4 port in fp32 as its ``detect.py`` runs it (``--port DIR``, a checkout of it) and
  a per-operator profile of the fused fp32 network (``--profile``).

The configurations are timed **interleaved**, one call of each per round (and one sgemm per round), so load from
other processes on a shared machine hits all of them alike; the table gives the best and the median round. The
best is the estimate of the unloaded cost; a median far above it means the machine was busy.

FLOPs are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (multiply-add = 2 FLOPs; the paper model
costs 60.1 GFLOPs at 416 px), so ``GFLOP/s = FLOPs / time``.

Example::

    python benchmarks/inference.py --model yolov4_cspdarknet53 --img-size 416 --iters 10 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lightning_yolo.models import create_model  # noqa: E402
from lightning_yolo.models.predictor import YOLOPredictor  # noqa: E402
from lightning_yolo.ops.postprocess import decode_outputs, postprocess  # noqa: E402

SGEMM_N = 2048


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Total FLOPs of one forward pass (multiply-add counted as 2)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="yolov4_cspdarknet53", help="a name from lightning_yolo.list_models()")
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--img-size", type=int, default=416, help="square input side, a multiple of 32")
    parser.add_argument("--iters", type=int, default=10, help="timed rounds (one call of every configuration each)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls of each configuration first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast on the fused channels_last model")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the fused model")
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime on the exported fused model")
    parser.add_argument("--no-nms", action="store_true", help="skip the decode + NMS configurations")
    parser.add_argument("--port", default=None, metavar="DIR",
                        help="a checkout of WongKinYiu/PyTorch_YOLOv4: also time its Darknet(cfg/yolov4.cfg) in fp32 as "
                        "its detect.py runs it on a CPU (eval, no_grad, not fused); the paper model's peer")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the fused fp32 model by operator: where the time above the floor goes")
    args = parser.parse_args(argv)
    if args.img_size % 32:
        parser.error(f"--img-size must be a multiple of 32, got {args.img_size}")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} logical CPUs, model {args.model}")

    model = create_model(args.model, num_classes=args.num_classes).eval()
    x = torch.rand(1, 3, args.img_size, args.img_size)
    flops = count_flops(model, x)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.model} @ {args.img_size}: {params / 1e6:.1f}M parameters, {flops / 1e9:.1f} GFLOPs (batch 1)")

    fused = create_model(args.model, num_classes=args.num_classes).eval()
    fused.load_state_dict(model.state_dict())
    fused.fuse().to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    a, b = torch.randn(SGEMM_N, SGEMM_N), torch.randn(SGEMM_N, SGEMM_N)
    gemm_out = torch.empty(SGEMM_N, SGEMM_N)
    configs: list[tuple[str, Callable[[], object]]] = [("sgemm 2048", lambda: torch.mm(a, b, out=gemm_out))]

    def no_grad_call(module: torch.nn.Module, inp: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad():
                return module(inp)

        return call

    def inference_call(module: torch.nn.Module, inp: torch.Tensor, bf16: bool = False) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return module(inp)

        return call

    configs.append(("eager fp32 NCHW", no_grad_call(model, x)))
    configs.append(("fused + channels_last + inference_mode", inference_call(fused, x_cl)))
    if args.bf16:
        configs.append(("fused + channels_last + bf16 autocast", inference_call(fused, x_cl, bf16=True)))
        # the weights stored in bfloat16 once: autocast re-casts every fp32 weight on each call (its cast cache
        # keeps a cast only within one autocast region)
        fused_bf16 = copy.deepcopy(fused).to(torch.bfloat16)
        configs.append(("fused + channels_last + bf16 weights", inference_call(fused_bf16, x_cl.bfloat16())))
    if not args.no_nms:
        with torch.inference_mode():
            raw_maps = fused(x_cl)
        for kind in ("greedy", "diou"):
            predictor = YOLOPredictor(fused, score_thresh=0.0, nms_iou_thresh=0.6, nms_kind=kind, max_det=300)

            def post(p: YOLOPredictor = predictor) -> object:
                # decode + NMS alone on precomputed maps: what YOLOPredictor adds to the network's time
                a_ = p.model.anchors
                with torch.inference_mode():
                    decoded = decode_outputs(raw_maps, a_.anchors, a_.strides, a_.scale_x_y, p.num_classes)
                    return postprocess(decoded, p.score_thresh, p.nms_iou_thresh, p.nms_kind, max_det=p.max_det)

            configs.append((f"decode + {kind} NMS only (10k candidates)", post))
    if args.compile:
        import torch._inductor.config as inductor_config

        # freezing: weights become constants, so Inductor pre-packs them for oneDNN and folds what it can
        # (inference only; ~15 % faster than compiling without it on the 2-core machine)
        inductor_config.freezing = True
        compiled = torch.compile(fused)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(x_cl)
        print(f"torch.compile: first call (compilation) {time.perf_counter() - start:.0f} s")
        configs.append(("fused + channels_last + torch.compile (freezing)", inference_call(compiled, x_cl)))
        if args.bf16:  # what lightning_yolo.predict(..., compile=True) runs on a CPU with bf16 units
            compiled_bf16 = torch.compile(fused, options={"freezing": True})
            start = time.perf_counter()
            inference_call(compiled_bf16, x_cl, bf16=True)()
            print(f"torch.compile under bf16 autocast: first call (compilation) {time.perf_counter() - start:.0f} s")
            configs.append(("fused + channels_last + bf16 autocast + torch.compile (freezing)",
                            inference_call(compiled_bf16, x_cl, bf16=True)))
    if args.port:
        # the port's own modules (models/, utils/) import each other as top-level packages
        sys.path.insert(0, str(Path(args.port).resolve()))
        from models.models import Darknet  # type: ignore[import-not-found]

        port = Darknet(str(Path(args.port) / "cfg" / "yolov4.cfg"), (args.img_size, args.img_size)).eval()
        configs.append(("PyTorch_YOLOv4 port, fp32 (its detect.py on a CPU)", no_grad_call(port, x)))
    tmp = tempfile.TemporaryDirectory()
    if args.onnx:
        import onnxruntime as ort

        from lightning_yolo.inference.export import export_onnx

        start = time.perf_counter()
        path = export_onnx(fused, Path(tmp.name) / "model.onnx", img_size=args.img_size, dynamic_batch=False)
        print(f"ONNX export (fused, static batch 1): {time.perf_counter() - start:.0f} s")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        configs.append(("ONNX Runtime (fused, CPU EP)", lambda: session.run(None, feed)))

    for _, fn in configs:
        for _ in range(args.warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name, _ in configs}
    for round_idx in range(args.iters):
        for name, fn in configs:
            times[name].append(timed(fn))
        line = ", ".join(f"{n.split(' (')[0]}: {t[-1] * 1e3:.0f}" for n, t in times.items())
        print(f"round {round_idx + 1}/{args.iters} (ms): {line}", flush=True)
    tmp.cleanup()

    gemm_best = 2 * SGEMM_N**3 / min(times["sgemm 2048"]) / 1e9
    gemm_median = 2 * SGEMM_N**3 / statistics.median(times["sgemm 2048"]) / 1e9
    print(f"\nsgemm {SGEMM_N}x{SGEMM_N} fp32: best {gemm_best:.0f} GFLOP/s, median round {gemm_median:.0f} GFLOP/s")
    print(f"{args.model} @ {args.img_size}, batch 1, {threads} threads, {args.iters} interleaved rounds:")
    extra = (" speed-up vs the port |", "---:|") if args.port else ("", "")
    print(f"| configuration | best ms/image | median ms/image | GFLOP/s (best) | % of best sgemm |{extra[0]}")
    print(f"|---|---:|---:|---:|---:|{extra[1]}")
    port_best = min(next((t for n, t in times.items() if n.startswith("PyTorch_YOLOv4")), [float("nan")]))
    for name, t in times.items():
        if name.startswith("sgemm"):
            continue
        best, med = min(t), statistics.median(t)
        if "NMS only" in name:  # post-processing: no network FLOPs
            print(f"| {name} | {best * 1e3:.0f} | {med * 1e3:.0f} | - | - |{' - |' if args.port else ''}")
            continue
        rate = flops / best / 1e9
        vs_port = f" {port_best / best:.2f} |" if args.port else ""
        print(f"| {name} | {best * 1e3:.0f} | {med * 1e3:.0f} | {rate:.0f} | {100 * rate / gemm_best:.0f} |{vs_port}")
    floor = flops / (gemm_best * 1e9)
    print(f"floor (FLOPs at the best sgemm rate): {floor * 1e3:.0f} ms; at 1.18x that rate (DESIGN's best "
          f"convolutions): {floor / 1.18 * 1e3:.0f} ms")
    if args.profile:
        profile_ops(fused, x_cl, flops, gemm_best)


def profile_ops(model: torch.nn.Module, x: torch.Tensor, flops: int, gemm_best: float, calls: int = 3) -> None:
    """Self CPU time per operator of the fused fp32 ``channels_last`` model (``torch.profiler``, ``calls`` calls
    after one warm-up): the convolutions' own rate against sgemm, and what the rest (activations, concatenations,
    pooling, copies) adds."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                model(x)
    rows = sorted(((e.key, e.self_cpu_time_total / calls / 1e3) for e in prof.key_averages()), key=lambda r: -r[1])
    total = sum(ms for _, ms in rows)
    conv_ms = sum(ms for key, ms in rows if "conv" in key)
    print(f"\nfused fp32 channels_last by operator (self time, mean of {calls} calls; profiler total {total:.0f} ms):")
    print("| operator | ms / image | share |\n|---|---:|---:|")
    for key, ms in rows[:10]:
        print(f"| {key} | {ms:.1f} | {100 * ms / total:.1f}% |")
    conv_rate = flops / (conv_ms / 1e3) / 1e9
    print(f"convolutions: {conv_ms:.0f} ms, {conv_rate:.0f} GFLOP/s ({100 * conv_rate / gemm_best:.0f}% of sgemm); "
          f"everything else: {total - conv_ms:.0f} ms")


if __name__ == "__main__":
    main()
