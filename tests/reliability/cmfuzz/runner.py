"""Run one fuzz case and classify its outcome.

Outcomes: "ok" (loaded), "typed" (a `CmhashError`), and the failures: "crash" (any other exception),
"hang" (past the per-case time limit), "alloc" (a MemoryError anywhere in the error chain: the loader
tried to allocate more than `memory_cap_bytes` above what the process already used).
"""

from __future__ import annotations

import contextlib
import random
import resource
import shutil
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .mutate import mutate
from .targets import Target

FAILURES = ("crash", "hang", "alloc")
MEMORY_CAP = 1 << 30  # a loader may allocate at most 1 GiB on top of the process's data segment


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that loaders' `except Exception` cannot swallow it."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok", "typed", "crash", "hang", "alloc"
    file: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.kind in FAILURES


def _vm_data() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def memory_cap(extra: int = MEMORY_CAP) -> Iterator[None]:
    """Lower RLIMIT_DATA to the current data segment + `extra`, so a forged size fails fast."""
    old = resource.getrlimit(resource.RLIMIT_DATA)
    limit = _vm_data() + extra
    if old[1] != resource.RLIM_INFINITY:
        limit = min(limit, old[1])
    resource.setrlimit(resource.RLIMIT_DATA, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, old)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def on_alarm(signum, frame):
        raise CaseTimeout(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_alloc_failure(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "Cannot allocate memory" in str(exc)


def classify(exc: BaseException | None, file: str) -> Outcome:
    from cmhash.errors import CmhashError

    if exc is None:
        return Outcome("ok", file)
    if isinstance(exc, CaseTimeout):
        return Outcome("hang", file, str(exc))
    chain = list(_chain(exc))
    if any(_is_alloc_failure(e) for e in chain):
        return Outcome("alloc", file, f"{type(exc).__name__}: {str(exc)[:300]}")
    if isinstance(exc, CmhashError):
        return Outcome("typed", file, type(exc).__name__)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return Outcome("crash", file, f"{type(exc).__name__}{where}: {str(exc)[:300]}")


class CaseRunner:
    """Keeps a working copy of a target's real folder and runs mutated cases in it.

    Only the mutated file is rewritten per case (and restored after), so a case costs one file write
    plus the load. Put `workdir` on tmpfs (/dev/shm) for the long runs.
    """

    def __init__(self, target: Target, real: Path, workdir: Path, timeout: float = 10.0,
                 cap: int | None = MEMORY_CAP) -> None:
        self.target, self.timeout, self.cap = target, timeout, cap
        self.folder = workdir / target.name
        if self.folder.exists():
            shutil.rmtree(self.folder)
        shutil.copytree(real, self.folder, symlinks=True)
        self.original = {name: (real / name).read_bytes() for name in target.files}

    def run(self, rng: random.Random) -> Outcome:
        name = rng.choice(sorted(self.target.files))
        data = mutate(self.original[name], self.target.files[name], rng)
        path = self.folder / name
        path.write_bytes(data)
        if self.target.fixup is not None:
            self.target.fixup(self.folder, name, data, rng)
        try:
            return self.load(name)
        finally:
            for other, raw in self.original.items():  # the fixup may have changed another file
                if other == name or self.target.fixup is not None:
                    (self.folder / other).write_bytes(raw)

    def load(self, name: str = "", timed: bool = True) -> Outcome:
        """One load, classified. `timed=False` for the first load of the real files: it pays one-time
        costs (numba compiling the multi-index kernels takes over 10 s on a busy 2-core machine)."""
        exc: BaseException | None = None
        cap = memory_cap(self.cap) if self.cap else contextlib.nullcontext()
        limit = time_limit(self.timeout) if timed else contextlib.nullcontext()
        try:
            with cap, limit:
                result = self.target.load(self.folder)
            del result
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - classifying every outcome is the point
            exc = e
        return classify(exc, name)
