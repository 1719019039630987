"""Tokenization with the `tokenizers` library from a `tokenizer.json`, without transformers or torch.

Sequences longer than `max_length` are truncated exactly as the tokenizer's own truncation does, and
the result reports which texts were cut, so callers can say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cmhash.errors import DataFormatError, InvalidInputError


@dataclass(frozen=True)
class TokenBatch:
    """Padded token ids and attention mask (int64, shape (n, length)); `truncated[i]` if text i was cut."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    truncated: np.ndarray


class TextTokenizer:
    """A `tokenizer.json` with a fixed maximum length and right padding."""

    def __init__(self, tokenizer_file: str | os.PathLike, max_length: int) -> None:
        from tokenizers import Tokenizer

        if max_length < 2:
            raise InvalidInputError(f"max_length must be at least 2 (room for special tokens), got {max_length}")
        try:
            self._tok = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise DataFormatError(f"cannot load tokenizer file {tokenizer_file}: {exc}") from exc
        self.max_length = max_length
        self.pad_id = self._find_pad_id()
        self._tok.no_padding()
        # Truncation is set once and never toggled, so one TextTokenizer can serve many threads; a text
        # was cut exactly when its encoding has overflowing pieces.
        self._tok.enable_truncation(max_length)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def _find_pad_id(self) -> int:
        padding = self._tok.padding
        if padding and "pad_id" in padding:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>", "<|endoftext|>"):
            token_id = self._tok.token_to_id(token)
            if token_id is not None:
                return token_id
        return 0

    def __call__(self, texts: Sequence[str]) -> TokenBatch:
        if isinstance(texts, str):
            raise InvalidInputError("pass a list of texts, not a single string")
        if len(texts) == 0:
            raise InvalidInputError("no texts to tokenize")
        encodings = self._tok.encode_batch(list(texts))
        truncated = np.array([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for i, enc in enumerate(encodings):
            ids[i, : len(enc.ids)] = enc.ids
            mask[i, : len(enc.ids)] = 1
        return TokenBatch(input_ids=ids, attention_mask=mask, truncated=truncated)
