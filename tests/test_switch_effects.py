"""Every registered ablation switch, flipped in a config the way ``lightning-yolo ablate`` does it, changes the object
it names: the built network, the loss value on a fixed batch, the training pipeline, the device-side batch steps, the
optimizer's schedule, the module's callbacks or the strategy's BatchNorm plugin."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml

from lightning_yolo.commands.cli import build_cli
from lightning_yolo.study.switches import SWITCHES, Change, apply_changes

DEBUG = Path(__file__).resolve().parents[1] / "configs" / "debug.yaml"

#: The two values compared per switch where the registry's off / on would not show a difference on a tiny run
#: (a probability of 1 makes the stochastic step certain) or the switch is a choice without an on value.
VALUES: dict[str, tuple[Any, Any]] = {
    "sat": (0.0, 1.0),
    "box_loss": ("iou", "ciou"),
}


def _values(name: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    switch = SWITCHES[name]
    if name in VALUES:
        off, on = VALUES[name]
        return (off,) * len(switch.paths), (on,) * len(switch.paths)
    return switch.off, switch.on


def _build(tmp_path: Path, name: str, values: tuple[Any, ...], tag: str):
    base = yaml.safe_load(DEBUG.read_text())
    changes = [Change(path, value, name) for path, value in zip(SWITCHES[name].paths, values, strict=True)]
    changes.append(Change("data.augment.multiscale_every", 1, "every"))
    if name == "syncbn":  # SyncBatchNorm is a multi-process setting: a DDP strategy (not started here)
        changes.append(Change("trainer.strategy", "ddp", "ddp"))
    config = apply_changes(base, changes)
    path = tmp_path / f"{name}_{tag}.yaml"
    path.write_text(yaml.safe_dump(config))
    return build_cli(["--config", str(path)], run=False)


def _batch(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 30.0, 120.0, 100.0]])
    targets = [{"boxes": boxes.clone(), "labels": torch.tensor([0, 2]), "iscrowd": torch.zeros(2, dtype=torch.bool)}
               for _ in range(2)]  # fmt: skip
    return {"images": images, "targets": targets}


def _loss(cli) -> tuple[float, ...]:
    module = cli.model
    batch = _batch()
    images = batch["images"].float() / 255
    with torch.no_grad():
        losses = module.loss(module.model(images), batch["targets"])
    return tuple(round(float(losses[k]), 6) for k in ("box", "obj", "cls"))


def _architecture(cli) -> tuple:
    model = cli.model.model
    return (
        sorted({type(m).__name__ for m in model.modules()}),
        sum(p.numel() for p in model.parameters()),
        tuple(cli.model.model.anchors.scale_x_y.tolist()),
        tuple(m.p for m in model.modules() if type(m).__name__ == "DropBlock2d"),
    )


def _pipeline(cli) -> tuple:
    dm = cli.datamodule
    dm.setup("fit")
    stages, stage = [], dm.train_dataset.stage
    while stage is not None:
        stages.append((type(stage).__name__, round(float(getattr(stage, "prob", -1)), 6)))
        stage = getattr(stage, "stage", None)
    steps = [(type(s).__name__, tuple(round(float(v), 6) for k, v in vars(s).items() if isinstance(v, float)))
             for s in dm.train_dataset.steps.steps]  # fmt: skip
    return tuple(stages), tuple(steps)


def _device_steps(cli) -> tuple:
    """What ``on_after_batch_transfer`` does to 6 training batches: their sizes and whether the pixels changed."""
    dm, module = cli.datamodule, cli.model
    dm.trainer = SimpleNamespace(training=True, current_epoch=0, lightning_module=module)
    out = []
    for seed in range(6):
        batch = _batch(seed)
        before = batch["images"].float() / 255
        after = dm.on_after_batch_transfer(batch, 0)["images"]
        changed = after.shape != before.shape or not torch.equal(after, before)
        out.append((tuple(after.shape[-2:]), bool(changed)))
    return tuple(out)


def _schedule(cli) -> tuple:
    module = cli.model
    module._planned_steps = lambda: (100, 10)  # the trainer's run length, without a fit
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    return tuple(round(scheduler.factor(step), 6) for step in (50, 85, 95))


def _callbacks(cli) -> tuple:
    return tuple(sorted(type(cb).__name__ for cb in cli.model.configure_callbacks()))


def _nms(cli) -> str:
    return cli.model.predictor().nms_kind


def _layer_sync(cli) -> str:
    # the CLI installs timm's SyncBatchNorm plugin where it builds the Trainer when sync_batchnorm is on
    return type(getattr(cli.trainer.strategy, "_layer_sync", None)).__name__


PROBES = {
    **dict.fromkeys(("mosaic", "mixup", "cutmix", "hsv", "flip"), _pipeline),
    **dict.fromkeys(("sat", "multiscale"), _device_steps),
    **dict.fromkeys(("box_loss", "label_smoothing", "focal", "multi_anchor", "hard_negatives"), _loss),
    **dict.fromkeys(("grid_sensitivity", "sam", "spp", "dropblock", "neck", "attention", "cmbn"), _architecture),
    "nms": _nms,
    "syncbn": _layer_sync,
    "cosine": _schedule,
    **dict.fromkeys(("ema", "auto_anchor"), _callbacks),
}


def test_every_switch_has_a_probe():
    assert sorted(PROBES) == sorted(SWITCHES)


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_flipping_the_switch_changes_what_it_names(name, tmp_path, cli_session):
    off, on = _values(name)
    with cli_session():
        torch.manual_seed(0)
        a = PROBES[name](_build(tmp_path, name, off, "off"))
        torch.manual_seed(0)
        b = PROBES[name](_build(tmp_path, name, on, "on"))
    assert a != b, f"{name}: {SWITCHES[name].paths} {off} -> {on} left {PROBES[name].__name__} at {a}"
