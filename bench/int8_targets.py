"""The image tower's int8 targets on a CPU: `--target cpu` (uint8 activations) vs `--target tensorrt`
(symmetric int8) vs fp32, in onnxruntime, same 32 real images, batch 32, one thread.

Both int8 models are made here with `export.int8.quantize_int8` from the export's fp32 image.onnx,
calibrated on the checkpoint's training images (as `cmhash export int8` does); best of 3 runs each.

    CMHASH_DATA=../shared/data .venv/bin/python bench/int8_targets.py --export EXPORT_DIR
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def best_ms(path: Path, feed: dict, runs: int = 3) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_targets.md")
    args = parser.parse_args()
    from cmhash.export.int8 import calibration_images, quantize_int8
    from cmhash.export.sources import load_source_dataset
    from cmhash.runtime.formats.export_manifest import read_export_manifest
    from cmhash.runtime.preprocess import ImagePreprocess

    manifest = read_export_manifest(args.export)
    enc = manifest.encoders["image"]
    pre = ImagePreprocess.from_dict(enc.preprocess)
    dataset = load_source_dataset(manifest.source.dataset)
    feed = {enc.inputs[0]: pre([str(p) for p in dataset.images[:32]])}
    calibration = calibration_images(dataset, split_seed=manifest.source.split_seed)
    rows = [("fp32", best_ms(args.export / enc.files["fp32"], feed))]
    with tempfile.TemporaryDirectory() as tmp:
        for target in ("cpu", "tensorrt"):
            path = Path(tmp) / f"image.{target}.onnx"
            quantize_int8(args.export / enc.files["fp32"], path, "pixels", calibration=calibration, preprocess=pre,
                          input_name=enc.inputs[0], target=target)
            rows.append((f"int8, --target {target}", best_ms(path, feed)))
    lines = [f"`python bench/int8_targets.py --export {args.export}`: image encoder, 32 real images, batch 32, "
             "1 thread, onnxruntime CPU, best of 3.", "", "| model | ms | vs fp32 |", "|---|---:|---:|"]
    lines += [f"| {name} | {ms:.1f} | {rows[0][1] / ms:.2f}x |" for name, ms in rows]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
