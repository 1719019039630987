"""Unlabelled image + caption pairs from a folder of photos and a text file, for checks that need
real inputs but no labels: validating an export on your own data, and `cmhash demo --images/--texts`.

What counts as a photo of the folder, and how the text file is read, is the runtime's one rule
(`cmhash.runtime.input_files`), so these checks see the inputs `cmhash encode` would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cmhash.runtime.input_files import image_folder, read_texts

from .dataset import PairedDataset


def loose_pairs(images: Sequence[Path], texts: Sequence[str], name: str = "loose") -> PairedDataset:
    """Every image and every text, with one dummy label: enough for checks that compare encoders on
    real inputs, not for training or mAP.

    One row per image; the texts are dealt over the rows (row i holds texts i, i + n, ...), so none is
    left out whichever list is longer (before, only min(images, texts) of each were checked)."""
    n = len(images) or len(texts)
    return PairedDataset(name=name, labels=np.zeros((n, 1), np.uint8), class_names=["none"],
                         images=list(images) if images else None, texts=[list(texts[i::n]) for i in range(n)])


def folder_pairs(images: str | os.PathLike, texts: str | os.PathLike, name: str = "loose") -> PairedDataset:
    """`loose_pairs` of the photos of a folder and the texts of a file (`--images DIR --texts FILE`)."""
    return loose_pairs(image_folder(images), read_texts(texts)[0], name)
