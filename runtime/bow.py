"""Bag-of-words text input for BoW towers (DCPH's text network), from an export's vocabulary.json.

The word rule lives here, in the torch-free runtime, and the vocabulary file in
runtime/formats/vocabulary.py; the training side (`cmhash.zoo.data.BowVocabulary`, zoo/data/vocab.py)
uses both, and tests/runtime/test_bow.py checks both sides give the same rows.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from cmhash.errors import InvalidInputError
from cmhash.runtime.formats.vocabulary import read_vocabulary
_WORD = re.compile(r"[a-z0-9]+")


def caption_words(text: str) -> list[str]:
    """Lowercase `[a-z0-9]+` words, the rule the BoW vocabularies were built with."""
    return _WORD.findall(text.lower())


class BowTextInput:
    """Texts -> float32 binary bag-of-words rows over a saved vocabulary (words outside it are ignored)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.words = read_vocabulary(path, "export the checkpoint again")
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n, V) float32 0/1, known (n,) bool: whether a text has any vocabulary word)."""
        if isinstance(texts, str):
            raise InvalidInputError("pass a list of texts, not a single string")
        rows = np.zeros((len(texts), len(self.words)), dtype=np.float32)
        for r, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"text {r} is a {type(text).__name__}, not a string")
            cols = [self.index[w] for w in caption_words(text) if w in self.index]
            rows[r, cols] = 1.0
        return rows, rows.any(axis=1)
