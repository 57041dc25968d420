"""Data pipeline throughput: training (Mosaic on) and validation samples per second in one process.

Runs ``YOLODataModule`` loaders with ``num_workers=0`` (everything in this process, collate included) on
photo-sized synthetic JPEGs (generated once into the cache folder) or on any dataset path, and prints samples/s
for: the training pipeline decoding every Mosaic image, with the Mosaic buffer (one decode per sample), with the
RAM cache, and the validation pipeline with and without the cache. It also times the JPEG decoders the loader
chooses between. Each figure is the best of ``--rounds`` rounds (wall clock) and the CPU-time rate of that round;
on a shared machine the best round is the one least disturbed by other processes.

    python benchmarks/data.py                              # synthetic 1280x960 JPEGs, 640-px pipeline
    python benchmarks/data.py --path /data/coco/data.yaml --samples 512
    python benchmarks/data.py --photo-size 640x480 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_yolo.data.config import AugmentCfg  # noqa: E402
from lightning_yolo.data.datamodule import YOLODataModule  # noqa: E402
from lightning_yolo.data.synthetic import ensure_synthetic_dataset  # noqa: E402


def _time_loader(loader, samples: int) -> tuple[float, float, int]:
    """Iterate ``loader`` (restarting it) until ``samples`` images were produced: (wall s, cpu s, images)."""
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while n < samples:
        for batch in loader:
            n += len(batch["targets"])
            if n >= samples:
                break
    return time.perf_counter() - t0, time.process_time() - c0, n


def bench_loader(name: str, loader, samples: int, rounds: int) -> dict:
    _time_loader(loader, min(samples, 2 * (loader.batch_size or 1)))  # warm-up (caches, allocator)
    results = [_time_loader(loader, samples) for _ in range(rounds)]
    wall, cpu, n = min(results, key=lambda r: r[0])
    med = sorted(r[2] / r[0] for r in results)[len(results) // 2]
    row = {"name": name, "best": n / wall, "median": med, "cpu": n / cpu}
    print(f"{name:<44} {row['best']:8.1f} {row['median']:8.1f} {row['cpu']:8.1f}", flush=True)
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", default=None, help="dataset (data.yaml, COCO json or folder); default: synthetic photos")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--samples", type=int, default=320, help="images per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--photo-size", default="1280x960", help="synthetic image WxH")
    ap.add_argument("--num-images", type=int, default=192, help="synthetic images per split")
    ap.add_argument("--buffer", type=int, default=16, help="Mosaic buffer of the buffered run (<< images)")
    ap.add_argument("--cv2-threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    ap.add_argument("--profile", action="store_true", help="print the top functions of the cached Mosaic pipeline")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.cv2_threads is not None:
        cv2.setNumThreads(args.cv2_threads)

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
        f"img_size {args.img_size}, batch {args.batch_size}, num_workers 0, cv2 threads {cv2.getNumThreads()}, "
        f"cpus {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}"
    )

    common = dict(img_size=args.img_size, batch_size=args.batch_size, num_workers=0, pin_memory=False)
    dm = YOLODataModule(path, augment=AugmentCfg(mosaic_buffer=0), **common)
    dm.setup("fit")
    bench_decoders([r.path for r in dm.source("train").records[:32]], args.img_size)

    print(f"\n{'pipeline (samples/s)':<44} {'best':>8} {'median':>8} {'cpu-time':>8}")
    rows = [bench_loader("train: Mosaic, 4 decodes per sample", dm.train_dataloader(), args.samples, args.rounds)]
    dm_buf = YOLODataModule(path, augment=AugmentCfg(mosaic_buffer=args.buffer), **common)
    dm_buf.setup("fit")
    name = f"train: Mosaic, buffer {args.buffer} (1 decode/sample)"
    rows.append(bench_loader(name, dm_buf.train_dataloader(), args.samples, args.rounds))
    rows.append(bench_loader("val: letterbox, decode", dm.val_dataloader(), args.samples, args.rounds))
    dm_cache = YOLODataModule(path, cache_images=True, **common)
    t0 = time.perf_counter()
    dm_cache.setup("fit")
    fill = time.perf_counter() - t0
    rows.append(bench_loader("train: Mosaic, RAM cache", dm_cache.train_dataloader(), args.samples, args.rounds))
    rows.append(bench_loader("val: letterbox, RAM cache", dm_cache.val_dataloader(), args.samples, args.rounds))
    print(f"(scan + cache fill of train and val: {fill:.1f} s; load average after {os.getloadavg()[0]:.2f})")

    if args.profile:
        loader = dm_cache.train_dataloader()
        prof = cProfile.Profile()
        prof.enable()
        _time_loader(loader, args.samples)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        print(out.getvalue())


if __name__ == "__main__":
    main()
