"""Regenerate the hasher shipped with the package (`cmhash.zoo.pretrained.DEFAULT`).

    .venv/bin/python bench/make_default_hasher.py            # trains into runs/default-hasher, then stages it

It is the project's own recipe: DHaPH (the best of the three methods at 64 bits in RESULTS.md),
offline preset, coco-mini from ../shared/data, 64 bits, seed 0, split seed 0. CPU training is
deterministic, so a rerun on the same versions gives the same weights; the script prints the sha256
of the new weights and whether it equals the shipped file. Only the small files are staged into
`zoo/pretrained/<name>/`: config.json, model.safetensors (the heads), manifest.json and the model card.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cmhash.runtime.io import sha256_file
from cmhash.zoo import pretrained
from cmhash.zoo.data import load_dataset
from cmhash.zoo.hub import stage
from cmhash.zoo.recipes import make_config
from cmhash.zoo.train import train

METHOD, BITS, SEED = "dhaph", 64, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/default-hasher", help="training run folder (resumed if present)")
    parser.add_argument("--data-root", default=None, help="default: $CMHASH_DATA, else ../shared/data")
    args = parser.parse_args()

    start = time.perf_counter()
    result = train(METHOD, make_config(METHOD, "offline", bits=BITS, seed=SEED),
                   load_dataset("coco-mini", args.data_root), args.run, split_seed=0)
    print(f"trained in {time.perf_counter() - start:.0f} s; selected epoch {result.selected_epoch + 1}; "
          f"test mAP I→T {result.test['map_i2t']:.4f}, T→I {result.test['map_t2i']:.4f}")

    dest = pretrained.ROOT / pretrained.DEFAULT
    old = sha256_file(dest / "model.safetensors") if (dest / "model.safetensors").is_file() else None
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        staged = stage(args.run, Path(tmp) / "staged", repo_id=f"cmhash/{pretrained.DEFAULT}",
                       shipped=pretrained.DEFAULT)
        (staged / ".gitattributes").unlink(missing_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        staged.rename(dest)
    new = sha256_file(dest / "model.safetensors")
    print(f"staged {dest}: model.safetensors sha256 {new}"
          + ("" if old is None else f" ({'same as' if new == old else 'differs from'} the previous file)"))


if __name__ == "__main__":
    main()
