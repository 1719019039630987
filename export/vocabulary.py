"""The BoW vocabulary a bag-of-words text tower was trained with, for its export folder.

Checkpoints do not store it: `cmhash.zoo.inputs.bag_of_words` uses the dataset's own bag-of-words
(with its `vocabulary`), or builds one from the training captions of the split. This rebuilds the
same word list, so a runtime can turn text into the tower's input.
"""

from __future__ import annotations

import os
from typing import Any

from cmhash.errors import ExportError


def bow_vocabulary(input_dim: int, *, vocabulary: Any = None, dataset: Any = None, split_seed: int = 0):
    """A `BowVocabulary` of `input_dim` words: the one given (object or file), else from `dataset`."""
    from cmhash.zoo.data import BowVocabulary, caption_docs
    from cmhash.zoo.train import default_split

    if vocabulary is not None:
        vocab = vocabulary if isinstance(vocabulary, BowVocabulary) else BowVocabulary.load(os.fspath(vocabulary))
    elif dataset is None:
        raise ExportError("a bag-of-words text tower needs its vocabulary: pass vocabulary=FILE, or the dataset "
                          "it trained on (cmhash export onnx ... --data NAME)")
    elif dataset.bow is not None:
        if not dataset.vocabulary:
            raise ExportError(f"dataset {dataset.name!r} has a bag-of-words without column words; pass "
                              "vocabulary=FILE (a cmhash vocabulary.json) to export its text tower")
        vocab = BowVocabulary(dataset.vocabulary)
    elif dataset.texts is not None:
        # The rule of cmhash.zoo.inputs.bag_of_words: the training (fit) captions' most frequent words.
        docs = caption_docs(dataset.texts)
        fit = default_split(dataset, split_seed).fit
        vocab = BowVocabulary.build([docs[i] for i in fit], max_size=input_dim)
    else:
        raise ExportError(f"dataset {dataset.name!r} has neither a bag-of-words nor texts to rebuild the vocabulary")
    if len(vocab) != input_dim:
        raise ExportError(f"the vocabulary has {len(vocab)} words, the text tower takes {input_dim}: "
                          "pass the vocabulary the checkpoint was trained with")
    return vocab
