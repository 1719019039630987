"""The index at scale: cmhash scan vs cmhash MIH vs FAISS IndexBinaryFlat vs IndexBinaryMultiHash.

For each row (N codes of B bits from one source) it builds every index once, then times k-NN
search for each k and thread count on held-out queries, and records q/s, RAM and file bytes per
code, build time, and whether the results equal the exact answer (cmhash scan is the reference;
FAISS IndexBinaryMultiHash is approximate, so its recall@k against the exact ids is reported).

Sources (both seeded, the queries drawn like the database items but never added):
  uniform  independent uniform random bits;
  lsh      signs of random projections (B Gaussian directions in R^64) of a clustered source:
           a mixture of N / 1000 Gaussian clusters (at least 1000) in R^64, centres N(0, I),
           points centre + 0.3 * N(0, I); queries are new points of randomly chosen clusters.

    .venv/bin/python bench/search_scale.py --n 1e6 1e7 --source uniform lsh --k 1 10 100 --threads 1 2
    .venv/bin/python bench/search_scale.py --n 1e8 --source lsh --k 100 --threads 1 \\
        --peer-queries faiss-flat=100 faiss-mih=100
    .venv/bin/python bench/search_scale.py --full   # the whole grid of issue 15 (hours on 2 cores)

Appends one JSON line per (row, method, k, threads) to --out (default
bench/results/search_scale.jsonl) and prints the markdown table of everything in that file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from cmhash.runtime import mih  # the project's .venv (make venv) has cmhash installed
from cmhash.runtime.index import HammingIndex

RESULTS = REPO / "bench" / "results"
METHODS = ("scan", "mih", "auto", "faiss-flat", "faiss-mih")
DIM = 64
SIGMA = 0.3
CHUNK = 1 << 20


def rss() -> int:
    """Resident set size of this process, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def make_codes(source: str, n: int, nq: int, bits: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(database codes (n, bits/8), query codes (nq, bits/8)), generated in chunks."""
    rng = np.random.default_rng(seed)
    nbytes = bits // 8
    if source == "uniform":
        return (rng.integers(0, 256, (n, nbytes), dtype=np.uint8), rng.integers(0, 256, (nq, nbytes), dtype=np.uint8))
    clusters = max(1000, n // 1000)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    proj = rng.standard_normal((DIM, bits)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, nbytes), np.uint8)
        for s in range(0, count, CHUNK):
            e = min(count, s + CHUNK)
            x = centres[rng.integers(0, clusters, e - s)]
            x += SIGMA * rng.standard_normal((e - s, DIM), dtype=np.float32)
            out[s:e] = np.packbits(x @ proj > 0, axis=1, bitorder="little")
        return out

    return draw(n), draw(nq)


def timed(fn, min_s: float = 1.0, max_reps: int = 3):
    """(best seconds, result): at least one run; more (up to max_reps) while under min_s in total."""
    best, out, spent, reps = None, None, 0.0, 0
    while reps < max_reps and (reps == 0 or spent < min_s):
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        spent += dt
        reps += 1
    return best, out


class Cmhash:
    def __init__(self, bits: int, method: str) -> None:
        self.index = HammingIndex(bits, method=method)
        self.method = method

    def build(self, codes: np.ndarray) -> None:
        self.index.add(codes)
        if self.method != "scan":  # build the MIH tables now, timed (else at the first search that needs them)
            self.index.build_tables()

    def search(self, q: np.ndarray, k: int, threads: int):
        return self.index.search(q, k, threads=threads)

    def ram(self) -> int:
        return sum(self.index.memory_bytes().values())

    def file_bytes(self, folder: Path) -> int:
        path = folder / "i.cmhx"
        self.index.save(path)
        size = path.stat().st_size
        path.unlink()
        return size


class Faiss:
    def __init__(self, bits: int, method: str, n: int) -> None:
        import faiss

        self.faiss = faiss
        if method == "faiss-flat":
            self.index = faiss.IndexBinaryFlat(bits)
        else:  # as many tables as our MIH, of the same substring width; probe buckets within 2 bit flips
            m = mih.choose_m(bits, n)
            self.index = faiss.IndexBinaryMultiHash(bits, m, bits // m)
            self.index.nflip = 2
        self.method = method

    def build(self, codes: np.ndarray) -> None:
        self.index.add(codes)

    def search(self, q: np.ndarray, k: int, threads: int):
        self.faiss.omp_set_num_threads(threads)
        d, i = self.index.search(q, k)
        return d, i

    def ram(self) -> int | None:
        return int(self.index.ntotal) * self.index.code_size if self.method == "faiss-flat" else None

    def file_bytes(self, folder: Path) -> int | None:
        path = folder / "i.faiss"
        try:
            self.faiss.write_index_binary(self.index, str(path))
        except RuntimeError:
            return None
        size = path.stat().st_size
        path.unlink()
        return size


def recall(ids: np.ndarray, exact: np.ndarray) -> float:
    hit = [len(np.intersect1d(a[a >= 0], b[b >= 0])) / max(1, (b >= 0).sum()) for a, b in zip(ids, exact)]
    return float(np.mean(hit))


def load_check(index: Cmhash, q: np.ndarray, folder: Path) -> dict:
    """Save, then load(mmap=True): seconds to return, and resident bytes after it and after one search."""
    path = folder / "i.cmhx"
    warm = HammingIndex(index.index.bits)
    warm.add(q[:10])
    warm.save(path)
    HammingIndex.load(path, mmap=True, method="scan").search(q[:1], 10, threads=1)  # compiles for read-only arrays
    index.index.save(path)
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold pages: resident memory counts what is touched
    os.close(fd)
    before = rss()
    t0 = time.perf_counter()
    loaded = HammingIndex.load(path, mmap=True, method="scan")
    load_s = time.perf_counter() - t0
    after_load = rss() - before
    loaded.search(q[:1], 10, threads=1)
    after_search = rss() - before
    del loaded
    path.unlink()
    return {"load_mmap_s": load_s, "rss_after_load": after_load, "rss_after_search": after_search}


def run_row(args, n: int, bits: int, source: str, out) -> None:
    nq = args.queries
    t0 = time.perf_counter()
    codes, queries = make_codes(source, n, nq, bits, seed=args.seed + n + bits)
    print(f"# N={n:.0e} bits={bits} source={source}: data in {time.perf_counter() - t0:.1f}s", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="search_scale_", dir=args.tmp))
    exact: dict[int, tuple] = {}
    for method in args.methods:
        gc.collect()
        base = rss()
        index = Cmhash(bits, method) if method in ("scan", "mih", "auto") else Faiss(bits, method, n)
        t0 = time.perf_counter()
        index.build(codes)
        build_s = time.perf_counter() - t0
        ram_rss = rss() - base
        ram = index.ram()
        file_bytes = index.file_bytes(folder)
        extra = load_check(index, queries, folder) if method == "scan" else {}
        q = queries[: args.peer_queries.get(method, nq)]
        for threads in args.threads:
            for k in args.k:
                if method != "scan" and k not in exact:
                    raise SystemExit("run method scan first: it is the exact reference")
                index.search(q[:2], k, threads)  # warm-up (and numba compilation)
                sec, (d, i) = timed(lambda: index.search(q, k, threads), min_s=args.min_s)
                if method == "scan":
                    exact.setdefault(k, (d, i))
                ed, ei = exact[k]
                ed, ei = ed[: len(q)], ei[: len(q)]
                same = bool(np.array_equal(np.asarray(d, np.int64), ed.astype(np.int64)) and np.array_equal(i, ei))
                rec = recall(i, ei)
                row = {"n": n, "bits": bits, "source": source, "method": method, "k": k, "threads": threads,
                       "queries": len(q), "qps": len(q) / sec, "ms_per_query": 1e3 * sec / len(q),
                       "build_s": build_s, "ram_bytes_per_code": None if ram is None else ram / n,
                       "rss_bytes_per_code": ram_rss / n, "rss_after_search_per_code": (rss() - base) / n,
                       "file_bytes_per_code": None if file_bytes is None else file_bytes / n,
                       "identical": same, "recall": rec, **extra}
                if method in ("mih", "auto") and index.index._tables is not None:  # noqa: SLF001
                    row["mih_m"] = index.index._tables.m  # noqa: SLF001
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + "\n")
                out.flush()
        del index
    os.rmdir(folder)


def memory_check(n: int) -> None:
    """The issue's memory rows: a HammingIndex(64) of n random codes, added at once or in 40 batches;
    array bytes and this process's RSS growth per code, after the adds and after one search."""
    codes = np.random.default_rng(0).integers(0, 256, (n, 8), dtype=np.uint8)
    q = codes[:100]
    warm = HammingIndex(64, method="scan")
    warm.add(codes[:5000])
    warm.search(q, 10, threads=1)  # numba compiled before measuring
    del warm
    for how in ("one add", "40 adds"):
        gc.collect()
        base = rss()
        index = HammingIndex(64, method="scan")
        for s in (range(0, n, n) if how == "one add" else range(0, n, -(-n // 40))):
            index.add(codes[s:s + (n if how == "one add" else -(-n // 40))])
        after_add = rss() - base
        index.search(q, 100, threads=1)
        print(f"| {n:,} | {how} | {sum(index.memory_bytes().values()) / n:.2f} | {after_add / n:.2f} | "
              f"{(rss() - base) / n:.2f} |")
        del index


def tables_check(n: int, folder: str | None) -> None:
    """MIH tables stored vs rebuilt: the build time against reading them back from a file."""
    codes, _ = make_codes("lsh", n, 1, 64, seed=n + 64)
    mih.build(codes[:1000], 1000, 0)  # compiled before timing
    t0 = time.perf_counter()
    t = mih.build(codes, n, 0)
    build = time.perf_counter() - t0
    path = Path(tempfile.mkdtemp(dir=folder)) / "tables.npy"
    np.save(path, np.concatenate([t.offsets, t.rows]))
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    t0 = time.perf_counter()
    np.load(path)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.load(path)
    warm = time.perf_counter() - t0
    print(f"| {n:,} | lsh | {t.m} | {build:.2f} | {path.stat().st_size / n:.2f} | {cold:.2f} | {warm:.2f} |")
    path.unlink()
    path.parent.rmdir()


def parse_peer_queries(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in METHODS or not value.isdigit():
            raise SystemExit(f"--peer-queries takes METHOD=COUNT with METHOD in {', '.join(METHODS)}, got {item!r}")
        out[name] = int(value)
    return out


def _rows(path: Path) -> dict[tuple, dict]:
    """The last row of each (n, bits, source, method, k, threads) in a results file."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[(r["n"], r["bits"], r["source"], r["method"], r["k"], r["threads"])] = r
    return out


def _n(n: int) -> str:
    return f"10^{round(np.log10(n))}" if n == 10 ** round(np.log10(n)) else f"{n:,}"


def markdown(path: Path) -> str:
    """Speed table (one line per row, k and threads), then sizes and build times, then mmap loads."""
    rows = _rows(path)
    cells = sorted({k[:3] + k[4:] for k in rows}, key=lambda c: (c[1], c[0], c[2], c[4], c[3]))
    lines = ["| N | bits | source | k | threads | cmhash scan ms/q | cmhash MIH ms/q | MIH vs scan | identical | "
             "cmhash auto ms/q | faiss flat ms/q | faiss multi-hash ms/q | multi-hash recall@k |",
             "|---|---:|---|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|"]

    def get(c, method):
        return rows.get((c[0], c[1], c[2], method, c[3], c[4]))

    def ms(r):
        if r is None:
            return "not run"
        return f"{r['ms_per_query']:.3f}" + (f" ({r['queries']} q)" if r["queries"] != 1000 else "")

    for c in cells:
        scan, fast, auto = get(c, "scan"), get(c, "mih"), get(c, "auto")
        flat, multi = get(c, "faiss-flat"), get(c, "faiss-mih")
        if scan is None:
            continue
        ratio = f"{scan['ms_per_query'] / fast['ms_per_query']:.1f}x" if fast else "-"
        same = "-" if fast is None else ("yes" if fast["identical"] and (auto is None or auto["identical"]) else "NO")
        lines.append(f"| {_n(c[0])} | {c[1]} | {c[2]} | {c[3]} | {c[4]} | {ms(scan)} | {ms(fast)} | {ratio} | {same} | "
                     f"{ms(auto)} | {ms(flat)} | {ms(multi)} | "
                     f"{'not run' if multi is None else round(multi['recall'], 3)} |")
    lines += ["", "| N | bits | source | method | build s | RAM B/code (arrays) | RSS growth B/code | file B/code |",
              "|---|---:|---|---|---:|---:|---:|---:|"]
    seen = set()
    for key, r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2], METHODS.index(kv[0][3]))):
        if key[:4] in seen:
            continue
        seen.add(key[:4])
        ram = r["ram_bytes_per_code"]
        fb = r["file_bytes_per_code"]
        name = r["method"] + (f" (m={r['mih_m']})" if "mih_m" in r else "")
        lines.append(f"| {_n(r['n'])} | {r['bits']} | {r['source']} | {name} | {r['build_s']:.1f} | "
                     f"{'-' if ram is None else f'{ram:.2f}'} | {r['rss_bytes_per_code']:.1f} | "
                     f"{'n/a' if fb is None else f'{fb:.2f}'} |")
    lines += ["", "| N | bits | source | load(mmap=True) s | RSS growth after load | after one scan search |",
              "|---|---:|---|---:|---:|---:|"]
    seen = set()
    for key, r in rows.items():
        if "load_mmap_s" in r and key[:3] not in seen:
            seen.add(key[:3])
            lines.append(f"| {_n(r['n'])} | {r['bits']} | {r['source']} | {r['load_mmap_s']:.4f} | "
                         f"{r['rss_after_load']:,} B | {r['rss_after_search']:,} B |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", nargs="+", type=float, default=[1e6])
    ap.add_argument("--bits", nargs="+", type=int, default=[64])
    ap.add_argument("--source", nargs="+", choices=("uniform", "lsh"), default=["uniform", "lsh"])
    ap.add_argument("--k", nargs="+", type=int, default=[1, 10, 100])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--peer-queries", nargs="*", default=[], help="METHOD=COUNT: fewer queries for slow peers")
    ap.add_argument("--min-s", type=float, default=1.0, help="repeat a timing while under this many seconds")
    ap.add_argument("--full", action="store_true", help="the whole grid: N 1e6 1e7 1e8 at 64 bits, 1e7 at 128")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for the temporary index files")
    ap.add_argument("--out", type=Path, default=RESULTS / "search_scale.jsonl")
    ap.add_argument("--print", action="store_true", help="only print the table of --out")
    ap.add_argument("--memory", type=int, help="only the memory check with this many 64-bit codes (e.g. 4000000)")
    ap.add_argument("--tables", type=int, help="only the stored-vs-rebuilt MIH tables check with this many codes")
    args = ap.parse_args()
    if args.tables:
        print("| codes | source | m | rebuild s | stored tables B/code | read s (after FADV_DONTNEED) | read s (cached) |"
              "\n|---:|---|---:|---:|---:|---:|---:|")
        tables_check(args.tables, args.tmp)
        return
    if args.memory:
        print("| codes | how | array B/code | RSS growth B/code after add | after a search |\n|---:|---|---:|---:|---:|")
        memory_check(args.memory)
        return
    if args.print:
        print(markdown(args.out))
        return
    args.peer_queries = parse_peer_queries(args.peer_queries)
    if "scan" in args.methods:
        args.methods = ["scan"] + [m for m in args.methods if m != "scan"]
    else:
        raise SystemExit("--methods must include scan: it is the exact reference")
    grid = [(int(n), b) for n in args.n for b in args.bits]
    if args.full:
        grid = [(10**6, 64), (10**7, 64), (10**8, 64), (10**7, 128)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as out:
        for n, bits in grid:
            for source in args.source:
                run_row(args, n, bits, source, out)
    print(markdown(args.out))


if __name__ == "__main__":
    main()
