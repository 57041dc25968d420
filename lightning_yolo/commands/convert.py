"""``lightning-yolo convert``: darknet ``.cfg`` + ``.weights`` into a checkpoint of this package
(:mod:`lightning_yolo.models.darknet`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .args import parse_args

__all__ = ["build_convert_parser", "convert_main", "darknet_checkpoint"]



def build_convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-yolo convert",
        description=(
            "Convert darknet .cfg + .weights (yolov4.cfg -> yolov4_cspdarknet53, yolov4-tiny.cfg -> yolov4_tiny) into "
            "a checkpoint of this package, usable with --ckpt_path (validate / test / predict), --model.init_from, "
            "and lightning-yolo export. The [yolo] settings (anchors, scale_x_y, iou_thresh, ignore_thresh, iou_loss, "
            "nms_kind) become the model and loss settings; [net] width becomes the image size."
        ),
    )
    parser.add_argument("cfg", help="darknet .cfg")
    parser.add_argument("weights", help="darknet .weights")
    parser.add_argument("--output", "-o", default=None, help="output .ckpt (default: <weights>.ckpt)")
    parser.add_argument(
        "--names", default=None,
        help="class names file, one per line (darknet's coco.names / obj.names); default: class indices",
    )  # fmt: skip
    parser.add_argument("--img_size", type=int, default=None, help="image size stored (default: [net] width)")
    return parser


def _read_names(path: str, num_classes: int) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--names: no such file {path!r}")
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} names, but the cfg's [yolo] layers have classes={num_classes}")
    return names


def darknet_checkpoint(
    cfg: str | Path,
    weights: str | Path,
    output: str | Path,
    class_names: Sequence[str] | None = None,
    img_size: int | None = None,
) -> dict[str, Any]:
    """Write darknet ``cfg`` + ``weights`` as a ``YOLOModule`` checkpoint at ``output``.

    The checkpoint has the layout the Trainer writes (``state_dict``, ``hyper_parameters``, epoch / step 0, empty
    optimizer and scheduler lists), so ``validate / test / predict --ckpt_path``, ``--model.init_from``,
    ``lightning_yolo.load_predictor`` and ``lightning-yolo export`` take it; its ``darknet`` entry records the source
    files, their version and seen-images count, and the cfg settings that have no effect here.

    Returns:
        The ``darknet`` entry.
    """
    import pytorch_lightning as pl
    import torch

    from ..models.darknet import load_darknet
    from ..module import YOLOModule

    imp = load_darknet(cfg, weights)
    height, width = imp.img_size
    size = int(img_size) if img_size else (width if width == height else max(width, height))
    module = YOLOModule(
        model_name=imp.model_name,
        num_classes=imp.num_classes,
        class_names=list(class_names) if class_names else None,
        model_overrides=imp.model_overrides or None,
        **imp.module_hparams,
    )
    module.model.load_state_dict(imp.model.state_dict())
    info = {
        "cfg": str(cfg),
        "weights": str(weights),
        "version": imp.header["version"] if imp.header else None,
        "seen": imp.header["seen"] if imp.header else None,
        "layout": imp.layout.name,
        "not_mapped": imp.not_mapped,
    }
    ckpt: dict[str, Any] = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "optimizer_states": [],
        "lr_schedulers": [],
        "datamodule_hyper_parameters": {"img_size": size},
        "darknet": info,
    }
    module.on_save_checkpoint(ckpt)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, output)
    return info


def convert_main(argv: Sequence[str] | None = None) -> Path:
    """``lightning-yolo convert CFG WEIGHTS [-o model.ckpt] [--names coco.names] [--img_size S]``.

    Returns:
        The written checkpoint.
    """
    from ..models.darknet import DarknetError

    parser = build_convert_parser()
    args = parse_args(parser, argv)
    output = Path(args.output) if args.output else Path(args.weights).with_suffix(".ckpt")
    try:
        from ..models.darknet import parse_cfg

        names = None
        if args.names:
            classes = {s.get("classes", 20) for s in parse_cfg(args.cfg) if s.type == "yolo"}
            names = _read_names(args.names, classes.pop() if len(classes) == 1 else -1)
        info = darknet_checkpoint(args.cfg, args.weights, output, class_names=names, img_size=args.img_size)
    except (FileNotFoundError, DarknetError, ValueError) as err:
        parser.error(str(err))
    print(
        f"[lightning-yolo convert] wrote {output} ({info['layout']}.cfg layout, darknet version "
        f"{'.'.join(map(str, info['version']))}, {info['seen']} images seen)"
    )
    if info["not_mapped"]:
        print(f"[lightning-yolo convert] cfg settings without effect here: {', '.join(info['not_mapped'])}")
    return output
