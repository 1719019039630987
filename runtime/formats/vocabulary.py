"""`vocabulary.json`: the words of a bag-of-words text tower's input columns (spec:
docs/formats/checkpoint.md, "vocabulary.json"). Saved with BoW checkpoints and copied into their exports.

The one writer is `vocabulary_bytes` (the file's content; callers write it atomically), the one reader
`read_vocabulary`. The training side (`cmhash.zoo.data.BowVocabulary`) and the runtime
(`cmhash.runtime.bow.BowTextInput`) both go through them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from cmhash.errors import DataFormatError
from cmhash.runtime.io import read_json

FORMAT = "cmhash.bow_vocabulary"
VERSION = 1


def vocabulary_bytes(words: Iterable[str]) -> bytes:
    """The UTF-8 JSON content of a vocabulary file: `{"format", "version", "size", "words"}`."""
    words = list(words)
    data = {"format": FORMAT, "version": VERSION, "size": len(words), "words": words}
    return json.dumps(data, ensure_ascii=False, indent=0).encode("utf-8")


def read_vocabulary(path: str | os.PathLike, fix: str) -> tuple[str, ...]:
    """The words of a vocabulary file, checked: `size` distinct strings. Any problem (a missing or
    unreadable file included) is a DataFormatError naming the file and ending with `fix`."""
    path = Path(path)
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:  # read_json: bad UTF-8, bad JSON, nesting too deep
        raise DataFormatError(f"cannot read the vocabulary {path} ({exc}); {fix}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise DataFormatError(f'{path} is not a version-{VERSION} cmhash vocabulary ("format": "{FORMAT}"); {fix}')
    words = data.get("words")
    if (not isinstance(words, list) or not all(isinstance(w, str) for w in words)
            or len(words) != data.get("size") or len(set(words)) != len(words)):
        raise DataFormatError(f'{path}: "words" must be "size" distinct strings; {fix}')
    return tuple(words)
