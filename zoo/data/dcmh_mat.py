"""Reader of the DCMH/UCCH .mat format (`*-lall.mat`, `*-yall.mat`, optional `*-iall.mat`).

This is the format of the standard cleaned MIRFlickr-25K benchmark (20,015 pairs), used by DCPH-style
bag-of-words text networks and most baselines. It also hosts the .mat helpers the CLIP-pipeline
reader shares, because both read MATLAB files the same way.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cmhash.errors import DataFormatError, DataNotFoundError, require

from .dataset import PairedDataset, as_binary_matrix, read_lines, require_file
from .mat_check import check_mat_v5
from .vocab import BowVocabulary

MIRFLICKR_CLASSES = [
    "animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
    "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset",
    "transport", "tree", "water",
]  # fmt: skip
"""The 24 MIRFlickr-25K label names, in the (alphabetical) column order of `LAll`."""

KNOWN_CLASS_NAMES = {"mirflickr25k": MIRFLICKR_CLASSES}
"""Default class names by file prefix; other datasets get `class_0`, `class_1`, ..."""

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    """MATLAB v7.3 files are HDF5, with the signature at offset 0 or 512 (after the MAT header)."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    return (
        head[:8] == _HDF5_MAGIC
        or head[512:520] == _HDF5_MAGIC
        or head[124:128] in (b"\x00\x02IM", b"\x02\x00MI")
    )


def _load_hdf5(path: Path, key: str) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise DataFormatError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read. Fix: pip install h5py, or "
            f"re-save it in MATLAB with save('{path.name}', '{key}', '-v7')."
        ) from None
    try:
        with h5py.File(path, "r") as fh:
            keys = [k for k in fh.keys() if not k.startswith("#")]
            if key not in fh:
                raise DataFormatError(f"{path} has no key {key!r}; the keys it holds are {keys}.")
            data = fh[key]
            if data.dtype.kind not in "biuf":
                raise DataFormatError(
                    f"{path}: key {key!r} is a v7.3 cell or char array; cmhash reads those only from "
                    f"v7 files. Fix: re-save it in MATLAB with save('{path.name}', '{key}', '-v7')."
                )
            # MATLAB stores column-major: h5py sees the transpose.
            return np.asarray(data).T
    except OSError as exc:
        raise DataFormatError(f"{path} looks like a MATLAB v7.3 file but cannot be read: {exc}.") from exc


def load_mat_key(path: Path, key: str) -> Any:
    """Return variable `key` of a .mat file, with typed errors that name the file and the fix.

    Raises:
        DataFormatError: unreadable file, or no such key (the message lists the keys present).
    """
    if _is_hdf5(path):
        return _load_hdf5(path, key)
    sio = require("scipy.io", "train", "reading .mat files")
    check_mat_v5(path)  # scipy can crash the process on a damaged file: refuse those first
    try:
        contents = sio.loadmat(str(path))
    except NotImplementedError as exc:  # scipy's answer to v7.3 files it did not recognize above
        raise DataFormatError(
            f"{path} is a MATLAB v7.3 (HDF5) file ({exc}). Fix: pip install h5py, or re-save it with '-v7'."
        ) from exc
    except Exception as exc:  # scipy raises ValueError, TypeError or MatReadError on damaged files
        raise DataFormatError(f"{path} is not a readable .mat file ({type(exc).__name__}: {exc}).") from exc
    if key not in contents:
        keys = sorted(k for k in contents if not k.startswith("__"))
        raise DataFormatError(
            f"{path} has no key {key!r}; the keys it holds are {keys}. Fix: re-save the variable under "
            f"the name {key!r}, or point the reader at the right file."
        )
    return contents[key]


