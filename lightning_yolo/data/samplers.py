"""Samplers: a training sampler that carries the close-mosaic switch and per-sample seeds to the workers, and an
evaluation sampler that never repeats an image under DDP.

Both subclass ``DistributedSampler``, so Lightning keeps them as they are (it only injects its own sampler when
the loader's sampler is not a ``DistributedSampler``); ``num_replicas`` / ``rank`` come from the DataModule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["TrainSampler", "EvalDistributedSampler"]


class TrainSampler(DistributedSampler):
    """Shuffling (distributed) sampler yielding ``(index, multi_image, seed)``.

    The switch travels with every index (YOLOX passes its Mosaic flag through the batch sampler the same way),
    so it reaches persistent DataLoader workers; it is evaluated when iteration starts, i.e. once per epoch.
    The seed makes each sample's augmentation a function of (``seed``, epoch, rank, position), the same for any
    number of workers.

    Args:
        dataset: the training dataset (only its length is used).
        num_replicas: number of processes.
        rank: this process.
        shuffle: shuffle every epoch (seeded by ``seed + epoch``, identical on all ranks).
        seed: base seed.
        drop_last: drop the tail instead of padding it to a multiple of ``num_replicas``.
        multi_image: a bool, or ``f(epoch) -> bool``: Mosaic / MixUp / CutMix allowed in that epoch.
        epoch_fn: returns the current epoch (e.g. the trainer's), overriding ``set_epoch`` when not ``None``.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        multi_image: bool | Callable[[int], bool] = True,
        epoch_fn: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.multi_image = multi_image
        self.epoch_fn = epoch_fn

    def current_epoch(self) -> int:
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        return self.epoch if epoch is None else int(epoch)

    def multi_image_enabled(self, epoch: int | None = None) -> bool:
        epoch = self.current_epoch() if epoch is None else epoch
        return bool(self.multi_image(epoch)) if callable(self.multi_image) else bool(self.multi_image)

    def __iter__(self) -> Iterator[tuple[int, bool, int]]:
        self.epoch = self.current_epoch()
        indices = list(super().__iter__())
        multi = self.multi_image_enabled(self.epoch)
        seeds = np.random.default_rng([self.seed, self.epoch, self.rank]).integers(0, 2**62, len(indices))
        return iter([(int(i), multi, int(s)) for i, s in zip(indices, seeds, strict=True)])


class EvalDistributedSampler(DistributedSampler):
    """In-order sampler giving rank ``r`` the images ``r, r + R, r + 2R, ...``: no padding, so every image is
    evaluated exactly once over all ranks (ranks may differ by one batch in length).

    Args:
        dataset: the evaluation dataset.
        num_replicas: number of processes.
        rank: this process.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
