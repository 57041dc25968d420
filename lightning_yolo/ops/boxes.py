"""Box conversions and the YOLO box decode shared by post-processing and the loss.

All public boxes are ``xyxy`` float in absolute pixels; other forms carry their format in the name.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert

__all__ = [
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "make_grid",
    "decode_boxes_cxcywh",
    "MAX_LOG_WH",
]

# exp(t_wh) is clamped at exp(MAX_LOG_WH) times the anchor: keeps an untrained head from producing inf
# boxes (and NaN losses) while allowing boxes ~55x larger than their anchor.
MAX_LOG_WH = 4.0


def xyxy_to_cxcywh(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` xyxy -> ``[..., 4]`` (cx, cy, w, h)."""
    return box_convert(boxes_xyxy, "xyxy", "cxcywh")


def cxcywh_to_xyxy(boxes_cxcywh: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` xyxy."""
    return box_convert(boxes_cxcywh, "cxcywh", "xyxy")


def make_grid(height: int, width: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32):
    """Cell offsets of a ``height x width`` map.

    Returns:
        ``[H, W, 2]`` tensor holding ``(x, y)`` of each cell's top-left corner in cell units.
    """
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), dim=-1)


def decode_boxes_cxcywh(
    t_xywh: torch.Tensor,
    grid_xy: torch.Tensor,
    anchor_wh: torch.Tensor,
    stride: float | torch.Tensor,
    scale_x_y: float | torch.Tensor,
) -> torch.Tensor:
    """Decode raw box outputs with darknet's grid-sensitivity fix.

    ``xy = (sigmoid(t_xy) * s - (s - 1) / 2 + grid) * stride`` and ``wh = exp(t_wh) * anchor``,
    where ``s = scale_x_y`` (darknet yolov4.cfg: 1.2 / 1.1 / 1.05 for strides 8 / 16 / 32).

    Args:
        t_xywh: ``[..., 4]`` raw outputs ``(t_x, t_y, t_w, t_h)``.
        grid_xy: ``[..., 2]`` cell offsets broadcastable to ``t_xywh[..., :2]``.
        anchor_wh: ``[..., 2]`` anchor sizes in pixels, broadcastable likewise.
        stride: level stride in pixels.
        scale_x_y: grid-sensitivity factor of the level.

    Returns:
        ``[..., 4]`` boxes ``(cx, cy, w, h)`` in input-image pixels.
    """
    xy = (t_xywh[..., :2].sigmoid() * scale_x_y - 0.5 * (scale_x_y - 1.0) + grid_xy) * stride
    wh = t_xywh[..., 2:4].clamp(max=MAX_LOG_WH).exp() * anchor_wh
    return torch.cat((xy, wh), dim=-1)
