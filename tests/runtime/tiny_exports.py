"""Helpers of the runtime tests: the tiny export folders in data/ and numpy re-implementations of them.

The numpy references recompute each tiny graph from tiny_weights.npz (written with the folders by
data/make_tiny_exports.py), so the expected codes never come from onnxruntime or the encoder under test.
(A plain module, not conftest.py: tests/cli has a conftest.py too, and `import conftest` would be ambiguous.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"
TINY = DATA / "tiny"
TINY_BOW = DATA / "tiny-bow"


def load_weights() -> dict[str, np.ndarray]:
    with np.load(DATA / "tiny_weights.npz") as npz:
        return {k: npz[k].astype(np.float64) for k in npz.files}


def pack_reference(h: np.ndarray) -> np.ndarray:
    """Bit j = h_j >= 0, byte j // 8, least significant bit first: written out bit by bit."""
    n, bits = h.shape
    out = np.zeros((n, bits // 8), np.uint8)
    for j in range(bits):
        out[:, j // 8] |= (h[:, j] >= 0).astype(np.uint8) << (j % 8)
    return out


def image_reference(pixels: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """tiny/image.onnx in float64: 4x4 average pool, flatten (c, y, x), linear, tanh."""
    n = pixels.shape[0]
    pooled = pixels.astype(np.float64).reshape(n, 3, 4, 4, 4, 4).mean(axis=(3, 5))
    return np.tanh(pooled.reshape(n, 48) @ w["image_w"] + w["image_b"])


def token_reference(ids: np.ndarray, mask: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """tiny/text.onnx in float64: embedding of (id mod 97), mean over the attention mask, linear, tanh."""
    emb = w["embedding"][ids % 97] * mask[..., None]
    mean = emb.sum(axis=1) / mask.sum(axis=1, keepdims=True)
    return np.tanh(mean @ w["text_w"] + w["text_b"])


def bow_reference(rows: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    return np.tanh(rows.astype(np.float64) @ w["bow_w"] + w["bow_b"])


def assert_codes_match(codes: np.ndarray, h_ref: np.ndarray, margin: float = 1e-4) -> None:
    """Every bit whose reference value is clearly away from 0 must agree (float32 vs float64 rounding)."""
    want = pack_reference(h_ref)
    got_bits = np.unpackbits(codes, axis=1, bitorder="little").astype(bool)
    want_bits = np.unpackbits(want, axis=1, bitorder="little").astype(bool)
    clear = np.abs(h_ref) > margin
    assert clear.mean() > 0.95, "the reference values sit too close to 0 for a meaningful check"
    np.testing.assert_array_equal(got_bits[clear], want_bits[clear])


def rewrite_manifest(folder: Path, change) -> None:
    path = folder / "export.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
