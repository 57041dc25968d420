"""GPU check: training images/s and inference FPS on one CUDA GPU, next to the paper's and the peer's figures.

Prints, for a machine with a CUDA GPU (run through ``benchmarks/gpu_check.sh``; about 5-8 minutes):

* training images/s of ``yolov4_nano``, ``yolov4_small`` and the paper model ``yolov4_cspdarknet53`` at 640 px with
  ``bf16-mixed`` on a real dataset (``--data``, e.g. coco128; default: the built-in synthetic set), a real
  ``Trainer.fit`` with Mosaic on, the first steps (cuDNN autotuning, allocator warm-up) not counted;
* inference FPS of the paper model at 608 px, batch 1 and batch 32 (fused Conv+BN, ``channels_last``, fp16
  autocast, network only as the paper counts it, and with decode + DIoU-NMS), next to the paper's 62 FPS on a V100
  (YOLOv4 paper, Table 8, 608 px, batch 1);
* the same for the peer (ultralytics ``yolov8n.yaml`` training images/s, ``yolov8l.yaml`` inference) when
  ``--peer-python`` names a Python that imports it.

``--dry-run`` runs every code path on the CPU at toy sizes (64 px, a few steps, nano only for training) so the
tests keep the script working on machines without a GPU; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
PAPER_FPS_V100 = 62  # YOLOv4 paper, 608 px, batch 1, V100


class _StepClock:
    """Wall time of the training steps after ``skip`` warm-up steps (CUDA-synchronised)."""

    def __init__(self, skip: int) -> None:
        import pytorch_lightning as pl

        outer = self

        class Cb(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
                if trainer.global_step == outer.skip:
                    _sync()
                    outer.t0 = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
                if trainer.global_step > outer.skip:
                    outer.images += int(batch["images"].shape[0])

            def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
                _sync()
                outer.t1 = time.perf_counter()

        self.skip = skip
        self.images = 0
        self.t0 = self.t1 = 0.0
        self.callback = Cb()

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.t1 - self.t0, 1e-9)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_rate(model_name: str, data: str | None, img_size: int, batch: int, steps: int, skip: int, precision: str,
               accelerator: str, workers: int) -> float:  # fmt: skip
    """Training images/s of one model variant (a real fit, Mosaic on)."""
    import pytorch_lightning as pl

    from lightning_yolo import YOLODataModule, YOLOModule
    from lightning_yolo.data import AugmentCfg

    dm = YOLODataModule(path=data, img_size=img_size, batch_size=batch, num_workers=workers,
                        augment=AugmentCfg(mosaic_prob=1.0, close_mosaic_epochs=0),
                        synthetic_num_train=max(batch * (steps + skip), 16), synthetic_num_val=4)  # fmt: skip
    model = YOLOModule(model_name=model_name, num_classes=dm.num_classes, class_names=dm.class_names,
                       ema=True, auto_anchor=False, warmup_epochs=0.0)  # fmt: skip
    clock = _StepClock(skip)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=steps + skip,
                         limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[clock.callback])  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return clock.images_per_s


@torch.inference_mode()
def infer_fps(img_size: int, batch: int, iters: int, device: str, with_nms: bool) -> float:
    """Paper-model inference images/s: fused, channels_last, fp16 autocast on CUDA (bf16 on CPU)."""
    from lightning_yolo import YOLOPredictor, create_model

    predictor = YOLOPredictor(create_model("yolov4_cspdarknet53", num_classes=80), score_thresh=0.001).fuse()
    predictor.to(device)
    x = torch.rand(batch, 3, img_size, img_size, device=device).contiguous(memory_format=torch.channels_last)
    dtype = torch.float16 if device == "cuda" else torch.bfloat16
    run = predictor if with_nms else predictor.model
    with torch.autocast(device_type=device, dtype=dtype):
        for _ in range(3):
            run(x)
        _sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            run(x)
        _sync()
    return batch * iters / (time.perf_counter() - t0)


PEER_SCRIPT = r"""
import json, sys, time, torch
from ultralytics import YOLO
cfg = json.loads(sys.argv[1])
out = {}
if cfg["data"]:
    m = YOLO("yolov8n.yaml")
    t0 = time.perf_counter()
    m.train(data=cfg["data"], imgsz=cfg["imgsz"], epochs=cfg["epochs"], batch=cfg["batch"], device=cfg["device"],
            workers=cfg["workers"], amp=True, pretrained=False, plots=False, val=False, project=cfg["project"],
            name="gpu_check", exist_ok=True, verbose=False)
    out["train_s"] = time.perf_counter() - t0
