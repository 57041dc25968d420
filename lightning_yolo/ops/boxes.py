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
    "clip_boxes",
    "scale_boxes_to_original",
    "scale_boxes_to_input",
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


def clip_boxes(boxes: torch.Tensor, size_hw: tuple[int, int] | torch.Tensor) -> torch.Tensor:
    """Clip boxes to an image.

    Args:
        boxes: ``[..., 4]`` xyxy in pixels.
        size_hw: ``(H, W)`` of the image, ints or a ``[2]`` tensor (e.g. a target's ``orig_size``).

    Returns:
        ``[..., 4]`` boxes with x in ``[0, W]`` and y in ``[0, H]``.
    """
    hw = torch.as_tensor(size_hw, dtype=boxes.dtype, device=boxes.device)
    upper = hw.flip(-1).repeat(2)  # (W, H, W, H)
    return boxes.clamp(min=0).minimum(upper)


def _ratio_xyxy(ratio: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # a scalar ratio, or (ratio_x, ratio_y) for non-uniform resizes, as a [4] tensor for xyxy boxes
    r = torch.as_tensor(ratio, dtype=like.dtype, device=like.device).reshape(-1)
    return r.expand(4) if r.numel() == 1 else r.repeat(2)


def scale_boxes_to_original(
    boxes: torch.Tensor,
    ratio: float | torch.Tensor,
    pad: tuple[float, float] | torch.Tensor,
    orig_size: tuple[int, int] | torch.Tensor,
) -> torch.Tensor:
    """Map boxes from the letterboxed network input back to the original image (undo ``input = orig * ratio + pad``).

    Args:
        boxes: ``[N, 4]`` xyxy in input-image pixels.
        ratio: letterbox scale, a scalar (or ``[2]`` ``(ratio_x, ratio_y)``).
        pad: ``[2]`` ``(pad_x_left, pad_y_top)`` in input pixels.
        orig_size: ``(H, W)`` of the original image.

    Returns:
        ``[N, 4]`` xyxy in original-image pixels, clipped to the image.
    """
    pad_xyxy = torch.as_tensor(pad, dtype=boxes.dtype, device=boxes.device).repeat(2)
    return clip_boxes((boxes - pad_xyxy) / _ratio_xyxy(ratio, boxes), orig_size)


def scale_boxes_to_input(
    boxes: torch.Tensor,
    ratio: float | torch.Tensor,
    pad: tuple[float, float] | torch.Tensor,
) -> torch.Tensor:
    """Map boxes from the original image onto the letterboxed network input (``input = orig * ratio + pad``).

    Args:
        boxes: ``[N, 4]`` xyxy in original-image pixels.
        ratio: letterbox scale, a scalar (or ``[2]`` ``(ratio_x, ratio_y)``).
        pad: ``[2]`` ``(pad_x_left, pad_y_top)`` in input pixels.

    Returns:
        ``[N, 4]`` xyxy in input-image pixels (not clipped).
    """
    pad_xyxy = torch.as_tensor(pad, dtype=boxes.dtype, device=boxes.device).repeat(2)
    return boxes * _ratio_xyxy(ratio, boxes) + pad_xyxy
