"""Training state (modules, optimizers, schedulers, RNGs) as safetensors + JSON, never pickle.

`torch.save` would pickle optimizer and scheduler states, and a pickle runs code when it is loaded.
Here every tensor of a nested state goes into one `.safetensors` file under a path-like key, and the
rest of the structure (numbers, strings, lists, dicts with int or str keys) into JSON, where each
tensor is replaced by `{"__tensor__": key}`.

The JSON structure is stored twice: in the safetensors header's metadata, which is what `load_state`
reads, and in `name.json` for people and for the trainer's "is there a state to resume" check. Why:
two files cannot be replaced in one atomic step, and a crash between the two renames used to pair
the new tensors with the previous epoch's JSON (a resume would then redo an epoch from the wrong
weights). One file holding both halves is replaced atomically, so a state is always whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from cmhash.errors import WeightsError
from cmhash.runtime.io import atomic_write, read_json

_TENSOR = "__tensor__"
_INT_KEYS = "__int_keys__"
_TREE_KEY = "cmhash_state"  # safetensors metadata entry holding the JSON structure


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
            if not isinstance(key, str) or key not in tensors:
                raise WeightsError(f"{source}: the state names tensor {key!r}, which the safetensors file lacks")
            return tensors[key]
        int_keys = obj.get(_INT_KEYS, False)
        out = {}
        for k, v in obj.items():
            if k == _INT_KEYS:
                continue
            if int_keys:
                try:
                    k = int(k)
                except ValueError:
                    raise WeightsError(f"{source}: key {k!r} of an integer-keyed mapping is not an integer") from None
            out[k] = _join(v, tensors, source)
        return out
    if isinstance(obj, list):
        return [_join(v, tensors, source) for v in obj]
    return obj


def save_state(state: dict[str, Any], folder: str | os.PathLike, name: str) -> None:
    """Write `name.safetensors` (tensors + structure, one atomic replace) then `name.json` (a readable copy)."""
    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, "", tensors)
    text = json.dumps(tree)
    with atomic_write(folder / f"{name}.safetensors") as fh:
        fh.write(save_safetensors_bytes(tensors, metadata={_TREE_KEY: text}))
    with atomic_write(folder / f"{name}.json", "w") as fh:
        fh.write(text)


def load_state(folder: str | os.PathLike, name: str) -> dict[str, Any]:
    """Inverse of `save_state`; a missing or unreadable state raises WeightsError.

    The structure comes from the safetensors metadata (states written before it was stored there:
    from `name.json`).
    """
    folder = Path(folder)
    source = str(folder / name)
    fix = "delete train_state.json and train_state.safetensors to start the run again"
    try:
        with safe_open(str(folder / f"{name}.safetensors"), framework="pt") as fh:
            text = (fh.metadata() or {}).get(_TREE_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        tree = json.loads(text) if text is not None else read_json(folder / f"{name}.json")
    except FileNotFoundError as exc:
        raise WeightsError(f"training state {source}.json/.safetensors is missing: {exc.filename}") from exc
    except RecursionError:
        raise WeightsError(f"training state {source} nests too deeply to be a cmhash state; {fix}") from None
    except (ValueError, OSError, RuntimeError, SafetensorError) as exc:  # bad JSON or a corrupt safetensors file
        raise WeightsError(f"training state {source} is unreadable ({exc}); {fix}") from exc
    if not isinstance(tree, dict):
        raise WeightsError(f"training state {source} must hold an object; {fix}")
    try:
        return _join(tree, tensors, source)
    except RecursionError:
        raise WeightsError(f"training state {source} nests too deeply to be a cmhash state; {fix}") from None
