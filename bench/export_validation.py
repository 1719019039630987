"""Export a coco-mini checkpoint of each method to ONNX (+ fp16) and write the validation tables.

    .venv/bin/python bench/export_validation.py                       # dcph, dhaph, dmsh; 64 bits, seed 0
    .venv/bin/python bench/export_validation.py --methods dmsh --out /tmp/export_validation.md

Each checkpoint is trained with the CLI exactly as a user would (`cmhash train METHOD --preset
offline --data coco-mini --bits 64 --seed 0`), into `runs/export_validation/<method>/checkpoint`
(reused when it exists), then exported with `cmhash.export.onnx.export_checkpoint(..., fp16=True)`,
which runs the full validation: all 159 images and all 795 captions (5 per image) against PyTorch,
and the fp16 check (bit agreement on the same samples; mAP on the checkpoint's split with the first
caption of each pair, as evaluation does). Requirements: max abs diff <= 1e-4 and 100% bit
agreement (fp32); >= 99.5% bit agreement and |ΔmAP| <= 0.005 in both directions (fp16).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from cmhash.errors import ExportValidationError
from cmhash.export.onnx import export_checkpoint, library_versions
from cmhash.export.validate import CHECKS
from cmhash.runtime.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("cmhash")


def train_checkpoint(method: str, bits: int, seed: int, folder: Path) -> float:
    """Train with the CLI unless `folder` already holds a checkpoint; returns the seconds spent."""
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return 0.0
    start = time.perf_counter()
    cmd = [str(CLI), "train", method, "--preset", "offline", "--data", "coco-mini", "--bits", str(bits),
           "--seed", str(seed), "--out", str(folder), "--no-progress", "--json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def validation_markdown(report: dict) -> list[str]:
    mods = list(report["encoders"])
    lines = ["| check | " + " | ".join(mods) + " |", "|---|" + "---|" * len(mods)]
    cells: dict[str, dict[str, str]] = {}
    for c in report["checks"]:
        for m in (mods if c["modality"] == "all" else [c["modality"]]):
            cells.setdefault(c["check"], {})[m] = ("ok" if c["passed"] else "**FAIL**") + " — " + c["detail"]
    for check in CHECKS:
        if check in cells:
            lines.append(f"| {check} | " + " | ".join(cells[check].get(m, "").replace("|", "\\|") for m in mods) + " |")
    return lines


def fp16_markdown(report: dict) -> list[str]:
    lines = ["| measure | fp32 | fp16 | change / detail |", "|---|---|---|---|"]
    for m, r in report["encoders"].items():
        flips = ", ".join(f"{f['abs_h']:.1e}" for f in r["flips"])
        detail = f"{r['bits_flipped']} of {r['bits_total']} bits flipped" + (f"; \\|h\\| of each: {flips}" if flips else "")
        lines.append(f"| {m} bit agreement | 100% | {r['bit_agreement']:.4%} | {detail} |")
    lines.append(f"| all bits | 100% | {report['bit_agreement']:.4%} | {report['bits_flipped']} of "
                 f"{report['bits_total']} flipped |")
    for k, v in report["map"]["change"].items():
        direction = {"map_i2t": "I→T", "map_t2i": "T→I", "map_t2t": "T→T"}.get(k, k)
        lines.append(f"| mAP {direction} | {report['map']['fp32'][k]:.4f} | {report['map']['fp16'][k]:.4f} | {v:+.4f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["dcph", "dhaph", "dmsh"])
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "export_validation")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "export_validation.md")
    args = ap.parse_args()

    sections, verdicts = [], []
    for method in args.methods:
        base = args.runs / method
        ckpt, export_dir = base / "checkpoint", base / "export"
        print(f"[{method}] training (or reusing) {ckpt}", file=sys.stderr, flush=True)
        train_s = train_checkpoint(method, args.bits, args.seed, ckpt)
        print(f"[{method}] exporting to {export_dir}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        failure = None
        try:
            result = export_checkpoint(ckpt, export_dir, fp16=True,
                                       on_step=lambda s, m=method: print(f"[{m}]   {s}", file=sys.stderr, flush=True))
            validation, half = result.validation, result.fp16
        except ExportValidationError as exc:
            failure = exc
            import json

            validation = json.loads((export_dir / "validation.json").read_text())
            half_path = export_dir / "validation.fp16.json"
            half = json.loads(half_path.read_text()) if half_path.is_file() else None
        seconds = time.perf_counter() - start
        ok32 = validation["passed"]
        ok16 = bool(half and half["passed"])
        verdicts.append(f"| {method} | {'pass' if ok32 else '**FAIL**'} | "
                        f"{max(r['max_abs_diff'] for r in validation['encoders'].values()):.2e} | "
                        f"{min(r['bit_agreement'] for r in validation['encoders'].values()):.4%} | "
                        f"{half['bit_agreement']:.4%} | "
                        f"{half['map']['change']['map_i2t']:+.4f} / {half['map']['change']['map_t2i']:+.4f} | "
                        f"{'pass' if ok16 else '**FAIL**'} |")
        sections += [f"## {method} ({args.bits} bits, seed {args.seed})", "",
                     f"Checkpoint `{ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt}` "
                     f"(test mAP I→T {result_map(validation, ckpt, 'map_i2t')}, "
                     f"T→I {result_map(validation, ckpt, 'map_t2i')}); training {train_s:.0f} s "
                     f"({'reused' if train_s == 0 else 'trained now'}), export + checks {seconds:.0f} s.", "",
                     f"Validation (fp32 ONNX vs PyTorch; data: {validation['data']['image']}, "
                     f"{validation['data']['text']}; atol {validation['atol']:g}):", "",
                     *validation_markdown(validation), "",
                     "fp16 variant vs fp32 ONNX (bit agreement on the same samples; mAP with the first caption "
                     "per pair on the checkpoint's split):", "",
                     *(fp16_markdown(half) if half else ["(fp16 check did not run)"]), ""]
        if failure is not None:
            sections += ["Failures:", "", *[f"- {f}" for f in failure.failures], ""]
    versions = library_versions()
    header = [
        "# ONNX export validation on coco-mini",
        "",
        f"Written by `bench/export_validation.py` on {dt.date.today().isoformat()} "
        f"({platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, no GPU; "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ").",
        "",
        "Each method's offline preset (frozen EfficientNet-Lite0 + MiniLM, trained hash heads), trained with "
        "`cmhash train METHOD --preset offline --data coco-mini --bits 64 --seed 0`, exported with "
        "`export_checkpoint(..., fp16=True)`. The full check uses all 159 images and **all 795 captions** "
        "(5 per image); the dynamic-axes check runs batch 1 and 37 and a sequence padded to max_length. "
        "Required: max abs diff ≤ 1e-4 and 100% bit agreement (fp32); fp16 bit agreement ≥ 99.5% and "
        "|ΔmAP| ≤ 0.005 in each direction.",
        "",
        "| method | fp32 checks | max abs diff | fp32 bit agreement | fp16 bit agreement | fp16 ΔmAP I→T / T→I | fp16 |",
        "|---|---|---|---|---|---|---|",
        *verdicts,
        "",
        "TensorRT engines were not built: TensorRT cannot be installed on these machines "
        "(see docs/PLATFORM-NOTES.md); `cmhash export trt` is tested against a fake `tensorrt` module only.",
        "",
    ]
    with atomic_write(args.out, "w") as fh:
        fh.write("\n".join(header + sections))
    print(f"wrote {args.out}", file=sys.stderr)


def result_map(validation: dict, ckpt: Path, key: str) -> str:
    from cmhash.runtime.formats.checkpoint import read_checkpoint

    metrics = (read_checkpoint(ckpt).config.metrics or {}).get("test", {})
    return f"{metrics[key]:.4f}" if key in metrics else "n/a"


if __name__ == "__main__":
    main()
