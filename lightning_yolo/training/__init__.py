"""Training parts that know about targets: assigner, loss, self-adversarial step, optimizer helpers.

No Lightning here: :class:`~lightning_yolo.module.YOLOModule` and the DataModule put these to work.
"""

from .assigner import Assignment, FlatTargets, assign_targets, concat_targets, ignore_mask, pad_targets
from .config import BOX_LOSSES, LossCfg
from .loss import YOLOLoss
from .optim import WarmupCosineLR, param_groups, warmup_cosine_factor, warmup_cosine_lambda
from .sat import empty_targets, self_adversarial_step

__all__ = [
    "Assignment",
    "BOX_LOSSES",
    "FlatTargets",
    "LossCfg",
    "WarmupCosineLR",
    "YOLOLoss",
    "assign_targets",
    "concat_targets",
    "empty_targets",
    "ignore_mask",
    "pad_targets",
    "param_groups",
    "self_adversarial_step",
    "warmup_cosine_factor",
    "warmup_cosine_lambda",
]
