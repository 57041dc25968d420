"""What an inference setting costs in mAP and buys in time, on a trained checkpoint and real photos.

Scores one checkpoint's predictions on a dataset's validation split with pycocotools (``accuracy.py``'s
``prepare`` / ``score``: score >= 0.001, at most 100 per image, boxes in original pixels) under each setting, and
times the whole predict (decode, letterbox, network, NMS) and NMS alone::

    python benchmarks/eval_settings.py --ckpt runs/detect/train/checkpoints/best.ckpt --data /work/data/raccoon_voc \
        --img-size 320

Settings: ``fp32`` / ``bf16`` (the network under bfloat16 autocast; decode and NMS in float32), ``diou`` / ``greedy``
NMS. Run nothing else on the machine while it measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from accuracy import prepare, score  # noqa: E402

from lightning_yolo import load_predictor, predict  # noqa: E402
from lightning_yolo.ops.postprocess import postprocess  # noqa: E402


def detections(predictor, prep: dict, img_size: int, precision: str) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    results = predict(predictor, prep["val_images"], img_size=img_size, batch_size=8, precision=precision)
    seconds = time.perf_counter() - t0
    dets = []
    for path, r in zip(prep["val_images"], results, strict=True):
        for (x1, y1, x2, y2), s, c in zip(r["boxes"].tolist(), r["scores"].tolist(), r["labels"].tolist()):
            dets.append({"image_id": prep["image_ids"][path], "category_id": prep["category_ids"][int(c)],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})  # fmt: skip
    return dets, seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    prep = prepare(str(Path(args.data).resolve()), Path(tempfile.mkdtemp(prefix="eval_settings_")))
    rows = {}
    for r in range(args.rounds):
        for precision in ("fp32", "bf16"):
            for nms in ("diou", "greedy"):
                predictor = load_predictor(args.ckpt, score_thresh=0.001, max_det=100, nms_kind=nms)
                with torch.inference_mode():
                    dets, seconds = detections(predictor, prep, args.img_size, precision)
                res = rows.setdefault((precision, nms), {"seconds": [], **score(prep["gt_json"], dets)})
                res["seconds"].append(seconds)
    # NMS alone on the decoded outputs of the validation images (fp32 network), as validation runs it
    predictor = load_predictor(args.ckpt, score_thresh=0.001, max_det=100)
    from lightning_yolo.data.image_io import load_letterboxed

    images = torch.stack([torch.from_numpy(load_letterboxed(p_, args.img_size)[0]).permute(2, 0, 1)
                          for p_ in prep["val_images"][:16]]).float().div(255)  # fmt: skip
    with torch.inference_mode():
        decoded = predictor.decode(images.contiguous(memory_format=torch.channels_last))
        nms_ms = {}
        for nms in ("diou", "greedy"):
            ts = []
            for _ in range(5):
                t0 = time.perf_counter()
                postprocess(decoded, score_thresh=0.001, nms_kind=nms, max_det=100)
                ts.append(time.perf_counter() - t0)
            nms_ms[nms] = 1e3 * min(ts) / images.shape[0]
    n = len(prep["val_images"])
    print(f"\n{args.ckpt} on {args.data} ({n} val images, {args.img_size} px), pycocotools; best of {args.rounds}\n")
    print("| network | NMS | mAP50 | mAP50-95 | predict ms / image | decode + NMS ms / image |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (precision, nms), res in rows.items():
        print(f"| {precision} | {nms} | {res['map_50']:.4f} | {res['map']:.4f} | "
              f"{1e3 * min(res['seconds']) / n:.1f} | {nms_ms[nms]:.2f} |")  # fmt: skip
    base = rows[("fp32", "diou")]
    for key, res in rows.items():
        if key != ("fp32", "diou"):
            print(f"{key[0]} + {key[1]} vs fp32 + diou: mAP50 {res['map_50'] - base['map_50']:+.4f}, "
                  f"mAP50-95 {res['map'] - base['map']:+.4f}, predict time x"
                  f"{statistics.median(res['seconds']) / statistics.median(base['seconds']):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
