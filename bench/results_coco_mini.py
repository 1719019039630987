"""Train every recipe and baseline on coco-mini and write RESULTS.md plus PR-curve PNGs.

    .venv/bin/python bench/results_coco_mini.py            # 16/32/64 bits × seeds 0,1,2 (~40 min, 2 cores)
    .venv/bin/python bench/results_coco_mini.py --bits 64 --seeds 0 --out /tmp/results-quick.md

Every trained model uses the shared loop (`cmhash.zoo.train`) with its offline preset (frozen
EfficientNet-Lite0 and MiniLM features, trained hash heads): the epoch is selected on the validation
slice, and the test queries are scored once, at the end. Run folders go to `runs/results/` and are
reused: a finished run is not retrained (delete the folder to redo it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from cmhash.runtime.io import atomic_write
from cmhash.runtime.plots import save_pr_curves
from cmhash.zoo.backbones import get_config
from cmhash.zoo.baselines import LSH
from cmhash.zoo.data import default_split, load_dataset
from cmhash.zoo.features import cached_image_features, cached_text_features
from cmhash.zoo.recipes import make_config
from cmhash.zoo.scoring import evaluate_checkpoint, score_split
from cmhash.zoo.train import train

ROOT = Path(__file__).resolve().parents[1]

# (row label, method, config changes): the two baselines of docs/RECIPES.md, "Baselines", then the methods and options.
MODELS: list[tuple[str, str | None, dict]] = [
    ("LSH (baseline)", None, {}),
    ("pairwise NLL (baseline)", "pairwise", {}),
    ("DCPH", "dcph", {}),
    ("DHaPH, hier_grad=detached (authors' code)", "dhaph", {"hier_grad": "detached"}),
    ("DHaPH, hier_grad=to_codes (paper text)", "dhaph", {"hier_grad": "to_codes"}),
    ("DMsH-LN, labelnet=trained (project decision)", "dmsh", {"labelnet": "trained"}),
    ("DMsH-LN, labelnet=random (authors' code)", "dmsh", {"labelnet": "random"}),
    ("DMsH-LN, labelnet=labels", "dmsh", {"labelnet": "labels"}),
]


def lsh_scores(dataset, split, bits: int, seed: int) -> tuple[dict, dict]:
    """LSH on the frozen features: image and text projections drawn independently from `seed`."""
    img = cached_image_features(get_config("efficientnet-lite0"), dataset.images, progress=False)
    txt, _ = cached_text_features(get_config("minilm-l6"), dataset.texts, progress=False)
    values = {"image": LSH(img.shape[1], bits, seed)(img), "text": LSH(txt.shape[2], bits, seed + 10_000)(txt[:, 0])}
    return score_split(values, dataset.labels, split.query, split.database, with_curves=True)


def run_one(dataset, method: str, changes: dict, bits: int, seed: int, folder: Path) -> dict:
    config = make_config(method, "offline", bits=bits, seed=seed, **changes)
    result = train(method, config, dataset, folder, progress=False)
    scores, curves, _ = evaluate_checkpoint(folder, dataset, progress=False)
    if abs(scores["score"] - result.test["score"]) > 1e-12:
        raise RuntimeError(f"{folder}: evaluating the checkpoint gives {scores['score']}, training said {result.test['score']}")
    # Summed per-epoch times (training + that epoch's validation), so a resumed run counts its first part too.
    seconds = sum(json.loads(line)["seconds"] for line in (folder / "metrics.jsonl").read_text().splitlines())
    losses = [json.loads(line)["loss"]["total"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {"test": result.test, "val": result.val, "epoch": result.selected_epoch, "epochs": config_epochs(method, config),
            "seconds": seconds, "curves": curves, "max_abs_loss": max(abs(x) for x in losses), "config": config}


def guide_positive_fraction(dataset, split, config) -> tuple[float, float]:
    """DMsH-LN: the share of fitted pairs its guide marks positive, and the share the labels do."""
    import torch

    from cmhash.zoo.methods.dmsh import DMsHLN, guide_mask

    y = torch.tensor(dataset.labels[split.fit], dtype=torch.float32)
    torch.manual_seed(config.seed)
    method = DMsHLN(config, num_classes=y.shape[1])
    method.prepare(y)
    masks = [guide_mask(method.labelnet(y, epoch)).float().mean().item() for epoch in (0, config.epochs - 1)]
    return min(masks), float((y @ y.T > 0).float().mean())


def why_below_lsh(label: str, method: str, recs: list[dict], dataset, split) -> list[str]:
    """Evidence for a model that does not beat LSH, measured from its runs."""
    loss = max(r["max_abs_loss"] for r in recs)
    lines = [f"- **{label}**: the largest |training loss| over every epoch of every seed was {loss:.3g}; "
             f"the selected epochs were {', '.join(str(r['epoch'] + 1) for r in recs)}."]
    if method == "dmsh" and recs[0]["config"].labelnet == "random":
        fractions = [guide_positive_fraction(dataset, split, r["config"])[0] for r in recs]
        _, labels = guide_positive_fraction(dataset, split, recs[0]["config"])
        lines.append(
            f"  Why: the untrained LabelNet maps every label vector to nearly the same code, so its guide "
            f"`M = (G Gᵀ) > 0` marks {min(fractions):.1%} of the fitted pairs positive at the first and last "
            f"epoch (the labels themselves: {labels:.1%}). With no negative pair, the MS loss skips every "
            "anchor (docs/RECIPES.md, \"Multi-similarity loss\": an anchor with an empty neg' contributes nothing), so the loss is exactly 0, "
            "no gradient flows, and the hash heads stay at their random initialization: a random projection "
            "of the features, which is what LSH is. The authors' code has this property on this data; the "
            "project's default (`labelnet=trained`) and `labelnet=labels` do not.")
    return lines


def config_epochs(method: str, config) -> int:
    return 2 * config.rounds if method == "dcph" else config.epochs


def method_label(method: str) -> str:
    return {"dcph": "DCPH", "dhaph": "DHaPH", "dmsh": "DMsH-LN", "pairwise": "pairwise"}[method]


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "RESULTS.md")
    parser.add_argument("--plots", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--limit", action="append", default=[], metavar="METHOD=BITS[,BITS][:SEEDS]",
                        help="run METHOD only at these code lengths (and seeds); its other cells say 'not run'")
    args = parser.parse_args()
    limits: dict[str, tuple[set[int], set[int]]] = {}
    for item in args.limit:
        method, _, spec = item.partition("=")
        bits, _, seeds = spec.partition(":")
        limits[method] = ({int(b) for b in bits.split(",")},
                          {int(x) for x in seeds.split(",")} if seeds else set(args.seeds))

    t_start = time.perf_counter()
    dataset = load_dataset("coco-mini")
    split = default_split(dataset)
    t0 = time.perf_counter()
    cached_image_features(get_config("efficientnet-lite0"), dataset.images)
    cached_text_features(get_config("minilm-l6"), dataset.texts)
    feature_seconds = time.perf_counter() - t0

    table: dict[tuple[str, int], list[dict]] = {}
    for label, method, changes in sorted(MODELS, key=lambda m: m[1] == "dhaph"):  # the slow one last
        for bits in args.bits:
            if method in limits and bits not in limits[method][0]:
                continue
            for seed in args.seeds:
                if method in limits and seed not in limits[method][1]:
                    continue
                if method is None:
                    scores, curves = lsh_scores(dataset, split, bits, seed)
                    rec = {"test": scores, "curves": curves, "seconds": 0.0, "epoch": None, "epochs": 0, "val": None}
                else:
                    tag = "-".join(f"{k}={v}" for k, v in changes.items()) or "default"
                    rec = run_one(dataset, method, changes, bits, seed, args.runs / method / tag / f"k{bits}-s{seed}")
                table.setdefault((label, bits), []).append(rec)
                print(f"{label:48s} K={bits:<3d} seed={seed}  I→T {rec['test']['map_i2t']:.3f}  "
                      f"T→I {rec['test']['map_t2i']:.3f}  ({rec['seconds']:.1f} s)", file=sys.stderr, flush=True)

    args.plots.mkdir(parents=True, exist_ok=True)
    top = max(args.bits)
    pngs = []
    for direction in ("I→T", "T→I"):
        curves = {label: table[(label, top)][0]["curves"][direction] for label, _, _ in MODELS}
        png = args.plots / f"pr_coco_mini_{top}bits_{'i2t' if direction == 'I→T' else 't2i'}.png"
        save_pr_curves(curves, png, title=f"coco-mini, {top} bits, seed {args.seeds[0]}: {direction}")
        pngs.append(png)
    total = time.perf_counter() - t_start
    write_report(args, table, split, feature_seconds, total, pngs, limits, dataset)


def write_report(args, table, split, feature_seconds: float, total: float, pngs: list[Path],
                 limits: dict[str, tuple[set[int], set[int]]], dataset) -> None:
    sizes = split.sizes()
    lines = [
        "# Results on coco-mini",
        "",
        f"Produced by `python bench/results_coco_mini.py --bits {' '.join(map(str, args.bits))} --seeds "
        f"{' '.join(map(str, args.seeds))}{''.join(f' --limit {x}' for x in args.limit)}` on {dt.date.today().isoformat()}, {platform.machine()} with "
        f"2 CPU cores, no GPU. Wall time of this invocation: {total / 60:.1f} min (feature extraction "
        f"{feature_seconds:.0f} s of it; finished runs from earlier invocations are reloaded, not retrained). "
        f"**Sum of the per-run training times (each run counted once, per-epoch validation included): "
        f"{sum(r['seconds'] for recs in table.values() for r in recs) / 60:.1f} min.**",
        "",
        f"- Data: coco-mini, 159 real COCO images with 5 captions each and 80 labels. Proportional split "
        f"(seed 0): **{sizes['query']} test queries, {sizes['database']} database pairs; {sizes['train']} "
        f"training pairs inside the database, of which {sizes['val']} are the validation slice and "
        f"{sizes['fit']} are fitted**.",
        "- Every model: frozen EfficientNet-Lite0 (image, 1280-d) and MiniLM-L6 (text, 384-d) features under "
        "trained hash heads (the `offline` presets). Training samples one random caption per pair per "
        "visit; evaluation uses each pair's first caption.",
        "- Protocol (docs/RECIPES.md, \"Shared evaluation protocol\"): Hamming ranking, mAP@all, relevant = shares a label, ties by database index. "
        "The epoch is selected on the validation slice (val queries against the fitted pairs); the test "
        "queries are scored once, at the end. Nothing was tuned on the test queries.",
        f"- Cells: mean ± std of test mAP@all over seeds {', '.join(map(str, args.seeds))} (the seed sets "
        "the heads' initialization, batch order, dropout and LSH projections; the split is fixed).",
        "",
    ]
    header = "| model | " + " | ".join(f"{b} bits I→T | {b} bits T→I" for b in args.bits) + " | train s/run |"
    lines += [header, "|" + "---|" * (2 + 2 * len(args.bits))]
    for label, _, _ in MODELS:
        cells = []
        for bits in args.bits:
            recs = table.get((label, bits))
            cells += [fmt([r["test"][f"map_{d}"] for r in recs]) if recs else "not run" for d in ("i2t", "t2i")]
        secs = [r["seconds"] for bits in args.bits for r in table.get((label, bits), [])]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {statistics.mean(secs):.1f} |")
    for method, (bits, seeds) in sorted(limits.items()):
        secs = [r["seconds"] for (label, _), recs in table.items() for r in recs if label.startswith(method_label(method))]
        lines += ["", f"**Not run: {method_label(method)} outside {', '.join(map(str, sorted(bits)))} bits "
                      f"and seeds {', '.join(map(str, sorted(seeds)))}**, for lack of time in this session: it "
                      f"trained in {statistics.mean(secs):.0f} s per run here, on a machine shared with other jobs "
                      "(its HIER term mines 500 hyperbolic proxies every step), against seconds for the others. "
                      "Rerun without `--limit` to fill these cells."]
    top = max(args.bits)
    lsh = table[("LSH (baseline)", top)]
    lsh_i2t = statistics.mean(r["test"]["map_i2t"] for r in lsh)
    lsh_t2i = statistics.mean(r["test"]["map_t2i"] for r in lsh)
    lines += ["", f"## Against LSH at {top} bits (mean over seeds)", "",
              "| model | I→T | T→I | above LSH in both? | selected epoch / epochs (per seed) |", "|---|---|---|---|---|"]
    below = []
    for label, method, _ in MODELS:
        recs = table[(label, top)]
        i2t = statistics.mean(r["test"]["map_i2t"] for r in recs)
        t2i = statistics.mean(r["test"]["map_t2i"] for r in recs)
        verdict = "—" if method is None else ("yes" if i2t > lsh_i2t and t2i > lsh_t2i else "**no**")
        epochs = "—" if method is None else ", ".join(f"{r['epoch'] + 1}/{r['epochs']}" for r in recs)
        lines.append(f"| {label} | {i2t:.3f} | {t2i:.3f} | {verdict} | {epochs} |")
        if verdict == "**no**":
            below.append((label, method, recs))
    if below:
        lines += ["", f"### Why some rows are not above LSH at {top} bits", ""]
        for label, method, recs in below:
            lines += why_below_lsh(label, method, recs, dataset, split)
    lines += ["", "PR curves (Hamming radius sweep, first seed): "
              + ", ".join(f"[{p.name}]({p.relative_to(args.out.parent) if p.is_relative_to(args.out.parent) else p})"
                          for p in pngs), ""]
    with atomic_write(args.out, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
