"""GPU Hamming search: correctness against the CPU index, timings, and popcount utilisation.

Run on a CUDA machine with numpy and CuPy (numba and faiss-cpu are used when present):

    pip install --no-deps --no-build-isolation -e .   # or nothing: see _import_cmhash below
    python bench/gpu_check.py [--quick] [--encoder EXPORT_DIR]

Prints one JSON object:
  env          device name, SMs, SM clock, CuPy / numba / faiss availability
  correctness  per (bits, k, data kind): GPU == CPU index (numba or numpy) and, on a subset,
               == numpy brute force (hamming_distances + sort by (distance, position));
               also == faiss IndexBinaryFlat when faiss is installed
  timings      64-bit codes, n in {1M, 10M}, nq in {1000, 10000}, k = 100:
               device_ms  (median of CUDA-event-timed runs on device-resident queries/db),
               end_to_end_ms (numpy queries in, numpy results out, via HammingIndex.search),
               queries_per_s, and the same search on the CPU (numba, all cores) / faiss-cpu
  popcount     one distance pass (cmh_count over the whole db) timed alone: 32-bit popcounts/s
               achieved vs the assumed peak = SMs x 16 popc/clk/SM x SM clock (the CUDA C++
               Programming Guide's throughput table gives 16 results per clock per SM for 32-bit
               population count on compute capability 9.0). A search makes one full pass plus
               1/16 of one for its bound (plus a second full pass for queries whose candidate
               buffer overflows): search_fraction_of_peak_popc counts n x nq x W popcounts once
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _import_cmhash():
    """Import cmhash; without an install, map cmhash.runtime -> REPO/runtime by hand."""
    try:
        import cmhash.runtime.index  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO))
        import cmhash

        cmhash.__path__.append(str(REPO))  # cmhash.runtime -> REPO/runtime
        import cmhash.runtime.index  # noqa: F401


_import_cmhash()

from cmhash.runtime import search_cpu  # noqa: E402
from cmhash.runtime.codes import hamming_distances  # noqa: E402
from cmhash.runtime.index import PAD_DISTANCE, PAD_ID, HammingIndex  # noqa: E402

POPC_PER_CLK_PER_SM = 16  # 32-bit __popc, compute capability 9.0 (assumption, see docstring)


def reference(queries, db, k):
    n = db.shape[0]
    out_d = np.full((len(queries), k), PAD_DISTANCE, np.int32)
    out_i = np.full((len(queries), k), PAD_ID, np.int64)
    dist = hamming_distances(queries, db).astype(np.int64)
    for r, row in enumerate(dist):
        order = np.lexsort((np.arange(n), row))[:k]
        out_d[r, : order.size] = row[order]
        out_i[r, : order.size] = order
    return out_d, out_i


def make_db(rng, kind, n, nb):
    if kind == "random":
        return rng.integers(0, 256, (n, nb), dtype=np.uint8)
    if kind == "few_bits":  # few varying bits: huge tie groups at every distance
        codes = rng.integers(0, 256, (n, nb), dtype=np.uint8)
        if nb > 1:
            codes[:, 1:] &= np.uint8(0x11)
        return codes
    pool = rng.integers(0, 256, (5, nb), dtype=np.uint8)  # 5 distinct codes: tie overflow path
    return pool[rng.integers(0, 5, n)]


def same(a, b):
    return bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))


def device_info(cp):
    dev = cp.cuda.Device(0)
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    sms = int(dev.attributes["MultiProcessorCount"])
    clock_khz, source = None, None
    for attr in ("ClockRate",):
        try:
            clock_khz, source = int(dev.attributes[attr]), "cudaDevAttrClockRate"
        except Exception:
            pass
    if not clock_khz and "clockRate" in props:
        clock_khz, source = int(props["clockRate"]), "cudaDeviceProp.clockRate"
    if not clock_khz:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20).stdout.split()[0]
            clock_khz, source = int(float(out) * 1000), "nvidia-smi clocks.max.sm"
        except Exception:
            clock_khz, source = 1980000, "assumed 1980 MHz (H100 SXM boost)"
    cc = f"{props['major']}.{props['minor']}"
    return {"name": name, "compute_capability": cc, "sms": sms, "sm_clock_mhz": clock_khz / 1000,
            "clock_source": source}


def time_events(cp, fn, reps):
    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(reps):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return float(np.median(times)), times


def correctness(cp, quick):
    rng = np.random.default_rng(0)
    rows = []
    widths = (16, 64, 128) if quick else (8, 16, 24, 32, 64, 96, 128, 256)
    for bits in widths:
        nb = bits // 8
        for kind in ("random", "few_bits", "dups"):
            n = 50_000 if quick else 200_000
            db = make_db(rng, kind, n, nb)
            queries = np.concatenate([rng.integers(0, 256, (64, nb), dtype=np.uint8), db[:: n // 16]])
            ids = rng.permutation(n).astype(np.int64) * 3 + 1
            gpu = HammingIndex(bits, device="cuda")
            cpu = HammingIndex(bits)
            gpu.add(db, ids)
            cpu.add(db, ids)
            for k in (1, 10, 100, 1000):
                g = gpu.search(queries, k)
                row = {"bits": bits, "data": kind, "n": n, "k": k, "nq": len(queries),
                       "gpu_equals_cpu": same(g, cpu.search(queries, k)), "cpu_backend": cpu.backend}
                sub = db[:3000]
                gs = HammingIndex(bits, device="cuda")
                gs.add(sub)
                row["gpu_equals_brute_force_n3000"] = same(gs.search(queries[:16], k), reference(queries[:16], sub, k))
                try:
                    import faiss

                    flat = faiss.IndexBinaryFlat(bits)
                    flat.add(db)
                    fd, fi = flat.search(queries, k)
                    row["gpu_equals_faiss"] = same(g, (fd, ids[fi]))
                except ImportError:
                    pass
                rows.append(row)
    return rows


def timings(cp, quick, info):
    from cmhash.runtime.search_gpu import GpuSearcher

    rng = np.random.default_rng(1)
    out = []
    sizes = ((1_000_000, 1000),) if quick else ((1_000_000, 1000), (1_000_000, 10_000),
                                                (10_000_000, 1000), (10_000_000, 10_000))
    peak = info["sms"] * POPC_PER_CLK_PER_SM * info["sm_clock_mhz"] * 1e6
    for n, nq in sizes:
        db = rng.integers(0, 256, (n, 8), dtype=np.uint8)
        queries = rng.integers(0, 256, (nq, 8), dtype=np.uint8)
        index = HammingIndex(64, device="cuda")
        index.add(db)
        gs: GpuSearcher = index._gpu  # noqa: SLF001
        d_db = gs.database(index._state)  # noqa: SLF001
        d_q = gs.query_words(queries)
        k = 100
        dev_ms, _ = time_events(cp, lambda: gs.topk_device(d_db, d_q, k), reps=5)
        gs.profile = []
        gs.topk_device(d_db, d_q, k)
        cp.cuda.Device().synchronize()
        marks, gs.profile = gs.profile, None
        stages = {b[0]: round(cp.cuda.get_elapsed_time(a[1], b[1]), 3) for a, b in zip(marks[:-1], marks[1:])
                  if b[0] != "start"}
        e2e = []
        for _ in range(3):  # numpy in, numpy out (query upload, result download, ids mapping)
            t0 = time.perf_counter()
            gd, gi = index.search(queries, k)
            e2e.append((time.perf_counter() - t0) * 1e3)
        e2e_ms = float(np.median(e2e))
        # one distance pass alone, with the real thresholds as limits (as in a search's count pass)
        hist = cp.zeros((nq, 65), cp.int32)
        lim = cp.asarray(gd[:, -1].astype(np.int32))
        pass_ms, _ = time_events(cp, lambda: (hist.fill(0), gs._count(d_db, n, n, d_q, nq, lim, hist)), reps=5)  # noqa: SLF001
        popc = n * nq * gs.W  # 32-bit popcounts in one pass
        row = {"bits": 64, "n": n, "nq": nq, "k": k, "device_ms": round(dev_ms, 3),
               "device_queries_per_s": round(nq / dev_ms * 1e3),
               "stages_ms": stages, "candidate_overflow_queries": gs.last_overflow, "end_to_end_ms": round(e2e_ms, 3), "end_to_end_queries_per_s": round(nq / e2e_ms * 1e3),
               "one_pass_ms": round(pass_ms, 3),
               "one_pass_popc_per_s": popc / pass_ms * 1e3,
               "one_pass_fraction_of_peak_popc": round(popc / pass_ms * 1e3 / peak, 3),
               "search_fraction_of_peak_popc": round(popc / dev_ms * 1e3 / peak, 3)}
        if n * nq <= 1_000_000 * 10_000:  # CPU comparison (all cores), same results required
            cpu = HammingIndex(64)
            cpu.add(db)
            cpu.search(queries[:10], k)
            t0 = time.perf_counter()
            cd, ci = cpu.search(queries, k)
            cpu_s = time.perf_counter() - t0
            row.update({"cpu_backend": cpu.backend, "cpu_threads": search_cpu.default_threads(),
                        "cpu_queries_per_s": round(nq / cpu_s), "gpu_equals_cpu": same((gd, gi), (cd, ci))})
        try:
            import faiss

            flat = faiss.IndexBinaryFlat(64)
            flat.add(db)
            flat.search(queries[:10], k)
            t0 = time.perf_counter()
            fd, fi = flat.search(queries, k)
            fs = time.perf_counter() - t0
            row.update({"faiss_cpu_queries_per_s": round(nq / fs), "gpu_equals_faiss": same((gd, gi), (fd, fi))})
        except ImportError:
            row["faiss_cpu_queries_per_s"] = None
        out.append(row)
        index = d_db = d_q = hist = None  # free the device memory before the next size
        cp.get_default_memory_pool().free_all_blocks()
    return out, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer widths and sizes")
    parser.add_argument("--encoder", metavar="EXPORT_DIR",
                        help="also check onnxruntime's CUDA provider on this export folder (bench/gpu_encoder.py)")
    args = parser.parse_args()
    import cupy as cp

    from cmhash.runtime.search_gpu import gpu_available

    if not gpu_available():
        print(json.dumps({"error": "no CUDA device visible to CuPy"}))
        return 2
    info = device_info(cp)
    env = {**info, "cupy": cp.__version__, "numpy": np.__version__,
           "numba": search_cpu.numba_available(), "cpu_threads": search_cpu.default_threads()}
    try:
        import faiss

        env["faiss"] = faiss.__version__
    except ImportError:
        env["faiss"] = None
    t0 = time.perf_counter()
    rows = correctness(cp, args.quick)
    correct_s = time.perf_counter() - t0
    checks = [v for r in rows for key, v in r.items() if key.startswith("gpu_equals")]
    timing_rows, peak = timings(cp, args.quick, info)
    checks += [r[key] for r in timing_rows for key in r if key.startswith("gpu_equals")]
    result = {"env": env, "all_identical": all(checks), "n_checks": len(checks),
              "correctness_seconds": round(correct_s, 1),
              "correctness_failures": [r for r in rows if not all(v for key, v in r.items() if key.startswith("gpu_equals"))],
              "correctness": rows if os.environ.get("GPU_CHECK_VERBOSE") else f"{len(rows)} cases",
              "assumed_peak_popc32_per_s": peak,
              "peak_assumption": f"{info['sms']} SMs x {POPC_PER_CLK_PER_SM} popc/clk/SM x {info['sm_clock_mhz']} MHz",
              "timings": timing_rows}
    if args.encoder:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from gpu_encoder import encoder_check

        result["encoder"] = encoder_check(args.encoder)
    print(json.dumps(result, indent=1))
    return 0 if result["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
