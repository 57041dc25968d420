"""Optimizer parameter groups and the warmup + cosine learning-rate schedule.

* Weight decay (darknet ``decay=0.0005``) applies to convolution and linear weights only: decaying the scale
  and shift of normalisation layers or biases only limits what they can represent (Goyal et al. 2017,
  "Accurate, Large Minibatch SGD"; timm's ``param_groups_weight_decay``).
* Warmup follows darknet's ``burn_in``: ``lr * (step / burn_in) ^ power`` with ``power=4``; cosine annealing
  (Loshchilov & Hutter 2017, SGDR, one cycle; the YOLOv4 paper's "cosine annealing scheduler") then falls to
  ``min_lr_ratio * lr`` at ``total_steps``, or, with ``decay="steps"``, darknet's default ``policy=steps``
  multiplies the rate by 0.1 at 80% and again at 90% of the run (yolov4.cfg: steps=400000,450000 of 500500).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "DECAYS",
    "NORM_LAYERS",
    "OPTIMIZERS",
    "WarmupCosineLR",
    "make_optimizer",
    "optimizer_class",
    "param_groups",
    "plan_steps",
    "warmup_cosine_factor",
    "warmup_cosine_lambda",
]

#: Layer types whose parameters never get weight decay (BatchNorm/SyncBatchNorm/InstanceNorm via ``_NormBase``).
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def param_groups(model: nn.Module, weight_decay: float, trainable_only: bool = True) -> list[dict[str, Any]]:
    """Split parameters into a weight-decayed group and a group without weight decay.

    No decay for: parameters of normalisation layers (any ``_NormBase`` - BatchNorm, SyncBatchNorm,
    InstanceNorm - ``GroupNorm``, ``LayerNorm``, and any module class whose name ends in ``Norm`` such as
    timm's ``LayerNorm2d``), biases, and other 1-D parameters (per-channel scales). Shared parameters appear once.

    Args:
        model: the network.
        weight_decay: decay of the first group (darknet ``decay=0.0005``).
        trainable_only: skip parameters with ``requires_grad=False`` (a frozen backbone), so that a callback
            such as Lightning's ``BackboneFinetuning`` can add them later without duplicates.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay, "name": "decay"},
        {"params": [...], "weight_decay": 0.0, "name": "no_decay"}]``; a group without parameters is left out.
        Pass the list to any ``torch.optim`` optimizer.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS) or type(module).__name__.endswith("Norm")
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            if is_norm or name.endswith("bias") or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay), "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


#: Decays after the warmup: the paper's cosine annealing, or darknet's step policy.
DECAYS = ("cosine", "steps")

#: darknet's step policy: (fraction of the run, multiplier from there on).
STEP_DECAY = ((0.8, 0.1), (0.9, 0.01))


def warmup_cosine_factor(
    step: int,
    total_steps: int,
    warmup_steps: int,
    warmup_power: float = 4.0,
    min_lr_ratio: float = 0.01,
    decay: str = "cosine",
) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based).

    * ``step < warmup_steps``: ``((step + 1) / warmup_steps) ** warmup_power`` (darknet ``burn_in`` / ``power=4``;
      darknet counts the first update as batch 1, hence ``step + 1``), reaching 1 at the last warmup step.
    * then ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * t)) / 2`` with ``t`` going from 0 at
      ``warmup_steps`` to 1 at ``total_steps``; ``min_lr_ratio`` after ``total_steps``.
    * ``decay="steps"``: 1, then 0.1 from 80% and 0.01 from 90% of ``total_steps`` (darknet ``policy=steps``;
      ``min_lr_ratio`` is not used).
    """
    if step < warmup_steps:
        return ((step + 1) / warmup_steps) ** warmup_power
    if decay == "steps":
        factor = 1.0
        for fraction, multiplier in STEP_DECAY:
            if step >= fraction * total_steps:
                factor = multiplier
        return factor
    span = max(total_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _check_schedule(
    total_steps: int, warmup_steps: int, warmup_power: float, min_lr_ratio: float, decay: str = "cosine"
) -> None:
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
    if int(warmup_steps) < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
    if not warmup_power > 0:
        raise ValueError(f"warmup_power must be > 0, got {warmup_power!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")


class _WarmupCosine:
    """Picklable callable for ``LambdaLR`` (its ``__dict__`` goes into the scheduler's ``state_dict``)."""

    def __init__(self, total_steps: int, warmup_steps: int, warmup_power: float, min_lr_ratio: float) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_power = float(warmup_power)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        return warmup_cosine_factor(step, self.total_steps, self.warmup_steps, self.warmup_power, self.min_lr_ratio)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__})"


def warmup_cosine_lambda(total_steps: int, warmup_steps: int, warmup_power: float = 4.0, min_lr_ratio: float = 0.01):
    """A ``step -> multiplier`` function for ``torch.optim.lr_scheduler.LambdaLR`` (see :func:`warmup_cosine_factor`).

    Args:
        total_steps: optimizer steps of the whole run (the cosine ends there).
        warmup_steps: darknet ``burn_in`` (1000 in yolov4.cfg) in optimizer steps; 0 disables warmup.
        warmup_power: darknet ``power=4``.
        min_lr_ratio: final learning rate as a fraction of the base learning rate.
    """
    _check_schedule(total_steps, warmup_steps, warmup_power, min_lr_ratio)
    return _WarmupCosine(total_steps, warmup_steps, warmup_power, min_lr_ratio)


