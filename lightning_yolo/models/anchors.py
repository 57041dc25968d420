"""Anchor shapes, strides and the grid-sensitivity factors of the YOLOv4 head.

Anchors are given in input-image pixels, three per level, for the levels with strides 8, 16 and 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: The paper's COCO anchors (darknet ``cfg/yolov4.cfg``, ``anchors=``), (w, h) in pixels at 608 px.
COCO_ANCHORS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((12, 16), (19, 36), (40, 28)),
    ((36, 75), (76, 55), (72, 146)),
    ((142, 110), (192, 243), (459, 401)),
)

#: Output strides of the three detection levels.
STRIDES: tuple[int, int, int] = (8, 16, 32)

# scale_x_y (darknet yolov4.cfg [yolo] layers): lets the sigmoid reach the cell borders; larger on
# finer levels where objects are small relative to the cell.
SCALE_X_Y: tuple[float, float, float] = (1.2, 1.1, 1.05)


def anchors_tensor(anchors: Sequence[Sequence[Sequence[float]]]) -> torch.Tensor:
    """Validate nested anchors and return them as a float tensor.

    Args:
        anchors: per level, per anchor, ``(w, h)`` in pixels.

    Returns:
        ``[L, A, 2]`` float32 tensor of anchor widths and heights in pixels.
    """
    try:
        t = torch.as_tensor([[list(map(float, wh)) for wh in level] for level in anchors], dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise ValueError(f"anchors must be a nested list [levels][anchors][w, h] of numbers, got {anchors!r}") from err
    if t.ndim != 3 or t.shape[-1] != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"anchors must have shape [levels, anchors_per_level, 2], got {list(t.shape)}: {anchors!r}")
    if not bool((t > 0).all()):
        raise ValueError(f"anchor sizes must be positive, got {anchors!r}")
    return t


class AnchorSet(nn.Module):
    """Anchors (pixels), strides and grid-sensitivity factors held as buffers.

    Buffers travel with ``.to(device)`` and ``state_dict`` so a checkpoint carries its anchors.
    """

    anchors: torch.Tensor
    strides: torch.Tensor
    scale_x_y: torch.Tensor

    def __init__(
        self,
        anchors: Sequence[Sequence[Sequence[float]]] = COCO_ANCHORS,
        strides: Sequence[int] = STRIDES,
        scale_x_y: Sequence[float] = SCALE_X_Y,
    ) -> None:
        super().__init__()
        a = anchors_tensor(anchors)
        if len(strides) != a.shape[0] or len(scale_x_y) != a.shape[0]:
            raise ValueError(
                f"anchors have {a.shape[0]} levels but strides={list(strides)} and scale_x_y={list(scale_x_y)}"
            )
        self.register_buffer("anchors", a)
        self.register_buffer("strides", torch.as_tensor(list(strides), dtype=torch.float32))
        self.register_buffer("scale_x_y", torch.as_tensor(list(scale_x_y), dtype=torch.float32))

    @property
    def num_levels(self) -> int:
        return int(self.anchors.shape[0])

    @property
    def anchors_per_level(self) -> int:
        return int(self.anchors.shape[1])

    def extra_repr(self) -> str:
        return f"anchors={self.anchors.tolist()}, strides={self.strides.tolist()}, scale_x_y={self.scale_x_y.tolist()}"
