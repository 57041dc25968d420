"""Data pipeline throughput: training (Mosaic on) and validation samples per second in one process.

Runs ``YOLODataModule`` loaders with ``num_workers=0`` (everything in this process, collate included) on
photo-sized synthetic JPEGs (generated once into the cache folder) or on any dataset path, and prints samples/s
for the rows asked for (``--rows``): the training pipeline decoding every Mosaic image (``decode4``), with a small
Mosaic buffer (``buffer``), with the default settings (``default``: buffer 64, RAM cache off), with the RAM cache
(``cache``), and the validation pipeline with and without the cache (``val``, ``valcache``). It can also time the
JPEG decoders the loader chooses between (``--decoders``). The rounds are interleaved (each row once per round);
each figure is the best of ``--rounds`` rounds (wall clock), the median round, and the CPU-time rate of the best
round; on a shared machine the best round is the one least disturbed by other processes.

``--peer-python`` also times the peer's (ultralytics) own training loader, run by the peer's interpreter in a child
process and timed in the same rounds right after the package's row it pairs with: its ``build_yolo_dataset`` in
train mode (its default augmentation: Mosaic with its image buffer, random perspective, HSV, flip) with
``cache=False`` next to ``default`` and ``cache='ram'`` next to ``cache``, its ``build_dataloader`` with 0 workers
and its collate. The peer keeps its own OpenCV setting (``cv2.setNumThreads(0)`` at import) and gets
``--peer-torch-threads`` (2) torch threads; the package runs as it is (OpenCV's default threads). The dataset is
copied to the peer's layout by ``benchmarks/accuracy.py``'s ``prepare()`` unless ``--peer-data`` names one.

    python benchmarks/data.py                              # synthetic 1280x960 JPEGs, 640-px pipeline
    python benchmarks/data.py --path /data/coco/data.yaml --samples 512
    python benchmarks/data.py --photo-size 640x480 --profile
    python benchmarks/data.py --path /data/coco128 --peer-python /venv-peer/bin/python --rounds 5
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_yolo.data.datamodule import YOLODataModule  # noqa: E402
from lightning_yolo.data.synthetic import ensure_synthetic_dataset  # noqa: E402

try:
    from lightning_yolo.data.config import AugmentCfg
except ImportError:  # a tree from before AugmentCfg (flat DataModule arguments), for before / after comparisons
    AugmentCfg = None


def _time_loader(loader, samples: int, count=lambda batch: len(batch["targets"])) -> tuple[float, float, int]:
    """Iterate ``loader`` (restarting it) until ``samples`` images were produced: (wall s, cpu s, images)."""
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while n < samples:
        for batch in loader:
            n += count(batch)
            if n >= samples:
                break
    return time.perf_counter() - t0, time.process_time() - c0, n


# The peer's side of --peer-python, run by the peer's own interpreter: its training dataset as its trainer builds it
# (DetectionTrainer.build_dataset -> build_yolo_dataset, mode "train": Mosaic, RandomPerspective, HSV, flip, Format;
# its default hyperparameters) and its training loader (build_dataloader, workers 0, shuffle, its collate_fn). It
# answers one timed round per line read from stdin ("<cache> <samples>") with a JSON line.
_PEER_SCRIPT = r"""
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
args = json.loads(sys.argv[1])
reply = os.fdopen(os.dup(1), "w")  # the answers; anything the peer prints goes to stderr
os.dup2(2, 1)
sys.stdout = sys.stderr
import cv2, torch
import ultralytics  # sets cv2.setNumThreads(0), its choice for data loading
from ultralytics.cfg import get_cfg
from ultralytics.data import build_dataloader, build_yolo_dataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.utils import DEFAULT_CFG
torch.set_num_threads(args["torch_threads"])
data = check_det_dataset(args["data"])
loaders, fill = {}, {}
for cache in args["caches"]:
    cfg = get_cfg(DEFAULT_CFG, {"imgsz": args["img_size"], "cache": cache if cache != "off" else False,
                                "workers": 0, "batch": args["batch_size"]})
    t0 = time.perf_counter()
    ds = build_yolo_dataset(cfg, data["train"], args["batch_size"], data, mode="train", stride=32)
    fill[cache] = time.perf_counter() - t0
    loaders[cache] = build_dataloader(ds, batch=args["batch_size"], workers=0, shuffle=True, device="cpu")

