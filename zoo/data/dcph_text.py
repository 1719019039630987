"""Reader of the DCPH text format: `images_name.txt`, `label_hot.txt`, `y_vector.txt` and index files.

The index files (`train_ind*.txt`, `database_ind*.txt`, `test_ind*.txt`) hold **1-based** row numbers,
as written by the authors' MATLAB preprocessing. Reading them as 0-based silently shifts every split
by one pair, so a 0 in a file meant to be 1-based is an error, never a guess.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cmhash.errors import DataFormatError, DataNotFoundError

from .dataset import PairedDataset, as_binary_matrix, check_image_files, read_lines, require_file
from .splits import Split

_PROVIDER = "the DCPH-format data release provides it"
_PARTS = {"query": "test_ind", "database": "database_ind", "train": "train_ind"}


def _load_matrix(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(
            f"{path}: {what} must be whitespace-separated numbers, one row per sample ({exc})."
        ) from exc
    return as_binary_matrix(arr, what, str(path))


def _index_files(root: Path, split_tag: str | None) -> dict[str, Path]:
    """Find `{part}_ind.txt` or `{part}_ind_{tag}.txt`; the tag must be given when several sets exist."""
    if split_tag is not None:
        suffix = f"_{split_tag}" if split_tag else ""
    else:
        suffixes = sorted(p.name[len("test_ind") : -len(".txt")] for p in root.glob("test_ind*.txt"))
        if not suffixes:
            raise DataNotFoundError(f"missing {root / 'test_ind.txt'} (or test_ind_<tag>.txt): {_PROVIDER}")
        if len(suffixes) > 1:
            raise DataFormatError(
                f"{root} holds several index file sets ({['test_ind' + s + '.txt' for s in suffixes]}). "
                "Fix: pass split_tag= to pick one ('' for test_ind.txt, 'ph' for test_ind_ph.txt)."
            )
        suffix = suffixes[0]
    return {k: require_file(root / f"{stem}{suffix}.txt", _PROVIDER) for k, stem in _PARTS.items()}


def _load_indices(path: Path, n: int, one_based: bool) -> np.ndarray:
    try:
        raw = np.loadtxt(path, dtype=np.float64, ndmin=1).ravel()
    except ValueError as exc:
        raise DataFormatError(f"{path}: expected one integer row index per line ({exc}).") from exc
    if raw.size and (not np.isfinite(raw).all() or (raw != np.round(raw)).any()):
        raise DataFormatError(f"{path}: row indices must be integers.")
    idx = raw.astype(np.int64)
    low = 1 if one_based else 0
    if idx.size and idx.min() < low:
        if one_based and idx.min() == 0:
            raise DataFormatError(
                f"{path} contains index 0, so it looks 0-based, but DCPH index files are 1-based. Fix: add 1 "
                "to every index in the file, or pass one_based=False if the whole set is 0-based."
            )
        raise DataFormatError(f"{path} contains the negative index {int(idx.min())}.")
    if idx.size and idx.max() > n - 1 + low:
        raise DataFormatError(
            f"{path} contains index {int(idx.max())}, but there are only {n} pairs "
            f"({'1-based' if one_based else '0-based'}: the largest valid index is {n - 1 + low}). "
            "Fix: use the index files of the same release."
        )
    if np.unique(idx).size != idx.size:
        raise DataFormatError(f"{path} lists some rows more than once.")
    return idx - low


def read_dcph_text(
    root: str | os.PathLike,
    *,
    split_tag: str | None = None,
    one_based: bool = True,
    image_root: str | os.PathLike | None = None,
    name: str | None = None,
    class_names: list[str] | None = None,
    check_images: bool = True,
) -> tuple[PairedDataset, Split]:
    """Read a DCPH-format folder and the split its index files define.

    Args:
        root: Folder with the text files.
        split_tag: Picks `{part}_ind_{split_tag}.txt`; `''` picks `{part}_ind.txt`; None finds the
            single set present.
        one_based: The index files are 1-based (the DCPH convention).
        image_root: Folder `images_name.txt` entries are relative to (default `root`).
        name: Dataset name (default: the folder name).
        class_names: Label names (default `class_0`, ...; the format stores none).
        check_images: Raise if an image file is missing.

    Returns:
        The dataset (texts are not stored in this format: `bow` holds the text side) and a `Split`
        whose query part is `test_ind`, with an empty validation slice (also in `dataset.split`).

    Raises:
        DataNotFoundError: a file or an image is missing.
        DataFormatError: bad numbers, count mismatches, or indices that are 0-based or out of range.
    """
    root = Path(root)
    names_file = require_file(root / "images_name.txt", _PROVIDER)
    label_file = require_file(root / "label_hot.txt", _PROVIDER)
    bow_file = require_file(root / "y_vector.txt", _PROVIDER)
    image_names = [
        line.strip() for line in read_lines(names_file) if line.strip()
    ]
    labels = _load_matrix(label_file, "label_hot")
    bow = _load_matrix(bow_file, "y_vector")
    n = len(image_names)
    for source, rows in ((label_file, labels.shape[0]), (bow_file, bow.shape[0])):
        if rows != n:
            raise DataFormatError(
                f"{source} has {rows} rows but {names_file} lists {n} images: the files must describe the "
                "same pairs in the same order. Fix: regenerate them together."
            )
    files = _index_files(root, split_tag)
    parts = {part: _load_indices(path, n, one_based) for part, path in files.items()}
    base = Path(image_root) if image_root is not None else root
    images = [base / p for p in image_names]
    if check_images:
        check_image_files(images, str(names_file))
    names = class_names or [f"class_{j}" for j in range(labels.shape[1])]
    split = Split(query=parts["query"], database=parts["database"], train=parts["train"])
    return PairedDataset(name or root.name, labels, list(names), images, None, bow, split=split), split
