"""The one paired-dataset type that every reader returns.

Readers differ in what they can supply (image files or features, captions or tags, a bag-of-words),
so every modality field is optional; what is present is checked once here, so training and evaluation
code can trust that row i of every field describes the same pair.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmhash.errors import DataFormatError, InvalidInputError

from .splits import Split, proportional_split


def as_binary_matrix(values: Any, what: str, source: str) -> np.ndarray:
    """Return `values` as a 2-D uint8 0/1 matrix, or raise DataFormatError naming `source`.

    Why: .mat and text files store multi-hot rows as float64, int or bool; comparing and hashing
    them is only safe once they share one dtype and hold nothing but 0 and 1.
    """
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise DataFormatError(
            f"{source}: {what} must be a 2-D matrix (one row per sample), got shape {arr.shape}. "
            "Fix: save it as an N x C matrix."
        )
    if arr.dtype.kind not in "biuf":
        raise DataFormatError(f"{source}: {what} must be numeric 0/1, got dtype {arr.dtype}.")
    if arr.dtype.kind in "iu":
        ok = arr.size == 0 or (arr.min() >= 0 and arr.max() <= 1)
    else:
        ok = arr.dtype.kind == "b" or bool(((arr == 0) | (arr == 1)).all())
    if not ok:
        flat = arr.ravel()
        bad = np.unique(flat[(flat != 0) & (flat != 1)])[:5]
        raise DataFormatError(
            f"{source}: {what} must hold only 0 and 1, found {bad.tolist()}. "
            "Fix: binarize it (x > 0) before saving."
        )
    return arr.astype(np.uint8, copy=False)


@dataclass(frozen=True)
class PairedDataset:
    """N image-text pairs with multi-hot labels; row i of every present field is pair i.

    Attributes:
        name: Short dataset name (used in logs and model cards).
        labels: N x C uint8 multi-hot labels.
        class_names: C label names, in column order.
        images: N image paths, or an N x ... array of precomputed image features, or None.
        texts: Per sample, its captions or its tag words, or None.
        bow: N x V uint8 binary bag-of-words, or None.
        vocabulary: V words naming the bow columns, or None when unknown.
        meta: Per sample, a dict of provenance (image ids, licence and attribution), or None.
        split: The split the data files themselves define (DCPH index files), or None when the
            protocol generates one (see `splits`). `subset` drops it: its indices no longer apply.
    """

    name: str
    labels: np.ndarray
    class_names: list[str]
    images: list[Path] | np.ndarray | None = None
    texts: list[list[str]] | None = None
    bow: np.ndarray | None = None
    vocabulary: list[str] | None = None
    meta: list[dict[str, Any]] | None = None
    split: Split | None = None

    def __post_init__(self) -> None:
        source = f"dataset {self.name!r}"
        labels = as_binary_matrix(self.labels, "labels", source)
        object.__setattr__(self, "labels", labels)
        n, c = labels.shape
        if len(self.class_names) != c:
            raise DataFormatError(
                f"{source}: labels have {c} columns but {len(self.class_names)} class names were given."
            )
        for field, rows in (("images", self.images), ("texts", self.texts), ("meta", self.meta)):
            if rows is not None and len(rows) != n:
                raise DataFormatError(f"{source}: {field} has {len(rows)} rows but labels have {n}.")
        if self.texts is not None and any(isinstance(t, str) for t in self.texts):
            raise DataFormatError(f"{source}: texts must be a list of string lists (one list per sample).")
        if self.bow is not None:
            bow = as_binary_matrix(self.bow, "bow", source)
            object.__setattr__(self, "bow", bow)
            if bow.shape[0] != n:
                raise DataFormatError(f"{source}: bow has {bow.shape[0]} rows but labels have {n}.")
            if self.vocabulary is not None and len(self.vocabulary) != bow.shape[1]:
                raise DataFormatError(
                    f"{source}: bow has {bow.shape[1]} columns but the vocabulary has "
                    f"{len(self.vocabulary)} words."
                )
        elif self.vocabulary is not None:
            raise DataFormatError(f"{source}: a vocabulary was given without a bow matrix.")
        if self.split is not None:
            try:
                self.split.check(n, train_in_database=False, disjoint_query=False)
            except InvalidInputError as exc:
                raise DataFormatError(f"{source}: its split does not fit its {n} pairs: {exc}") from exc

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of label columns."""
        return int(self.labels.shape[1])

    def subset(self, indices: Sequence[int] | np.ndarray) -> PairedDataset:
        """Return the pairs at `indices` (in that order), keeping every field aligned.

        Raises:
            InvalidInputError: if an index is not an integer in [0, N).
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise InvalidInputError(
                f"subset indices must be a 1-D integer array, got dtype {idx.dtype} and shape {idx.shape}"
            )
        n = len(self)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise InvalidInputError(
                f"subset indices must lie in [0, {n}) for dataset {self.name!r}; "
                f"got min {int(idx.min())}, max {int(idx.max())}"
            )

        def pick(rows: Any) -> Any:
            if rows is None:
                return None
            if isinstance(rows, np.ndarray):
                return rows[idx]
            return [rows[i] for i in idx.tolist()]

        return dataclasses.replace(
            self,
            labels=self.labels[idx],
            images=pick(self.images),
            texts=pick(self.texts),
            bow=pick(self.bow),
            meta=pick(self.meta),
            split=None,
        )


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; bytes that are not UTF-8 raise DataFormatError naming the file."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path} is not UTF-8 text ({exc}). Fix: re-save it as UTF-8, "
                              "or download it again.") from exc


def require_file(path: Path, provider: str) -> Path:
    """Return `path` if it is a file, else raise DataNotFoundError saying what provides it."""
    from cmhash.errors import DataNotFoundError

    if not path.is_file():
        raise DataNotFoundError(f"missing {path}: {provider}")
    return path


def default_split(dataset: PairedDataset, seed: int = 0) -> Split:
    """The dataset's own split (DCPH index files) if it has one, else the proportional split: the one
    rule training, scoring and export agree on, so `cmhash eval` scores the training run's test set."""
    return dataset.split if dataset.split is not None else proportional_split(len(dataset), seed)


def _is_file(path: Path) -> bool:
    """`path.is_file()`, False also for paths the OS cannot even look up (a name over 255 bytes)."""
    try:
        return path.is_file()
    except OSError:
        return False


def check_image_files(paths: Sequence[Path], source: str) -> None:
    """Raise DataNotFoundError naming the first missing image files (at most 3 shown)."""
    from cmhash.errors import DataNotFoundError

    missing = [p for p in paths if not _is_file(p)]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise DataNotFoundError(
            f"{len(missing)} of {len(paths)} image files listed in {source} are missing (first: {shown}). "
            "Fix: pass image_root= pointing at the image folder, or check_images=False for text-only use."
        )