def read_dcmh_mat(
    root: str | os.PathLike,
    prefix: str | None = None,
    *,
    class_names: list[str] | None = None,
    drop_unlabeled: bool = False,
    tags_file: str = "all_tags.txt",
    images_file: str = "all_imgs.txt",
    image_root: str | os.PathLike | None = None,
) -> PairedDataset:
    """Read `{prefix}-lall.mat` (LAll), `{prefix}-yall.mat` (YAll) and optional `{prefix}-iall.mat`.

    Args:
        root: Folder holding the files.
        prefix: File prefix; defaults to the single `*-lall.mat` found in `root`.
        class_names: Label names; defaults to `KNOWN_CLASS_NAMES[prefix]` or generic names.
        drop_unlabeled: Drop rows without any label instead of raising.
        tags_file: Optional comma-separated tags per row (MIRFlickr's `all_tags.txt`): becomes `texts`,
            and names the YAll columns (`vocabulary`) when it explains them.
        images_file: Optional image id per row (`all_imgs.txt`): kept in `meta`.
        image_root: If given, `images` are `image_root / id` for the ids in `images_file`.

    Raises:
        DataNotFoundError: a required file is missing.
        DataFormatError: wrong keys, count mismatches, or rows without labels.
    """
    root = Path(root)
    if prefix is None:
        found = sorted(p.name[: -len("-lall.mat")] for p in root.glob("*-lall.mat"))
        if len(found) != 1:
            raise DataNotFoundError(
                f"{root} must hold exactly one {{prefix}}-lall.mat file for the DCMH/UCCH format; found "
                f"{[f + '-lall.mat' for f in found] or 'none'}. Fix: pass prefix= to choose, or point at the "
                "right folder."
            )
        prefix = found[0]
    provider = "part of the DCMH/UCCH .mat release of this dataset (e.g. from the UCCH or NRCH repositories)"
    lall = require_file(root / f"{prefix}-lall.mat", provider)
    yall = require_file(root / f"{prefix}-yall.mat", provider)
    labels = as_binary_matrix(load_mat_key(lall, "LAll"), "LAll", str(lall))
    bow = as_binary_matrix(load_mat_key(yall, "YAll"), "YAll", str(yall))
    n = labels.shape[0]
    if bow.shape[0] != n:
        raise DataFormatError(
            f"{yall} has {bow.shape[0]} rows but {lall} has {n}: labels and texts must describe the same "
            "pairs. Fix: use the -lall/-yall files of one release."
        )
    images: Any = None
    iall = root / f"{prefix}-iall.mat"
    if iall.is_file():
        images = np.asarray(load_mat_key(iall, "IAll"))
        if images.shape[0] != n:
            raise DataFormatError(f"{iall} has {images.shape[0]} rows but {lall} has {n}.")
    texts = _tag_texts(root / tags_file, n, lall)
    meta = None
    if (root / images_file).is_file():
        ids = read_lines(root / images_file)
        if len(ids) != n:
            raise DataFormatError(f"{root / images_file} has {len(ids)} lines but {lall} has {n} rows.")
        meta = [{"image_id": i} for i in ids]
        if image_root is not None and images is None:
            images = [Path(image_root) / i for i in ids]
    names = class_names or KNOWN_CLASS_NAMES.get(prefix) or [f"class_{j}" for j in range(labels.shape[1])]
    if len(names) != labels.shape[1]:
        raise DataFormatError(
            f"{lall} has {labels.shape[1]} label columns but {len(names)} class names were given."
        )
    vocabulary = None
    # A column no row uses (a subset of a larger release) cannot be named from these texts.
    if texts is not None and bow.any(axis=0).all():
        try:
            vocabulary = list(BowVocabulary.from_bow(texts, bow).words)
        except DataFormatError as exc:
            warnings.warn(f"{root / tags_file} does not name the columns of {yall}: {exc}", stacklevel=2)
    data = PairedDataset(prefix, labels, list(names), images, texts, bow, vocabulary, meta)
    unlabeled = np.flatnonzero(labels.sum(axis=1) == 0)
    if unlabeled.size:
        if not drop_unlabeled:
            raise DataFormatError(
                f"{lall}: {unlabeled.size} of {n} rows have no label (first rows: {unlabeled[:5].tolist()}). "
                "Label-based retrieval cannot score them. Fix: use the cleaned release (for MIRFlickr-25K, "
                "the 20,015-pair version), or pass drop_unlabeled=True."
            )
        data = data.subset(np.flatnonzero(labels.sum(axis=1) > 0))
    return data


def _tag_texts(path: Path, n: int, lall: Path) -> list[list[str]] | None:
    """Comma-separated tag words per row, or None when the optional file is absent."""
    if not path.is_file():
        return None
    lines = read_lines(path)
    if len(lines) != n:
        raise DataFormatError(
            f"{path} has {len(lines)} lines but {lall} has {n} rows: the tags must list the same pairs in "
            "the same order. Fix: use the tag file of the same release, or remove it."
        )
    return [[t.strip() for t in line.split(",") if t.strip()] for line in lines]
