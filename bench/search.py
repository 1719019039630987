"""Hamming top-k throughput: cmhash's HammingIndex vs FAISS IndexBinaryFlat, same results required.

Random codes (fixed seed), 1,000 queries, k = 100, for 16/32/64/128 bits x 10k/100k/1M codes x
1 and 2 threads (FAISS through faiss.omp_set_num_threads, ours through `threads=`). Each cell is
the best of several timed runs after a warm-up. Every configuration checks that our distances and
ids equal FAISS's exactly (tie order included) and prints MISMATCH loudly if not (exit status 1).

    .venv/bin/python bench/search.py            # full table (a few minutes on 2 cores)
    .venv/bin/python bench/search.py --quick    # 64 bits, 100k and 1M only
    python bench/search.py --gpu                # also the CuPy backend (needs a CUDA GPU)

Writes bench/results/search_cpu.md (and bench/results/search_gpu.md with --gpu).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
try:
    import cmhash.runtime.index  # noqa: F401
except ImportError:  # not installed: map cmhash.runtime -> REPO/runtime
    sys.path.insert(0, str(REPO))
    import cmhash

    cmhash.__path__.append(str(REPO))

from cmhash.runtime import search_cpu  # noqa: E402
from cmhash.runtime.index import HammingIndex  # noqa: E402

RESULTS = REPO / "bench" / "results"


def best_time(fn, min_reps=3, budget_s=4.0):
    """Best wall time of at least min_reps runs (fewer extra runs once the budget is spent)."""
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 10):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1 and times[0] > budget_s:  # a very slow cell: one run is enough
            break
    return min(times), out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_lines(faiss) -> list[str]:
    import importlib.metadata as md

    def version(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "not installed"

    return [
        f"- date: {datetime.date.today().isoformat()}; machine: {cpu_name()}, "
        f"{search_cpu.default_threads()} CPUs available, Python {platform.python_version()}",
        f"- numpy {np.__version__}, numba {version('numba')}, faiss-cpu {version('faiss-cpu')}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 bits, 100k and 1M codes only")
    parser.add_argument("--gpu", action="store_true", help="also time the CuPy backend")
    parser.add_argument("--numpy", action="store_true", help="also time the pure-numpy fallback")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    try:
        import faiss
    except ImportError:
        faiss = None
        print("!! faiss-cpu is not installed: timing cmhash alone, nothing to compare against", flush=True)

    widths = (64,) if args.quick else (16, 32, 64, 128)
    sizes = (100_000, 1_000_000) if args.quick else (10_000, 100_000, 1_000_000)
    thread_counts = sorted({1, min(2, search_cpu.default_threads())})
    k, nq = args.k, args.queries
    rows, gpu_rows, mismatches = [], [], 0
    for bits in widths:
        for n in sizes:
            rng = np.random.default_rng(1000 * bits + n % 997)
            db = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
            queries = rng.integers(0, 256, (nq, bits // 8), dtype=np.uint8)
            index = HammingIndex(bits, method="scan")
            index.add(db)
            index.search(queries[:8], k)  # compile / warm up
            flat = None
            if faiss is not None:
                flat = faiss.IndexBinaryFlat(bits)
                flat.add(db)
            ours_any = None
            for threads in thread_counts:
                t_ours, ours = best_time(lambda: index.search(queries, k, threads=threads))
                ours_any = ours
                row = {"bits": bits, "n": n, "threads": threads, "ours": nq / t_ours}
                if flat is not None:
                    faiss.omp_set_num_threads(threads)
                    flat.search(queries[:8], k)
                    t_faiss, theirs = best_time(lambda: flat.search(queries, k))
                    same = np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])
                    row.update({"faiss": nq / t_faiss, "ratio": t_faiss / t_ours, "identical": same})
                    if not same:
                        mismatches += 1
                        print(f"!!!!!!!! MISMATCH vs FAISS: bits={bits} n={n} threads={threads} !!!!!!!!",
                              flush=True)
                if args.numpy:
                    numpy_index = HammingIndex(bits, backend="numpy")
                    numpy_index.add(db)
                    t_np, alt = best_time(lambda: numpy_index.search(queries, k, threads=threads),
                                          min_reps=1, budget_s=0)
                    row["numpy"] = nq / t_np
                    if not (np.array_equal(alt[0], ours[0]) and np.array_equal(alt[1], ours[1])):
                        mismatches += 1
                        print(f"!!!!!!!! MISMATCH numpy vs numba: bits={bits} n={n} !!!!!!!!", flush=True)
                rows.append(row)
                print(" ".join(f"{key}={val:.3g}" if isinstance(val, float) else f"{key}={val}"
                               for key, val in row.items()), flush=True)
            if args.gpu:
                gpu = HammingIndex(bits, device="cuda")
                gpu.add(db)
                gpu.search(queries[:8], k)
                t_gpu, g = best_time(lambda: gpu.search(queries, k))
                same = np.array_equal(g[0], ours_any[0]) and np.array_equal(g[1], ours_any[1])
                if not same:
                    mismatches += 1
                    print(f"!!!!!!!! MISMATCH GPU vs CPU: bits={bits} n={n} !!!!!!!!", flush=True)
                gpu_rows.append({"bits": bits, "n": n, "gpu": nq / t_gpu,
                                 "cpu": max(r["ours"] for r in rows if r["bits"] == bits and r["n"] == n),
                                 "identical": same})
                print(f"gpu bits={bits} n={n} q/s={nq / t_gpu:.0f} identical={same}", flush=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "bench/search.py " + " ".join(sys.argv[1:])
    lines = ["# Hamming top-k search, CPU: cmhash vs FAISS IndexBinaryFlat",
             "",
             f"`{cmd.strip()}`: random codes, {nq} queries, k = {k}; queries/s, best of several runs; "
             f"ratio = ours / FAISS; identical = same distances and ids, tie order included.",
             "", *env_lines(faiss), f"- cmhash backend: {HammingIndex(64).backend}", ""]
    head = "| bits | codes | threads | cmhash q/s | FAISS q/s | ratio | identical |"
    sep = "|---:|---:|---:|---:|---:|---:|:---:|"
    if args.numpy:
        head += " numpy fallback q/s |"
        sep += "---:|"
    lines += [head, sep]
    for r in rows:
        faiss_cells = (f"{r['faiss']:,.0f} | {r['ratio']:.2f} | {'yes' if r['identical'] else '**NO**'}"
                       if "faiss" in r else "- | - | -")
        line = f"| {r['bits']} | {r['n']:,} | {r['threads']} | {r['ours']:,.0f} | {faiss_cells} |"
        if args.numpy:
            line += f" {r['numpy']:,.0f} |"
        lines.append(line)
    (RESULTS / "search_cpu.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / 'search_cpu.md'}")
    if args.gpu:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        glines = ["# Hamming top-k search, GPU (CuPy raw kernels) vs cmhash CPU", "",
                  f"`{cmd.strip()}` on {name}: random codes, {nq} queries, k = {k}; queries/s end to end "
                  "(numpy queries in, numpy results out), best of several runs; CPU = best of the thread "
                  "counts above.", "", *env_lines(faiss), "",
                  "| bits | codes | GPU q/s | CPU q/s | identical |", "|---:|---:|---:|---:|:---:|"]
        glines += [f"| {r['bits']} | {r['n']:,} | {r['gpu']:,.0f} | {r['cpu']:,.0f} | "
                   f"{'yes' if r['identical'] else '**NO**'} |" for r in gpu_rows]
        (RESULTS / "search_gpu.md").write_text("\n".join(glines) + "\n")
        print(f"wrote {RESULTS / 'search_gpu.md'}")
    if mismatches:
        print(f"!!!!!!!! {mismatches} MISMATCH(ES) !!!!!!!!")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
