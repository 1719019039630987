"""int8 variants of the three shipped hashers: size, bit agreement and ΔmAP against fp32 on coco-mini.

Each shipped hasher (zoo/pretrained/) is exported with `export_checkpoint(..., int8=True)`: the fp32
validation against PyTorch, then int8 variants (text: dynamic; image: static QDQ calibrated on the
checkpoint's training images) checked against fp32 on every coco-mini image and caption (the limits:
>= 99% bit agreement, |ΔmAP| <= 0.01). A variant outside the limits is reported, not hidden.

    CMHASH_DATA=../shared/data .venv/bin/python bench/int8_zoo.py --out-dir runs/int8   # writes bench/results/int8_zoo.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
NAMES = ("dcph-coco-mini-64", "dhaph-coco-mini-64", "dmsh-coco-mini-64")


def run(name: str, out_dir: Path) -> dict:
    from cmhash.errors import ExportValidationError
    from cmhash.export.onnx import export_checkpoint
    from cmhash.zoo.pretrained import ROOT

    folder = out_dir / name
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    try:
        int8 = export_checkpoint(ROOT / name, folder, int8=True).int8
    except ExportValidationError as exc:
        int8 = exc.result.int8
    sizes = {f: (folder / f).stat().st_size for f in ("image.onnx", "image.int8.onnx", "text.onnx", "text.int8.onnx")}
    return {"name": name, "seconds": time.perf_counter() - start, "passed": int8["passed"],
            "agreement": {m: v["bit_agreement"] for m, v in int8["encoders"].items()},
            "change": int8["map"]["change"], "failures": int8["failures"], "sizes": sizes}


def markdown(rows: list[dict]) -> str:
    lines = ["| hasher | image size fp32 → int8 | text size fp32 → int8 | image bit agreement | text bit agreement | "
             "ΔmAP I→T | ΔmAP T→I | within limits |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    mb = lambda b: f"{b / 2**20:.1f}"  # noqa: E731
    for r in rows:
        s = r["sizes"]
        lines.append(f"| {r['name']} | {mb(s['image.onnx'])} → {mb(s['image.int8.onnx'])} MB "
                     f"({s['image.onnx'] / s['image.int8.onnx']:.2f}x) | {mb(s['text.onnx'])} → {mb(s['text.int8.onnx'])} MB "
                     f"({s['text.onnx'] / s['text.int8.onnx']:.2f}x) | {r['agreement']['image']:.2%} | "
                     f"{r['agreement']['text']:.2%} | {r['change']['map_i2t']:+.4f} | {r['change']['map_t2i']:+.4f} | "
                     f"{'yes' if r['passed'] else 'no: ' + '; '.join(r['failures'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "runs" / "int8")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_zoo.md")
    args = parser.parse_args()
    rows = [run(name, args.out_dir) for name in NAMES]
    text = markdown(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
