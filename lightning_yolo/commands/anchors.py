"""``lightning-yolo anchors``: fit anchor shapes to a dataset with k-means (:mod:`lightning_yolo.data.anchors`) and print
them as a config snippet."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..ops.postprocess import DEFAULT_IMG_SIZE
from .args import parse_args

__all__ = ["anchors_main", "build_anchors_parser", "format_anchors_yaml"]



def build_anchors_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-yolo anchors",
        description=(
            "Fit anchor shapes to a dataset's training boxes with k-means (1 - IoU distance) at the network input "
            "size and print them as a model_overrides snippet, with the fitness (mean best shape IoU) of the "
            "model's default anchors and of the new ones."
        ),
    )
    parser.add_argument(
        "data", nargs="?", default=None,
        help="a data.yaml, a COCO json or a dataset folder (default: the built-in synthetic dataset)",
    )  # fmt: skip
    parser.add_argument("--format", default="auto", choices=("auto", "coco", "yolo", "voc"))
    parser.add_argument(
        "--img_size", type=int, default=DEFAULT_IMG_SIZE,
        help=f"network input side the boxes are scaled to ({DEFAULT_IMG_SIZE})",
    )  # fmt: skip
    parser.add_argument(
        "--num_anchors", type=int, default=None,
        help="total anchors, split over the model's levels (default: 3 per level, 9; yolov4_tiny: 6)",
    )  # fmt: skip
    parser.add_argument("--model", default="yolov4_cspdarknet53", help="variant whose default anchors are compared")
    parser.add_argument("--iters", type=int, default=300, help="k-means iterations per restart")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def format_anchors_yaml(anchors: Sequence[Sequence[Sequence[float]]]) -> str:
    """``model: model_overrides: anchors:`` as YAML, one line per level (smallest anchors first)."""
    lines = ["model:", "  model_overrides:", "    anchors:"]
    for level in anchors:
        pairs = ", ".join(f"[{float(w):g}, {float(h):g}]" for w, h in level)
        lines.append(f"      - [{pairs}]")
    return "\n".join(lines)


def anchors_main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``lightning-yolo anchors [DATA] [--img_size S] [--num_anchors K] [--model NAME]``.

    Returns:
        ``anchors`` (``[3][K/3][w, h]``), ``fitness_default``, ``fitness`` and ``num_boxes``.
    """
    from ..data.anchors import anchor_fitness, compute_anchors_for_datamodule
    from ..data.datamodule import YOLODataModule
    from ..models import get_model_cfg

    parser = build_anchors_parser()
    args = parse_args(parser, argv)
    try:
        dm = YOLODataModule(path=args.data, format=args.format, img_size=args.img_size, num_workers=0)
        model_cfg = get_model_cfg(args.model)
        default_anchors = [[list(a) for a in level] for level in model_cfg.anchors]
        levels = len(model_cfg.strides)
        anchors, _, fitness = compute_anchors_for_datamodule(
            dm, num_anchors=args.num_anchors or 3 * levels, iters=args.iters, seed=args.seed, num_levels=levels
        )
        boxes = dm.train_boxes_wh()
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    fitness_default = anchor_fitness(boxes, default_anchors)
    print(f"[lightning-yolo anchors] {len(boxes)} training boxes at {args.img_size} px ({dm.num_classes} classes)")
    print(f"fitness (mean best IoU) of the {args.model} default anchors: {fitness_default:.4f}")
    print(f"fitness (mean best IoU) of the k-means anchors:           {fitness:.4f}")
    print("# add to your config (or --model.model_overrides '{anchors: ...}'):")
    print(format_anchors_yaml(anchors))
    return {"anchors": anchors, "fitness_default": fitness_default, "fitness": fitness, "num_boxes": len(boxes)}


