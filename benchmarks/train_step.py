"""Where training time goes, and how the package uses the machine.

Two modes:

``splits``: the README's own-data command (``lightning-yolo fit --config custom_yolo_format``) on a real dataset
for a few epochs, once per torch-thread / loader-worker split (``auto`` = the package's automatic choice), the
configurations interleaved round by round; prints the median seconds per training epoch (the first epoch is
dropped: allocator warm-up and the first worker start) and per validation. A split is ``T+W`` (torch threads +
loader workers) or ``auto``, optionally with ``/fp32`` (``--trainer.precision 32-true``) and ``/nocache``
(``--data.cache_images false``)::

    python benchmarks/train_step.py splits --data /work/data/raccoon_voc --img-size 320 \
        --splits 1+1/fp32/nocache 2+0 2+1 2+2 auto --epochs 4 --rounds 2

``breakdown``: one model, one stream of real training batches (the package's own loader, Mosaic on), timed two
ways: a plain PyTorch loop with a timer around each part of the step (data wait, forward, assignment + loss,
backward, optimizer, EMA update) and the same model and batches under a real ``Trainer.fit`` (the Lightning
overhead is the difference per step); the validation share of an epoch comes from the same fit. With
``--peer`` it also times the peer's (ultralytics) epoch on the same data at the same thread count::

    python benchmarks/train_step.py breakdown --data /work/data/raccoon_voc --img-size 320 --threads 2 --peer

``validation``: the parts of one validation of a trained checkpoint (forward, post-processing, mAP computation)
with the network fused or not and each COCO evaluation backend::

    python benchmarks/train_step.py validation --ckpt runs/detect/train/checkpoints/best.ckpt \\
        --data /work/data/raccoon_voc --img-size 320

Run nothing else on the machine while it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CONFIG = str(REPO / "configs" / "custom_yolo_format.yaml")  # this checkout's, not an installed copy


# --------------------------------------------------------------------------------------------- splits


def _fit_epochs(data: str, img_size: int, epochs: int, threads: str, workers: int | None, extra: list[str],
                out: Path) -> dict:  # fmt: skip
    """One ``fit`` of the own-data config; returns the per-epoch train / val seconds that EpochClock wrote."""
    clock = out / "clock.jsonl"
    clock.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "lightning_yolo", "fit", "--config", CONFIG, "--data.path", data,
           "--data.img_size", str(img_size), "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir",
           str(out), "--name", "run", "--exist_ok", "true", "--plots", "false",
           "--trainer.callbacks+=epoch_clock.EpochClock", "--torch_threads", threads]  # fmt: skip
    if workers is not None:
        cmd += ["--data.num_workers", str(workers)]
    cmd += extra
    env = dict(os.environ, EPOCH_CLOCK=str(clock),
               PYTHONPATH=os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(out), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fit failed ({shlex.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in clock.read_text().splitlines()]
    chosen = [line for line in (proc.stdout + proc.stderr).splitlines() if "threads" in line.lower()][:1]
    return {
        "train": [r["seconds"] for r in rows if r["event"] == "train"],
        "val": [r["seconds"] for r in rows if r["event"] == "val"],
        "wall": wall,
        "said": chosen[0].strip() if chosen else "",
    }


def splits(args: argparse.Namespace) -> None:
    out = Path(args.out or tempfile.mkdtemp(prefix="train_step_splits_"))
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {s: [] for s in args.splits}
    for r in range(args.rounds):
        for s in args.splits:
            # "T+W" threads + workers, or "auto"; "/fp32" forces 32-bit, "/nocache" turns the RAM cache off
            head, *flags = s.split("/")
            extra = list(args.extra)
            if "fp32" in flags:
                extra += ["--trainer.precision", "32-true"]
            if "nocache" in flags:
                extra += ["--data.cache_images", "false"]
            if head == "auto":
                threads, workers = "auto", None
            else:
                t, w = head.split("+")
                threads, workers = t, int(w)
            res = _fit_epochs(args.data, args.img_size, args.epochs, threads, workers, extra, out)
            results[s].append(res)
            print(f"round {r} {s:>5}: train epochs {res['train']} val {res['val']} wall {res['wall']:.1f} s "
                  f"{res['said']}", flush=True)  # fmt: skip
    print(f"\n{args.data}, {args.img_size} px, {args.epochs} epochs x {args.rounds} rounds; median over rounds of "
          "epochs 2.. (train) and of all validations\n")  # fmt: skip
    print("| threads+workers | s / train epoch | s / validation | ratio to best |")
    print("| --- | ---: | ---: | ---: |")
    med = {s: statistics.median([t for res in rs for t in res["train"][1:]]) for s, rs in results.items()}
    best = min(med.values())
    for s, rs in results.items():
        val = statistics.median([v for res in rs for v in res["val"]] or [float("nan")])
        print(f"| {s} | {med[s]:.2f} | {val:.2f} | {med[s] / best:.2f} |")
    for s, rs in results.items():
        if rs[0]["said"]:
            print(f"{s}: {rs[0]['said']}")


# --------------------------------------------------------------------------------------------- breakdown


class _Clock:
    """Accumulates wall time per part of the step."""

    def __init__(self) -> None:
        self.parts: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float) -> None:
        self.parts.setdefault(name, []).append(seconds)


def _build(data: str, img_size: int, threads: str, workers: int | None, extra: list[str], out: Path):
    """The own-data config's model, DataModule and Trainer, as ``lightning-yolo fit`` builds them."""
    from lightning_yolo.commands.cli import build_cli

    sys.argv = sys.argv[:1]  # LightningCLI reads args= only
    args = ["--config", CONFIG, "--data.path", data, "--data.img_size", str(img_size),
            "--trainer.default_root_dir", str(out), "--name", "breakdown", "--exist_ok", "true", "--plots", "false",
            "--torch_threads", threads, "--trainer.logger", "false",
            "--model.auto_anchor", "false"]  # fmt: skip
    if workers is not None:
        args += ["--data.num_workers", str(workers)]
    cli = build_cli(args + extra, run=False)
    return cli.model, cli.datamodule, cli.trainer


