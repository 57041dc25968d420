"""``lightning-yolo export``, ``anchors`` and ``convert``: the subcommands that are not a Trainer run.

``export`` turns a checkpoint into an ONNX or TorchScript file (:mod:`lightning_yolo.export`), or into darknet
``.cfg`` + ``.weights`` (``--format darknet``); ``anchors`` fits anchor shapes to a dataset with k-means
(:mod:`lightning_yolo.data.anchors`) and prints them as a config snippet; ``convert`` turns darknet ``.cfg`` +
``.weights`` into a checkpoint of this package (:mod:`lightning_yolo.models.darknet`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "anchors_main",
    "build_anchors_parser",
    "build_convert_parser",
    "build_export_parser",
    "convert_main",
    "darknet_checkpoint",
    "export_main",
    "format_anchors_yaml",
]


# ----------------------------------------------------------------------------------------------------------------------
# flag spelling


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` accepting both spellings of every option: ``--img_size`` (the style of ``fit``,
    ``validate``, ... and of ``--help``) and ``--img-size``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = set(parser._option_string_actions)
    out = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        underscored = "--" + name[2:].replace("-", "_")
        out.append(underscored + sep + value if name.startswith("--") and underscored in known else arg)
    return parser.parse_args(out)


# ----------------------------------------------------------------------------------------------------------------------
# export


def build_export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-yolo export",
        description=(
            "Export a checkpoint to ONNX (dynamic batch) or TorchScript. The graph input is 'images': float32 "
            "[B, 3, H, W] RGB in [0, 1], letterboxed to --img_size. Outputs: 'decoded' [B, N, 5+C] (x1, y1, x2, y2 "
            "in input pixels, objectness, class probabilities); with --with_nms 'detections' [B, max_det, 6] "
            "(x1, y1, x2, y2, score, label; padding rows have label -1) and 'num_detections' [B]; with --raw the "
            "three head maps."
        ),
    )
    parser.add_argument("checkpoint", help="a YOLOModule .ckpt, or a state_dict file (then give --model_name)")
    parser.add_argument(
        "--format", choices=("onnx", "torchscript", "darknet"), default="onnx",
        help="default: onnx; darknet: <output>.cfg + <output>.weights for darknet / OpenCV DNN (yolov4_cspdarknet53, "
        "yolov4_tiny)",
    )  # fmt: skip
    parser.add_argument(
        "--img_size", type=int, nargs="+", metavar="S", default=None,
        help="input side S, or H W (multiples of 32); default: the training img_size stored in the checkpoint",
    )  # fmt: skip
    outputs = parser.add_mutually_exclusive_group()
    outputs.add_argument("--with_nms", action="store_true", help="greedy NMS in the graph, padded detections out")
    outputs.add_argument("--raw", action="store_true", help="export the raw head maps (no decoding)")
    parser.add_argument("--output", "-o", default=None, help="output file (default: <checkpoint>.onnx / .torchscript)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--no_dynamic_batch", action="store_true", help="fix the ONNX batch size at 1")
    parser.add_argument("--score_thresh", type=float, default=0.25, help="--with_nms: smallest score kept (0.25)")
    parser.add_argument("--nms_iou_thresh", type=float, default=None, help="--with_nms: default: the checkpoint's")
    parser.add_argument("--max_det", type=int, default=100, help="--with_nms: detections per image (100)")
    parser.add_argument("--model_name", default=None, help="variant name, needed for a plain state_dict")
    parser.add_argument(
        "--check", action="store_true",
        help="run the exported file (ONNX Runtime / torch.jit) next to PyTorch on random input and print the difference",
    )  # fmt: skip
    return parser


def _img_size(values: Sequence[int] | None, default: Any) -> int | tuple[int, int]:
    if values is None:
        return default
    if len(values) == 1:
        return int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ValueError(f"--img_size takes S or H W, got {list(values)}")


def export_main(argv: Sequence[str] | None = None) -> Path:
    """``lightning-yolo export CHECKPOINT [--format onnx|torchscript] [--img_size S] [--with_nms] [--output F]``.

    Returns:
        The written file.
    """
    import torch

    from .export import check_onnx, export_module, export_onnx, export_torchscript
    from .models.predictor import YOLOPredictor

    parser = build_export_parser()
    args = parse_args(parser, argv)
    try:
        settings: dict[str, Any] = {"score_thresh": args.score_thresh, "max_det": args.max_det}
        if args.with_nms:
            settings["nms_kind"] = "greedy"  # the only NMS with a static-graph form (see lightning_yolo.export)
        if args.nms_iou_thresh is not None:
            settings["nms_iou_thresh"] = args.nms_iou_thresh
        predictor = YOLOPredictor.from_checkpoint(args.checkpoint, model_name=args.model_name, **settings)
        img_size = _img_size(args.img_size, predictor.img_size)
        if args.format == "darknet":
            return _export_darknet(args, predictor, img_size)
        what: Any = predictor.model if args.raw else predictor
        suffix = ".onnx" if args.format == "onnx" else ".torchscript"
        output = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(suffix)
        if args.format == "onnx":
            path = export_onnx(
                what, output, img_size=img_size, dynamic_batch=not args.no_dynamic_batch, with_nms=args.with_nms,
                opset=args.opset,
            )  # fmt: skip
            _add_onnx_metadata(path, predictor, img_size, "raw" if args.raw else "nms" if args.with_nms else "decoded")
        else:
            path = export_torchscript(what, output, img_size=img_size, with_nms=args.with_nms)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    kind = "raw head maps" if args.raw else "detections + num_detections" if args.with_nms else "decoded"
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    print(
        f"[lightning-yolo export] wrote {path} ({args.format}, {kind}; input float32 [B, 3, {height}, {width}] RGB 0..1)"
    )
    if args.check:
        images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
        reference, _ = export_module(what, with_nms=args.with_nms)
        if args.format == "onnx":
            diffs = check_onnx(path, reference, images)
        else:
            loaded = torch.jit.load(str(path))
            with torch.no_grad():
                got, exp = loaded(images), reference(images)
            got, exp = (
                (got,) if isinstance(got, torch.Tensor) else got,
                (exp,) if isinstance(exp, torch.Tensor) else exp,
            )
            diffs = {
                f"output{i}": float((g - e).abs().max()) if e.numel() else 0.0
                for i, (g, e) in enumerate(zip(got, exp, strict=True))
            }
        print(
            "[lightning-yolo export] max |exported - pytorch|: " + ", ".join(f"{k}={v:.3g}" for k, v in diffs.items())
        )
    return path


def _export_darknet(args: argparse.Namespace, predictor: Any, img_size: Any) -> Path:
    """``export --format darknet``: ``<output>.cfg`` + ``<output>.weights`` with the checkpoint's loss settings."""
    import torch

    from .models.darknet import save_darknet

    hparams: dict[str, Any] = {}
    try:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        hparams = dict(ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    except Exception:  # a plain state_dict export was already read by from_checkpoint; settings stay default
        hparams = {}
    settings: dict[str, Any] = {}
    if hparams.get("box_loss"):
        settings["iou_loss"] = hparams["box_loss"]
    for key in ("iou_thresh", "ignore_thresh"):
        if hparams.get(key) is not None:
            settings[key] = hparams[key]
    settings["nms_kind"] = {"greedy": "greedynms", "diou": "diounms"}.get(predictor.nms_kind, "greedynms")
    settings["beta_nms"] = 0.6
    base = Path(args.output) if args.output else Path(args.checkpoint)
    cfg_path, weights_path = base.with_suffix(".cfg"), base.with_suffix(".weights")
    layout = save_darknet(predictor.model, cfg_path, weights_path, img_size=img_size, yolo_settings=settings)
    print(
        f"[lightning-yolo export] wrote {cfg_path} and {weights_path} (darknet {layout.name}.cfg layout, "
        f"{len(layout.layers)} layers, {len(layout.convs)} convolutions)"
    )
    names = predictor.class_names
    if names:
        names_path = base.with_suffix(".names")
        names_path.write_text("\n".join(names) + "\n", encoding="utf-8")
        print(f"[lightning-yolo export] wrote {names_path} (class names, darknet's .names format)")
    return weights_path


def _add_onnx_metadata(path: Path, predictor: Any, img_size: Any, outputs: str) -> None:
    """Store what a user of the file needs (class names, input size, output kind) in its ``metadata_props``."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx comes with the [export] extra
        print("[lightning-yolo export] onnx is not installed: class names and input size not stored in the file "
              "(pip install 'lightning-yolo[export]')")  # fmt: skip
        return
    model = onnx.load(str(path))
    meta = {
        "class_names": json.dumps(predictor.class_names or [str(i) for i in range(predictor.num_classes)]),
        "img_size": json.dumps(img_size),
        "outputs": outputs,
        "input": "images: float32 [B, 3, H, W] RGB in [0, 1], letterboxed (lightning_yolo.ops.image.letterbox)",
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


# ----------------------------------------------------------------------------------------------------------------------
# anchors


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
    parser.add_argument("--img_size", type=int, default=640, help="network input side the boxes are scaled to (640)")
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
    from .data.anchors import anchor_fitness, compute_anchors_for_datamodule
    from .data.datamodule import YOLODataModule
    from .models import get_model_cfg

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


# ----------------------------------------------------------------------------------------------------------------------
# convert (darknet -> checkpoint)


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
    ``YOLOPredictor.from_checkpoint`` and ``lightning-yolo export`` take it; its ``darknet`` entry records the source
    files, their version and seen-images count, and the cfg settings that have no effect here.

    Returns:
        The ``darknet`` entry.
    """
    import pytorch_lightning as pl
    import torch

    from .models.darknet import load_darknet
    from .module import YOLOModule

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
    from .models.darknet import DarknetError

    parser = build_convert_parser()
    args = parse_args(parser, argv)
    output = Path(args.output) if args.output else Path(args.weights).with_suffix(".ckpt")
    try:
        from .models.darknet import parse_cfg

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
