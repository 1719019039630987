"""Dataset readers, retrieval splits and text vocabularies.

Every reader returns one `PairedDataset`; `load_dataset` picks the reader by name or folder layout.
Needs the [train] extra (scipy) for .mat files.
"""

from __future__ import annotations

from .clip_mat import read_clip_mat
from .coco import read_coco
from .dataset import PairedDataset, default_split
from .dcmh_mat import MIRFLICKR_CLASSES, read_dcmh_mat
from .dcph_text import read_dcph_text
from .registry import DATASETS, default_data_root, load_dataset
from .splits import SEED_DHAPH, SEED_DMSH_LN, Split, classic_split, clip_split, proportional_split
from .vocab import BowVocabulary, caption_docs, caption_token_ids, caption_words

__all__ = [
    "DATASETS",
    "MIRFLICKR_CLASSES",
    "SEED_DHAPH",
    "SEED_DMSH_LN",
    "BowVocabulary",
    "PairedDataset",
    "Split",
    "caption_docs",
    "caption_token_ids",
    "caption_words",
    "classic_split",
    "clip_split",
    "default_data_root",
    "default_split",
    "load_dataset",
    "proportional_split",
    "read_clip_mat",
    "read_coco",
    "read_dcmh_mat",
    "read_dcph_text",
]
