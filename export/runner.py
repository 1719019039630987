"""Running an exported encoder in onnxruntime on CPU, and comparing packed codes: shared by the fp32
validation (validate.py) and the fp16 check (fp16.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cmhash.errors import ExportError, require

from .encoders import OUTPUT_NAMES

MAX_LISTED_FLIPS = 200


def session(path: str | Path, threads: int = 0):
    """A CPU onnxruntime session with its log lines kept quiet."""
    ort = require("onnxruntime", "cpu", "Checking ONNX encoders")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Runner:
    """Runs a session with the expected input names, mapping by position when the model's names differ."""

    def __init__(self, sess: Any, expected_inputs: tuple[str, ...]) -> None:
        self.sess = sess
        self.inputs = [i.name for i in sess.get_inputs()]
        self.outputs = [o.name for o in sess.get_outputs()]
        self.expected_inputs = expected_inputs

    def __call__(self, feed: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        by_position = dict(zip(self.inputs, (feed[n] for n in self.expected_inputs)))
        outs = self.sess.run(None, by_position)
        named = dict(zip(self.outputs, outs))
        if all(n in named for n in OUTPUT_NAMES):
            return named["hash"], named["codes"]
        if len(outs) != 2:
            raise ExportError(f"expected 2 outputs (hash, codes), the model has {len(outs)}: {self.outputs}")
        return outs[0], outs[1]


def flips_of(reference_codes: np.ndarray, codes: np.ndarray, h: np.ndarray) -> dict[str, Any]:
    """Bits that differ between two packed code arrays, with |h| of each (h: the reference values)."""
    diff = np.unpackbits(reference_codes ^ codes, axis=1, bitorder="little").astype(bool)
    rows, bits = np.nonzero(diff)
    total = reference_codes.shape[0] * reference_codes.shape[1] * 8
    listed = [{"sample": int(r), "bit": int(b), "abs_h": float(abs(h[r, b]))}
              for r, b in list(zip(rows, bits))[:MAX_LISTED_FLIPS]]
    return {"bits_total": int(total), "bits_flipped": int(len(rows)),
            "bit_agreement": float(1.0 - len(rows) / total) if total else 1.0,
            "flips": listed, "max_abs_h_flipped": float(np.abs(h[rows, bits]).max()) if len(rows) else None}
