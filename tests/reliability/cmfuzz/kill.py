"""Kill writers with SIGKILL at random points, then check that what they leave behind loads intact.

A "zygote" process (`python -m cmfuzz.kill`) imports cmhash and torch once, then forks one writer per
trial: the writer saves versions of one artifact in a loop, through cmhash's real save functions,
until it is killed. Forking keeps a trial at a few milliseconds instead of a torch import.

Each artifact kind cycles through versions where one step changes what one save call writes, as the
training loop does (per epoch: new weights, same config.json; at the end: same weights, new config).
After a kill, the folder must load and equal one of the versions exactly: never a torn or partial
file, never a mix that is not itself a version.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("index", "checkpoint", "train-state", "export-json")
_HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------ versions
@functools.lru_cache(maxsize=None)
def _index_version(v: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(v)
    n = 100_000 + 5_000 * v  # about 1.6 MB: a write takes long enough to be hit mid-way
    return np.arange(n, dtype=np.int64) * (2 - v), rng.integers(0, 256, (n, 8), dtype=np.uint8)


@functools.lru_cache(maxsize=None)
def _index(v: int):
    from cmhash.runtime.index import HammingIndex

    ids, codes = _index_version(v)
    index = HammingIndex(64, backend="numpy", meta={"version": v})  # v1: ids implicit, codes only
    index.add(codes, None if v == 1 else ids)
    return index


@functools.lru_cache(maxsize=None)
def _weights(seed: int) -> dict[str, Any]:
    import torch

    from .artifacts import checkpoint_config
    from cmhash.zoo.model import CrossModalHasher

    torch.manual_seed(seed)
    return CrossModalHasher(checkpoint_config()).state_dict()


def _config(c: int) -> dict[str, Any]:
    from .artifacts import checkpoint_config

    config = checkpoint_config()
    if c:
        config["metrics"] = {"test": {"score": 0.5 + c}}
    return config


# Checkpoint versions (weights seed, config variant): each step changes exactly one of the two.
CHECKPOINT_CYCLE = ((0, 0), (1, 0), (1, 1), (0, 1))


@functools.lru_cache(maxsize=None)
def _state(v: int) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(v)
    return {"epoch": v, "best": json.dumps({"epoch": v}),
            "model": {f"w{i}": torch.randn(64, 256, generator=g) for i in range(8)}}


def _export_manifest(v: int) -> dict[str, Any]:
    return {"format": "cmhash-export/2", "bits": 16 * (v + 1), "modalities": ["text"],
            "encoders": {"text": {"files": {"fp32": "text.onnx"}, "input_kind": "bow", "inputs": ["bow"],
                                  "vocabulary": "vocabulary.json", "version": v}},
            "files": {f"f{i}.onnx": {"sha256": f"{v:064x}", "size": i} for i in range(2000)},
            "validation": None, "fp16": None}


def write_version(kind: str, folder: Path, v: int) -> None:
    """Save version `v` of `kind` into `folder` with cmhash's own writer."""
    if kind == "index":
        _index(v % 2).save(folder / "db.cmhx")
    elif kind == "checkpoint":
        from cmhash.zoo.model import CrossModalHasher

        seed, c = CHECKPOINT_CYCLE[v % len(CHECKPOINT_CYCLE)]
        model = CrossModalHasher(_config(c))
        model.load_state_dict(_weights(seed))
        model.save_pretrained(folder)
    elif kind == "train-state":
        from cmhash.zoo.state_io import save_state

        save_state(_state(v % 2), folder, "train_state")
    elif kind == "export-json":
        from cmhash.runtime.formats.export_manifest import write_export_manifest

        write_export_manifest(folder, _export_manifest(v % 2))
    else:
        raise ValueError(kind)


def identify(kind: str, folder: Path) -> str:
    """Load what is in `folder`; return the name of the version it equals, else raise AssertionError."""
    if kind == "index":
        from cmhash.runtime.index import HammingIndex

        index = HammingIndex.load(folder / "db.cmhx", backend="numpy")
        for v in (0, 1):
            ids, codes = _index_version(v)
            if np.array_equal(index.ids, ids) and np.array_equal(index.codes, codes) and index.meta == {"version": v}:
                return f"v{v}"
    elif kind == "checkpoint":
        import torch

        from cmhash.zoo.model import CrossModalHasher

        model = CrossModalHasher.from_pretrained(folder)
        state = model.state_dict()
        for seed, c in CHECKPOINT_CYCLE:
            same_config = model.config.metrics == _config(c).get("metrics")
            if same_config and all(torch.equal(state[k], t) for k, t in _weights(seed).items()):
                return f"w{seed}c{c}"
    elif kind == "train-state":
        import torch

        from cmhash.zoo.state_io import load_state

        state = load_state(folder, "train_state")
        for v in (0, 1):
            want = _state(v)
            if (state["epoch"] == want["epoch"] and state["best"] == want["best"]
                    and all(torch.equal(state["model"][k], t) for k, t in want["model"].items())):
                return f"v{v}"
    elif kind == "export-json":
        from cmhash.runtime.formats.export_manifest import read_export_manifest

        manifest = read_export_manifest(folder)
        for v in (0, 1):
            if manifest.data == _export_manifest(v):
                return f"v{v}"
    raise AssertionError(f"{kind} in {folder} loaded but equals no version that was written")


# --------------------------------------------------------------------------------------- the zygote
def _serve() -> None:
    """Read `init KIND FOLDER` / `run KIND FOLDER START` lines; answer `ok` / the writer's pid."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed writers are reaped by the kernel
    for line in sys.stdin:
        cmd, kind, folder, *rest = line.split()
        if cmd == "init":
            for v in range(len(CHECKPOINT_CYCLE)):  # compute every version now, not in each writer
                write_version(kind, Path(folder), v)
            write_version(kind, Path(folder), 0)
            print("ok", flush=True)
            continue
        pid = os.fork()
        if pid == 0:  # the writer: save versions until killed
            try:
                v = int(rest[0])
                while True:
                    v += 1
                    write_version(kind, Path(folder), v)
            finally:
                os._exit(1)
        print(pid, flush=True)


@dataclass
class Trial:
    kind: str
    delay: float
    version: str  # what the folder held after the kill
    mid_write: bool  # the kill left a temporary file: it landed inside a write


class KillHarness:
    """Drives one zygote; `trial(kind, folder, rng)` forks a writer, kills it, and identifies the result."""

    def __init__(self) -> None:
        # One thread: OpenMP thread pools do not survive fork, and a writer needs none.
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(_HERE.parent), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "cmfuzz.kill"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        self.started: dict[str, int] = {}

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"the writer zygote died (exit code {self.proc.poll()})")
        return answer

    def init(self, kind: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._ask(f"init {kind} {folder}")

    def trial(self, kind: str, folder: Path, rng: random.Random, max_delay: float) -> Trial:
        delay = rng.uniform(0.0, max_delay)
        start = rng.randrange(1 << 20)
        pid = int(self._ask(f"run {kind} {folder} {start}"))
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        temps = list(folder.glob(".*.tmp"))
        for t in temps:  # a real restart would leave them; remove them so the next trial's count is its own
            t.unlink()
        return Trial(kind, delay, identify(kind, folder), bool(temps))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.001)
    raise TimeoutError(f"writer {pid} still alive {timeout} s after SIGKILL")


if __name__ == "__main__":
    _serve()
