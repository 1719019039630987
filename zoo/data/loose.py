"""Unlabelled image + caption pairs from a plain folder of photos and a text file, for checks that need
real inputs but no labels: validating an export on your own data, and `cmhash demo --images/--texts`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cmhash.errors import DataFormatError

from .dataset import PairedDataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def folder_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"--images {folder}: not a folder. Pass a folder of .jpg/.png files")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataFormatError(f"--images {folder}: no .jpg/.jpeg/.png/.webp/.bmp files in it")
    return paths


def read_texts(path: str | os.PathLike) -> list[str]:
    """One caption per non-empty line of a UTF-8 file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"--texts {path}: cannot read it as UTF-8 text ({exc})") from exc
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise DataFormatError(f"--texts {path}: no non-empty lines; write one caption per line")
    return texts


def loose_pairs(images: Sequence[Path], texts: Sequence[str], name: str = "loose") -> PairedDataset:
    """Pairs (image i, text i) for as many as both lists allow, with one dummy label: enough for checks
    that compare encoders on real inputs, not for training or mAP."""
    n = min(len(images), len(texts))
    return PairedDataset(name=name, labels=np.zeros((n, 1), np.uint8), class_names=["none"],
                         images=list(images[:n]), texts=[[t] for t in texts[:n]])
