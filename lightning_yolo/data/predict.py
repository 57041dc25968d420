"""Images without labels for ``Trainer.predict``: an image file, a folder or a glob, letterboxed like validation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .image_io import FILL_VALUE, list_image_files, load_letterboxed
from .sample import RawSample, Sample, raw_to_sample

__all__ = ["PredictImages"]


class PredictImages(Dataset):
    """Unlabelled images through :func:`~lightning_yolo.data.image_io.load_letterboxed`: long side resized to
    ``img_size``, centred on an ``img_size`` square (the validation geometry, and the default of
    :func:`lightning_yolo.inference.predict.predict`, so both give the same boxes for the same file).

    Each target carries no boxes but everything needed to map detections back to the original image, plus the
    file: ``image_id`` (position in the sorted file list), ``orig_size``, ``ratio``, ``pad`` and ``path`` (str).
    A file that cannot be read gives a blank image whose target has ``skipped`` (the reason, naming the file): the
    module passes it on and :class:`~lightning_yolo.callbacks.PredictionWriter` reports it instead of predicting.

    Args:
        source: an image file, a folder (its image files, not recursive) or a glob pattern (``**`` recurses),
            as in :func:`lightning_yolo.data.image_io.list_image_files`.
        img_size: network input side ``S`` (multiple of the model's largest stride).

    Raises:
        FileNotFoundError: ``source`` matches no image file (the message names it).
    """

    def __init__(self, source: str | os.PathLike, img_size: int) -> None:
        self.files: list[Path] = list_image_files(source)
        self.img_size = int(img_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[int(index)]
        try:
            # ValueError naming the file for unreadable or truncated images
            image, ratio, pad, size = load_letterboxed(path, self.img_size)
            reason = None
        except (ValueError, OSError) as err:
            # One bad file must not throw away every other prediction: a blank stand-in goes through the batch and
            # is reported (not predicted) by the writer; ``skipped`` says why.
            image = np.full((self.img_size, self.img_size, 3), FILL_VALUE, np.uint8)
            ratio, pad, size, reason = 1.0, (0, 0), (self.img_size, self.img_size), str(err)
        raw = RawSample(
            image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), None, int(index), size, ratio,
            (float(pad[0]), float(pad[1])),
        )  # fmt: skip
        image_t, target = raw_to_sample(raw, sanitize=False)
        target["path"] = str(path)
        if reason is not None:
            target["skipped"] = reason
        return image_t, target
