"""Augmentation settings as data: :class:`AugmentCfg`.

One frozen dataclass holds every augmentation knob of training, on the host (Mosaic, MixUp, CutMix, the random
affine, HSV, flip, close-mosaic) and on the device (random training shapes, self-adversarial training). The
DataModule takes it whole (``YOLODataModule(augment=AugmentCfg(...))``, ``--data.augment.mosaic_prob 0.5`` on the
command line, ``data: augment: mosaic_prob: 0.5`` in a config) and the pipelines read it whole
(:func:`~lightning_yolo.data.pipelines.build_train_dataset`). Each item of the YOLOv4 paper's bag of freebies is
one field, so an ablation flips exactly one value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings import Settings

__all__ = ["AugmentCfg"]


def _in_range(name: str, value: float, lo: float, hi: float, hi_open: bool = False) -> None:
    ok = math.isfinite(value) and lo <= value and (value < hi if hi_open else value <= hi)
    if not ok:
        right = ")" if hi_open else "]"
        raise ValueError(f"AugmentCfg.{name} must be in [{lo:g}, {hi:g}{right}, got {value}")


def _at_least(name: str, value: float, lo: float, strict: bool = False) -> None:
    ok = math.isfinite(value) and (value > lo if strict else value >= lo)
    if not ok:
        raise ValueError(f"AugmentCfg.{name} must be {'>' if strict else '>='} {lo:g}, got {value}")


@dataclass(frozen=True)
class AugmentCfg(Settings):
    """Every augmentation setting of training (host pipeline and on-device steps).

    Attributes:
        enabled: ``False`` trains on letterboxed images without any host augmentation (the fields up to
            ``close_mosaic_epochs`` are then unused; random shapes and SAT still follow their own fields).
        mosaic_prob: probability of a 4-image Mosaic (YOLOv4 paper section 3.3; 0 disables), in ``[0, 1]``.
        mosaic_buffer: without the RAM cache, Mosaic partners come from the last N images the worker loaded
            (ultralytics' buffer: one decode per sample instead of four; images that leave the window stay decoded
            up to ``mixing.KEEP_DECODED_BYTES`` per process); 0 draws them from the whole dataset.
        mixup_prob: probability of MixUp with a second (Mosaic) sample (0 disables), in ``[0, 1]``.
        mixup_alpha: MixUp ratio drawn from ``Beta(alpha, alpha)`` (32: close to 0.5, as ultralytics), > 0.
        cutmix_prob: probability of CutMix with a second (Mosaic) sample (0 disables), in ``[0, 1]``.
        cutmix_beta: CutMix patch area drawn from ``Beta(beta, beta)``, > 0.
        degrees: random affine rotation range in degrees, in ``[0, 180]`` (non-zero also costs a canvas warp).
        translate: random affine translation fraction per axis, in ``[0, 1]``.
        scale: random affine zoom drawn from ``1 +- scale``, in ``[0, 1)``.
        shear: random affine shear range in degrees, in ``[0, 90)``.
        hsv_h: hue shift drawn from ``U(-hsv_h, hsv_h)`` as a fraction of the hue circle, in ``[0, 1]``.
        hsv_s: saturation gain drawn from ``1 + U(-hsv_s, hsv_s)``, in ``[0, 1]``.
        hsv_v: value (brightness) gain drawn from ``1 + U(-hsv_v, hsv_v)``, in ``[0, 1]``.
        flip_prob: horizontal flip probability, in ``[0, 1]``.
        close_mosaic_epochs: Mosaic, MixUp and CutMix off for the last N epochs of ``Trainer(max_epochs)``,
            following ``max_epochs`` when :class:`~lightning_yolo.callbacks.recipe.TimeBudget` re-plans it; >= 0.
        multiscale: random training shapes (YOLOv4 paper "random training shapes"), resized on the device.
        multiscale_range: ``(lo, hi)``: sides drawn from the multiples of the model's largest stride in
            ``[lo * S, hi * S]``; ``0 < lo <= hi``.
        multiscale_every: draw a new side every this many training batches, >= 1.
        sat_prob: probability that a training batch gets a self-adversarial step (YOLOv4 paper SAT; 0 disables),
            in ``[0, 1]``.
        sat_step_size: L-infinity size of one SAT step in ``[0, 1]`` pixel units, in ``(0, 1]``.
        sat_max_delta: L-infinity bound of the total SAT change, in ``(0, 1]``.
        sat_steps: sign-gradient steps of SAT, >= 1.
        sat_start_epoch: first epoch with SAT (darknet starts after burn-in), >= 0.
    """

    _what = "augmentation key"  # in the error for an unknown name (not a field: no annotation)

    enabled: bool = True
    mosaic_prob: float = 1.0
    mosaic_buffer: int = 64
    mixup_prob: float = 0.0
    mixup_alpha: float = 32.0
    cutmix_prob: float = 0.0
    cutmix_beta: float = 1.0
    degrees: float = 0.0
    translate: float = 0.1
    scale: float = 0.5
    shear: float = 0.0
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    flip_prob: float = 0.5
    close_mosaic_epochs: int = 0
    multiscale: bool = False
    multiscale_range: tuple[float, float] = (0.5, 1.5)
    multiscale_every: int = 10
    sat_prob: float = 0.0
    sat_step_size: float = 8.0 / 255.0
    sat_max_delta: float = 8.0 / 255.0
    sat_steps: int = 1
    sat_start_epoch: int = 0

    def __post_init__(self) -> None:
        for name in ("mosaic_prob", "mixup_prob", "cutmix_prob", "flip_prob", "sat_prob", "translate", "hsv_h",
                     "hsv_s", "hsv_v"):  # fmt: skip
            _in_range(name, float(getattr(self, name)), 0.0, 1.0)
        _in_range("degrees", float(self.degrees), 0.0, 180.0)
        _in_range("scale", float(self.scale), 0.0, 1.0, hi_open=True)
        _in_range("shear", float(self.shear), 0.0, 90.0, hi_open=True)
        for name in ("mixup_alpha", "cutmix_beta"):
            _at_least(name, float(getattr(self, name)), 0.0, strict=True)
        for name in ("sat_step_size", "sat_max_delta"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and 0.0 < value <= 1.0):
                raise ValueError(f"AugmentCfg.{name} must be in (0, 1], got {value}")
        for name in ("mosaic_buffer", "close_mosaic_epochs", "sat_start_epoch"):
            _at_least(name, int(getattr(self, name)), 0)
        for name in ("multiscale_every", "sat_steps"):
            _at_least(name, int(getattr(self, name)), 1)
        rng = tuple(self.multiscale_range)
        if len(rng) != 2 or not (math.isfinite(rng[0]) and math.isfinite(rng[1]) and 0 < rng[0] <= rng[1]):
            raise ValueError(
                f"AugmentCfg.multiscale_range must be (lo, hi) with 0 < lo <= hi, got {self.multiscale_range}"
            )
        object.__setattr__(self, "multiscale_range", (float(rng[0]), float(rng[1])))  # YAML lists -> a tuple

    @property
    def multi_image(self) -> bool:
        """Whether any multi-image step (Mosaic, MixUp, CutMix) can run."""
        return self.enabled and max(self.mosaic_prob, self.mixup_prob, self.cutmix_prob) > 0
