"""Real inputs for checking an export: dataset images and captions, prepared from the export folder.

The folder's own preprocessing (`export.json`), `tokenizer.json` and `vocabulary.json` prepare the
inputs, exactly as a deployed runtime would, and PyTorch and onnxruntime then see the same arrays.
Torch-free; the dataset comes from `cmhash.zoo.data` (a `PairedDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from cmhash.errors import ExportError
from cmhash.runtime.preprocess import ImagePreprocess
from cmhash.runtime.tokenize import TextTokenizer

from cmhash.runtime.formats.export_manifest import EncoderEntry, ExportManifest

Feed = dict[str, np.ndarray]


@dataclass
class ModalityInputs:
    """n samples of one modality; `feed(idx)` builds the model inputs of the samples `idx`.

    `rows[i]` is the dataset pair sample i belongs to, `caption[i]` which of its captions (or 0).
    """

    modality: str
    names: tuple[str, ...]
    rows: np.ndarray
    caption: np.ndarray
    description: str
    make: Callable[[np.ndarray], Feed]
    _cache: dict[tuple[int, int], Feed] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def feed(self, idx: np.ndarray) -> Feed:
        return self.make(np.asarray(idx))

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, Feed]]:
        """(sample indices, feed) for consecutive batches; image batches are cached (the fp16 check reuses them)."""
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            if self.modality != "image":
                yield idx, self.make(idx)
                continue
            key = (batch_size, start)
            if key not in self._cache:
                self._cache[key] = self.make(idx)
            yield idx, self._cache[key]


def build_inputs(folder: str | Path, manifest: ExportManifest, dataset: Any, *,
                 captions: str = "all") -> dict[str, ModalityInputs]:
    """Inputs for every encoder in the folder: all images, and all captions or the first of each."""
    folder = Path(folder)
    out: dict[str, ModalityInputs] = {}
    for modality, enc in manifest.encoders.items():
        if enc.input_kind == "pixels":
            out[modality] = _images(dataset, enc, enc.inputs)
        elif enc.input_kind == "tokens":
            out[modality] = _captions(dataset, folder / enc.asset, enc, enc.inputs, captions)
        else:  # "bow": the reader admits no other kind
            out[modality] = _bow(dataset, folder / enc.asset, enc.inputs)
    return out


def _images(dataset: Any, enc: EncoderEntry, names: tuple[str, ...]) -> ModalityInputs:
    if dataset.images is None or isinstance(dataset.images, np.ndarray):
        raise ExportError(f"dataset {dataset.name!r} has no image files to check the image encoder with")
    pre = ImagePreprocess.from_dict(enc.preprocess)
    paths = list(dataset.images)
    n = len(paths)
    return ModalityInputs("image", names, np.arange(n), np.zeros(n, np.int64), f"{n} images",
                          lambda idx: {names[0]: pre([paths[i] for i in idx])})


def _captions(dataset: Any, tokenizer_file: Path, enc: EncoderEntry, names: tuple[str, ...],
              which: str) -> ModalityInputs:
    if dataset.texts is None:
        raise ExportError(f"dataset {dataset.name!r} has no captions to check the text encoder with")
    if which not in ("all", "first"):
        raise ExportError(f"captions must be 'all' or 'first', got {which!r}")
    tok = TextTokenizer(tokenizer_file, enc.max_length)
    rows, caps, texts = [], [], []
    for r, sample in enumerate(dataset.texts):
        for c, text in enumerate(sample if which == "all" else sample[:1]):
            rows.append(r)
            caps.append(c)
            texts.append(text)
    ids_name, mask_name = names

    def make(idx: np.ndarray) -> Feed:
        batch = tok([texts[i] for i in idx])
        return {ids_name: batch.input_ids, mask_name: batch.attention_mask}

    per = "all captions" if which == "all" else "first caption of each pair"
    return ModalityInputs("text", names, np.array(rows), np.array(caps), f"{len(texts)} captions ({per})", make)


def _bow(dataset: Any, vocabulary_file: Path, names: tuple[str, ...]) -> ModalityInputs:
    from cmhash.zoo.data import BowVocabulary, caption_docs

    if dataset.bow is not None:
        bow = dataset.bow.astype(np.float32)
    elif dataset.texts is not None:
        bow = BowVocabulary.load(vocabulary_file).transform(caption_docs(dataset.texts)).astype(np.float32)
    else:
        raise ExportError(f"dataset {dataset.name!r} has neither a bag-of-words nor texts")
    n = len(bow)
    return ModalityInputs("text", names, np.arange(n), np.zeros(n, np.int64), f"{n} bag-of-words rows",
                          lambda idx: {names[0]: bow[idx]})
