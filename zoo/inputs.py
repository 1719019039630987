"""What each tower eats, row-aligned with a dataset: cached features, or raw pixels, tokens or BoW.

Frozen backbones are run once over the dataset (`cmhash.zoo.features` caches the result), and the
hash heads train on those features. Trained backbones get their raw inputs batch by batch.

Captions: the CLIP pipeline samples one caption per visit during training, so `batch(rows, rng)`
picks a random caption per row when given an `rng`; without one (evaluation, export checks) it
always takes caption 0, so evaluation is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from cmhash.errors import DataFormatError, InvalidInputError
from cmhash.runtime.preprocess import ImagePreprocess
from cmhash.zoo.backbones import BackboneConfig, build_tokenizer
from cmhash.zoo.data import BowVocabulary, PairedDataset, caption_docs
from cmhash.zoo.features import cached_image_features, cached_text_features


class TowerInput(Protocol):
    """Rows of one modality, as the tensors its tower's forward takes."""

    def __len__(self) -> int: ...

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, ...]: ...


def _pick_captions(counts: np.ndarray, rows: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Caption index per row: random among the row's captions with an rng, else 0."""
    if rng is None:
        return np.zeros(len(rows), dtype=np.int64)
    return (rng.random(len(rows)) * counts[rows]).astype(np.int64)


@dataclass
class FeatureInput:
    """Precomputed (n, d) features: image features, or a bag-of-words as float."""

    features: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(np.ascontiguousarray(self.features[rows], dtype=np.float32)),)


@dataclass
class CaptionFeatureInput:
    """Cached caption features (n, m, d) with their (n, m) mask; one caption per row per batch."""

    features: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, ...]:
        pick = _pick_captions(self.mask.sum(axis=1), rows, rng)
        return (torch.from_numpy(np.ascontiguousarray(self.features[rows, pick], dtype=np.float32)),)


@dataclass
class ImageFileInput:
    """Image files, preprocessed batch by batch (for backbones that train)."""

    paths: Sequence[Path]
    preprocess: ImagePreprocess

    def __len__(self) -> int:
        return len(self.paths)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(self.preprocess([self.paths[i] for i in rows])),)


@dataclass
class CaptionTokenInput:
    """Captions, tokenized batch by batch (for text backbones that train)."""

    captions: Sequence[Sequence[str]]
    tokenizer: object  # cmhash.runtime.tokenize.TextTokenizer

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, rows: np.ndarray, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, ...]:
        counts = np.array([len(c) for c in self.captions])
        pick = _pick_captions(counts, rows, rng)
        tokens = self.tokenizer([self.captions[r][p] for r, p in zip(rows, pick)])
        return torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)


def bow_vocabulary(dataset: PairedDataset, train_rows: np.ndarray, input_dim: int) -> BowVocabulary | None:
    """The words of a BoW text tower's columns, the one rule: the dataset's own column words (None when
    its bag-of-words has none), else the `input_dim` most frequent words of the training captions.

    Training saves it in the checkpoint (vocabulary.json), so export and the runtime never rebuild it.
    """
    if dataset.bow is not None:
        return BowVocabulary(dataset.vocabulary) if dataset.vocabulary else None
    if dataset.texts is None:
        raise DataFormatError(f"dataset {dataset.name!r} has neither a bag-of-words nor texts for a BoW text tower")
    docs = caption_docs(dataset.texts)
    return BowVocabulary.build([docs[i] for i in train_rows], max_size=input_dim)


def bag_of_words(dataset: PairedDataset, vocabulary: BowVocabulary | None, input_dim: int) -> np.ndarray:
    """The dataset's own BoW, else its captions over `vocabulary` (see `bow_vocabulary`)."""
    if dataset.bow is not None:
        bow = dataset.bow
    elif dataset.texts is not None and vocabulary is not None:
        bow = vocabulary.transform(caption_docs(dataset.texts))
    else:
        raise DataFormatError(f"dataset {dataset.name!r} has neither a bag-of-words nor texts for a BoW text tower")
    if bow.shape[1] != input_dim:
        raise InvalidInputError(
            f"the bag-of-words of {dataset.name!r} has {bow.shape[1]} words, the bow-mlp backbone expects "
            f"input_dim={input_dim}: set the backbone's input_dim to {bow.shape[1]}"
        )
    return bow.astype(np.float32)


def image_input(dataset: PairedDataset, config: BackboneConfig, frozen: bool, *,
                weights: str | None = None, progress: bool = True) -> TowerInput:
    """Features for a frozen backbone (cached), else the image files themselves."""
    if isinstance(dataset.images, np.ndarray):
        return FeatureInput(dataset.images.astype(np.float32))
    if dataset.images is None:
        raise DataFormatError(f"dataset {dataset.name!r} has no images")
    if frozen:
        return FeatureInput(cached_image_features(config, dataset.images, weights=weights, progress=progress))
    return ImageFileInput(list(dataset.images), config.preprocess)


def text_input(dataset: PairedDataset, config: BackboneConfig, frozen: bool, train_rows: np.ndarray, *,
               vocabulary: BowVocabulary | None = None, weights: str | None = None, tokenizer_file: str | None = None,
               progress: bool = True) -> TowerInput:
    """BoW, cached caption features (frozen), or captions to tokenize (trained).

    A BoW tower uses `vocabulary` (a checkpoint's saved one) when given, else `bow_vocabulary`'s rule
    on `train_rows`.
    """
    if config.input_kind == "bow":
        if vocabulary is None:
            vocabulary = bow_vocabulary(dataset, train_rows, config.input_dim)
        return FeatureInput(bag_of_words(dataset, vocabulary, config.input_dim))
    if dataset.texts is None:
        raise DataFormatError(f"dataset {dataset.name!r} has no texts for the {config.name} text tower")
    if frozen:
        feats, mask = cached_text_features(config, dataset.texts, weights=weights, tokenizer_file=tokenizer_file,
                                           progress=progress)
        return CaptionFeatureInput(feats, mask)
    return CaptionTokenInput(dataset.texts, build_tokenizer(config, tokenizer_file))
