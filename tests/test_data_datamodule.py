"""YOLODataModule: class names at init, synthetic default, batch contract, samplers under DDP, close-mosaic in
persistent workers, random training shapes and the SAT hook on the device."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DistributedSampler

from lightning_yolo.data.config import AugmentCfg
from lightning_yolo.data.datamodule import YOLODataModule
from lightning_yolo.data.formats import write_data_yaml, write_yolo_labels
from lightning_yolo.data.samplers import EvalDistributedSampler, TrainSampler
from lightning_yolo.data.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.filterwarnings("ignore::lightning_yolo.data.formats.base.DatasetWarning")




@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, num_train=10, num_val=7, img_size=(96, 72), seed=1)
    return root


def fake_trainer(**kw) -> SimpleNamespace:
    base = dict(training=True, current_epoch=0, max_epochs=10, world_size=1, global_rank=0, lightning_module=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_class_names_at_init_without_a_scan(synth: Path, monkeypatch, tmp_path: Path) -> None:
    dm = YOLODataModule(str(synth / "data.yaml"), img_size=64)
    assert dm.class_names == ["circle", "square", "triangle", "cross"] and dm.num_classes == 4
    assert dm.sources == {} and dm.train_dataset is None  # nothing scanned yet
    assert YOLODataModule(str(synth), format="coco", img_size=64).class_names == dm.class_names
    monkeypatch.setenv("LIGHTNING_YOLO_CACHE", str(tmp_path / "cache"))
    dm0 = YOLODataModule(None)
    assert dm0.num_classes == 4 and not (tmp_path / "cache").exists()  # the synthetic set is made in prepare_data


def test_synthetic_default_is_generated_once(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTNING_YOLO_CACHE", str(tmp_path))
    kw = dict(img_size=64, batch_size=4, num_workers=0, synthetic_num_train=8, synthetic_num_val=4,
              synthetic_image_size=64)  # fmt: skip
    dm = YOLODataModule(None, **kw)
    dm.prepare_data()
    (root,) = list(tmp_path.glob("synthetic-*"))
    assert (root / ".complete").is_file() and (root / "data.yaml").is_file()
    assert (root / "annotations" / "instances_train.json").is_file()
    stamp = (root / ".complete").stat().st_mtime_ns
    dm2 = YOLODataModule(None, **kw)
    dm2.prepare_data()
    dm2.setup("fit")
    assert (root / ".complete").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert len(dm2.train_dataset) == 8 and len(dm2.val_dataset) == 4
    batch = next(iter(dm2.train_dataloader()))
    assert batch["images"].shape == (4, 3, 64, 64) and batch["images"].dtype == torch.uint8


def test_batches_follow_the_contract_and_are_normalised_on_device(synth: Path) -> None:
    dm = YOLODataModule(str(synth), format="coco", img_size=64, batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    images = batch["images"]
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    t = batch["targets"][0]
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64 and t["iscrowd"].dtype == torch.bool
    assert t["orig_size"].tolist() == [72, 96] and float(t["ratio"]) == pytest.approx(64 / 96)
    assert t["pad"].tolist() == [0.0, 8.0]
    dm.trainer = fake_trainer(training=False)
    out = dm.on_after_batch_transfer({"images": images.clone(), "targets": batch["targets"]}, 0)
    assert out["images"].dtype == torch.float32
    torch.testing.assert_close(out["images"], images.float() / 255)
    assert out["images"].is_contiguous(memory_format=torch.channels_last)
    dm.hparams.channels_last = False
    out = dm.on_after_batch_transfer({"images": images.clone(), "targets": batch["targets"]}, 0)
    assert out["images"].is_contiguous()


def test_eval_sampler_counts_every_image_once_under_ddp(synth: Path) -> None:
    dm = YOLODataModule(str(synth / "data.yaml"), img_size=64, batch_size=2, num_workers=0)
    dm.setup("validate")
    n = len(dm.val_dataset)
    assert n == 7
    seen = []
    for rank in range(3):
        dm.trainer = fake_trainer(world_size=3, global_rank=rank)
        loader = dm.val_dataloader()
        assert isinstance(loader.sampler, EvalDistributedSampler)
        seen += [int(t["image_id"]) for b in loader for t in b["targets"]]
    assert sorted(seen) == list(range(n))  # no image twice, none missing
    # what a padding DistributedSampler would have done: 9 draws for 7 images
    padded = [i for r in range(3) for i in DistributedSampler(range(n), num_replicas=3, rank=r, shuffle=False)]
    assert len(padded) == 9 and len(set(padded)) == 7


def test_train_sampler_partitions_shuffles_and_carries_the_switch() -> None:
    data = list(range(10))
    flags = {"on": True}
    parts = [TrainSampler(data, 2, r, seed=3, multi_image=lambda e: flags["on"] and e < 2) for r in range(2)]
    for s in parts:
        s.set_epoch(0)
    items = [list(s) for s in parts]
    assert all(len(i) == 5 for i in items)
    assert sorted(i for part in items for i, _, _ in part) == data
    assert all(flag is True for part in items for _, flag, _ in part)
    assert [i for i, _, _ in items[0]] != [0, 2, 4, 6, 8]  # shuffled (DistributedSampler would give this unshuffled)
    parts[0].set_epoch(2)
    later = list(parts[0])
    assert all(flag is False for _, flag, _ in later)
    assert [s for _, _, s in later] != [s for _, _, s in items[0]]  # fresh per-sample seeds every epoch
    assert list(parts[0]) == later  # deterministic


def _solid_colour_dataset(root: Path, n: int = 8) -> Path:
    for i in range(n):
        colour = ((37 * i) % 200 + 20, (91 * i) % 200 + 30, (53 * i) % 200 + 40)
        (root / "images" / "train").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / "train" / f"{i}.png"), np.full((48, 64, 3), colour[::-1], np.uint8))
        write_yolo_labels(root / "labels" / "train" / f"{i}.txt", np.array([[8, 8, 40, 40]]), np.array([0]), 64, 48)
    write_data_yaml(root / "data.yaml", ["thing"], "images/train", "images/train")
    return root / "data.yaml"


class _MosaicSpy(pl.LightningModule):
    """Records, per epoch, whether each training image shows one source image or several (Mosaic)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.mosaic_per_epoch: dict[int, list[bool]] = {}

    def training_step(self, batch, batch_idx):
        images = (batch["images"] * 255).round().to(torch.uint8)
        for img in images:
            colours = {tuple(c) for c in img.permute(1, 2, 0).reshape(-1, 3).tolist()} - {(114, 114, 114)}
            self.mosaic_per_epoch.setdefault(self.current_epoch, []).append(len(colours) > 1)
        return (self.w - 1).square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_close_mosaic_reaches_persistent_workers(tmp_path: Path) -> None:
    dm = YOLODataModule(
        str(_solid_colour_dataset(tmp_path)), img_size=64, batch_size=4, num_workers=2, persistent_workers=True,
        augment=AugmentCfg(translate=0.0, scale=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, flip_prob=0.0, mosaic_buffer=0,
                           close_mosaic_epochs=1),
    )  # fmt: skip
    spy = _MosaicSpy()
    trainer = pl.Trainer(
        max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(spy, datamodule=dm)
    loader = trainer.train_dataloader
    assert loader.persistent_workers and loader.num_workers == 2
    seen = spy.mosaic_per_epoch
    assert sorted(seen) == [0, 1, 2] and all(len(v) == 8 for v in seen.values())
    assert all(seen[0]) and all(seen[1])  # Mosaic: several source colours in every image
    assert not any(seen[2])  # closed in the last epoch, inside the same worker processes


def test_random_training_shapes_scale_images_and_boxes(synth: Path) -> None:
    shapes = AugmentCfg(multiscale=True, multiscale_range=(0.5, 1.5), multiscale_every=2)
    dm = YOLODataModule(str(synth / "data.yaml"), img_size=64, batch_size=4, num_workers=0, seed=5, augment=shapes)
    assert dm.multiscale_sizes() == [32, 64, 96]
    assert dm.multiscale_sizes(stride=16) == [32, 48, 64, 80, 96]
    dm.setup("fit")
    dm.trainer = fake_trainer()
    batch = next(iter(dm.train_dataloader()))
    sizes = []
    for _ in range(12):
        b = {
            "images": batch["images"].clone(),
            "targets": [{k: v.clone() for k, v in t.items()} for t in batch["targets"]],
        }
        out = dm.on_after_batch_transfer(b, 0)
        side = out["images"].shape[-1]
        assert out["images"].shape == (4, 3, side, side) and side % 32 == 0
        f = side / 64
        for t, t0 in zip(out["targets"], batch["targets"], strict=True):
            torch.testing.assert_close(t["boxes"], t0["boxes"] * f)
            torch.testing.assert_close(t["ratio"], t0["ratio"] * f)
        # the pixels moved with the boxes: resize the original the same way
        ref = torch.nn.functional.interpolate(batch["images"].float() / 255, size=(side, side), mode="bilinear")
        torch.testing.assert_close(out["images"], ref)
        sizes.append(side)
    assert sizes[0::2] == sizes[1::2]  # a new size every 2 batches
    assert len(set(sizes)) > 1
    # validation batches are never resized
    dm.trainer = fake_trainer(training=False)
    assert (
        dm.on_after_batch_transfer({"images": batch["images"].clone(), "targets": batch["targets"]}, 0)["images"].shape[
            -1
        ]
        == 64
    )


def test_sat_hook_alters_training_images_within_bound(synth: Path) -> None:
    pytest.importorskip("lightning_yolo.training.sat")
    from lightning_yolo.module import YOLOModule

    torch.manual_seed(0)
    module = YOLOModule("yolov4_pico", num_classes=4)
    model = module.model.train()
    sat = AugmentCfg(sat_prob=1.0, sat_max_delta=4 / 255, sat_step_size=4 / 255, sat_start_epoch=1)
    dm = YOLODataModule(str(synth / "data.yaml"), img_size=64, batch_size=2, num_workers=0, augment=sat)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def run(**kw):
        dm.trainer = fake_trainer(lightning_module=module, **kw)
        b = {"images": batch["images"].clone(), "targets": batch["targets"]}
        return dm.on_after_batch_transfer(b, 0)["images"]

    clean = batch["images"].float() / 255
    torch.testing.assert_close(run(current_epoch=0), clean)  # before sat_start_epoch
    torch.testing.assert_close(run(current_epoch=1, training=False), clean)  # not in validation
    adv = run(current_epoch=1)
    diff = (adv - clean).abs()
    assert diff.max() <= 4 / 255 + 1e-6 and diff.max() > 1 / 255  # moved, within the bound
    assert adv.min() >= 0 and adv.max() <= 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k  # weights and BN buffers untouched
    assert all(p.grad is None for p in model.parameters())
    # the seam is the module's public method, nothing else: a module without it is told so
    dm.trainer = fake_trainer(lightning_module=SimpleNamespace(model=model), current_epoch=1)
    with pytest.raises(TypeError, match="self_adversarial_images"):
        dm.on_after_batch_transfer({"images": batch["images"].clone(), "targets": batch["targets"]}, 0)


def test_test_split_falls_back_to_val(synth: Path) -> None:
    dm = YOLODataModule(str(synth / "data.yaml"), img_size=64, batch_size=4, num_workers=0)
    with pytest.warns(UserWarning, match="no test split; testing on the val split"):
        dm.setup("test")
    assert len(dm.test_dataset) == 7
    assert os.path.basename(str(dm.source("test").report.source)) == "data.yaml"
