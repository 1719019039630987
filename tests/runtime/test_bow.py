"""runtime.bow: the BoW rows a deployed BoW text tower gets are the rows it was trained on.

The training side (`cmhash.zoo.data.BowVocabulary`, `caption_words`) is imported only where torch and
the zoo are installed; the file-format checks run everywhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cmhash.errors import DataFormatError, InvalidInputError
from cmhash.runtime.bow import BowTextInput, caption_words


def test_same_rows_as_the_training_vocabulary_on_coco_captions(coco_mini_root, tmp_path):
    pytest.importorskip("torch")
    from cmhash.zoo.data import BowVocabulary, caption_docs, caption_words as zoo_words, load_dataset

    captions = [c for sample in load_dataset(coco_mini_root).texts for c in sample]
    vocab = BowVocabulary.build([zoo_words(c) for c in captions[::2]], max_size=500)  # unseen words in the rest
    vocab.save(tmp_path / "vocabulary.json")
    rows, known = BowTextInput(tmp_path / "vocabulary.json")(captions)
    want = vocab.transform(caption_docs([[c] for c in captions]))
    np.testing.assert_array_equal(rows, want.astype(np.float32))
    np.testing.assert_array_equal(known, want.any(axis=1))
    assert all(caption_words(c) == zoo_words(c) for c in captions + ["Ünïcode & CAPS, 3-4 words!"])


def test_words_rule():
    assert caption_words("A Dog's 2 toys; red-ish.") == ["a", "dog", "s", "2", "toys", "red", "ish"]


def test_bad_vocabulary_files(tmp_path):
    path = tmp_path / "v.json"
    for content, match in [("{", "cannot read"), (json.dumps([1, 2]), "version-1"),
                           (json.dumps({"format": "cmhash.bow_vocabulary", "version": 2, "size": 1, "words": ["a"]}),
                            "version-1"),
                           (json.dumps({"format": "cmhash.bow_vocabulary", "version": 1, "size": 2, "words": ["a", "a"]}),
                            "distinct")]:
        path.write_text(content)
        with pytest.raises(DataFormatError, match=match):
            BowTextInput(path)
    with pytest.raises(DataFormatError, match="cannot read"):
        BowTextInput(tmp_path / "missing.json")


def test_bad_texts(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"format": "cmhash.bow_vocabulary", "version": 1, "size": 2, "words": ["a", "b"]}))
    bow = BowTextInput(path)
    with pytest.raises(InvalidInputError, match="list of texts"):
        bow("a b")
    with pytest.raises(InvalidInputError, match="not a string"):
        bow(["a", None])
