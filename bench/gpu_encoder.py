"""The encoder half of the GPU check: onnxruntime's CUDA provider on an export folder.

    python bench/gpu_encoder.py EXPORT_DIR          # alone, or through: python bench/gpu_check.py --encoder DIR

Prints (or returns, to gpu_check.py) one JSON object:
  providers    what onnxruntime has compiled in
  strict       `load_encoder(provider="cuda")` without fallback: "ok", or the ProviderUnavailableError
               it raised (the expected outcome with the CPU-only onnxruntime wheel)
  timings      when the CUDA provider really runs: per modality, batch 1 and 32, ms per call (median
               of 20 after 3 warm-ups) on CUDA and on the CPU provider, and the bit agreement of the
               CUDA codes with the CPU codes. Inputs are synthetic but valid (fixed-seed pixels in the
               normalized range; token ids from a fixed caption set), since the GPU machine has no
               coco-mini copy.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = ["a man riding a horse on a dirt road", "two dogs playing with a frisbee in the park",
            "a plate of pasta with tomato sauce", "a red double decker bus on a city street"]


def _median_ms(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _feed(encoder, batch: int) -> dict[str, np.ndarray]:
    if encoder.input_kind == "pixels":
        size = encoder.preprocess.crop
        return {"pixels": np.random.default_rng(0).normal(0, 1, (batch, 3, size, size)).astype(np.float32)}
    if encoder.input_kind == "tokens":
        tokens = encoder.tokenizer([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])
        return dict(zip(encoder.input_names, (tokens.input_ids, tokens.attention_mask)))
    rows, _ = encoder.vocabulary([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])
    return {encoder.input_names[0]: rows}


def encoder_check(folder: str | Path) -> dict:
    import onnxruntime as ort

    from cmhash.errors import ProviderUnavailableError
    from cmhash.runtime.encoder import load_encoder
    from cmhash.runtime.export_folder import ExportFolder

    export = ExportFolder(folder)
    out: dict = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers(), "timings": []}
    try:
        load_encoder(export, export.modalities[0], provider="cuda")
        out["strict"] = "ok"
    except ProviderUnavailableError as exc:
        out["strict"] = f"ProviderUnavailableError: {exc}"
        return out
    for modality in export.modalities:
        gpu = load_encoder(export, modality, provider="cuda")
        cpu = load_encoder(export, modality, provider="cpu")
        for batch in (1, 32):
            feed = _feed(gpu, batch)
            g, c = gpu.encode_arrays(feed).codes, cpu.encode_arrays(feed).codes
            out["timings"].append({
                "modality": modality, "batch": batch, "provider": gpu.provider,
                "cuda_ms": round(_median_ms(lambda: gpu.encode_arrays(feed)), 3),
                "cpu_ms": round(_median_ms(lambda: cpu.encode_arrays(feed), reps=5), 3),
                "bit_agreement_with_cpu": float((np.unpackbits(g ^ c) == 0).mean())})
    return out


if __name__ == "__main__":
    try:
        import cmhash.runtime.encoder  # noqa: F401
    except ImportError:  # not installed: map cmhash.runtime -> REPO/runtime (as gpu_check.py does)
        sys.path.insert(0, str(REPO))
        import cmhash

        cmhash.__path__.append(str(REPO))
    print(json.dumps(encoder_check(sys.argv[1]), indent=1))
