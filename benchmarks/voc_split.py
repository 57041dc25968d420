"""Lay out a folder of images + Pascal VOC xml files as a VOC dataset with a seeded train / val split.

Small public detection sets often come as ``images/`` + ``annotations/*.xml`` without ``ImageSets``. This links
them as ``JPEGImages/`` and ``Annotations/`` (symbolic links: nothing is copied) and writes
``ImageSets/Main/{train,val}.txt`` with a fixed random split, so every tool sees the same split::

    python benchmarks/voc_split.py /work/data/raccoon/images /work/data/raccoon/annotations /work/data/raccoon_voc
    # /work/data/raccoon_voc: 160 train, 40 val
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def make_voc_split(images: Path, annotations: Path, out: Path, val_fraction: float = 0.2, seed: int = 0) -> tuple[int, int]:
    """Create the layout; returns ``(num_train, num_val)``. Only xml files with an image of the same stem count."""
    out.mkdir(parents=True, exist_ok=True)
    for name, target in (("JPEGImages", images), ("Annotations", annotations)):
        link = out / name
        if link.is_symlink() or link.exists():
            if link.resolve() != target.resolve():
                raise FileExistsError(f"{link} exists and does not point to {target}")
        else:
            os.symlink(target.resolve(), link)
    image_stems = {p.stem for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    stems = sorted(p.stem for p in annotations.glob("*.xml") if p.stem in image_stems)
    if not stems:
        raise FileNotFoundError(f"{annotations}: no xml file with an image of the same name in {images}")
    random.Random(seed).shuffle(stems)
    num_val = round(len(stems) * val_fraction)
    main = out / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    (main / "val.txt").write_text("\n".join(sorted(stems[:num_val])) + "\n")
    (main / "train.txt").write_text("\n".join(sorted(stems[num_val:])) + "\n")
    return len(stems) - num_val, num_val


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", type=Path)
    p.add_argument("annotations", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    n_train, n_val = make_voc_split(a.images, a.annotations, a.out, a.val_fraction, a.seed)
    print(f"{a.out}: {n_train} train, {n_val} val")


if __name__ == "__main__":
    main()
