"""Regenerate the hashers shipped with the package (`cmhash.zoo.registry`, folders in zoo/pretrained/).

    .venv/bin/python bench/make_default_hasher.py                  # all three: dcph, dhaph, dmsh
    .venv/bin/python bench/make_default_hasher.py --method dhaph   # one of them

One hasher per method, each with its recipe's defaults (`make_config(METHOD, "offline")`,
docs/RECIPES.md): frozen offline backbones (EfficientNet-Lite0, MiniLM-L6), so only the hash heads are
trained and shipped; coco-mini from $CMHASH_DATA, 64 bits, seed 0, split seed 0. Each run trains into
`runs/zoo/<name>` (resumed if present), then `cmhash.zoo.hub.stage` writes exactly the small files
(config.json, model.safetensors, manifest.json, the model card README.md) into `zoo/pretrained/<name>/`.
CPU training is deterministic, so a rerun on the same versions gives the same weights: the script prints
the sha256 of the new weights and whether it equals the staged file it replaces.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cmhash.runtime.io import sha256_file
from cmhash.zoo import pretrained, registry
from cmhash.zoo.data import load_dataset
from cmhash.zoo.hub import stage
from cmhash.zoo.recipes import make_config
from cmhash.zoo.train import train

METHODS = ("dcph", "dhaph", "dmsh")
DATASET, BITS, SEED, SPLIT_SEED = "coco-mini", 64, 0, 0


def make(method: str, runs: Path, data_root: str | None) -> None:
    """Train (or resume) one method's run and stage it into zoo/pretrained/<name>/."""
    name = registry.shipped_name(method, DATASET, BITS)
    run = runs / name
    start = time.perf_counter()
    result = train(method, make_config(method, "offline", bits=BITS, seed=SEED),
                   load_dataset(DATASET, data_root), run, split_seed=SPLIT_SEED)
    print(f"{name}: trained in {time.perf_counter() - start:.0f} s wall (features included); selected epoch "
          f"{result.selected_epoch + 1}; test mAP I→T {result.test['map_i2t']:.4f}, T→I {result.test['map_t2i']:.4f}",
          flush=True)

    dest = pretrained.ROOT / name
    old = sha256_file(dest / "model.safetensors") if (dest / "model.safetensors").is_file() else None
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staged = stage(run, Path(tmp) / "staged", repo_id=f"cmhash/{name}", shipped=name)
        (staged / ".gitattributes").unlink(missing_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    new = sha256_file(dest / "model.safetensors")
    same = "no previous file" if old is None else ("same as" if new == old else "differs from") + " the staged file"
    print(f"{name}: staged {dest}: model.safetensors sha256 {new} ({same})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=(*METHODS, "all"), default="all", help="which hasher to make")
    parser.add_argument("--runs", type=Path, default=Path("runs/zoo"), help="folder of the training runs")
    parser.add_argument("--data-root", default=None, help="default: $CMHASH_DATA (cmhash.constants)")
    args = parser.parse_args()
    for method in METHODS if args.method == "all" else (args.method,):
        make(method, args.runs, args.data_root)


if __name__ == "__main__":
    main()
