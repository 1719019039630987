"""Ray scale-out, measured on this machine (1 vs 2 workers), and projected on paper to 1 billion codes.

Encoding: real coco-mini images (all 159, listed `--repeat` times so the work outlasts Ray's fixed
start-up costs) through an export's image encoder. Single process (`pipeline.encode_images`, 1 and
2 onnxruntime threads) against `encode_distributed` with 1 and 2 Ray actors (1 CPU and 1 thread
each). Wall time of the whole call: Ray Data planning, actor start-up, model load in every actor,
encoding, Parquet writing. The Ray codes are checked against the single-process codes.

Search: `--codes` random 64-bit codes (fixed seed), `--queries` queries, k = `--k`. In-process
HammingIndex (1 and 2 threads) against ShardedIndex with 1 and 2 shard actors (1 CPU, 1 thread
each); best of `--reps` runs; results must be identical (ids and distances, ties included).
Also: single-query latency (the fan-out cost), the driver-side merge cost for many shards, and the
resident memory a shard actor gains per code (RSS of its process before and after loading).

Projection: from those measurements and a stated node type (arguments), 1 billion 64-bit codes:
bytes per node, nodes needed, single-query latency and batch throughput. The assumptions are
printed with the table.

    nice .venv/bin/python bench/ray_scale.py [--export DIR]    # writes bench/results/ray_scale.{md,json}
    .venv/bin/python bench/ray_scale.py --project-only --node-cores 64 --node-ram-gib 256   # other nodes
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DATA = Path(os.environ.get("CMHASH_DATA", REPO.parent / "shared" / "data")) / "coco-mini"
EXPORT_PLACES = (Path.home() / ".cache" / "cmhash" / "exports", Path("/tmp/demo-cache/exports"))


def find_export() -> Path:
    for place in EXPORT_PLACES:
        for folder in sorted(place.glob("*")) if place.is_dir() else ():
            if (folder / "export.json").is_file():
                return folder
    raise SystemExit("no export folder found; make one with: .venv/bin/cmhash export onnx "
                     "zoo/pretrained/dhaph-coco-mini-64 --out DIR, then pass --export DIR")


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def best(fn, reps: int) -> tuple[float, object, float]:
    """(best seconds, the last result, median seconds) of `reps` runs."""
    runs = [timed(fn) for _ in range(reps)]
    secs = sorted(r[0] for r in runs)
    return secs[0], runs[-1][1], secs[len(secs) // 2]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ---------------------------------------------------------------------------------- encoding
def bench_encoding(args, tmp: Path) -> dict:
    """Each configuration runs `--rounds` times, in reversed order every other round, so that drift
    in the machine's load hits every configuration alike; the table gives the best and every run."""
    from cmhash.runtime.distributed.code_shards import read_code_shards
    from cmhash.runtime.distributed.encode import encode_distributed
    from cmhash.runtime.pipeline import EncoderOptions, encode_images

    images = sorted((DATA / "val2017").glob("*.jpg")) + sorted((DATA / "train2017").glob("*.jpg"))
    paths = [str(p) for p in images] * args.repeat
    n, ids = len(paths), np.arange(len(paths))
    encode_images(args.export, images, tmp / "warm.npz", EncoderOptions(progress=False))  # warm the file cache
    ref = None

    def single(threads: int):
        return lambda: encode_images(args.export, paths, tmp / "one.npz",
                                     EncoderOptions(threads=threads, progress=False)).codes

    def on_ray(workers: int):
        def run():
            encode_distributed(args.export, "image", paths, ids, tmp / "ray", workers=workers,
                               options=EncoderOptions(threads=1))
            return read_code_shards(tmp / "ray").codes
        return run

    configs = [(f"single process, {t} onnxruntime thread(s)", t, single(t)) for t in (1, 2)]
    configs += [(f"Ray Data, {w} actor(s) x 1 thread", w, on_ray(w)) for w in (1, 2)]
    times: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    identical = dict.fromkeys(times, True)
    for r in range(args.rounds):
        for name, _, fn in configs if r % 2 == 0 else configs[::-1]:
            secs, codes = timed(fn)
            times[name].append(secs)
            ref = codes if ref is None else ref
            identical[name] &= bool(np.array_equal(codes, ref))
    overhead, _ = timed(lambda: encode_distributed(args.export, "image", paths[:8], ids[:8], tmp / "tiny",
                                                   workers=1, options=EncoderOptions(threads=1)))
    rows = [{"how": name, "workers": w, "s": min(times[name]), "runs_s": times[name],
             "images_per_s": n / min(times[name]), "identical": identical[name]} for name, w, _ in configs]
    return {"images": n, "distinct_images": len(images), "rows": rows, "ray_run_overhead_s": overhead}


