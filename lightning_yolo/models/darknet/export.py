"""The package's networks out to darknet: a ``.cfg`` + ``.weights`` pair for darknet or OpenCV DNN."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..yolo import YOLOv4
from .cfg import format_cfg
from .layout import DarknetLayout, darknet_layout, state_dict_arrays
from .weights_file import write_weights


def save_darknet(
    model: YOLOv4,
    cfg_path: str | os.PathLike,
    weights_path: str | os.PathLike,
    img_size: int | tuple[int, int] = 416,
    yolo_settings: dict[str, Any] | None = None,
    seen: int = 0,
) -> DarknetLayout:
    """Write ``model`` as a darknet ``.cfg`` + ``.weights`` pair (darknet, OpenCV DNN).

    Args:
        model: a network with a darknet form (see :func:`darknet_layout`); not fused.
        cfg_path, weights_path: output files.
        img_size: ``[net]`` width/height (``S`` or ``(H, W)``).
        yolo_settings: extra ``[yolo]`` options, e.g. ``{"iou_loss": "ciou", "ignore_thresh": 0.7}``.
        seen: images-seen count of the header.

    A BatchNorm epsilon other than darknet's 1e-5 is folded into the written running variances, so darknet's
    outputs equal this network's.
    """
    layout = darknet_layout(model, yolo_settings)
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    net = {"batch": 64, "subdivisions": 8, "width": width, "height": height, "channels": 3}
    header = f"# written by lightning_yolo from a {model.cfg.backbone} network ({layout.name}.cfg layout)\n"
    Path(cfg_path).parent.mkdir(parents=True, exist_ok=True)
    Path(cfg_path).write_text(header + format_cfg(net, layout.layers), encoding="utf-8")
    write_weights(weights_path, state_dict_arrays(layout, model.state_dict(), _bn_eps(model)), seen=seen)
    return layout


def _bn_eps(model: YOLOv4) -> dict[str, float]:
    out = {}
    for name, m in model.named_modules():
        bn = getattr(m, "bn", None)
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            out[name] = float(bn.eps)
    return out
