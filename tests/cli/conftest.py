"""Real coco-mini exports of the three methods, made once per test session (only when a test asks).

Small but real: each method trains its offline preset (frozen EfficientNet-Lite0 + MiniLM, heads
only) for one short round on the first TRAIN_PAIRS coco-mini pairs (the frozen backbones' features
of all 159 pairs alone take ~35 s here), and `export_checkpoint` writes its ONNX folder without the
validation pass (tests/export covers validation).

CMHASH_E2E_EXPORTS=DIR uses DIR/<method>/export instead (e.g. the full-data exports that
bench/export_validation.py writes to runs/export_validation), without training anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

FAST = {
    "dcph": dict(rounds=1, proxy_iterations=10, proxy_hidden=256),
    "dhaph": dict(epochs=1, n_proxies=20),
    "dmsh": dict(epochs=1, label_stage_epochs=5),
}
BITS = 64
TRAIN_PAIRS = 40


@pytest.fixture(scope="session")
def coco_mini_dataset(coco_mini_root):
    pytest.importorskip("torch")
    from cmhash.zoo.data import load_dataset

    return load_dataset(coco_mini_root)


@pytest.fixture(scope="session")
def method_export(tmp_path_factory, coco_mini_dataset, isolated_env):
    """`method_export(name)` -> the export folder of a freshly trained `name` checkpoint (cached)."""
    from cmhash.export.onnx import export_checkpoint
    from cmhash.zoo.recipes import make_config
    from cmhash.zoo.train import train

    made: dict[str, Path] = {}
    given = os.environ.get("CMHASH_E2E_EXPORTS")
    pairs = coco_mini_dataset.subset(np.arange(TRAIN_PAIRS))

    def make(method: str) -> Path:
        if given:
            return Path(given) / method / "export"
        if method not in made:
            root = tmp_path_factory.mktemp(method)
            config = make_config(method, "offline", bits=BITS, seed=0, **FAST[method])
            train(method, config, pairs, root / "checkpoint", progress=False)
            export_checkpoint(root / "checkpoint", root / "export", validate=False, dataset=pairs)
            made[method] = root / "export"
        return made[method]

    return make