def _plain_loop(model, dm, batches: list, clock: _Clock, loader_iter=None, steps: int = 0) -> None:
    """One optimisation step per batch with a timer around each part (the module's own network and loss)."""
    import torch

    from lightning_yolo.callbacks.recipe import EMA
    from lightning_yolo.training.optim import param_groups

    net, loss_fn = model.model, model.loss
    hp = model.hparams
    net.train()
    opt = torch.optim.AdamW(param_groups(net, hp.weight_decay, trainable_only=False), lr=hp.lr)
    ema = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=EMA().ema_fn, use_buffers=True)
    n = steps if loader_iter is not None else len(batches)
    for i in range(n):
        t0 = time.perf_counter()
        batch = next(loader_iter) if loader_iter is not None else batches[i]
        t1 = time.perf_counter()
        images = batch["images"].float().div_(255.0)
        targets = batch["targets"]
        t2 = time.perf_counter()
        raw = net(images)
        t3 = time.perf_counter()
        losses = loss_fn(raw, targets)
        t4 = time.perf_counter()
        losses["loss"].backward()
        t5 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        ema.update_parameters(net)
        t7 = time.perf_counter()
        if i >= 2:  # the first steps warm the allocator and oneDNN's kernel caches
            for name, a, b in (("data wait", t0, t1), ("to float", t1, t2), ("forward", t2, t3),
                               ("assignment + loss", t3, t4), ("backward", t4, t5), ("optimizer", t5, t6),
                               ("EMA update", t6, t7), ("step", t0, t7)):  # fmt: skip
                clock.add(name, b - a)


