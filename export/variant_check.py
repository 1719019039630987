"""The check of a reduced-precision variant (fp16, int8) of an export against its fp32 encoders.

On every image and caption of the dataset, both models encode; the report gives the bit agreement of
the codes (every flip with the |h| it had in fp32), whether the variant's codes are pack() of its own
hash output, and the change of mAP@all in both directions on the checkpoint's split (first caption
per pair, as evaluation does). Written to validation.<precision>.json and into export.json; the
limits are the caller's (fp16.py, int8.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from cmhash.errors import ExportError, ExportValidationError
from cmhash.runtime.codes import pack
from cmhash.runtime.formats.export_manifest import (VariantCheck, add_sections, read_export_manifest, report_name,
                                                    variant_command)
from cmhash.runtime.formats.export_manifest import write_report as save_report

from .runner import Runner, flips_of, session
from .samples import build_inputs
from .sources import load_source_dataset


def _run_all(runner: Runner, inputs: Any, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    hs, cs = [], []
    for _, feed in inputs.batches(batch_size):
        h, c = runner(feed)
        hs.append(h)
        cs.append(c)
    return np.concatenate(hs), np.concatenate(cs)


def _maps(values: dict[str, np.ndarray], dataset: Any, split: Any) -> dict[str, float]:
    from cmhash.zoo.scoring import score_split

    scores = score_split(values, dataset.labels, split.query, split.database)
    return {k: float(v) for k, v in scores.items() if k.startswith("map_")}


def validate_variant(folder: str | Path, precision: str, *, min_agreement: float, max_map_change: float,
                     dataset: Any = None, data_root: str | None = None, batch_size: int = 32,
                     write_report: bool = True, on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Compare the `precision` encoders (fp16, int8) with the fp32 ones on every image and caption of the dataset.

    Bit agreement is over all samples (all captions); mAP uses the first caption of each pair, as
    evaluation does, on the checkpoint's split. Raises when agreement < `min_agreement` or an mAP
    moves by more than `max_map_change`; the report is written first.
    """
    from cmhash.zoo.data import default_split

    step = on_step or (lambda _msg: None)
    folder = Path(folder)
    manifest = read_export_manifest(folder)
    if dataset is None:
        dataset = load_source_dataset(manifest.source.dataset, data_root)
    inputs = build_inputs(folder, manifest, dataset, captions="all")
    values: dict[str, dict[str, np.ndarray]] = {"fp32": {}, precision: {}}
    encoders, failures, flipped, total = {}, [], 0, 0
    for modality, enc in manifest.encoders.items():
        if precision not in enc.files:
            raise ExportError(f"{folder} has no {precision} {modality} encoder; make one with: "
                              f"{variant_command(folder, precision)}")
        step(f"checking the {precision} {modality} encoder")
        h32, c32 = _run_all(Runner(session(folder / enc.files["fp32"]), enc.inputs), inputs[modality], batch_size)
        h16, c16 = _run_all(Runner(session(folder / enc.files[precision]), enc.inputs), inputs[modality], batch_size)
        flips = flips_of(c32, c16, h32)
        own = bool(np.array_equal(c16, pack(h16)))
        encoders[modality] = {"samples": len(h32), "max_abs_diff": float(np.abs(h16 - h32).max()),
                              "codes_match_own_hash": own, **flips}
        flipped, total = flipped + flips["bits_flipped"], total + flips["bits_total"]
        if flips["bit_agreement"] < min_agreement:
            failures.append(f"{modality}: bit agreement {flips['bit_agreement']:.4%} < {min_agreement:.2%}")
        if not own:
            failures.append(f"{modality}: the {precision} codes differ from pack({precision} hash)")
        first = inputs[modality].caption == 0  # one sample per pair, in row order
        rows = inputs[modality].rows[first]
        for which, h in (("fp32", h32), (precision, h16)):
            full = np.full((len(dataset), h.shape[1]), np.nan, np.float32)
            full[rows] = h[first]
            values[which][modality] = full
    split = default_split(dataset, manifest.source.split_seed)
    maps = {p: _maps(values[p], dataset, split) for p in values}
    change = {k: maps[precision][k] - maps["fp32"][k] for k in maps["fp32"]}
    failures += [f"mAP {k[4:]} changed by {v:+.4f} (limit ±{max_map_change})" for k, v in change.items()
                 if abs(v) > max_map_change]
    report = {
        "passed": not failures,
        "precision": precision,
        "thresholds": {"min_bit_agreement": min_agreement, "max_map_change": max_map_change},
        "data": {"dataset": dataset.name, **{m: inputs[m].description for m in inputs},
                 "map_protocol": f"first caption per pair; split query={len(split.query)}, "
                                 f"database={len(split.database)}"},
        "bit_agreement": float(1 - flipped / total) if total else 1.0,
        "bits_flipped": int(flipped),
        "bits_total": int(total),
        "encoders": encoders,
        "map": {"fp32": maps["fp32"], precision: maps[precision], "change": change},
        "failures": failures,
    }
    if write_report:
        save_report(folder, report_name(precision), report)
        add_sections(folder, VariantCheck(precision, **{k: report[k] for k in ("passed", "thresholds", "bit_agreement",
                                                                  "bits_flipped", "bits_total", "map", "failures")}))
    if failures:
        raise ExportValidationError(f"the {precision} variant of {folder} fails {len(failures)} check(s):\n  - "
                                    + "\n  - ".join(failures), failures, report)
    return report


def variant_table(report: dict[str, Any]):
    """A rich Table of a variant's report: agreement and mAP per direction."""
    from rich.table import Table

    t = report["thresholds"]
    p = report["precision"]
    title = (f"{p} within limits" if report["passed"] else f"[red]{p} outside limits[/]") + \
        f" (agreement >= {t['min_bit_agreement']:.1%}, |ΔmAP| <= {t['max_map_change']})"
    table = Table(title=title)
    for col in ("measure", "fp32", p, "change / detail"):
        table.add_column(col)
    for m, r in report["encoders"].items():
        detail = f"{r['bits_flipped']} of {r['bits_total']} bits flipped"
        if r["bits_flipped"]:
            detail += f"; max |h| flipped {r['max_abs_h_flipped']:.2e}"
        table.add_row(f"{m} bit agreement", "", f"{r['bit_agreement']:.4%}", detail)
    for k, v in report["map"]["change"].items():
        table.add_row(f"mAP {k[4:]}", f"{report['map']['fp32'][k]:.4f}", f"{report['map'][p][k]:.4f}", f"{v:+.4f}")
    return table