# ---------------------------------------------------------------------------------- search
def bench_search(args, tmp: Path) -> dict:
    import ray

    from cmhash.runtime.distributed.merge import merge_topk
    from cmhash.runtime.distributed.sharded_index import ShardedIndex, _remote_shard
    from cmhash.runtime.index import HammingIndex

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (args.codes, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, (args.queries, 8), dtype=np.uint8)
    single = HammingIndex(64)
    single.add(codes)
    want = single.search(queries, args.k)
    rows = []
    for threads in (1, 2):
        secs, got, med = best(lambda: single.search(queries, args.k, threads=threads), args.reps)
        rows.append({"how": f"in process, {threads} thread(s)", "workers": threads, "s": secs, "median_s": med,
                     "qps": args.queries / secs, "identical": True})
    latency = {"in process, 1 thread": best(lambda: single.search(queries[:1], args.k, threads=1), 20)[0]}
    for shards in (1, 2):
        with ShardedIndex(64, shards, num_cpus=1, threads=1) as index:
            build_s, _ = timed(lambda: index.add(codes))
            index.search(queries, args.k)  # warm-up: numba kernels load in each actor
            secs, got, med = best(lambda: index.search(queries, args.k), args.reps)
            same = bool(np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]))
            rows.append({"how": f"ShardedIndex, {shards} shard actor(s) x 1 thread", "workers": shards, "s": secs,
                         "median_s": med, "qps": args.queries / secs, "identical": same, "add_s": build_s})
            latency[f"ShardedIndex, {shards} shard(s)"] = best(lambda: index.search(queries[:1], args.k), 20)[0]
            if shards == 1:
                save_s, _ = timed(lambda: index.save(tmp / "db1"))
                rows[-1]["save_s"] = save_s
    # Resident memory a shard actor gains per code, loading the saved 1-shard index.
    from cmhash.runtime.formats.sharded_index import read_shard_manifest

    entry = read_shard_manifest(tmp / "db1").shards[0]
    actor = _remote_shard().options(num_cpus=1).remote(0, 64, threads=1)
    ray.get(actor.add.remote(codes[:1], np.array([0]), np.array([0])))
    ray.get(actor.search.remote(queries[:1], 1))  # numba kernels loaded before the baseline
    pid = ray.get(actor.info.remote())["pid"]
    before = rss_bytes(pid)
    load_s, _ = timed(lambda: ray.get(actor.load.remote(str(tmp / "db1" / entry.index),
                                                        str(tmp / "db1" / entry.seqs), entry.count, entry.seq_crc32)))
    ray.get(actor.search.remote(queries, args.k))
    per_code = (rss_bytes(pid) - before) / args.codes
    ray.kill(actor)
    # Driver-side merge of S shards' top-k (1000 queries): what one more shard costs the driver.
    merge = {}
    for s in (2, 16, 64):
        parts = [(rng.integers(0, 30, (args.queries, args.k)).astype(np.int32),
                  rng.integers(0, 10**9, (args.queries, args.k)), rng.integers(0, 10**9, (args.queries, args.k)))
                 for _ in range(s)]
        merge[s] = best(lambda: merge_topk(parts, args.k), 3)[0]
    return {"codes": args.codes, "queries": args.queries, "k": args.k, "rows": rows, "latency_s": latency,
            "shard_rss_bytes_per_code": per_code, "shard_load_s": load_s, "merge_s": merge}