class _ListLoader:
    """A DataLoader stand-in over recorded batches (fresh dicts each epoch: the transfer hook edits them)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):
        for b in self.batches:
            yield {"images": b["images"].clone(), "targets": b["targets"]}

    def __len__(self) -> int:
        return len(self.batches)


def breakdown(args: argparse.Namespace) -> None:
    import copy

    import pytorch_lightning as pl
    import torch

    sys.path.insert(0, str(BENCH))
    from epoch_clock import EpochClock

    out = Path(args.out or tempfile.mkdtemp(prefix="train_step_breakdown_"))
    out.mkdir(parents=True, exist_ok=True)
    model, dm, trainer = _build(args.data, args.img_size, args.threads, args.workers, args.extra, out)
    print(f"threads {torch.get_num_threads()}, loader workers {dm.num_workers}, model {model.hparams.model_name}, "
          f"{args.img_size} px, batch {dm.batch_size}", flush=True)  # fmt: skip
    dm.trainer = trainer  # the sampler's close-mosaic reads trainer.max_epochs
    dm.setup("fit")
    loader = dm.train_dataloader()
    init_state = copy.deepcopy(model.state_dict())

    # 1) plain loop on the real loader: data wait as the training process sees it
    real = _Clock()
    it = iter(loader)
    steps = min(args.steps, len(loader))
    _plain_loop(model, dm, [], real, loader_iter=it, steps=steps)
    del it
    # record batches for the like-for-like comparison (uint8, as the loader hands them out)
    batches = []
    for b in loader:
        batches.append({"images": b["images"].clone(), "targets": b["targets"]})
        if len(batches) >= args.steps:
            break

    # 2) plain loop on the recorded batches, then 3) Lightning's fit on the same batches, interleaved
    plain_rounds, lightning_rounds = [], []
    for _ in range(args.rounds):
        model.load_state_dict(init_state)
        clock = _Clock()
        _plain_loop(model, dm, batches, clock)
        plain_rounds.append(clock)
        model.load_state_dict(init_state)
        clock_path = out / "clock.jsonl"
        clock_path.unlink(missing_ok=True)
        os.environ["EPOCH_CLOCK"] = str(clock_path)
        lt = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[EpochClock()],
                        enable_model_summary=False)  # fmt: skip
        dm.train_dataloader = lambda: _ListLoader(batches)  # type: ignore[method-assign]
        t0 = time.perf_counter()
        lt.fit(model, datamodule=dm)
        rows = [json.loads(line) for line in clock_path.read_text().splitlines()]
        lightning_rounds.append([r["seconds"] / r["steps"] for r in rows if r["event"] == "train"][1:])
        print(f"  lightning fit of 2 epochs: {time.perf_counter() - t0:.1f} s", flush=True)

    def med(clocks: list[_Clock], name: str) -> float:
        return statistics.median([statistics.median(c.parts[name]) for c in clocks if name in c.parts])

    step_plain = med(plain_rounds, "step") - med(plain_rounds, "data wait")
    step_lightning = statistics.median([s for r in lightning_rounds for s in r])
    print(f"\n{args.data}, {args.img_size} px, {len(batches)} recorded batches, {args.rounds} rounds (medians)\n")
    print("| part of a step | ms (real loader) | ms (recorded batches) | share of step |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("data wait", "to float", "forward", "assignment + loss", "backward", "optimizer", "EMA update"):
        rec = med(plain_rounds, name)
        print(f"| {name} | {1e3 * med([real], name):.1f} | {1e3 * rec:.1f} | {100 * rec / step_plain:.1f}% |")
    print(f"| whole step, plain PyTorch | {1e3 * med([real], 'step'):.1f} | {1e3 * step_plain:.1f} | 100% |")
    print(f"| whole step, Lightning fit (epoch time / steps) | | {1e3 * step_lightning:.1f} | "
          f"{100 * step_lightning / step_plain:.1f}% |")  # fmt: skip
    print(f"\nLightning overhead: {100 * (step_lightning / step_plain - 1):+.1f}% of a plain step")


# --------------------------------------------------------------------------------------------- layouts


def layouts(args: argparse.Namespace) -> None:
    """Forward + backward of one network on a random batch: fp32 / bf16 autocast, NCHW / channels_last weights."""
    import torch

    from lightning_yolo import create_model

    torch.set_num_threads(args.threads)

    first_ms: dict[tuple[bool, bool, bool], float] = {}

    def step_ms(channels_last: bool, bf16: bool, compiled: bool = False) -> float:
        torch.manual_seed(0)
        net = create_model(args.model, num_classes=3).train()
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        run = torch.compile(net) if compiled else net
        x = torch.rand(args.batch, 3, args.img_size, args.img_size).contiguous(memory_format=torch.channels_last)
        times = []
        for _ in range(args.steps + 2):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = run(x)
            sum(o.float().square().mean() for o in out).backward()
            times.append(time.perf_counter() - t0)
        first_ms.setdefault((channels_last, bf16, compiled), 1e3 * times[0])  # compilation, for compiled rows
        return 1e3 * statistics.median(times[2:])

    variants = [(cl, bf, False) for cl in (False, True) for bf in (False, True)]
    if args.compile:  # torch.compile (Inductor) of the training network, forward and backward
        variants += [(True, False, True), (True, True, True)]
    rows: dict[tuple[bool, bool, bool], list[float]] = {}
    for _ in range(args.rounds):
        for key in variants:
            rows.setdefault(key, []).append(step_ms(*key))
    print(f"\n{args.model}, batch {args.batch}, {args.img_size} px, {args.threads} threads: forward + backward ms "
          f"(best of {args.rounds} rounds of the median of {args.steps} steps)\n")  # fmt: skip
    print("| weights | precision | torch.compile | ms / step | first step ms |\n| --- | --- | --- | ---: | ---: |")
    for (cl, bf, comp), ms in rows.items():
        layout, precision = "channels_last" if cl else "NCHW", "bf16 autocast" if bf else "fp32"
        first = first_ms[(cl, bf, comp)]
        print(f"| {layout} | {precision} | {'yes' if comp else 'no'} | {min(ms):.0f} | {first:.0f} |")


# --------------------------------------------------------------------------------------------- validation


def validation(args: argparse.Namespace) -> None:
    """One validation of a trained checkpoint, as ``fit`` runs it, under each evaluation setting, interleaved.

    Settings: the network evaluated (``fused``: the Conv+BN-folded copy that ``callbacks.evaluation.FusedEvaluation``
    sets as ``YOLOModule.eval_model`` at each evaluation, the default; ``plain``: the trained network itself) and
    the COCO evaluation backend of the mAP (``pycocotools`` / ``faster_coco_eval``). Parts: the network's forward and post-processing (EvalSpeed's
    timers), the mAP computation (``compute_and_report``) and the whole ``Trainer.validate``.
    """
    import pytorch_lightning as pl
    import torch

    import lightning_yolo.module as module_py
    from lightning_yolo import YOLODataModule, YOLOModule
    from lightning_yolo.callbacks.evaluation import EvalSpeed
    from lightning_yolo.runtime import auto_precision

    torch.set_num_threads(args.threads)
    precision = auto_precision("cpu")
    compute_s: list[float] = []
    compute = module_py.compute_and_report

    def timed_compute(*a, **k):  # noqa: ANN002, ANN003
        t0 = time.perf_counter()
        try:
            return compute(*a, **k)
        finally:
            compute_s.append(time.perf_counter() - t0)

    module_py.compute_and_report = timed_compute
    from lightning_yolo.callbacks.evaluation import FusedEvaluation

    fused_start = FusedEvaluation.on_validation_epoch_start
    dm = YOLODataModule(path=args.data, img_size=args.img_size, batch_size=args.batch, num_workers=0)
    settings = [(net, backend) for net in ("fused", "plain") for backend in ("pycocotools", "faster_coco_eval")]
    rows: dict[tuple[str, str], list[dict]] = {k: [] for k in settings}
    for _ in range(args.rounds + 1):  # round 0 warms the caches and is dropped
        for net, backend in settings:
            FusedEvaluation.on_validation_epoch_start = fused_start if net == "fused" else (lambda *a: None)
            model = YOLOModule.load_from_checkpoint(args.ckpt, map_location="cpu", map_backend=backend)
            trainer = pl.Trainer(accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False, default_root_dir=args.out)
            t0 = time.perf_counter()
            metrics = trainer.validate(model, dm, verbose=False)[0]
            total = time.perf_counter() - t0
            speed = next(cb for cb in trainer.callbacks if isinstance(cb, EvalSpeed)).totals
            rows[(net, backend)].append({"total": total, "forward": speed["inference"],
                                         "post": speed["post-process"], "map": compute_s[-1],
                                         "map_50": metrics["val/map_50"], "mAP": metrics["val/map"]})
    FusedEvaluation.on_validation_epoch_start = fused_start
    n = len(dm.val_dataloader().dataset)
    print(f"\n{args.ckpt}: {n} validation images of {args.data}, {args.img_size} px, batch {args.batch}, "
          f"{args.threads} threads, {precision}; seconds per validation, median of {args.rounds} rounds\n")
    print("| network | mAP backend | forward | post-process | mAP compute | whole validate | mAP50 | mAP50-95 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (net, backend), rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs[1:]) for k in ("forward", "post", "map", "total")}
        print(f"| {net} | {backend} | {med['forward']:.3f} | {med['post']:.3f} | {med['map']:.3f} | "
              f"{med['total']:.3f} | {rs[-1]['map_50']:.4f} | {rs[-1]['mAP']:.4f} |")


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    from lightning_yolo.commands.args import split_passthrough

    argv, extra = split_passthrough(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("splits", allow_abbrev=False, help="seconds per epoch for thread / worker splits")
    s.add_argument("--data", required=True)
    s.add_argument("--img-size", type=int, default=320)
    s.add_argument("--splits", nargs="+", default=["1+1", "2+0", "2+1", "2+2", "auto"])
    s.add_argument("--epochs", type=int, default=4)
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument("--out", default=None)
    b = sub.add_parser("breakdown", allow_abbrev=False, help="time of each part of a training step")
    b.add_argument("--data", required=True)
    b.add_argument("--img-size", type=int, default=320)
    b.add_argument("--threads", default="auto")
    b.add_argument("--workers", type=int, default=None)
    b.add_argument("--steps", type=int, default=12, help="recorded batches (one pass each round)")
    b.add_argument("--rounds", type=int, default=2)
    b.add_argument("--out", default=None)
    lay = sub.add_parser("layouts", allow_abbrev=False, help="fp32 / bf16, NCHW / channels_last step times")
    lay.add_argument("--model", default="yolov4_nano")
    lay.add_argument("--img-size", type=int, default=320)
    lay.add_argument("--batch", type=int, default=16)
    lay.add_argument("--threads", type=int, default=2)
    lay.add_argument("--steps", type=int, default=4)
    lay.add_argument("--rounds", type=int, default=2)
    lay.add_argument("--compile", action="store_true", help="also torch.compile the network (first step = compile)")
    v = sub.add_parser("validation", allow_abbrev=False, help="parts of one validation of a trained checkpoint")
    v.add_argument("--ckpt", required=True)
    v.add_argument("--data", required=True)
    v.add_argument("--img-size", type=int, default=320)
    v.add_argument("--batch", type=int, default=16)
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--rounds", type=int, default=3)
    v.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.extra = extra
    if getattr(args, "data", None):
        args.data = str(Path(args.data).resolve())
    {"splits": splits, "breakdown": breakdown, "layouts": layouts, "validation": validation}[args.mode](args)


if __name__ == "__main__":
    main()