def run(loader, samples):
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while n < samples:
        for batch in loader:
            n += len(batch["img"])
            if n >= samples:
                break
    return time.perf_counter() - t0, time.process_time() - c0, n

for cache, loader in loaders.items():
    run(loader, args["warmup"][cache])
print(json.dumps({"version": ultralytics.__version__, "cv2_threads": cv2.getNumThreads(),
                  "torch_threads": torch.get_num_threads(), "setup_s": fill}), file=reply, flush=True)
for line in sys.stdin:
    cache, samples = line.split()
    wall, cpu, n = run(loaders[cache], int(samples))
    print(json.dumps({"wall": wall, "cpu": cpu, "n": n}), file=reply, flush=True)
"""


class PeerLoaders:
    """The peer's training loaders in a child process of ``python`` (the peer's virtualenv), timed on request.

    Args:
        python: the peer's interpreter.
        data_yaml: the dataset in the peer's layout (``data.yaml``).
        caches: ``"off"`` and / or ``"ram"`` (the peer's ``cache`` argument).
        img_size, batch_size: as for the package.
        warmup: samples per loader before the first timed round.
        torch_threads: ``torch.set_num_threads`` in the peer (OpenCV threads stay as the peer sets them: 0).
    """

    def __init__(self, python: str, data_yaml: str, caches: list[str], img_size: int, batch_size: int,
                 warmup: dict[str, int], torch_threads: int) -> None:  # fmt: skip
        env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="False")
        env.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "peer-cfg"))
        env.pop("PYTHONPATH", None)
        args = dict(data=data_yaml, caches=caches, img_size=img_size, batch_size=batch_size, warmup=warmup,
                    torch_threads=torch_threads)  # fmt: skip
        self.proc = subprocess.Popen(
            [python, "-c", _PEER_SCRIPT, json.dumps(args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=env,
        )  # fmt: skip
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"error: the peer process ended (exit code {self.proc.wait()}); see its output above")
        return json.loads(line)

    def round(self, cache: str, samples: int) -> tuple[float, float, int]:
        self.proc.stdin.write(f"{cache} {samples}\n")
        self.proc.stdin.flush()
        r = self._read()
        return r["wall"], r["cpu"], r["n"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def summarize(name: str, results: list[tuple[float, float, int]]) -> dict:
    """Best round (wall clock), median rate and the CPU-time rate of the best round."""
    wall, cpu, n = min(results, key=lambda r: r[0] / r[2])
    med = sorted(r[2] / r[0] for r in results)[len(results) // 2]
    row = {"name": name, "best": n / wall, "median": med, "cpu": n / cpu}
    print(f"{name:<52} {row['best']:8.1f} {row['median']:8.1f} {row['cpu']:8.1f}", flush=True)
    return row


def bench_decoders(paths: list[Path], img_size: int) -> None:
    """ms per image of the decoders the loader could use (first ``len(paths)`` images)."""
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file

    def run(fn) -> float:
        for p in paths[:2]:
            fn(p)
        t0 = time.perf_counter()
        for p in paths:
            fn(p)
        return (time.perf_counter() - t0) / len(paths) * 1000

    def cv_full(p):
        return cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR_RGB)

    def tv(p):
        return decode_jpeg(read_file(str(p)))

    def pil(p):
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))

    def pil_draft(p):
        with Image.open(p) as im:
            im.draft("RGB", (im.width // 2, im.height // 2))
            return np.asarray(im.convert("RGB"))

    jpegs = [p for p in paths if p.suffix.lower() in (".jpg", ".jpeg")]
    if not jpegs:
        return
    h, w = cv2.imread(str(jpegs[0])).shape[:2]
    print(f"\nJPEG decode, {len(jpegs)} images of {w}x{h} (ms / image):")
    for name, fn in [("cv2.imdecode RGB", cv_full), ("torchvision.io.decode_jpeg", tv), ("PIL convert RGB", pil),
                     ("PIL draft 1/2", pil_draft)]:  # fmt: skip
        print(f"  {name:<28} {run(fn):6.2f}")
    red = cv2.IMREAD_COLOR_RGB | (cv2.IMREAD_REDUCED_COLOR_2 & ~cv2.IMREAD_COLOR)
    print(
        f"  {'cv2.imdecode REDUCED_2 RGB':<28} {run(lambda p: cv2.imdecode(np.fromfile(str(p), np.uint8), red)):6.2f}"
    )


def _datamodule(path: str, cache: bool = False, buffer: int | None = None, **common) -> YOLODataModule:
    """A DataModule with the default augmentation (Mosaic buffer ``buffer`` when given), RAM-cached or not."""
    if AugmentCfg is None:  # a tree from before AugmentCfg (flat arguments): before / after comparisons
        kw = {} if buffer is None else {"mosaic_buffer": buffer}
        return YOLODataModule(path, cache_images=cache, **kw, **common)
    augment = AugmentCfg() if buffer is None else AugmentCfg(mosaic_buffer=buffer)
    return YOLODataModule(path, augment=augment, cache_images=cache, **common)


ROWS = ("decode4", "buffer", "default", "val", "cache", "valcache")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=None, help="dataset (data.yaml, COCO json or folder); default: synthetic photos")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--samples", type=int, default=320, help="images per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--photo-size", default="1280x960", help="synthetic image WxH")
    ap.add_argument("--num-images", type=int, default=192, help="synthetic images per split")
    ap.add_argument("--buffer", type=int, default=16, help="Mosaic buffer of the 'buffer' row")
    ap.add_argument("--cv2-threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    ap.add_argument(
        "--rows", default=None,
        help=f"comma-separated rows of {', '.join(ROWS)} (default: all but 'default'; with --peer-python: "
        "default,cache)",
    )  # fmt: skip
    ap.add_argument("--decoders", action="store_true", help="also time the JPEG decoders (default without a peer)")
    ap.add_argument("--peer-python", default=None, help="the peer's (ultralytics) interpreter: time its loader too")
    ap.add_argument("--peer-data", default=None, help="the dataset in the peer's YOLO layout (data.yaml); default: "
                    "written from --path by benchmarks/accuracy.py's prepare() into --peer-dir")  # fmt: skip
    ap.add_argument("--peer-dir", default=None, help="where the peer's copy is written (default: a temp folder)")
    ap.add_argument("--peer-torch-threads", type=int, default=2, help="torch.set_num_threads in the peer")
    ap.add_argument("--profile", nargs="?", const="cache", default=None, metavar="ROW",
                    help="print the top functions of one more round of ROW (default: cache)")  # fmt: skip
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)
    rows = (args.rows or ("default,cache" if args.peer_python else "decode4,buffer,val,cache,valcache")).split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; choose from {', '.join(ROWS)}")

    if args.path is None:
        w, h = (int(v) for v in args.photo_size.lower().split("x"))
        t0 = time.perf_counter()
        root = ensure_synthetic_dataset(
            None, num_train=args.num_images, num_val=args.num_images, img_size=(w, h), seed=0, noise=8.0
        )
        print(
            f"dataset: synthetic {w}x{h} JPEGs ({args.num_images} per split) at {root} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        path = str(root)
    else:
        path = args.path
        print(f"dataset: {path}")
    print(
        f"package: {Path(sys.modules['lightning_yolo'].__file__).parent}; img_size {args.img_size}, batch "
        f"{args.batch_size}, num_workers 0, cv2 threads {cv2.getNumThreads()}, torch threads {torch.get_num_threads()}"
        f", cpus {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}"
    )

    common = dict(img_size=args.img_size, batch_size=args.batch_size, num_workers=0, pin_memory=False)
    modules: dict[tuple, YOLODataModule] = {}

    def module(cache: bool = False, buffer: int | None = None) -> YOLODataModule:
        key = (cache, buffer)
        if key not in modules:
            t0 = time.perf_counter()
            modules[key] = dm = _datamodule(path, cache=cache, buffer=buffer, **common)
            dm.setup("fit")
            if cache:
                print(f"(scan + RAM cache fill of train and val: {time.perf_counter() - t0:.1f} s)")
        return modules[key]

    loaders = {
        "decode4": ("train: Mosaic, 4 decodes per sample", lambda: module(buffer=0).train_dataloader()),
        "buffer": (f"train: Mosaic, buffer {args.buffer}", lambda: module(buffer=args.buffer).train_dataloader()),
        "default": ("train: Mosaic, default settings (RAM cache off)", lambda: module().train_dataloader()),
        "val": ("val: letterbox, decode", lambda: module(buffer=0).val_dataloader()),
        "cache": ("train: Mosaic, RAM cache", lambda: module(cache=True).train_dataloader()),
        "valcache": ("val: letterbox, RAM cache", lambda: module(cache=True).val_dataloader()),
    }  # fmt: skip
    timed = {key: loaders[key][1]() for key in rows}
    if args.decoders or (args.peer_python is None and args.rows is None):
        bench_decoders([r.path for r in module(buffer=0).source("train").records[:32]], args.img_size)
    warmup = {key: min(args.samples, len(loader.dataset)) for key, loader in timed.items()}

    peer, pairs = None, {"default": "off", "cache": "ram"}
    if args.peer_python:
        data_yaml = args.peer_data
        if data_yaml is None:
            if args.path is None:
                ap.error("--peer-python needs --path or --peer-data")
            from accuracy import prepare  # benchmarks/accuracy.py: the peer's YOLO copy of any dataset

            out = Path(args.peer_dir or Path(tempfile.gettempdir()) / f"lightning_yolo_peer_{Path(path).stem}")
            data_yaml = str(prepare(path, out)["peer_yaml"])
        caches = [pairs[k] for k in rows if k in pairs]
        warm = {pairs[k]: warmup[k] for k in rows if k in pairs}
        peer = PeerLoaders(args.peer_python, data_yaml, caches, args.img_size, args.batch_size, warm,
                           args.peer_torch_threads)  # fmt: skip
        print(
            f"peer: ultralytics {peer.info['version']} ({data_yaml}), its own cv2 threads "
            f"{peer.info['cv2_threads']}, torch threads {peer.info['torch_threads']}"
        )
    for key, loader in timed.items():
        _time_loader(loader, warmup[key])  # caches, allocator, a full Mosaic buffer

    # rounds interleaved: every row (and its peer row right after it) once per round, so a slower stretch of a
    # shared machine falls on all of them
    results: dict[str, list] = {key: [] for key in timed}
    peer_results: dict[str, list] = {key: [] for key in timed if peer is not None and key in pairs}
    for _ in range(args.rounds):
        for key, loader in timed.items():
            results[key].append(_time_loader(loader, args.samples))
            if key in peer_results:
                peer_results[key].append(peer.round(pairs[key], args.samples))
    if peer is not None:
        peer.close()

    print(f"\n{'pipeline (samples/s)':<52} {'best':>8} {'median':>8} {'cpu-time':>8}")
    summary = {}
    for key in timed:
        summary[key] = summarize(loaders[key][0], results[key])
        if key in peer_results:
            summary["peer " + key] = summarize(f"peer: Mosaic, cache={pairs[key]}", peer_results[key])
    print(f"(load average after {os.getloadavg()[0]:.2f})")
    if peer_results:
        print("\npackage / peer (same rounds, interleaved):")
        for key in peer_results:
            ours, theirs = summary[key], summary["peer " + key]
            print(
                f"  {loaders[key][0]:<50} best {ours['best'] / theirs['best']:.2f}x, median "
                f"{ours['median'] / theirs['median']:.2f}x, cpu-time {ours['cpu'] / theirs['cpu']:.2f}x"
            )

    if args.profile:
        loader = timed.get(args.profile) or loaders[args.profile][1]()
        prof = cProfile.Profile()
        prof.enable()
        _time_loader(loader, args.samples)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
