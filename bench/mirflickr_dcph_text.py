"""MIRFlickr-25K at benchmark scale: DCPH's text branch on the real tag BoW vs LSH, text→text mAP@all.

Data: the cleaned MIRFlickr-25K text/label release (20,015 pairs, 1,386-word binary tag BoW, 24
labels; no images), read with `cmhash.zoo.data.load_dataset("mirflickr25k")`.

Split: the classic protocol `classic_split(n, seed=0)`: 2,000 query pairs, the other 18,015 form the
database, and 10,000 training pairs drawn from the database. The first 1,000 training pairs are the
validation slice; DCPH trains on the other 9,000 (`Split.fit`). The test queries are never used for
any choice: the epoch is selected on val→fit mAP@all (`select_on="val"`), and `lr_text` is picked,
per bit length, among `--lrs` by the best validation mAP of short `--tune-rounds` runs.

DCPH: the paper preset (`DCPHConfig.paper`), text tower only (the dataset has no images, so the
shared loop trains `modalities=("text",)` and every epoch is a text phase): BoW MLP
Linear(1386→8192), ReLU, trained from scratch, + hash layer tanh(Linear(8192→K)); batch 40, SGD
(momentum 0, weight decay 1e-5), cosine warm restarts T_0 = 20, `cross_weight=0` (the cross term
would compare against an image buffer that never changes). LSH: sign of a seeded Gaussian
projection of the BoW (as float32), scored on the same query/database split, mean ± std over
`--lsh-seeds` seeds.

Run (from the repository root; ~15 minutes on 2 free CPU cores with the defaults):

    .venv/bin/python bench/mirflickr_dcph_text.py                  # 16, 32, 64 bits
    .venv/bin/python bench/mirflickr_dcph_text.py --bits 64 --rounds 20 --lrs 1.0
    .venv/bin/python bench/mirflickr_dcph_text.py --quick          # smoke check, about a minute

Writes `bench/results/mirflickr_dcph_text.md` (`--quick`: `runs/mirflickr_dcph_text_quick.md`);
training run folders go under `runs/mirflickr_dcph_text/<UTC time>/` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from cmhash.runtime.codes import pack
from cmhash.runtime.io import atomic_write
from cmhash.runtime.metrics import mean_average_precision
from cmhash.zoo.backbones import get_config
from cmhash.zoo.baselines import LSH
from cmhash.zoo.data import Split, classic_split, load_dataset
from cmhash.zoo.recipes import make_config
from cmhash.zoo.train import METRICS_NAME, train

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "mirflickr_dcph_text.md"
QUICK_RESULTS = REPO / "runs" / "mirflickr_dcph_text_quick.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64], help="code lengths (default 16 32 64)")
    p.add_argument("--rounds", type=int, default=10,
                   help="DCPH rounds of the final run per bit length (text-only: 1 round = 1 epoch; default 10)")
    p.add_argument("--lrs", type=float, nargs="+", default=[0.3, 1.0, 3.0],
                   help="lr_text candidates, picked on the validation slice (default 0.3 1.0 3.0)")
    p.add_argument("--tune-rounds", type=int, default=2,
                   help="rounds of each lr-selection run (default 2); equal to --rounds reuses the runs")
    p.add_argument("--seed", type=int, default=0, help="split seed and DCPH seed (default 0)")
    p.add_argument("--lsh-seeds", type=int, default=5, help="LSH projections to average (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--data", default=None, help="data root holding mirflickr25k/ (default: cmhash's default)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="folder for run folders (default runs/mirflickr_dcph_text/<UTC time>); "
                        "an existing run folder is resumed by the training loop")
    p.add_argument("--out", type=Path, default=None, help=f"Markdown output (default {RESULTS.relative_to(REPO)})")
    p.add_argument("--quick", action="store_true",
                   help="smoke check: 16 bits, 2 lrs x 1 round, then 2 rounds, on a tiny slice of the split (not a benchmark)")
    args = p.parse_args(argv)
    if args.quick:
        args.bits, args.lrs, args.rounds, args.tune_rounds, args.lsh_seeds = [16], args.lrs[:2], 2, 1, 2
    for name in ("rounds", "tune_rounds", "lsh_seeds", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.out is None:
        args.out = QUICK_RESULTS if args.quick else RESULTS
    return args


def make_split(n: int, seed: int, quick: bool) -> Split:
    """Classic split; val = its first 1,000 training pairs (fit = the other 9,000)."""
    s = classic_split(n, seed)
    if quick:  # a tiny slice of the same split: 200 queries, 2,000 database, 1,000 train (200 val)
        return Split(query=s.query[:200], database=s.database[:2000], train=s.train[:1000], val=s.train[:200])
    return s


def lsh_t2t(bow: np.ndarray, labels: np.ndarray, split: Split, bits: int, seeds: int) -> list[float]:
    """Text→text mAP@all of LSH codes on the BoW, one value per projection seed."""
    feats = bow.astype(np.float32)
    out = []
    for seed in range(seeds):
        h = LSH(feats.shape[1], bits, seed)(feats)
        out.append(mean_average_precision(pack(h[split.query]), pack(h[split.database]),
                                          labels[split.query], labels[split.database]))
    return out


def run_dcph(dataset, split: Split, bits: int, lr: float, rounds: int, seed: int, root: Path) -> dict:
    """One DCPH text-only run; epoch selected on val. Returns val/test mAP, epochs and timings."""
    out = root / f"dcph_k{bits}_lr{lr:g}_r{rounds}"
    config = make_config("dcph", "paper", bits=bits, rounds=rounds, seed=seed, batch_size=40,
                         dataset="mirflickr25k", lr_text=lr, cross_weight=0.0)
    backbones = {"text": get_config("bow-mlp", input_dim=dataset.bow.shape[1]), "image": get_config("alexnet")}
    t0 = time.perf_counter()
    result = train("dcph", config, dataset, out, split=split, select_on="val", progress=False,
                   backbones=backbones)
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / METRICS_NAME).read_text().splitlines() if line.strip()]
    epoch_seconds = [r["seconds"] for r in records]
    return {
        "bits": bits, "lr": lr, "rounds": rounds, "epochs": len(records), "out": str(out),
        "selected_epoch": result.selected_epoch + 1,  # 1-based
        "val_map": float(result.val["map_t2t"]), "test_map": float(result.test["map_t2t"]),
        "val_curve": [round(float(r["val"]["map_t2t"]), 4) for r in records],
        "sec_per_epoch": float(np.mean(epoch_seconds)), "total_seconds": wall,
    }


def fmt_lsh(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def write_markdown(path: Path, args, argv: list[str] | None, split: Split, rows: list[dict], tuning: dict[int, list[dict]],
                   lsh: dict[int, list[float]], started: datetime, wall: float) -> None:
    sizes = split.sizes()
    lines = [
        "# MIRFlickr-25K: DCPH text branch vs LSH, text→text mAP@all" + (" (QUICK SMOKE RUN, not a result)" if args.quick else ""),
        "",
        f"- Run: {started:%Y-%m-%d %H:%M} UTC, `{' '.join(['bench/mirflickr_dcph_text.py', *(argv if argv is not None else sys.argv[1:])])}`; "
        f"total wall time {wall / 60:.1f} min.",
        f"- Machine: {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__} with {args.threads} threads, "
        f"Python {platform.python_version()}. The cores may be shared with other processes, so timings are upper bounds.",
        "- Data: MIRFlickr-25K cleaned release (20,015 pairs), 1,386-word binary tag BoW, 24 labels; no images, "
        "so DCPH trains its text tower only (every round is one text epoch).",
        f"- Split: `classic_split(20015, seed={args.seed})`: query {sizes['query']}, database {sizes['database']}, "
        f"train {sizes['train']} = val {sizes['val']} (the first training pairs) + fit {sizes['fit']} "
        "(what the optimizer sees). mAP@all: query texts vs database texts, relevant = sharing a label.",
        "- Tuned on the validation slice only (val queries vs fit pairs, mAP@all); the test queries were used once, "
        "for the reported numbers. Epoch: the best validation epoch of the final run. "
        f"`lr_text`: per bit length, the best validation mAP among {args.lrs} after {args.tune_rounds} round(s).",
        "- DCPH: paper preset, BoW MLP Linear(1386→8192), ReLU + tanh(Linear(8192→K)) from scratch, batch 40, "
        "SGD (momentum 0, weight decay 1e-5), cosine warm restarts T_0 = 20, `cross_weight=0` "
        f"(no image side), seed {args.seed}, 1 seed. "
        f"LSH: sign of a Gaussian projection of the BoW, mean ± std over {args.lsh_seeds} projection seeds.",
        "- s / epoch: mean wall seconds per epoch from `metrics.jsonl` (training + the per-epoch validation "
        "scoring and checkpoint). Total s: the whole final `train()` call (stage-1 proxies, all epochs, test scoring).",
        "",
        "| bits | LSH T→T mAP@all | DCPH text T→T mAP@all | lr_text | epochs (= rounds) run | selected epoch | s / epoch | total s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['bits']} | {fmt_lsh(lsh[r['bits']])} | {r['test_map']:.4f} | {r['lr']:g} | {r['epochs']} | "
                     f"{r['selected_epoch']} | {r['sec_per_epoch']:.1f} | {r['total_seconds']:.0f} |")
    lines += ["", "Validation mAP (val→fit) behind the choices:", "",
              "| bits | run | lr_text | rounds | val mAP per epoch | best val mAP |", "|---:|---|---:|---:|---|---:|"]
    for r in rows:
        for t in tuning[r["bits"]]:
            lines.append(f"| {t['bits']} | lr selection | {t['lr']:g} | {t['rounds']} | "
                         f"{', '.join(f'{v:.4f}' for v in t['val_curve'])} | {t['val_map']:.4f} |")
        lines.append(f"| {r['bits']} | final | {r['lr']:g} | {r['rounds']} | "
                     f"{', '.join(f'{v:.4f}' for v in r['val_curve'])} | {r['val_map']:.4f} |")
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = datetime.now(timezone.utc)
    t_start = time.perf_counter()
    root = args.runs_dir or REPO / "runs" / "mirflickr_dcph_text" / started.strftime("%Y%m%dT%H%M%SZ")
    dataset = load_dataset("mirflickr25k", root=args.data) if args.data else load_dataset("mirflickr25k")
    if dataset.images is not None or dataset.bow is None:
        raise SystemExit("expected the text-only MIRFlickr-25K release (BoW, no images)")
    split = make_split(len(dataset), args.seed, args.quick)
    split.check(len(dataset))
    print(f"data: {len(dataset)} pairs, BoW {dataset.bow.shape[1]}-d; split {split.sizes()}; runs in {root}", flush=True)

    rows, tuning, lsh = [], {}, {}
    for bits in args.bits:
        lsh[bits] = lsh_t2t(dataset.bow, dataset.labels, split, bits, args.lsh_seeds)
        print(f"[{bits} bits] LSH T→T mAP@all {fmt_lsh(lsh[bits])}", flush=True)
        trials = []
        for lr in args.lrs if len(args.lrs) > 1 else []:
            trial = run_dcph(dataset, split, bits, lr, args.tune_rounds, args.seed, root)
            trials.append(trial)
            print(f"[{bits} bits] lr {lr:g}: val mAP per epoch {trial['val_curve']} "
                  f"({trial['sec_per_epoch']:.1f} s/epoch)", flush=True)
        lr = max(trials, key=lambda t: t["val_map"])["lr"] if trials else args.lrs[0]
        reuse = [t for t in trials if t["lr"] == lr and t["rounds"] == args.rounds]
        final = reuse[0] if reuse else run_dcph(dataset, split, bits, lr, args.rounds, args.seed, root)
        tuning[bits] = [t for t in trials if t is not final]
        rows.append(final)
        print(f"[{bits} bits] DCPH lr {lr:g}, {final['epochs']} epochs, selected epoch {final['selected_epoch']} "
              f"(val {final['val_map']:.4f}): test T→T mAP@all {final['test_map']:.4f}; "
              f"{final['sec_per_epoch']:.1f} s/epoch, {final['total_seconds']:.0f} s", flush=True)

    wall = time.perf_counter() - t_start
    write_markdown(args.out, args, argv, split, rows, tuning, lsh, started, wall)
    print(Path(args.out).read_text())
    print(f"wrote {args.out} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
