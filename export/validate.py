"""Check an export folder against PyTorch on real inputs, in optimum's order, collecting every failure.

Order: file checksums; output (and input) names; dynamic axes (declared symbolic, and runs at batch
1 and 37, and a sequence padded to max_length); output shapes and dtypes; max abs difference of `hash`
vs PyTorch; bit agreement of `codes` with `runtime.codes.pack` of PyTorch's values (every flipped bit
is reported with its |h|). Nothing stops at the first failure: a renamed output is matched by
position so that the later checks still run. The report goes to `validation.json` and into
`export.json`; `report_table` renders it for people.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cmhash.errors import ExportError, ExportValidationError
from cmhash.runtime.codes import pack

from cmhash.runtime.formats.export_manifest import (REPORT_NAME, EncoderEntry, ExportManifest, Validation, add_sections,
                                                    check_files, read_export_manifest)
from cmhash.runtime.formats.export_manifest import write_report as save_report

from .encoders import OUTPUT_NAMES, build_encoders, run_encoder_batch
from .runner import Runner, flips_of, session
from .samples import ModalityInputs, build_inputs
from .sources import load_source_dataset, source_hashes

DEFAULT_ATOL = 1e-4
AXIS_BATCHES = (1, 37)
CHECKS = ("files", "names", "dynamic axes", "shapes", "max abs diff", "bit agreement")


class _Collector:
    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def add(self, check: str, modality: str, ok: bool, detail: str) -> None:
        self.checks.append({"check": check, "modality": modality, "passed": bool(ok), "detail": detail})

    @property
    def failures(self) -> list[str]:
        return [f"{c['modality']}: {c['check']}: {c['detail']}" for c in self.checks if not c["passed"]]


def _declared_axes(sess_args: list[Any]) -> dict[str, list[Any]]:
    return {a.name: list(a.shape) for a in sess_args}


def _check_axes(col: _Collector, modality: str, runner: Runner, enc: EncoderEntry, inputs: ModalityInputs,
                bits: int, batches: tuple[int, ...]) -> list[tuple[str, tuple, tuple, Any, Any]]:
    """Declared symbolic axes + runs at each batch size (and a max-length sequence); returns the runs."""
    declared = _declared_axes(runner.sess.get_inputs())
    fixed = []
    for pos, name in enumerate(enc.inputs):
        shape = list(declared.values())[pos] if pos < len(declared) else []
        for axis in enc.dynamic_axes.get(name, {}):
            dim = shape[int(axis)] if int(axis) < len(shape) else None
            if isinstance(dim, int):
                fixed.append(f"input {name} axis {axis} is fixed to {dim}")
    for out in runner.sess.get_outputs():
        if out.shape and isinstance(out.shape[0], int):
            fixed.append(f"output {out.name} axis 0 is fixed to {out.shape[0]}")
    runs, errors = [], []
    sizes = dict.fromkeys(min(b, len(inputs)) for b in batches)  # fewer samples than a batch: as many as there are
    plans = [(f"batch {b}", np.arange(b), False) for b in sizes]
    if enc.input_kind == "tokens":
        n = min(2, len(inputs))
        plans.append((f"batch {n}, sequence {enc.max_length}", np.arange(n), True))
    for label, idx, pad in plans:
        feed = inputs.feed(idx)
        if pad:
            feed = {k: _pad(v, enc.max_length, 0) for k, v in feed.items()}
        in_shape = tuple(next(iter(feed.values())).shape)
        try:
            h, c = runner(feed)
            runs.append((label, in_shape, (len(idx), bits), h, c))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; all are failures here
            errors.append(f"{label} (input {in_shape}) failed: {str(exc).splitlines()[0][:300]}")
    detail = "; ".join(fixed + errors) or "symbolic; ran " + ", ".join(f"{r[0]} (input {r[1]})" for r in runs)
    col.add("dynamic axes", modality, not fixed and not errors, detail)
    return runs


def _pad(x: np.ndarray, length: int, value: int) -> np.ndarray:
    if x.shape[1] >= length:
        return x
    out = np.full((x.shape[0], length), value, dtype=x.dtype)
    out[:, : x.shape[1]] = x
    return out


def _shape_problems(label: str, h: np.ndarray, c: np.ndarray, n: int, bits: int) -> list[str]:
    problems = []
    if h.shape != (n, bits) or h.dtype != np.float32:
        problems.append(f"{label}: hash is {h.dtype}{list(h.shape)}, expected float32[{n}, {bits}]")
    if c.shape != (n, bits // 8) or c.dtype != np.uint8:
        problems.append(f"{label}: codes is {c.dtype}{list(c.shape)}, expected uint8[{n}, {bits // 8}]")
    return problems


def validate_export(folder: str | Path, *, checkpoint: str | Path | None = None, encoders: Mapping[str, Any] | None = None,
                    dataset: Any = None, data_root: str | None = None, atol: float = DEFAULT_ATOL,
                    captions: str = "all", axis_batches: tuple[int, ...] = AXIS_BATCHES, batch_size: int = 32,
                    write_report: bool = True, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Validate the fp32 encoders of an export folder; returns the report, raises when a check fails.

    `encoders`: the PyTorch references (`export.encoders.build_encoders`); default: rebuilt from
    `checkpoint`, else from the checkpoint recorded in export.json (whose sha256 must still match).
    """
    step = on_step or (lambda _msg: None)
    folder = Path(folder)
    manifest = read_export_manifest(folder)
    if encoders is None:
        encoders = _reference_encoders(manifest, checkpoint)
    if dataset is None:
        dataset = load_source_dataset(manifest.source.dataset, data_root)
    bits = manifest.bits
    col = _Collector()
    problems = check_files(folder, manifest)
    col.add("files", "all", not problems, "; ".join(problems) or f"{len(manifest.files)} sha256 match export.json")
    inputs = build_inputs(folder, manifest, dataset, captions=captions)
    per_modality: dict[str, Any] = {}
    for modality, enc in manifest.encoders.items():
        step(f"validating the {modality} encoder")
        per_modality[modality] = _validate_one(col, modality, folder / enc.files["fp32"], enc, encoders[modality],
                                               inputs[modality], bits, atol, axis_batches, batch_size)
    report = {
        "passed": not col.failures,
        "precision": "fp32",
        "atol": atol,
        "data": {"dataset": dataset.name, **{m: inputs[m].description for m in inputs}},
        "checks": col.checks,
        "encoders": per_modality,
        "failures": col.failures,
    }
    if write_report:
        save_report(folder, REPORT_NAME, report)
        add_sections(folder, summary(report), manifest=manifest)
    if col.failures:
        raise ExportValidationError(f"{len(col.failures)} validation check(s) failed for {folder}:\n  - "
                                    + "\n  - ".join(col.failures), col.failures, report)
    return report


