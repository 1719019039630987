"""Encoder speed: onnxruntime (cmhash.runtime) vs PyTorch eager, cold start, and the runtime's install size.

Same run, same inputs: real coco-mini images (preprocessed once by ImagePreprocess) and captions
(tokenized once by the export's tokenizer.json); both backends get the identical arrays, so the
tables time the encoder (backbone + hash head + bit packing) alone. Preprocessing and tokenization
are timed separately (they are the same for both). Each cell: median of runs in alternating blocks
(see timed_blocks), so drift on a shared machine hits both sides alike. Ratio = PyTorch time /
onnxruntime time (> 1: onnxruntime is faster).

Cold start: a fresh `.venv-runtime` interpreter (no torch installed) runs `import
cmhash.runtime.encoder`, `load_encoder(...)` (sha256 check of the files, onnxruntime session,
tokenizer) and one encode; median of several processes. The OS file cache is warm (files were read
before), so this is the start-up cost, not the disk.

Install size: `du` of .venv-runtime's site-packages, and the biggest distributions (sum of the files
in their RECORD).

    .venv/bin/python bench/encode.py                       # writes bench/results/encode.md
    .venv/bin/python bench/encode.py --provider cuda --device cuda   # on a GPU machine with
                                                           # onnxruntime-gpu (CUDAExecutionProvider)

Default model: runs/export_validation/dmsh/{checkpoint,export} (bench/export_validation.py makes
it: DMsH-LN offline preset, 64 bits, EfficientNet-Lite0 + MiniLM-L6 frozen, trained on coco-mini).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cmhash.runtime.formats.export_manifest import read_export_manifest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RUN = REPO / "runs" / "export_validation" / "dmsh"
RUNTIME_PYTHON = REPO / ".venv-runtime" / "bin" / "python"
RESULTS = REPO / "bench" / "results"


def timed_blocks(fns, min_reps: int, budget_s: float, block: int = 3) -> list[float]:
    """Median seconds of each function, timed in alternating blocks (A x block, pause, B x block, ...).

    Why blocks and pauses, not A, B, A, B: both runtimes keep their worker threads spinning for a while
    after a call (onnxruntime's intra-op pool, OpenMP's block time), and on 2 cores a spinning pool of
    one side slows the other side's next call several-fold. Each block starts with one untimed call.
    """
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < min_reps or (time.perf_counter() - start < budget_s and len(times[0]) < 60):
        for f, acc in zip(fns, times):
            time.sleep(0.3)
            f()
            for _ in range(block):
                t0 = time.perf_counter()
                f()
                acc.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def load_inputs(export: Path, n: int):
    """(image pixels (n,3,224,224), token feeds for batch n and for each caption alone, timings)."""
    from cmhash.runtime.encoder import load_encoder
    from cmhash.zoo.data import load_dataset

    ds = load_dataset("coco-mini")
    paths = [str(p) for p in ds.images[:n]]
    captions = [c[0] for c in ds.texts[:n]]
    img = load_encoder(export, "image")
    t0 = time.perf_counter()
    pixels = img.preprocess(paths)
    pre_ms = (time.perf_counter() - t0) * 1e3 / n
    txt = load_encoder(export, "text")
    t0 = time.perf_counter()
    tokens = txt.tokenizer(captions)
    tok_ms = (time.perf_counter() - t0) * 1e3
    singles = [txt.tokenizer([c]) for c in captions]
    feeds = {"batch": {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask},
             "singles": [{"input_ids": s.input_ids, "attention_mask": s.attention_mask} for s in singles]}
    return pixels, feeds, {"preprocess_ms_per_image": pre_ms, "tokenize_ms_per_batch": tok_ms,
                           "tokens_in_batch": int(tokens.input_ids.shape[1])}


def encoder_rows(args, threads: int) -> tuple[list[dict], dict]:
    import torch

    from cmhash.export.encoders import build_encoders
    from cmhash.runtime.encoder import load_encoder
    from cmhash.zoo.model import CrossModalHasher

    torch.set_num_threads(threads)
    specs = build_encoders(CrossModalHasher.from_pretrained(args.checkpoint))
    device = torch.device(args.device)
    modules = {m: s.module.to(device).eval() for m, s in specs.items()}
    ort = {m: load_encoder(args.export, m, provider=args.provider, threads=threads) for m in specs}
    manifest = read_export_manifest(args.export)
    int8 = {m: load_encoder(args.export, m, provider=args.provider, threads=threads, precision="int8")
            for m in specs if "int8" in manifest.encoders[m].files}
    pixels, feeds, prep = load_inputs(args.export, args.batch)

    channels_last = {"image": copy.deepcopy(modules["image"]).to(memory_format=torch.channels_last)}

    def torch_run(modality, feed, variant="as is"):
        """PyTorch eager; variants: "as is", "flush denormals", and for images "channels_last" (+ flush)."""
        names = specs[modality].input_names
        tensors = [torch.from_numpy(feed[n]).to(device) for n in names]
        module = modules[modality]
        if variant == "channels_last":
            module = channels_last[modality]
            tensors = [t.to(memory_format=torch.channels_last) for t in tensors]

        def run():
            torch.set_flush_denormal(variant != "as is")
            with torch.inference_mode():
                out = module(*tensors)
            if device.type == "cuda":
                torch.cuda.synchronize()
            torch.set_flush_denormal(False)
            return out

        return run

    def ort_run(modality, feed, encoders=ort):
        return lambda: encoders[modality].session.run(feed, ["hash", "codes"])

    cases = []
    for batch in (1, args.batch):
        if batch == 1:
            img_feeds = [{"pixels": pixels[i:i + 1]} for i in range(args.singles)]
            txt_feeds = feeds["singles"][: args.singles]
        else:
            img_feeds, txt_feeds = [{"pixels": pixels}], [feeds["batch"]]
        cases += [("image", batch, img_feeds), ("text", batch, txt_feeds)]
    rows = []
    for modality, batch, feed_list in cases:
        variants = ["as is", "flush denormals"] + (["channels_last"] if modality in channels_last else [])
        quantized = ["int8"] if modality in int8 else []
        times: dict[str, list[float]] = {v: [] for v in ["onnxruntime", *quantized, *variants]}
        agree, agree8 = [], []
        for feed in feed_list:  # batch 1: several different inputs, each timed, then averaged
            fns = ([ort_run(modality, feed)] + [ort_run(modality, feed, int8) for _ in quantized]
                   + [torch_run(modality, feed, v) for v in variants])
            for name, t in zip(times, timed_blocks(fns, args.reps, args.budget / len(feed_list))):
                times[name].append(t)
            codes_ort = ort_run(modality, feed)()["codes"]
            codes_torch = torch_run(modality, feed)()[1].cpu().numpy()
            agree.append(float((np.unpackbits(codes_ort ^ codes_torch) == 0).mean()))
            if quantized:
                agree8.append(float((np.unpackbits(codes_ort ^ ort_run(modality, feed, int8)()["codes"]) == 0).mean()))
        ms = {name: 1e3 * float(np.mean(t)) for name, t in times.items()}
        best = min(variants, key=ms.get)
        rows.append({"modality": modality, "batch": batch, "threads": threads, "inputs_timed": len(feed_list),
                     "ort_ms": ms["onnxruntime"], "torch_ms": ms["as is"], "torch_best_ms": ms[best],
                     "torch_best": best, "torch_variants_ms": {v: ms[v] for v in variants},
                     "ratio": ms[best] / ms["onnxruntime"], "ratio_default": ms["as is"] / ms["onnxruntime"],
                     "ort_items_per_s": batch / ms["onnxruntime"] * 1e3, "torch_items_per_s": batch / ms[best] * 1e3,
                     "bit_agreement": float(np.mean(agree)), "provider": ort[modality].provider,
                     **({"int8_ms": ms["int8"], "int8_speedup": ms["onnxruntime"] / ms["int8"],
                         "int8_vs_torch": ms[best] / ms["int8"], "int8_bit_agreement": float(np.mean(agree8))}
                        if quantized else {})})
    return rows, prep


COLD = """
import json, sys, time
t0 = time.perf_counter()
from cmhash.runtime.encoder import load_encoder
t1 = time.perf_counter()
enc = load_encoder(sys.argv[1], sys.argv[2])
t2 = time.perf_counter()
enc.encode([sys.argv[3]])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_encode_s": t3 - t2, "torch": "torch" in sys.modules}))
"""


def cold_start(args, image: str, caption: str) -> list[dict]:
    rows = []
    for modality, item in (("image", image), ("text", caption)):
        runs = []
        for _ in range(args.cold_runs):
            t0 = time.perf_counter()
            out = subprocess.run([str(args.runtime_python), "-c", COLD, str(args.export), modality, item],
                                 capture_output=True, text=True, check=True, cwd=REPO)
            wall = time.perf_counter() - t0
            runs.append({**json.loads(out.stdout), "process_s": wall})
        assert not any(r["torch"] for r in runs), "torch was imported by the runtime"
        rows.append({"modality": modality, "runs": len(runs),
                     **{k: statistics.median(r[k] for r in runs)
                        for k in ("import_s", "load_s", "first_encode_s", "process_s")}})
    return rows


SIZES = """
import json, sys, sysconfig
from importlib import metadata
from pathlib import Path
site = Path(sysconfig.get_paths()["purelib"])
out = []
for dist in metadata.distributions(path=[str(site)]):
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    out.append((dist.metadata["Name"], dist.version, total))
print(json.dumps({"site": str(site), "dists": sorted(out, key=lambda r: -r[2])}))
"""


def install_size(python: Path) -> dict:
    info = json.loads(subprocess.run([str(python), "-c", SIZES], capture_output=True, text=True, check=True).stdout)
    du = subprocess.run(["du", "-sb", info["site"]], capture_output=True, text=True, check=True).stdout.split()[0]
    venv = python.parents[1]
    du_venv = subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0]
    return {"site_packages_bytes": int(du), "venv_bytes": int(du_venv), "dists": info["dists"], "site": info["site"]}


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{name}, {len(os.sched_getaffinity(0))} CPUs available, Python {platform.python_version()}"


def markdown(args, rows, prep, cold, size) -> str:
    from importlib import metadata

    import torch

    mb = lambda b: f"{b / 2**20:,.1f} MB"  # noqa: E731
    lines = [f"`{args.command}`: {args.batch} real coco-mini images / captions; onnxruntime = "
             f"`cmhash.runtime` (provider {args.provider}), PyTorch = the same export's eager modules (device "
             f"{args.device}); the same number of intra-op threads for both; ms per call (batch 1: mean over "
             f"{args.singles} different inputs), median of runs in alternating blocks; ratio = PyTorch ms / onnxruntime ms.",
             "",
             f"- date: {datetime.date.today().isoformat()}; machine: {machine()}",
             f"- onnxruntime {metadata.version('onnxruntime')}, torch {torch.__version__}, numpy {np.__version__}",
             f"- 1-minute load average {args.load[0]:.1f} before and {args.load[1]:.1f} after the encoder timings "
             "(the machine is shared with other jobs)",
             f"- model: {args.export} ({read_export_manifest(args.export).method}, "
             "EfficientNet-Lite0 + head, MiniLM-L6 + head)",
             "",
             "",
             "PyTorch is timed in several variants and compared at its best: as is; with "
             "`torch.set_flush_denormal(True)` (real images can drive activations into denormal floats, which "
             "slow eager CPU kernels); and, for the image encoder, channels_last memory format (with flushing). "
             "`ratio` uses the fastest variant, `ratio as is` the default. Bit agreement: codes of onnxruntime vs "
             "PyTorch as is.",
             "",
             "| encoder | batch | threads | onnxruntime ms | PyTorch ms (as is) | PyTorch ms (fastest) | fastest variant | "
             "ratio | ratio as is | onnxruntime items/s | PyTorch items/s (fastest) | bit agreement |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['modality']} | {r['batch']} | {r['threads']} | {r['ort_ms']:.1f} | {r['torch_ms']:.1f} | "
                     f"{r['torch_best_ms']:.1f} | {r['torch_best']} | {r['ratio']:.2f} | {r['ratio_default']:.2f} | "
                     f"{r['ort_items_per_s']:.1f} | {r['torch_items_per_s']:.1f} | {r['bit_agreement']:.4f} |")
    lines += _int8_table(args, rows)
    lines += ["", f"Input preparation (the same for both): ImagePreprocess {prep['preprocess_ms_per_image']:.1f} ms per "
              f"image; tokenizing {args.batch} captions {prep['tokenize_ms_per_batch']:.1f} ms "
              f"({prep['tokens_in_batch']} tokens after padding)."]
    if cold:
        lines += ["", f"Cold start in `.venv-runtime` (no torch installed): fresh interpreter, median of "
                  f"{cold[0]['runs']} processes, warm OS file cache, onnxruntime's default threads; `load` = sha256 check of the files + onnxruntime "
                  "session (+ tokenizer).", "",
                  "| encoder | import cmhash.runtime.encoder s | load_encoder s | first encode s | whole process s |",
                  "|---|---:|---:|---:|---:|"]
        for c in cold:
            lines.append(f"| {c['modality']} | {c['import_s']:.3f} | {c['load_s']:.3f} | {c['first_encode_s']:.3f} | "
                         f"{c['process_s']:.3f} |")
    if size:
        top = size["dists"][:10]
        lines += ["", f"Installed size of `.venv-runtime` (`pip install -e '.[cpu]' pytest hypothesis`, no torch): "
                  f"site-packages {mb(size['site_packages_bytes'])} (`du -sb`), whole venv {mb(size['venv_bytes'])}. "
                  "Biggest distributions (files in their RECORD):", "",
                  "| distribution | version | size |", "|---|---|---:|"]
        lines += [f"| {name} | {version} | {mb(b)} |" for name, version, b in top]
        tools = {"pip", "setuptools", "pytest", "hypothesis", "pluggy", "iniconfig", "sortedcontainers"}
        tool_bytes = sum(b for name, _, b in size["dists"] if name.lower() in tools)
        lines += ["", f"Without pip, setuptools and the test tools ({', '.join(sorted(tools))}: {mb(tool_bytes)}), "
                  f"the runtime's distributions total {mb(sum(b for *_, b in size['dists']) - tool_bytes)}."]
    return "\n".join(lines) + "\n"


def _int8_table(args, rows) -> list[str]:
    """The int8 rows (exports with `cmhash export int8`): time, speed-up, bit agreement, sizes, ΔmAP."""
    rows = [r for r in rows if "int8_ms" in r]
    if not rows:
        return []
    manifest = read_export_manifest(args.export)
    mb = lambda b: f"{b / 2**20:,.1f} MB"  # noqa: E731
    sizes = {m: [(args.export / e.files[p]).stat().st_size for p in ("fp32", "int8")]
             for m, e in manifest.encoders.items() if "int8" in e.files}
    check = manifest.data.get("int8") or {}
    change = check.get("map", {}).get("change", {})
    lines = ["", "int8 (`cmhash export int8`: text dynamic, image static QDQ) against fp32 onnxruntime and PyTorch, "
             "same inputs; `int8 bit agreement` = int8 codes vs fp32 onnxruntime codes on the timed inputs; "
             f"ΔmAP@all on coco-mini from the export's validation.int8.json: I→T {change.get('map_i2t', float('nan')):+.4f}, "
             f"T→I {change.get('map_t2i', float('nan')):+.4f} (over all {check.get('bits_total', 0):,} code bits: "
             f"{check.get('bit_agreement', float('nan')):.2%} agree).", "",
             "| encoder | batch | threads | fp32 onnxruntime ms | int8 ms | int8 speed-up | PyTorch ms (fastest) | "
             "int8 vs PyTorch | int8 bit agreement |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['modality']} | {r['batch']} | {r['threads']} | {r['ort_ms']:.1f} | {r['int8_ms']:.1f} | "
                     f"{r['int8_speedup']:.2f}x | {r['torch_best_ms']:.1f} | {r['int8_vs_torch']:.2f}x | "
                     f"{r['int8_bit_agreement']:.4f} |")
    lines += ["", "| encoder | fp32 ONNX | int8 ONNX | smaller by |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {mb(a)} | {mb(b)} | {a / b:.2f}x |" for m, (a, b) in sizes.items()]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=DEFAULT_RUN / "export")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_RUN / "checkpoint")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="intra-op thread counts to time (the same for both backends)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--singles", type=int, default=8, help="different inputs timed at batch 1")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per cell beyond the minimum reps")
    parser.add_argument("--provider", default="cpu", help="onnxruntime provider: cpu, cuda, tensorrt")
    parser.add_argument("--device", default="cpu", help="PyTorch device: cpu or cuda")
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--runtime-python", type=Path, default=RUNTIME_PYTHON)
    parser.add_argument("--out", type=Path, default=RESULTS / "encode.md")
    args = parser.parse_args()
    args.command = "python bench/encode.py " + " ".join(sys.argv[1:])
    for path in (args.export / "export.json", args.checkpoint / "config.json"):
        if not path.is_file():
            print(f"missing {path}: run bench/export_validation.py first, or pass --export/--checkpoint", file=sys.stderr)
            return 2
    import os

    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    for threads in args.threads:
        more, prep = encoder_rows(args, threads)
        rows += more
    args.load = (load_before, os.getloadavg()[0])
    from cmhash.zoo.data import load_dataset

    ds = load_dataset("coco-mini")
    have_rt = args.runtime_python.is_file()
    cold = cold_start(args, str(ds.images[0]), ds.texts[0][0]) if have_rt else []
    size = install_size(args.runtime_python) if have_rt else None
    text = markdown(args, rows, prep, cold, size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps({"rows": rows, "prep": prep, "cold": cold, "size": size},
                                                          indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