# ---------------------------------------------------------------------------------- projection
def project(args, search: dict) -> dict:
    """1e9 codes on nodes of the stated type, from the measured single-shard rates (see the md text).

    Two layouts, because HammingIndex parallelises a search over its queries, not over its codes:
    "1 shard/node" (C threads each) uses every core only for batches, so one query scans a node's
    codes on one core; "C shards/node" (1 thread each) splits one query over every core, and the
    driver merges C times more candidates per query.
    """
    one = next(r for r in search["rows"] if r["how"].startswith("ShardedIndex, 1 "))
    scan_batch = one["qps"] * search["codes"]  # code comparisons per second per thread, batched queries
    lat1 = search["latency_s"]["in process, 1 thread"]
    scan_single = search["codes"] / lat1  # codes per second per thread, one query at a time
    fanout = max(0.0, search["latency_s"]["ShardedIndex, 1 shard(s)"] - lat1)  # Ray call + merge, one query
    most = max(search["merge_s"])  # merge cost is linear in shards x queries x k: scale the largest measurement
    merge_unit = search["merge_s"][most] / (most * search["queries"])  # seconds per query per shard
    per_code = max(search["shard_rss_bytes_per_code"], 8.0)
    usable = args.node_ram_gib * 2**30 * args.ram_fraction
    nodes_mem = math.ceil(args.target * per_code / usable)
    cores, q = args.node_cores, args.batch
    node_bw, core_bw = args.node_bw_gbs * 1e9, min(args.core_bw_gbs, args.node_bw_gbs) * 1e9
    rows = []
    for nodes in sorted({nodes_mem, *args.cluster_nodes}):
        if nodes < nodes_mem:
            continue
        per_node = args.target / nodes
        batch_cpu = q * per_node / (cores * scan_batch)  # the same work in both layouts
        for layout, shards, single_cpu, single_bw, batch_bw in (
                ("1 shard/node", nodes, per_node / scan_single, per_node * 8 / core_bw,
                 cores * per_node * 8 / node_bw),
                (f"{cores} shards/node", nodes * cores, per_node / (cores * scan_single), per_node * 8 / node_bw,
                 per_node * 8 / node_bw)):
            rows.append({"nodes": nodes, "layout": layout, "codes_per_node": per_node,
                         "bytes_per_node": per_node * per_code,
                         "latency_ms": (max(single_cpu, single_bw) + fanout + shards * merge_unit) * 1e3,
                         "latency_bound": "CPU" if single_cpu >= single_bw else "memory",
                         "batch_qps": q / (max(batch_cpu, batch_bw) + q * shards * merge_unit),
                         "batch_bound": "merge" if q * shards * merge_unit > max(batch_cpu, batch_bw)
                         else ("CPU" if batch_cpu >= batch_bw else "memory")})
    return {"target": args.target, "bytes_per_code": per_code, "nodes_by_memory": nodes_mem,
            "scan_batch_per_thread": scan_batch, "scan_single_per_thread": scan_single, "fanout_s": fanout,
            "merge_per_query_shard_s": merge_unit, "batch": q,
            "node": {"cores": cores, "ram_gib": args.node_ram_gib, "ram_fraction": args.ram_fraction,
                     "bw_gbs": args.node_bw_gbs, "core_bw_gbs": args.core_bw_gbs}, "rows": rows}


