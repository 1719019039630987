"""Long-run fuzzing of every loader of an untrusted file, plus SIGKILL trials of every writer.

    nice .venv/bin/python bench/fuzz_loaders.py                 # 10,000 cases per loader, 2 workers
    nice .venv/bin/python bench/fuzz_loaders.py --cases 500 --targets index coco --no-write

Cases come from tests/reliability/cmfuzz (the same mutations and loaders as the bounded tests), with
seeded `random.Random`s: case i of loader L is `Random(f"{seed}:{L}:{i}")`, so any failure reruns with
`--targets L --first i --cases 1`. Each case runs in a worker process under a 1 GiB allocation cap and
an in-process alarm; the parent also watches each worker, so a case that segfaults the interpreter or
hangs in C code is counted (crash / hang) and the worker restarted after it. Mutated files are written
to /dev/shm. The tables go into RELIABILITY.md between the fuzz-table markers.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KIT = REPO / "tests" / "reliability"
sys.path.insert(0, str(KIT))

START, END = "<!-- fuzz-table:start -->", "<!-- fuzz-table:end -->"


# ------------------------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> None:
    """Run cases [first, stop) of one target; one JSON line per case on stdout, then a summary line."""
    from cmfuzz.runner import CaseRunner
    from cmfuzz.targets import TARGETS

    # Results go to a private copy of stdout; fd 1 itself goes to /dev/null, so what a native library
    # prints there (onnxruntime does) cannot interleave with them.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    target = TARGETS[args.target]
    runner = CaseRunner(target, Path(args.real), Path(args.work), timeout=args.timeout)
    runner.load(timed=False)  # one-time costs (JIT compiles) are not a hang of the first case
    for i in range(args.first, args.stop):
        outcome = runner.run(random.Random(f"{args.seed}:{target.name}:{i}"))
        print(json.dumps({"i": i, "kind": outcome.kind, "file": outcome.file, "detail": outcome.detail[:200]}),
              file=out, flush=True)
    print(json.dumps({"done": True, "maxrss_mb": _peak_rss_mb()}), file=out, flush=True)


def _peak_rss_mb() -> int:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over fork + exec,
    so a worker would report the parent's size."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


class Worker:
    """A worker process over a range of cases, restarted past a case that kills or hangs it."""

    def __init__(self, args: argparse.Namespace, target: str, real: Path, first: int, stop: int, slot: int) -> None:
        self.args, self.target, self.real, self.stop, self.slot = args, target, real, stop, slot
        self.next = first
        self.maxrss = 0
        self.proc: subprocess.Popen | None = None
        self.buffer = b""
        self.last = time.monotonic()
        self.start()

    def start(self) -> None:
        work = Path(self.args.shm) / f"w{self.slot}-{self.next}"
        cmd = [sys.executable, __file__, "--worker", "--target", self.target, "--real", str(self.real),
               "--work", str(work), "--first", str(self.next), "--stop", str(self.stop), "--seed",
               str(self.args.seed), "--timeout", str(self.args.timeout)]
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore",
                   CMHASH_CACHE=str(Path(self.args.shm) / "cache"))
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        self.last = time.monotonic()

    @property
    def done(self) -> bool:
        return self.proc is None

    def lines(self) -> list[dict]:
        """Complete JSON lines available now (non-blocking)."""
        assert self.proc is not None and self.proc.stdout is not None
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            return []
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        self.last = time.monotonic()
        return [json.loads(line) for line in complete if line.startswith(b"{")]

    def finish_or_restart(self, results: list[dict], why: str) -> None:
        """The worker exited or hung before `stop`: the case in progress is the culprit."""
        assert self.proc is not None
        if why == "hang":
            self.proc.kill()
        code = self.proc.wait()
        if self.next >= self.stop:
            self.proc = None
            return
        detail = "no result within the watchdog limit" if why == "hang" else f"worker died, exit status {code}"
        results.append({"i": self.next, "kind": "hang" if why == "hang" else "crash", "file": "?",
                        "detail": detail})
        self.next += 1
        self.buffer = b""
        if self.next < self.stop:
            self.start()
        else:
            self.proc = None


def run_target(args: argparse.Namespace, name: str, real: Path) -> dict:
    """All cases of one target over `args.workers` workers; the per-target summary."""
    bounds = [args.first + (args.cases * k) // args.workers for k in range(args.workers + 1)]
    workers = [Worker(args, name, real, a, b, k) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])) if b > a]
    results: list[dict] = []
    t0 = time.monotonic()
    watchdog = max(60.0, 3 * args.timeout)
    while not all(w.done for w in workers):
        live = {w.proc.stdout.fileno(): w for w in workers if not w.done}
        ready, _, _ = select.select(list(live), [], [], 1.0)
        for fd in ready:
            w = live[fd]
            got = w.lines()
            if not got and w.proc.poll() is not None:
                w.finish_or_restart(results, "exit")
                continue
            for line in got:
                if line.get("done"):
                    w.maxrss = max(w.maxrss, line["maxrss_mb"])
                    w.next = w.stop
                else:
                    results.append(line)
                    w.next = line["i"] + 1
        for w in workers:
            if not w.done and time.monotonic() - w.last > watchdog:
                w.finish_or_restart(results, "hang")
    seconds = time.monotonic() - t0
    kinds = collections.Counter(r["kind"] for r in results)
    failures = collections.defaultdict(list)
    for r in results:
        if r["kind"] in ("crash", "hang", "alloc"):
            cause = r["detail"].split(":")[0] if r["kind"] == "crash" else r["kind"]
            failures[f"{r['kind']}: {cause} ({r['file']})"].append(r["i"])
    return {"target": name, "cases": len(results), "ok": kinds["ok"], "typed": kinds["typed"],
            "crash": kinds["crash"], "hang": kinds["hang"], "alloc": kinds["alloc"], "seconds": round(seconds, 1),
            "ms_per_case": round(1000 * seconds * len(workers) / max(1, len(results)), 2),
            "maxrss_mb": max(w.maxrss for w in workers),
            "failures": {k: {"count": len(v), "first_cases": sorted(v)[:5]} for k, v in
                         sorted(failures.items(), key=lambda kv: -len(kv[1]))}}


# ------------------------------------------------------------------------------------------- kills
def run_kills(args: argparse.Namespace, root: Path) -> list[dict]:
    from cmfuzz.kill import KINDS, KillHarness

    harness = KillHarness()
    rows = []
    try:
        for kind in args.kill_kinds or KINDS:
            folder = root / kind  # on disk, not tmpfs: fsync and rename are what is being tested
            harness.init(kind, folder)
            rng = random.Random(f"{args.seed}:kill:{kind}")
            versions: collections.Counter[str] = collections.Counter()
            lost, mid, t0 = 0, 0, time.monotonic()
            for _ in range(args.kills):
                try:
                    trial = harness.trial(kind, folder, rng, 0.25)
                except Exception as exc:  # noqa: BLE001 - a torn or unloadable file: data lost
                    lost += 1
                    print(f"  {kind}: data lost: {type(exc).__name__}: {exc}", file=sys.stderr)
                    harness.init(kind, folder)
                    continue
                versions[trial.version] += 1
                mid += trial.mid_write
            rows.append({"kind": kind, "kills": args.kills, "mid_write": mid, "versions": dict(versions),
                         "lost": lost, "seconds": round(time.monotonic() - t0, 1)})
            print(f"kill {kind}: {rows[-1]}", file=sys.stderr)
    finally:
        harness.close()
    return rows


# ------------------------------------------------------------------------------------------- report
def tables(results: list[dict], kills: list[dict], args: argparse.Namespace) -> str:
    from cmfuzz.targets import TARGETS

    targets = f" --targets {' '.join(args.targets)}" if args.targets else ""
    lines = [f"Run: `nice .venv/bin/python bench/fuzz_loaders.py{targets} --cases {args.cases} --workers {args.workers} "
             f"--kills {args.kills}` (seed {args.seed}), {time.strftime('%Y-%m-%d')}, "
             f"{os.cpu_count()} CPUs shared with other jobs; per-case limits: {args.timeout:g} s, 1 GiB above the "
             "worker's data segment.", "",
             "| loader | what is loaded | cases | loaded | typed error | crash | hang | huge alloc | max RSS (MB) | ms/case |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['target']} | {TARGETS[r['target']].what} | {r['cases']:,} | {r['ok']:,} | {r['typed']:,} | "
                     f"{r['crash']:,} | {r['hang']:,} | {r['alloc']:,} | {r['maxrss_mb']} | {r['ms_per_case']} |")
    broken = [r for r in results if r["failures"]]
    if broken:
        lines += ["", "Failures by cause (first case numbers, for `--targets L --first i --cases 1`):", ""]
        for r in broken:
            for cause, info in r["failures"].items():
                lines.append(f"- {r['target']}: {info['count']:,} × {cause}, cases {info['first_cases']}")
    if kills:
        lines += ["", "| writer killed with SIGKILL | kills | landed mid-write | versions found after the kill | "
                      "data lost |", "|---|---:|---:|---|---:|"]
        for k in kills:
            found = ", ".join(f"{v}: {n}" for v, n in sorted(k["versions"].items()))
            lines.append(f"| {k['kind']} | {k['kills']} | {k['mid_write']} | {found} | {k['lost']} |")
    return "\n".join(lines)


def write_report(text: str, path: Path) -> None:
    doc = path.read_text() if path.exists() else f"# Reliability\n\n{START}\n{END}\n"
    if START not in doc or END not in doc:
        doc += f"\n{START}\n{END}\n"
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases per loader")
    parser.add_argument("--first", type=int, default=0, help="number of the first case")
    parser.add_argument("--targets", nargs="*", help="loaders to fuzz (default: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--kills", type=int, default=100, help="SIGKILL trials per writer (0: none)")
    parser.add_argument("--kill-kinds", nargs="*", help="writers to kill (default: all; e.g. index)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=os.environ.get("CMHASH_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--out", default=str(REPO / "RELIABILITY.md"))
    parser.add_argument("--no-write", action="store_true", help="print the tables, leave RELIABILITY.md alone")
    parser.add_argument("--json", help="also write the raw results here")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--target", "--real", "--work", "--stop"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.stop = int(args.stop)
        worker(args)
        return

    from cmfuzz.artifacts import build_coco
    from cmfuzz.targets import TARGETS

    names = args.targets or list(TARGETS)
    args.shm = tempfile.mkdtemp(prefix="cmhash-fuzz-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    disk = Path(tempfile.mkdtemp(prefix="cmhash-kill-"))
    os.environ.update(CMHASH_CACHE=str(Path(args.shm) / "cache"), HF_HUB_OFFLINE="1")
    try:
        data = Path(args.data)
        ctx = {"work": Path(args.shm), "coco_root": data / "coco-mini", "mirflickr_root": data / "mirflickr25k"}
        ctx["coco_small"] = build_coco(Path(args.shm) / "coco-small", ctx["coco_root"])
        built: dict[str, Path] = {}
        results = []
        for name in names:
            target = TARGETS[name]
            if target.builder not in built:
                built[target.builder] = target.build(Path(args.shm) / "real" / target.builder, ctx)
            summary = run_target(args, name, built[target.builder])
            results.append(summary)
            print(f"{name}: {json.dumps({k: v for k, v in summary.items() if k != 'failures'})}", file=sys.stderr)
            for cause, info in summary["failures"].items():
                print(f"    {info['count']} × {cause}: cases {info['first_cases']}", file=sys.stderr)
        kills = run_kills(args, disk) if args.kills else []
    finally:
        shutil.rmtree(args.shm, ignore_errors=True)
        shutil.rmtree(disk, ignore_errors=True)
    text = tables(results, kills, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"fuzz": results, "kills": kills}, indent=1))
    if not args.no_write:
        write_report(text, Path(args.out))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up of /dev/shm
    main()
