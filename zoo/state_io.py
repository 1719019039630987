"""Training state (modules, optimizers, schedulers, RNGs) as safetensors + JSON, never pickle.

`torch.save` would pickle optimizer and scheduler states, and a pickle runs code when it is loaded.
Here every tensor of a nested state goes into one `.safetensors` file under a path-like key, and the
rest of the structure (numbers, strings, lists, dicts with int or str keys) into JSON, where each
tensor is replaced by `{"__tensor__": key}`. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from cmhash.errors import WeightsError
from cmhash.runtime.io import atomic_write

_TENSOR = "__tensor__"
_INT_KEYS = "__int_keys__"


def _split(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(obj, dict):
        int_keys = all(isinstance(k, int) for k in obj) and bool(obj)
        out = {str(k): _split(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        if int_keys:
            out[_INT_KEYS] = True
        return out
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise WeightsError(f"training state at {path!r} holds a {type(obj).__name__}, which cannot be saved safely")


def _join(obj: Any, tensors: dict[str, torch.Tensor], source: str) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_TENSOR}:
            key = obj[_TENSOR]
            if key not in tensors:
                raise WeightsError(f"{source}: the state names tensor {key!r}, which the safetensors file lacks")
            return tensors[key]
        int_keys = obj.get(_INT_KEYS, False)
        return {(int(k) if int_keys else k): _join(v, tensors, source) for k, v in obj.items() if k != _INT_KEYS}
    if isinstance(obj, list):
        return [_join(v, tensors, source) for v in obj]
    return obj


def save_state(state: dict[str, Any], folder: str | os.PathLike, name: str) -> None:
    """Write `name.safetensors` and `name.json` in `folder`, atomically (the JSON last: it is the commit)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, "", tensors)
    with atomic_write(folder / f"{name}.safetensors") as fh:
        fh.write(save_safetensors_bytes(tensors))
    with atomic_write(folder / f"{name}.json", "w") as fh:
        json.dump(tree, fh)


def load_state(folder: str | os.PathLike, name: str) -> dict[str, Any]:
    """Inverse of `save_state`; a missing or unreadable pair raises WeightsError."""
    folder = Path(folder)
    source = str(folder / name)
    try:
        tree = json.loads((folder / f"{name}.json").read_text())
        tensors = load_safetensors_bytes((folder / f"{name}.safetensors").read_bytes())
    except FileNotFoundError as exc:
        raise WeightsError(f"training state {source}.json/.safetensors is missing: {exc.filename}") from exc
    except (ValueError, OSError, RuntimeError) as exc:  # bad JSON or a corrupt safetensors header
        raise WeightsError(f"training state {source} is unreadable ({exc}); delete it to start the run again") from exc
    if not isinstance(tree, dict):
        raise WeightsError(f"{source}.json must hold an object")
    return _join(tree, tensors, source)