# ---------------------------------------------------------------------------------- report
def markdown(meta: dict, enc: dict, srch: dict, proj: dict) -> str:
    out = [f"- date: {meta['date']}; machine: {meta['machine']}; Python {meta['python']}; ray {meta['ray']}, "
           f"onnxruntime {meta['onnxruntime']}, numba {meta['numba']}, numpy {meta['numpy']}",
           f"- 1-minute load average {meta['load'][0]:.1f} before and {meta['load'][1]:.1f} after (2 cores, shared); "
           f"local cluster start (`ray.init(num_cpus=2)`): {meta['ray_init_s']:.1f} s", "",
           f"Encoding {enc['images']} images ({enc['distinct_images']} distinct coco-mini images, listed "
           f"{enc['images'] // enc['distinct_images']} times), export `{meta['export']}`:", "",
           "| how | best wall s | images/s | every run s | codes identical to single process |",
           "|---|---:|---:|---|:---:|"]
    out += [f"| {r['how']} | {r['s']:.1f} | {r['images_per_s']:.1f} | {', '.join(f'{t:.1f}' for t in r['runs_s'])} "
            f"| {'yes' if r['identical'] else 'NO'} |" for r in enc["rows"]]
    out += ["", f"Fixed cost of one Ray encoding run (8 images, 1 actor: planning, actor start, model load, "
                f"Parquet write): {enc['ray_run_overhead_s']:.1f} s.", "",
            f"Search, {srch['codes']:,} random 64-bit codes, {srch['queries']:,} queries, k = {srch['k']} "
            f"({meta.get('reps', '?')} runs each):", "",
            "| how | best s per batch | median s | queries/s (best) | identical to one HammingIndex |",
            "|---|---:|---:|---:|:---:|"]
    out += [f"| {r['how']} | {r['s']:.3f} | {r['median_s']:.3f} | {r['qps']:,.0f} | "
            f"{'yes' if r['identical'] else 'NO'} |" for r in srch["rows"]]
    lat = "; ".join(f"{k}: {v * 1e3:.2f} ms" for k, v in srch["latency_s"].items())
    merge = "; ".join(f"{s} shards: {v * 1e3:.0f} ms" for s, v in srch["merge_s"].items())
    out += ["", f"Single-query latency (1 query, k = {srch['k']}, {srch['codes']:,} codes): {lat}.",
            f"Driver-side merge of every shard's top-{srch['k']} for {srch['queries']:,} queries: {merge}.",
            f"A shard actor's resident memory grew by {srch['shard_rss_bytes_per_code']:.1f} bytes per code when it "
            f"loaded the saved {srch['codes']:,}-code shard (in {srch['shard_load_s']:.2f} s).", ""]
    n = proj["node"]
    out += [f"Projection to {proj['target']:.0e} 64-bit codes on nodes with {n['cores']} cores and {n['ram_gib']} GiB "
            f"RAM ({n['ram_fraction']:.0%} of it for shards), assumed {n['bw_gbs']:g} GB/s memory bandwidth per node "
            f"and {n['core_bw_gbs']:g} GB/s per core; batches of {proj['batch']:,} queries, k = {srch['k']}:", "",
            "| nodes | layout | codes per node | bytes per node | 1-query latency ms | bound | batch queries/s "
            "| bound |",
            "|---:|---|---:|---:|---:|---|---:|---|"]
    out += [f"| {r['nodes']} | {r['layout']} | {r['codes_per_node']:,.0f} | {r['bytes_per_node'] / 2**30:.1f} GiB | "
            f"{r['latency_ms']:,.0f} | {r['latency_bound']} | {r['batch_qps']:,.0f} | {r['batch_bound']} |"
            for r in proj["rows"]]
    out += ["", f"Measured inputs: {proj['bytes_per_code']:.1f} B per code (a shard actor's RSS growth); "
                f"{proj['scan_single_per_thread'] / 1e9:.2f} G codes/s per thread for one query (in process) and "
                f"{proj['scan_batch_per_thread'] / 1e9:.2f} G code comparisons/s per thread for batches (through one "
                f"shard actor); {proj['fanout_s'] * 1e3:.2f} ms for the Ray round trip of one query; "
                f"{proj['merge_per_query_shard_s'] * 1e6:.1f} µs of driver merge per query per shard. "
                f"Memory alone needs {proj['nodes_by_memory']} node(s)."]
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", type=Path, default=None)
    p.add_argument("--repeat", type=int, default=8, help="list the 159 images this many times")
    p.add_argument("--codes", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--reps", type=int, default=5, help="timed runs of each search configuration")
    p.add_argument("--rounds", type=int, default=2, help="runs of each encoding configuration")
    p.add_argument("--target", type=float, default=1e9)
    p.add_argument("--node-cores", type=int, default=32)
    p.add_argument("--node-ram-gib", type=int, default=128)
    p.add_argument("--ram-fraction", type=float, default=0.6, help="share of RAM for shards (Ray's object store "
                                                                    "takes 30%% by default)")
    p.add_argument("--node-bw-gbs", type=float, default=100.0, help="assumed memory bandwidth per node, GB/s")
    p.add_argument("--core-bw-gbs", type=float, default=10.0, help="assumed memory bandwidth one core can draw, GB/s")
    p.add_argument("--batch", type=int, default=1000, help="queries per batch in the projection")
    p.add_argument("--cluster-nodes", type=int, nargs="*", default=[1, 4, 16])
    p.add_argument("--project-only", action="store_true",
                   help="redo only the projection (other node assumptions) from bench/results/ray_scale.json")
    args = p.parse_args()
    if args.project_only:
        saved = json.loads((RESULTS / "ray_scale.json").read_text())
        search = {**saved["search"], "merge_s": {int(s): v for s, v in saved["search"]["merge_s"].items()}}
        proj = project(args, search)
        text = markdown(saved["meta"], saved["encoding"], search, proj)
        (RESULTS / "ray_scale.md").write_text(text)
        print(text)
        return 0
    args.export = (args.export or find_export()).resolve()

    import numba
    import onnxruntime
    import ray

    from cmhash.runtime.distributed.cluster import init

    load0 = os.getloadavg()[0]
    ray_init_s, _ = timed(lambda: init(num_cpus=2))
    with tempfile.TemporaryDirectory(prefix="ray_scale.") as tmp:
        enc = bench_encoding(args, Path(tmp))
        print(json.dumps(enc, indent=1), flush=True)
        srch = bench_search(args, Path(tmp))
        print(json.dumps(srch, indent=1, default=str), flush=True)
    ray.shutdown()
    proj = project(args, srch)
    meta = {"date": datetime.date.today().isoformat(), "machine": f"{cpu_name()}, "
            f"{len(os.sched_getaffinity(0))} CPUs available", "python": platform.python_version(),
            "ray": ray.__version__, "onnxruntime": onnxruntime.__version__, "numba": numba.__version__,
            "numpy": np.__version__, "load": (load0, os.getloadavg()[0]), "ray_init_s": ray_init_s,
            "export": args.export.name, "reps": args.reps}
    text = markdown(meta, enc, srch, proj)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray_scale.md").write_text(text)
    (RESULTS / "ray_scale.json").write_text(json.dumps({"meta": meta, "encoding": enc, "search": srch,
                                                        "projection": proj}, indent=1, default=str))
    print(text)
    ok = all(r["identical"] for r in enc["rows"] + srch["rows"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