m = YOLO("yolov8l.yaml").model.fuse().eval().to(cfg["device"]).half()
for b in (1, 32):
    x = torch.rand(b, 3, 608, 608, device=cfg["device"]).half()
    with torch.inference_mode():
        for _ in range(3):
            m(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(cfg["iters"]):
            m(x)
        torch.cuda.synchronize()
    out[f"fps_b{b}"] = b * cfg["iters"] / (time.perf_counter() - t0)
print("PEER " + json.dumps(out))
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--data", default=None, help="dataset path (coco128 json / data.yaml); default: synthetic set")
    p.add_argument("--peer-data", default=None, help="the peer's data.yaml of the same set (peer training rate)")
    p.add_argument("--peer-python", default=None, help="a Python with ultralytics (peer rows)")
    p.add_argument("--models", nargs="+", default=["yolov4_nano", "yolov4_small", "yolov4_cspdarknet53"])
    p.add_argument("--steps", type=int, default=30, help="timed training steps per model")
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the code paths only")
    args = p.parse_args(argv)

    if args.dry_run:
        device, accelerator, precision = "cpu", "cpu", "bf16-mixed"
        train_size, batch, steps, skip, workers = 64, 2, 2, 1, 0
        infer_size, infer_batches, iters = 64, (1, 2), 1
        models = args.models[:1]
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); --dry-run on CPU")
        device, accelerator, precision = "cuda", "gpu", "bf16-mixed"
        train_size, batch, steps, skip, workers = 640, 16, args.steps, 5, min(8, os.cpu_count() or 1)
        infer_size, infer_batches, iters = 608, (1, 32), 20
        models = args.models
        torch.backends.cudnn.benchmark = True
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)

    rows = []
    for name in models:
        t0 = time.perf_counter()
        rate = train_rate(name, args.data, train_size, batch, steps, skip, precision, accelerator, workers)
        rows.append(("train", name, f"{train_size} px, batch {batch}, {precision}", f"{rate:.1f} images/s"))
        print(f"train {name}: {rate:.1f} images/s ({time.perf_counter() - t0:.0f} s)", flush=True)
    for b in infer_batches:
        for with_nms in (False, True):
            fps = infer_fps(infer_size, b, iters, device, with_nms)
            what = "network + decode + DIoU-NMS" if with_nms else "network"
            rows.append(("infer", "yolov4_cspdarknet53", f"{infer_size} px, batch {b}, {what}", f"{fps:.1f} FPS"))
            print(f"infer batch {b} ({what}): {fps:.1f} FPS", flush=True)
    if args.peer_python and not args.dry_run:
        cfg = {"data": args.peer_data, "imgsz": train_size, "epochs": 1, "batch": batch, "device": 0,
               "workers": workers, "iters": iters, "project": tempfile.mkdtemp(prefix="gpu_check_peer_")}  # fmt: skip
        env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0")
        res = subprocess.run([args.peer_python, "-c", PEER_SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                             env=env)  # fmt: skip
        line = next((x for x in res.stdout.splitlines() if x.startswith("PEER ")), None)
        if line is None:
            print(f"peer: failed ({res.stderr.strip().splitlines()[-1:] or res.returncode})")
        else:
            peer = json.loads(line[5:])
            for k, v in peer.items():
                rows.append(("peer", "ultralytics", k, f"{v:.1f}"))
    print(f"\n| what | model | setting | figure |\n| --- | --- | --- | ---: |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"| paper | YOLOv4 (CSPDarknet53) | 608 px, batch 1, V100 | {PAPER_FPS_V100} FPS |")
    if args.dry_run:
        print("\n(--dry-run: CPU at toy sizes; the figures only show that every path runs)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
