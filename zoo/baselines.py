"""Baselines every result table includes (docs/RECIPES.md, "Baselines").

LSH is the floor: the sign of a random Gaussian projection of each modality's frozen features. It is
unsupervised and the two modalities' projections are independent, so cross-modal retrieval with it
is close to chance; a trained method must beat it.
"""

from __future__ import annotations

import numpy as np

from cmhash.errors import InvalidInputError
from cmhash.validators import positive_int
from cmhash.runtime.codes import check_bits


class LSH:
    """`h = x W` with W ~ N(0, 1) of shape (d, bits), seeded; codes are sign(h) downstream."""

    def __init__(self, in_dim: int, bits: int, seed: int) -> None:
        positive_int(in_dim, "LSH in_dim (the feature size)")
        self.bits = check_bits(bits)
        self.projection = np.random.default_rng(seed).standard_normal((in_dim, self.bits)).astype(np.float32)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.projection.shape[0]:
            raise InvalidInputError(
                f"LSH was built for {self.projection.shape[0]}-d features, got shape {features.shape}"
            )
        return features @ self.projection
