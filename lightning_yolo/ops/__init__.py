"""Pure tensor operations: box conversions, IoU variants, NMS and post-processing.

Boxes are ``xyxy`` float in absolute pixels at every public boundary.
"""

from .boxes import (
    MAX_LOG_WH,
    clip_boxes,
    cxcywh_to_xyxy,
    decode_boxes_cxcywh,
    make_grid,
    scale_boxes_to_input,
    scale_boxes_to_original,
    xyxy_to_cxcywh,
)
from .iou import (
    IOU_KINDS,
    box_iou,
    complete_box_iou,
    distance_box_iou,
    elementwise_box_iou,
    generalized_box_iou,
    shape_iou,
)
from .nms import batched_nms, diou_nms, diou_nms_suppression
from .postprocess import DEFAULTS, NMS_KINDS, InferenceCfg, decode_outputs, postprocess

__all__ = [
    "MAX_LOG_WH",
    "clip_boxes",
    "cxcywh_to_xyxy",
    "decode_boxes_cxcywh",
    "make_grid",
    "scale_boxes_to_input",
    "scale_boxes_to_original",
    "xyxy_to_cxcywh",
    "IOU_KINDS",
    "box_iou",
    "complete_box_iou",
    "distance_box_iou",
    "elementwise_box_iou",
    "generalized_box_iou",
    "shape_iou",
    "batched_nms",
    "diou_nms",
    "diou_nms_suppression",
    "DEFAULTS",
    "InferenceCfg",
    "NMS_KINDS",
    "decode_outputs",
    "postprocess",
]
