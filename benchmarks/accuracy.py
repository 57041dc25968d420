"""Side-by-side accuracy: this package and (with ``--peer``) ultralytics, same data, image size and wall time.

Both tools are scored the same way: their predictions on the validation split (score >= 0.001, at most 100 per
image, boxes in original-image pixels) go through one pycocotools ``COCOeval`` against one ground-truth json
(the dataset's own json for COCO datasets, else a json written from the annotations as read).

Examples (datasets fetched outside the repository, see benchmarks/README.md)::

    # the peer with its defaults for 60 epochs, then this package for the peer's measured wall time
    python benchmarks/accuracy.py --data /work/data/raccoon_voc --img-size 320 --peer --peer-epochs 60 \
        --config configs/custom_yolo_format.yaml
    # both for a fixed budget of 10 minutes (the peer with its own time= option)
    python benchmarks/accuracy.py --data /work/data/coco128 --budget 600 --peer
    # only this package, extra CLI arguments after --
    python benchmarks/accuracy.py --data data.yaml --budget 300 -- --model.model_name yolov4_nano

Each run appends a json line to ``<out>/results.jsonl`` and prints a table. The peer runs from its own
virtualenv (``--peer-python``, default ``/tmp/venv-peer/bin/python``; see ``shared/PEER.md``), fully offline
(``YOLO_OFFLINE=1``, a model built from its yaml, no weight download). Run nothing else on the machine while it
measures: both tools are timed by wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------- preparation


def prepare(data: str, out: Path) -> dict:
    """Read ``data`` with the package's readers; write the ground-truth json of the val split and a YOLO copy.

    Returns a dict with ``gt_json``, ``val_images`` (paths in GT order), ``image_ids`` (path -> GT image id),
    ``peer_yaml`` and ``class_names``.
    """
    import numpy as np

    from lightning_yolo.data.formats import load_split, resolve_dataset

    loc = resolve_dataset(data)
    train, val = load_split(loc, "train"), load_split(loc, "val")
    names = train.class_names
    out.mkdir(parents=True, exist_ok=True)
    if loc.format == "coco":
        # the dataset's own json: what a user would score against (crowd boxes, original ids)
        gt_json = Path(loc.coco_jsons["val"])
        gt = json.loads(gt_json.read_text())
        by_name = {Path(im["file_name"]).name: int(im["id"]) for im in gt["images"]}
        image_ids = {str(r.path): by_name[r.path.name] for r in val.records}
        cat_ids = [int(c["id"]) for c in sorted(gt["categories"], key=lambda c: c["id"])]
    else:
        cat_ids = list(range(len(names)))
        images, anns = [], []
        image_ids = {}
        for i, r in enumerate(val.records):
            image_ids[str(r.path)] = i
            images.append({"id": i, "file_name": r.path.name, "height": int(r.height), "width": int(r.width)})
            for box, label, crowd in zip(r.boxes.tolist(), r.labels.tolist(), r.iscrowd.tolist()):
                x1, y1, x2, y2 = box
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "iscrowd": int(crowd),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})  # fmt: skip
        gt_json = out / "val_gt.json"
        cats = [{"id": i, "name": n} for i, n in enumerate(names)]
        gt_json.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))

    # the peer's layout: images/<split>/<n>.<ext> (symlinks) and labels/<split>/<n>.txt, crowd boxes left out
    peer_root = out / "peer_data"
    for split, src in (("train", train), ("val", val)):
        for sub in ("images", "labels"):
            (peer_root / sub / split).mkdir(parents=True, exist_ok=True)
        for i, r in enumerate(src.records):
            stem = f"{i:06d}"
            link = peer_root / "images" / split / f"{stem}{r.path.suffix.lower()}"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(r.path.resolve())
            keep = ~r.iscrowd.astype(bool)
            b, lab = r.boxes[keep].astype(np.float64), r.labels[keep]
            cx = (b[:, 0] + b[:, 2]) / 2 / r.width
            cy = (b[:, 1] + b[:, 3]) / 2 / r.height
            w = (b[:, 2] - b[:, 0]) / r.width
            h = (b[:, 3] - b[:, 1]) / r.height
            lines = [f"{int(c)} {x:.6f} {y:.6f} {ww:.6f} {hh:.6f}" for c, x, y, ww, hh in zip(lab, cx, cy, w, h)]
            (peer_root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    peer_yaml = peer_root / "data.yaml"
    peer_yaml.write_text(
        json.dumps({"path": str(peer_root), "train": "images/train", "val": "images/val", "names": names})
    )
    peer_val = [str(peer_root / "images" / "val" / f"{i:06d}{r.path.suffix.lower()}") for i, r in enumerate(val.records)]
    return {
        "format": loc.format,
        "gt_json": str(gt_json),
        "val_images": [str(r.path) for r in val.records],
        "peer_val_images": peer_val,
        "image_ids": image_ids,
        "category_ids": cat_ids,
        "peer_yaml": str(peer_yaml),
        "class_names": names,
        "num_train": len(train.records),
        "num_val": len(val.records),
    }


def score(gt_json: str, dets: list[dict]) -> dict[str, float]:
    """pycocotools COCOeval (bbox) of COCO-format results: ``map``, ``map_50``, ``map_75``."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        if not dets:
            return {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
        res = gt.loadRes(dets)
        ev = COCOeval(gt, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [max(float(v), 0.0) for v in ev.stats[:3]]
    return {"map": s[0], "map_50": s[1], "map_75": s[2]}


# --------------------------------------------------------------------------------------------- this package


class WallClockLog(pl.Callback):
    """Appends ``{seconds since fit start, epoch, val metrics}`` to ``$ACCURACY_CURVE`` after each validation."""

    def __init__(self) -> None:
        self.path = os.environ.get("ACCURACY_CURVE")
        self.t0 = time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t0 = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.path or trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        row = {"seconds": round(time.perf_counter() - self.t0, 1), "epoch": trainer.current_epoch}
        for k in ("val/map_50", "val/map"):
            if k in m:
                row[k] = round(float(m[k]), 4)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _max_time(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_ours(args: argparse.Namespace, prep: dict, out: Path, budget: float | None) -> dict:
    run_dir = out / "ours"
    curve = out / "ours_curve.jsonl"
    curve.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "lightning_yolo", "fit", "--config", args.config, "--data.path", args.data,
           "--data.img_size", str(args.img_size), "--trainer.default_root_dir", str(run_dir),
           "--trainer.callbacks+=accuracy.WallClockLog"]  # fmt: skip
    if budget is not None:
        cmd += ["--trainer.max_time", _max_time(budget)]
    cmd += args.extra
    env = dict(os.environ, ACCURACY_CURVE=str(curve), PYTHONPATH=os.pathsep.join([str(REPO / "benchmarks"),
               os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    print("[accuracy] ours:", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    log = out / "ours.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(out))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"[accuracy] our fit failed (exit {proc.returncode}); see {log}")
    ckpts = sorted(run_dir.rglob(f"{args.weights}.ckpt"), key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise SystemExit(f"[accuracy] no {args.weights}.ckpt under {run_dir}; see {log}")
    dets = predict_ours(str(ckpts[-1]), prep, args.img_size)
    rows = [json.loads(line) for line in curve.read_text().splitlines()] if curve.exists() else []
    return {"tool": "lightning_yolo", "command": shlex.join(cmd), "wall_s": round(wall, 1), "ckpt": str(ckpts[-1]),
            "curve": rows, **score(prep["gt_json"], dets)}  # fmt: skip


def predict_ours(ckpt: str, prep: dict, img_size: int) -> list[dict]:
    import torch

    from lightning_yolo import load_predictor, predict

    predictor = load_predictor(ckpt, score_thresh=0.001, max_det=100)
    dets = []
    with torch.inference_mode():
        results = predict(predictor, prep["val_images"], img_size=img_size, batch_size=8, rect=False)
    for path, r in zip(prep["val_images"], results):
        for (x1, y1, x2, y2), s, c in zip(r["boxes"].tolist(), r["scores"].tolist(), r["labels"].tolist()):
            dets.append({"image_id": prep["image_ids"][path], "category_id": prep["category_ids"][int(c)],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})  # fmt: skip
    return dets


# --------------------------------------------------------------------------------------------- the peer

PEER_SCRIPT = r"""
import json, os, sys, time
from pathlib import Path
cfg = json.loads(sys.argv[1])
os.environ["OMP_NUM_THREADS"] = str(cfg["threads"])
import ultralytics.utils.torch_utils as torch_utils
torch_utils.NUM_THREADS = cfg["threads"]  # its CPU default is min(8, cpu_count - 1): 1 thread on 2 cores
from ultralytics import YOLO
t0 = time.perf_counter()
model = YOLO(cfg["model"])
train_args = dict(data=cfg["data"], imgsz=cfg["imgsz"], device="cpu", workers=0, amp=False, pretrained=False,
                  project=cfg["project"], name="train", exist_ok=True, seed=0, plots=False, verbose=False)
train_args.update(cfg["train_args"])
model.train(**train_args)
wall = time.perf_counter() - t0
save_dir = Path(model.trainer.save_dir)
weights = save_dir / "weights" / (cfg["weights"] + ".pt")
pred = YOLO(str(weights))
dets = []
paths = cfg["val_images"]
for i in range(0, len(paths), 16):
    for path, r in zip(paths[i:i + 16], pred.predict(paths[i:i + 16], imgsz=cfg["imgsz"], conf=0.001, iou=0.7,
                                                    max_det=100, device="cpu", verbose=False)):
        b = r.boxes
        for (x1, y1, x2, y2), s, c in zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist()):
            dets.append({"path": path, "label": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
json.dump({"wall_s": wall, "dets": dets, "save_dir": str(save_dir)}, open(cfg["result"], "w"))
"""


def run_peer(args: argparse.Namespace, prep: dict, out: Path, budget: float | None) -> dict:
    train_args: dict = {"epochs": args.peer_epochs} if budget is None else {"time": budget / 3600.0}
    for item in args.peer_arg:
        key, _, value = item.partition("=")
        train_args[key] = json.loads(value) if value[:1] in "0123456789-[{tf" and value not in ("-",) else value
    result = out / "peer_result.json"
    cfg = {"model": args.peer_model, "data": prep["peer_yaml"], "imgsz": args.img_size, "project": str(out / "peer"),
           "train_args": train_args, "weights": args.weights, "val_images": prep["peer_val_images"],
           "result": str(result), "threads": args.peer_threads}  # fmt: skip
    cfg_dir = Path(os.environ.get("YOLO_CONFIG_DIR", "/tmp/peer-cfg"))
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_CONFIG_DIR=str(cfg_dir))
    env.pop("PYTHONPATH", None)
    print(f"[accuracy] peer: {args.peer_model} {train_args}, {args.peer_threads} torch threads", flush=True)
    log = out / "peer.log"
    with open(log, "w") as f:
        proc = subprocess.run([args.peer_python, "-c", PEER_SCRIPT, json.dumps(cfg)], stdout=f,
                              stderr=subprocess.STDOUT, env=env, cwd=str(out))  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"[accuracy] peer failed (exit {proc.returncode}); see {log}")
    res = json.loads(result.read_text())
    to_orig = dict(zip(prep["peer_val_images"], prep["val_images"]))
    dets = [{"image_id": prep["image_ids"][to_orig[d["path"]]], "category_id": prep["category_ids"][d["label"]],
             "bbox": d["bbox"], "score": d["score"]} for d in res["dets"]]  # fmt: skip
    curve = []
    csv = Path(res["save_dir"]) / "results.csv"
    if csv.exists():
        import csv as _csv

        for row in _csv.DictReader(csv.open()):
            row = {k.strip(): v for k, v in row.items()}
            curve.append({"seconds": float(row.get("time", "nan")), "epoch": int(float(row["epoch"])),
                          "own_map_50": float(row.get("metrics/mAP50(B)", "nan")),
                          "own_map": float(row.get("metrics/mAP50-95(B)", "nan"))})  # fmt: skip
    return {"tool": f"ultralytics {args.peer_model}", "command": json.dumps(train_args),
            "wall_s": round(res["wall_s"], 1), "curve": curve, **score(prep["gt_json"], dets)}  # fmt: skip


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    from lightning_yolo.commands.args import split_passthrough

    argv, extra = split_passthrough(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="dataset path (data.yaml, COCO json/folder, VOC folder)")
    p.add_argument("--config", default=str(REPO / "configs" / "custom_yolo_format.yaml"), help="our fit config")
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--budget", type=float, default=None, help="wall-time budget in seconds for both tools")
    p.add_argument("--peer", action="store_true", help="also run ultralytics")
    p.add_argument("--peer-only", action="store_true", help="only the peer (e.g. to time it once)")
    p.add_argument("--peer-epochs", type=int, default=60, help="without --budget: the peer's epochs; ours then "
                   "gets the peer's measured wall time")  # fmt: skip
    p.add_argument("--peer-model", default="yolov8n.yaml")
    p.add_argument("--peer-python", default="/tmp/venv-peer/bin/python")
    p.add_argument("--peer-threads", type=int, default=None, help="the peer's torch threads (default: every CPU this "
                   "process may use, its best setting; its own default is cpu_count - 1)")  # fmt: skip
    p.add_argument("--peer-arg", action="append", default=[], help="extra peer train argument key=value")
    p.add_argument("--weights", default="best", choices=("best", "last"), help="which checkpoint of each is scored")
    p.add_argument("--out", default=None, help="output folder (default /tmp/accuracy/<dataset>-<time>)")
    args = p.parse_args(argv)
    args.extra = extra
    if args.peer_threads is None:
        from lightning_yolo.runtime import cpus_available

        args.peer_threads = cpus_available()
    args.data = str(Path(args.data).resolve())
    args.config = str(Path(args.config).resolve())
    out = Path(args.out or f"/tmp/accuracy/{Path(args.data).name}-{time.strftime('%H%M%S')}").resolve()
    prep = prepare(args.data, out)
    print(f"[accuracy] {args.data} ({prep['format']}): {prep['num_train']} train / {prep['num_val']} val images, "
          f"{len(prep['class_names'])} classes; ground truth {prep['gt_json']}", flush=True)  # fmt: skip
    rows = []
    budget = args.budget
    if args.peer or args.peer_only:
        rows.append(run_peer(args, prep, out, budget))
        if budget is None:
            budget = rows[-1]["wall_s"]  # ours gets the peer's own wall time
        print(f"[accuracy] peer: {rows[-1]['wall_s']:.0f} s, mAP50 {rows[-1]['map_50']:.4f}", flush=True)
    if not args.peer_only:
        rows.append(run_ours(args, prep, out, budget))
    with open(out / "results.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps({"data": args.data, "img_size": args.img_size, "budget_s": budget, **r}) + "\n")
    print(f"\ndataset {args.data}, {args.img_size} px, budget {budget and round(budget)} s, scored by pycocotools on "
          f"{prep['num_val']} val images\n")  # fmt: skip
    print("| tool | wall s | mAP50 | mAP50-95 |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['tool']} | {r['wall_s']:.0f} | {r['map_50']:.4f} | {r['map']:.4f} |")
    for r in rows:
        if r["curve"]:
            pts = ", ".join(
                f"{c['seconds']:.0f}s:{c.get('val/map_50', c.get('own_map_50', float('nan'))):.3f}" for c in r["curve"]
            )
            print(f"\n{r['tool']} val mAP50 against seconds (its own validation): {pts}")
    print(f"\nresults: {out / 'results.jsonl'}")


if __name__ == "__main__":
    main()
