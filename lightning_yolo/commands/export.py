"""``lightning-yolo export``: a checkpoint to ONNX or TorchScript (:mod:`lightning_yolo.inference.export`), or to darknet
``.cfg`` + ``.weights`` (``--format darknet``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .args import parse_args

__all__ = ["build_export_parser", "export_main"]



def build_export_parser() -> argparse.ArgumentParser:
    from ..ops.postprocess import DEFAULTS

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
    parser.add_argument(
        "--score_thresh", type=float, default=None,
        help=f"--with_nms: smallest score kept (default: the checkpoint's model.inference.score_thresh, "
        f"{DEFAULTS.score_thresh} unless set at training)",
    )  # fmt: skip
    parser.add_argument("--nms_iou_thresh", type=float, default=None, help="--with_nms: default: the checkpoint's")
    parser.add_argument(
        "--max_det", type=int, default=None,
        help=f"--with_nms: detections per image (default: the checkpoint's model.inference.max_det, {DEFAULTS.max_det})",
    )  # fmt: skip
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

    from ..inference.checkpoint import load_predictor
    from ..inference.export import check_onnx, export_module, export_onnx, export_torchscript

    parser = build_export_parser()
    args = parse_args(parser, argv)
    try:
        # the checkpoint's predict settings (model.inference) unless given here: the same names as there
        given = {"score_thresh": args.score_thresh, "max_det": args.max_det, "nms_iou_thresh": args.nms_iou_thresh}
        settings: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if args.with_nms:
            settings["nms_kind"] = "greedy"  # the only NMS with a static-graph form (see lightning_yolo.inference.export)
        # as trained: darknet files keep BatchNorm, and export_module folds it itself for the graphs
        predictor = load_predictor(args.checkpoint, model_name=args.model_name, trainable=True, **settings)
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
    from ..inference.checkpoint import load_checkpoint_dict
    from ..models.darknet import save_darknet

    # already read once by load_predictor, so it is readable; a plain state_dict has no hyper-parameters
    hparams: dict[str, Any] = dict(load_checkpoint_dict(args.checkpoint).get("hyper_parameters") or {})
    settings: dict[str, Any] = {}
    loss = hparams.get("loss") or {}
    if loss.get("box_loss"):
        settings["iou_loss"] = loss["box_loss"]
    for key in ("iou_thresh", "ignore_thresh"):
        if loss.get(key) is not None:
            settings[key] = loss[key]
    settings["nms_kind"] = {"greedy": "greedynms", "diou": "diounms"}.get(predictor.nms_kind, "greedynms")
    settings["beta_nms"] = predictor.beta_nms
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
        "input": "images: float32 [B, 3, H, W] RGB in [0, 1], letterboxed (lightning_yolo.data.image_io.letterbox)",
    }
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