def _validate_one(col: _Collector, modality: str, path: Path, enc: EncoderEntry, spec: Any, inputs: ModalityInputs,
                  bits: int, atol: float, axis_batches: tuple[int, ...], batch_size: int) -> dict[str, Any]:
    try:
        runner = Runner(session(path), enc.inputs)
    except Exception as exc:  # noqa: BLE001 - a file onnxruntime cannot load fails every check
        for check in CHECKS[1:]:
            col.add(check, modality, False, f"onnxruntime cannot load {path.name}: {str(exc)[:300]}")
        return {"file": path.name, "loaded": False}
    names_ok = runner.outputs == list(OUTPUT_NAMES) and runner.inputs == list(enc.inputs)
    col.add("names", modality, names_ok,
            f"inputs {runner.inputs}, outputs {runner.outputs}" + ("" if names_ok else
            f"; expected inputs {list(enc.inputs)}, outputs {list(OUTPUT_NAMES)}"))
    runs = _check_axes(col, modality, runner, enc, inputs, bits, axis_batches)
    shape_problems = [p for label, _, (n, _), h, c in runs for p in _shape_problems(label, h, c, n, bits)]
    ref_h, ref_c, onnx_h, onnx_c, run_error = [], [], [], [], None
    for idx, feed in inputs.batches(batch_size):
        h_t, c_t = run_encoder_batch(spec, feed)
        ref_h.append(h_t)
        ref_c.append(c_t)
        try:
            h, c = runner(feed)
        except Exception as exc:  # noqa: BLE001
            run_error = f"the full run failed at samples {idx[0]}-{idx[-1]}: {str(exc).splitlines()[0][:300]}"
            break
        shape_problems += _shape_problems(f"samples {idx[0]}-{idx[-1]}", h, c, len(idx), bits)
        onnx_h.append(h)
        onnx_c.append(c)
    col.add("shapes", modality, not shape_problems and run_error is None,
            "; ".join(shape_problems[:5] + ([run_error] if run_error else []))
            or f"hash float32[B, {bits}], codes uint8[B, {bits // 8}] on every run")
    result: dict[str, Any] = {"file": path.name, "inputs": runner.inputs, "outputs": runner.outputs,
                              "samples": len(inputs), "axis_runs": [{"run": r[0], "input_shape": list(r[1]),
                                                                    "hash_shape": list(r[3].shape),
                                                                    "codes_shape": list(r[4].shape)} for r in runs]}
    if run_error or shape_problems:
        col.add("max abs diff", modality, False, "not computed: " + (run_error or "output shapes are wrong"))
        col.add("bit agreement", modality, False, "not computed: " + (run_error or "output shapes are wrong"))
        return result
    h_t, c_t, h, c = (np.concatenate(x) for x in (ref_h, ref_c, onnx_h, onnx_c))
    diff = float(np.abs(h.astype(np.float64) - h_t).max())
    col.add("max abs diff", modality, diff <= atol, f"{diff:.2e} over {len(h_t)} samples (atol {atol:g})")
    reference = pack(h_t)
    flips = flips_of(reference, c, h_t)
    torch_pack_ok = bool(np.array_equal(c_t, reference))
    self_ok = bool(np.array_equal(c, pack(h)))
    detail = f"{flips['bit_agreement']:.4%} ({flips['bits_flipped']} of {flips['bits_total']} bits flipped)"
    if flips["bits_flipped"]:
        detail += "; |h| of flipped bits: " + ", ".join(f"{f['abs_h']:.2e}" for f in flips["flips"][:10])
    if not torch_pack_ok:
        detail += "; PyTorch's in-graph packing differs from runtime.codes.pack"
    if not self_ok:
        detail += "; the ONNX codes differ from pack(ONNX hash)"
    col.add("bit agreement", modality, flips["bits_flipped"] == 0 and torch_pack_ok and self_ok, detail)
    result.update(max_abs_diff=diff, codes_match_own_hash=self_ok, torch_packing_matches_pack=torch_pack_ok, **flips)
    return result