class WarmupCosineLR(LRScheduler):
    """Warmup (darknet ``burn_in``, power 4) then cosine annealing, stepped once per optimizer step.

    Its ``state_dict`` holds only numbers, so Lightning resumes it exactly (``fit --ckpt_path``). To extend a
    finished run, load the checkpoint and call :meth:`set_total_steps` with the new length: the cosine is
    re-planned over the new total from the current step on (the learning rate moves to the re-planned curve's
    value at the current step, e.g. back up to about half the base rate when the length doubles).

    Args:
        optimizer: the wrapped optimizer; each group's ``initial_lr`` is its peak rate.
        total_steps: optimizer steps of the whole run.
        warmup_steps: warmup length in optimizer steps (darknet ``burn_in``).
        warmup_power: darknet ``power=4``.
        min_lr_ratio: final learning rate as a fraction of the peak (cosine).
        decay: ``"cosine"`` or ``"steps"`` (darknet ``policy=steps``), see :func:`warmup_cosine_factor`.
        last_epoch: index of the last step taken (``-1``: a fresh start), as in every ``LRScheduler``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_power: float = 4.0,
        min_lr_ratio: float = 0.01,
        decay: str = "cosine",
        last_epoch: int = -1,
    ) -> None:
        _check_schedule(total_steps, warmup_steps, warmup_power, min_lr_ratio, decay)
        self.decay = decay
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.warmup_power = float(warmup_power)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int | None = None) -> float:
        """Multiplier of the peak rate at ``step`` (default: the current step)."""
        step = self.last_epoch if step is None else step
        return warmup_cosine_factor(
            step, self.total_steps, self.warmup_steps, self.warmup_power, self.min_lr_ratio, getattr(self, "decay", "cosine")
        )

    def get_lr(self) -> list[float]:
        f = self.factor()
        return [base_lr * f for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def set_total_steps(self, total_steps: int, warmup_steps: int | None = None) -> None:
        """Re-plan the schedule for a new run length and apply it to the optimizer at the current step.

        Args:
            total_steps: the new total number of optimizer steps (e.g. the extended run's).
            warmup_steps: optionally a new warmup length.
        """
        warmup = self.warmup_steps if warmup_steps is None else int(warmup_steps)
        _check_schedule(total_steps, warmup, self.warmup_power, self.min_lr_ratio)
        self.total_steps = int(total_steps)
        self.warmup_steps = warmup
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs


def plan_steps(total_steps: float, max_epochs: int | None, warmup_epochs: float) -> tuple[int, int]:
    """``(total, warmup)`` optimisation steps of a run of ``total_steps`` (``trainer.estimated_stepping_batches``)
    over ``max_epochs`` epochs (``None`` or ``-1``: one "epoch" is the whole run), with ``warmup_epochs`` of warmup,
    which always leaves at least one step after it. An infinite or empty run raises ``ValueError``."""
    if not math.isfinite(total_steps) or int(total_steps) <= 0:
        raise ValueError("the default schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
    total = int(total_steps)
    steps_per_epoch = total / max_epochs if max_epochs and max_epochs > 0 else total
    warmup = int(round(warmup_epochs * steps_per_epoch))
    return total, min(warmup, max(total - 1, 0))


# ----------------------------------------------------------------------------------------------------------------------
# the optimizer factory

#: ``optimizer_name`` values with their own settings; any other ``torch.optim`` class name is accepted too.
OPTIMIZERS = ("adamw", "sgd")


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """``"adamw"``, ``"sgd"`` or a ``torch.optim`` class name (``"RAdam"``, ``"torch.optim.NAdam"``); an unknown name
    raises ``ValueError`` naming the choices."""
    if name in OPTIMIZERS:
        return torch.optim.AdamW if name == "adamw" else torch.optim.SGD
    short = str(name).rsplit(".", 1)[-1]
    cls = getattr(torch.optim, short, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        choices = sorted(
            n for n, c in vars(torch.optim).items() if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)
        )
        raise ValueError(f"optimizer_name must be 'adamw', 'sgd' or a torch.optim class ({', '.join(choices)}), got {name!r}")
    return cls


def make_optimizer(name: str, groups: list[dict[str, Any]], lr: float, momentum: float) -> torch.optim.Optimizer:
    """The optimizer of ``optimizer_name`` over parameter groups (:func:`param_groups`).

    ``"sgd"`` is Nesterov SGD (darknet's); ``"adamw"`` and every class with ``betas`` get ``betas=(momentum, 0.999)``;
    a class with ``momentum`` gets it as is; ``weight_decay`` comes through the groups.
    """
    import inspect

    cls = optimizer_class(name)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {"lr": lr}
    if "betas" in params:
        kwargs["betas"] = (momentum, 0.999)
    elif "momentum" in params:
        kwargs["momentum"] = momentum
    return cls(groups, **kwargs)
