"""Cold start of a search app: a fresh process loads a saved 10^6-code index and a text encoder,
encodes one query and searches it (what `cmhash search` and the README's photo_search.py do).

Two cases, each a new interpreter (warm OS file cache):
- **first run after install**: numba's kernel cache is empty (a fresh NUMBA_CACHE_DIR), so the first
  search compiles the kernels; its extra time over a warm run is the compilation;
- **later runs**: the same cache, one warm-up process, then the median of `--runs` processes.

    .venv/bin/python bench/cold_start.py --export exports/dhaph64      # writes bench/results/cold_start.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

APP = """
import json, sys, time
t0 = time.perf_counter()
from cmhash.runtime.encoder import load_encoder
from cmhash.runtime.index import HammingIndex
index = HammingIndex.load(sys.argv[1], mmap=True)
t1 = time.perf_counter()
encoder = load_encoder(sys.argv[2], "text")
t2 = time.perf_counter()
codes = encoder.encode(["a dog on a sofa"], progress=False).codes
t3 = time.perf_counter()
distances, ids = index.search(codes, k=10)
t4 = time.perf_counter()
print(json.dumps({"import_and_load_index_s": t1 - t0, "load_encoder_s": t2 - t1, "encode_s": t3 - t2,
                  "search_s": t4 - t3, "torch": "torch" in sys.modules, "backend": index.backend}))
"""


def run_app(python: str, index: Path, export: Path, numba_cache: Path) -> dict:
    env = {"NUMBA_CACHE_DIR": str(numba_cache), "PATH": "/usr/bin:/bin"}
    t0 = time.perf_counter()
    out = subprocess.run([python, "-c", APP, str(index), str(export)], capture_output=True, text=True, check=True,
                         env=env, cwd=tempfile.gettempdir())
    return {**json.loads(out.stdout), "process_s": time.perf_counter() - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="an export folder with a text encoder")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_start.md")
    args = parser.parse_args()
    from cmhash.runtime.encoder import load_encoder
    from cmhash.runtime.index import HammingIndex

    bits = load_encoder(args.export, "text").bits
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "db.cmhx"
        db = HammingIndex(bits)
        db.add(np.random.default_rng(0).integers(0, 256, (args.n, bits // 8), dtype=np.uint8))
        db.save(index)
        cache = Path(tmp) / "numba"
        first = run_app(args.python, index, args.export, cache)
        run_app(args.python, index, args.export, cache)  # warm-up
        later = [run_app(args.python, index, args.export, cache) for _ in range(args.runs)]
    assert not first["torch"] and not any(r["torch"] for r in later), "the runtime imported torch"
    keys = ("import_and_load_index_s", "load_encoder_s", "encode_s", "search_s", "process_s")
    median = {k: statistics.median(r[k] for r in later) for k in keys}
    lines = [f"`python bench/cold_start.py --export {args.export}`: a fresh process loads a saved {args.n:,} x {bits}-bit "
             f"index (mmap), the text encoder, encodes one query and searches it (k = 10, backend {first['backend']}); "
             "warm OS file cache.", "",
             "| run | import + load index s | load_encoder s | encode s | search s | whole process s |",
             "|---|---:|---:|---:|---:|---:|",
             "| first after install (empty kernel cache) | " + " | ".join(f"{first[k]:.3f}" for k in keys) + " |",
             f"| later (median of {args.runs}, after a warm-up) | " + " | ".join(f"{median[k]:.3f}" for k in keys) + " |",
             "", f"Compilation paid by the first run: {first['search_s'] - median['search_s']:.2f} s "
             "(its search minus a later run's)."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