def _reference_encoders(manifest: ExportManifest, checkpoint: str | Path | None) -> dict[str, Any]:
    from cmhash.zoo.model import CrossModalHasher

    if checkpoint is None and manifest.source.checkpoint is None:
        raise ExportError("export.json records no source checkpoint; pass --checkpoint CKPT")
    path = Path(checkpoint or manifest.source.checkpoint)
    if not path.is_dir():
        raise ExportError(f"the source checkpoint {path} is not there; pass --checkpoint CKPT")
    expected = manifest.source.sha256
    found = source_hashes(path)
    changed = [name for name, digest in expected.items() if found.get(name) != digest]
    if changed:
        raise ExportError(f"{path} is not the checkpoint this folder was exported from ({', '.join(changed)} "
                          "sha256 differ); pass the right --checkpoint, or export again")
    return build_encoders(CrossModalHasher.from_pretrained(path))


def run_checks(checks: Sequence[tuple[str, Callable[[], dict[str, Any]]]]
               ) -> tuple[dict[str, dict[str, Any]], ExportValidationError | None]:
    """Run every check (validation, fp16, int8), so each report is written even after a failure; return
    the reports by name and the first failure (None when all passed)."""
    reports, failure = {}, None
    for name, check in checks:
        try:
            reports[name] = check()
        except ExportValidationError as exc:
            reports[name], failure = exc.report, failure or exc
    return reports, failure


def summary(report: dict[str, Any]) -> Validation:
    """The part of a report that export.json keeps (its `validation` section)."""
    keep = ("max_abs_diff", "bit_agreement", "bits_flipped", "bits_total", "max_abs_h_flipped", "samples")
    return Validation(passed=report["passed"], atol=report.get("atol"), data=report.get("data"),
                      encoders={m: {k: r.get(k) for k in keep if k in r} for m, r in report.get("encoders", {}).items()},
                      failures=report.get("failures", []))


def report_table(report: dict[str, Any]):
    """A rich Table: one row per check, one column per encoder; the title says whether all passed."""
    from rich.table import Table

    modalities = list(report.get("encoders", {}))
    failed = len(report.get("failures", []))
    title = (f"all values close (atol {report['atol']:g}), all bits agree" if not failed
             else f"[red]{failed} check(s) failed[/]")
    table = Table(title=title)
    table.add_column("check")
    for m in modalities:
        table.add_column(m, overflow="fold")
    cells: dict[str, dict[str, str]] = {}
    for c in report.get("checks", []):
        mark = "[green]ok[/]" if c["passed"] else "[red]FAIL[/]"
        targets = modalities if c["modality"] == "all" else [c["modality"]]
        for m in targets:
            cells.setdefault(c["check"], {})[m] = f"{mark} {c['detail']}"
    for check in CHECKS:
        if check in cells:
            table.add_row(check, *(cells[check].get(m, "") for m in modalities))
    return table
