"""First validation of a random 1-class model against a trained one (issue 10, item 10).

With one class every box of an untrained model passes ``score_thresh=0.001`` (6,300 per image at 320 px) and all of
them used to enter NMS. This script builds a 1-class synthetic dataset, times a full ``Trainer.validate`` of a random
``yolov4_pico`` and of the same network after a short training, for several ``max_nms`` caps and both NMS kinds, and
prints the candidates per image, the seconds per validation and mAP50.

    python benchmarks/validation_speed.py --img-size 320 --num-val 32 --train-epochs 25

Times are the best of ``--repeats`` validations (the machine may be shared).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightning_yolo import YOLODataModule, YOLOModule
from lightning_yolo.data import AugmentCfg
from lightning_yolo.data.synthetic import make_synthetic_dataset


def _trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)  # fmt: skip


def _candidates(module: YOLOModule, dm: YOLODataModule) -> float:
    """Mean number of boxes per image whose best class score passes the module's validation threshold."""
    total, images = 0, 0
    module.eval()
    with torch.no_grad():
        for batch in dm.val_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            decoded = module.predictor().decode(batch["images"])
            scores = (decoded[..., 4:5] * decoded[..., 5:]).amax(-1)
            total += int((scores > module.inference.val_score_thresh).sum())
            images += decoded.shape[0]
    return total / max(images, 1)


def _validate(module: YOLOModule, dm: YOLODataModule, max_nms: int, nms_kind: str, repeats: int) -> tuple[float, float]:
    # the NMS kind and candidate cap of every predictor the module builds (model.inference)
    module.hparams.inference = module.inference.replace(nms_kind=nms_kind, max_nms=max_nms).to_dict()
    best, metrics = float("inf"), {}
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = _trainer().validate(module, dm, verbose=False)[0]
        best = min(best, time.perf_counter() - start)
    return best, float(metrics["val/map_50"])


def nms_micro(repeats: int = 3) -> None:
    """Greedy class-aware NMS on 20k random boxes of 80 classes: one torchvision ``nms`` over all boxes with
    groups spaced apart (the former ``ops.nms.batched_nms``) against ``ops.nms.batched_nms`` now."""
    from torchvision import ops as tv_ops

    from lightning_yolo.ops.nms import batched_nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20000, 2, generator=g) * 600 - 20  # some negative coordinates, as unclipped decoded boxes have
    boxes = torch.cat((xy, xy + torch.rand(20000, 2, generator=g) * 100 + 2), 1)
    scores, idxs = torch.rand(20000, generator=g), torch.randint(0, 80, (20000,), generator=g)

    def single_call():
        lo, hi = boxes.min(), boxes.max()
        return tv_ops.nms(boxes - lo + (idxs.to(boxes) * (hi - lo + 1))[:, None], scores, 0.6)

    def current():
        return batched_nms(boxes, scores, idxs, 0.6)

    for name, fn in (("one nms call, groups spaced", single_call), ("ops.nms.batched_nms", current)):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            keep = fn()
            best = min(best, time.perf_counter() - start)
        print(f"greedy NMS, 20k boxes, 80 classes, {name}: {1000 * best:.0f} ms ({keep.numel()} kept)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--train-img-size", type=int, default=192)
    parser.add_argument("--num-train", type=int, default=96)
    parser.add_argument("--num-val", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-epochs", type=int, default=25)
    parser.add_argument("--max-nms", type=int, nargs="+", default=[10000, 3000, 1000])
    parser.add_argument("--nms-kinds", nargs="+", default=["diou", "greedy"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ckpt", default=None, help="trained weights: loaded when the file exists, else saved there")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    pl.seed_everything(0, verbose=False)

    root = Path(tempfile.mkdtemp(prefix="val_speed_"))
    make_synthetic_dataset(root, num_train=args.num_train, num_val=args.num_val, img_size=args.img_size,
                           num_classes=1, formats=("yolo",))  # fmt: skip
    common = dict(path=str(root / "data.yaml"), batch_size=args.batch_size, num_workers=0)
    dm_val = YOLODataModule(img_size=args.img_size, **common)
    dm_train = YOLODataModule(img_size=args.train_img_size, augment=AugmentCfg(mosaic_prob=0.5), **common)
    module = YOLOModule(model_name="yolov4_pico", num_classes=1, class_names=dm_val.class_names, warmup_epochs=1.0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPUs; 1 class, {args.num_val} "
          f"validation images at {args.img_size} px, batch {args.batch_size}")  # fmt: skip

    nms_micro()
    rows = []
    for state in ("random", "trained"):
        if state == "trained" and args.ckpt and Path(args.ckpt).is_file():
            module.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))
            print(f"loaded the trained weights from {args.ckpt}")
        elif state == "trained":
            start = time.perf_counter()
            _trainer(max_epochs=args.train_epochs, limit_val_batches=0, num_sanity_val_steps=0).fit(module, dm_train)
            took = time.perf_counter() - start
            print(f"trained {args.train_epochs} epochs at {args.train_img_size} px in {took:.0f} s")
            if args.ckpt:
                torch.save(module.state_dict(), args.ckpt)
        cands = _candidates(module, dm_val)
        for kind in args.nms_kinds:
            for cap in args.max_nms:
                seconds, map50 = _validate(module, dm_val, cap, kind, args.repeats)
                rows.append((state, kind, cap, cands, seconds, map50))
                print(f"{state:8s} {kind:6s} max_nms {cap:6d}: {cands:7.0f} candidates/image, "
                      f"{seconds:6.2f} s ({1000 * seconds / args.num_val:6.1f} ms/image), mAP50 {map50:.3f}",
                      flush=True)  # fmt: skip

    print("\n| model | NMS | max_nms | candidates / image | validation s | ms / image | mAP50 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for state, kind, cap, cands, seconds, map50 in rows:
        per_image = 1000 * seconds / args.num_val
        print(f"| {state} | {kind} | {cap} | {cands:.0f} | {seconds:.2f} | {per_image:.1f} | {map50:.3f} |")
    trained = {(k, c): s for st, k, c, _, s, _ in rows if st == "trained"}
    print("\nrandom / trained validation time:")
    for st, kind, cap, _, seconds, _ in rows:
        if st == "random" and (kind, cap) in trained:
            print(f"  {kind} max_nms {cap}: {seconds / trained[(kind, cap)]:.2f}x")


if __name__ == "__main__":
    main()
