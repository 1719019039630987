"""Bag-of-words vocabularies (incl. MIRFlickr's YAll), caption words, token ids, JSON round trip."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from cmhash.errors import DataFormatError, DataNotFoundError, InvalidInputError
from cmhash.zoo.data import read_coco
from cmhash.zoo.data.dcmh_mat import load_mat_key
from cmhash.zoo.data.vocab import (
    BowVocabulary,
    caption_docs,
    caption_token_ids,
    caption_words,
    default_tokenizer_file,
)


@pytest.fixture(scope="module")
def mirflickr_tags(mirflickr_root):
    """Tags of every pair, read straight from the text file (not through the reader)."""
    lines = (mirflickr_root / "all_tags.txt").read_text(encoding="utf-8").splitlines()
    return [[t for t in line.split(",") if t] for line in lines]


@pytest.fixture(scope="module")
def yall(mirflickr_root):
    return load_mat_key(mirflickr_root / "mirflickr25k-yall.mat", "YAll")


def test_build_orders_by_document_frequency_then_first_occurrence():
    docs = [["b", "a", "a"], ["c", "a"], ["c", "d"], ["e"]]
    # a: 2 docs (counted once per doc), c: 2 docs, b/d/e: 1; a's first occurrence precedes c's.
    assert BowVocabulary.build(docs).words == ("a", "c", "b", "d", "e")
    assert BowVocabulary.build(docs, min_count=2).words == ("a", "c")
    assert BowVocabulary.build(docs, max_size=3).words == ("a", "c", "b")


def test_transform_is_binary_and_ignores_unknown_words():
    vocab = BowVocabulary(["x", "y", "z"])
    bow = vocab.transform([["y", "y", "q"], [], ["z", "x"]])
    assert bow.dtype == np.uint8
    np.testing.assert_array_equal(bow, [[0, 1, 0], [0, 0, 0], [1, 0, 1]])


def test_bad_vocabularies_are_typed_errors():
    with pytest.raises(InvalidInputError, match="unique"):
        BowVocabulary(["a", "a"])
    with pytest.raises(InvalidInputError, match="word lists"):
        BowVocabulary.build(["not", "lists"])


def test_caption_words():
    assert caption_words("A man's bike, 2 wheels!  Café") == ["a", "man", "s", "bike", "2", "wheels", "caf"]
    assert caption_docs([["A dog.", "Dog runs"]]) == [["a", "dog", "dog", "runs"]]


def test_rebuilt_vocabulary_reproduces_yall_exactly(mirflickr_tags, yall):
    vocab = BowVocabulary.from_bow(mirflickr_tags, yall)
    assert len(vocab) == 1386
    assert np.array_equal(vocab.transform(mirflickr_tags), yall)


def test_frequency_vocabulary_has_exactly_the_yall_columns(mirflickr_tags, yall):
    """The 1,386 distinct tags are YAll's columns; only their order needs the 25k-image counts."""
    bow = BowVocabulary.build(mirflickr_tags).transform(mirflickr_tags)
    assert bow.shape == yall.shape
    ours = sorted(col.tobytes() for col in np.packbits(bow, axis=0).T)
    theirs = sorted(col.tobytes() for col in np.packbits(yall, axis=0).T)
    assert ours == theirs


def test_yall_order_is_not_the_frequency_order_of_the_20015_pairs(mirflickr_tags, yall):
    """Documents the finding in vocab.py: YAll's order comes from counts over all 25,000 images."""
    vocab = BowVocabulary.from_bow(mirflickr_tags, yall)
    df = Counter(t for doc in mirflickr_tags for t in set(doc))
    counts = np.array([df[w] for w in vocab.words])
    assert (counts[:-1] < counts[1:]).any()  # some later column is more frequent here
    assert counts[0] == counts.max() and vocab.words[0] == "explore"


def test_from_bow_rejects_texts_of_other_pairs(mirflickr_tags, yall):
    with pytest.raises(DataFormatError, match="matches no word"):
        BowVocabulary.from_bow(mirflickr_tags[1:] + mirflickr_tags[:1], yall)


def test_json_round_trip(tmp_path, mirflickr_tags):
    vocab = BowVocabulary.build(mirflickr_tags[:500])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = BowVocabulary.load(path)
    assert loaded == vocab
    np.testing.assert_array_equal(loaded.transform(mirflickr_tags[:50]), vocab.transform(mirflickr_tags[:50]))
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("content", "error", "fragment"),
    [
        ('{"format": "cmhash.bow_vocabulary", "words": [', DataFormatError, "cannot read the vocabulary"),
        ('["a", "b"]', DataFormatError, "is not a version-1 cmhash vocabulary"),
        (
            '{"format": "cmhash.bow_vocabulary", "version": 1, "size": 3, "words": ["a", "b"]}',
            DataFormatError,
            "size",
        ),
        (
            '{"format": "cmhash.bow_vocabulary", "version": 1, "size": 2, "words": ["a", "a"]}',
            DataFormatError,
            "distinct",
        ),
        (
            '{"format": "cmhash.bow_vocabulary", "version": 9, "size": 0, "words": []}',
            DataFormatError,
            "version",
        ),
    ],
)
def test_bad_vocabulary_files_are_typed_errors_naming_the_file(tmp_path, content, error, fragment):
    path = tmp_path / "broken_vocab.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(error) as info:
        BowVocabulary.load(path)
    assert "broken_vocab.json" in str(info.value) and fragment in str(info.value)


def test_missing_vocabulary_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="absent.json"):
        BowVocabulary.load(tmp_path / "absent.json")


def test_caption_vocabulary_covers_every_coco_mini_sample(coco_mini_root):
    data = read_coco(coco_mini_root)
    docs = caption_docs(data.texts)
    vocab = BowVocabulary.build(docs, min_count=2)
    bow = vocab.transform(docs)
    assert bow.shape == (len(data), len(vocab))
    assert bow.sum(axis=1).min() > 0
    assert "a" in vocab and "A" not in vocab


def test_caption_token_ids_use_the_minilm_tokenizer(coco_mini_root):
    captions = [c[0] for c in read_coco(coco_mini_root, ("val2017",)).texts[:4]]
    long = " ".join(captions * 3)
    batch = caption_token_ids([*captions, long], max_length=16)
    assert default_tokenizer_file().name == "tokenizer.json"
    assert batch.input_ids.shape[0] == 5 and batch.input_ids.shape[1] <= 16
    assert (batch.input_ids[:, 0] == 101).all()  # BERT/MiniLM [CLS]
    lengths = batch.attention_mask.sum(axis=1)
    assert (batch.input_ids[np.arange(5), lengths - 1] == 102).all()  # [SEP] ends every sequence
    assert batch.truncated.tolist() == [False] * 4 + [True]
