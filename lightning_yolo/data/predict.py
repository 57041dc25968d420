"""Images without labels for ``Trainer.predict``: an image file, a folder or a glob, letterboxed like validation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..ops.image import list_image_files
from .image_io import FILL_VALUE, load_resized, probe_image
from .sample import RawSample, Sample, raw_to_sample
from .transforms import Letterbox

__all__ = ["PredictImages"]


class PredictImages(Dataset):
    """Unlabelled images through the evaluation geometry: long side resized to ``img_size``, centred letterbox.

    Each target carries no boxes but everything needed to map detections back to the original image, plus the
    file: ``image_id`` (position in the sorted file list), ``orig_size``, ``ratio``, ``pad`` and ``path`` (str).
    A file that cannot be read gives a blank image whose target has ``skipped`` (the reason, naming the file): the
    module passes it on and :class:`~lightning_yolo.callbacks.PredictionWriter` reports it instead of predicting.

    Args:
        source: an image file, a folder (its image files, not recursive) or a glob pattern (``**`` recurses),
            as in :func:`lightning_yolo.ops.image.list_image_files`.
        img_size: network input side ``S`` (multiple of 32).

    Raises:
        FileNotFoundError: ``source`` matches no image file (the message names it).
    """

    def __init__(self, source: str | os.PathLike, img_size: int) -> None:
        self.files: list[Path] = list_image_files(source)
        self.img_size = int(img_size)
        self.letterbox = Letterbox(self.img_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        path = self.files[int(index)]
        empty = np.zeros((0, 4), np.float32)
        try:
            info = probe_image(path)  # ValueError naming the file for unreadable or truncated images
            image, ratio = load_resized(path, info, self.img_size)
            size, reason = (info.height, info.width), None
        except (ValueError, OSError) as err:
            # One bad file must not throw away every other prediction: a blank stand-in goes through the batch and
            # is reported (not predicted) by the writer; ``skipped`` says why.
            image = np.full((self.img_size, self.img_size, 3), FILL_VALUE, np.uint8)
            ratio, size, reason = 1.0, (self.img_size, self.img_size), str(err)
        raw = RawSample(image, empty, np.zeros(0, np.int64), None, int(index), size, ratio)
        image_t, target = raw_to_sample(self.letterbox(raw), sanitize=False)
        target["path"] = str(path)
        if reason is not None:
            target["skipped"] = reason
        return image_t, target
