"""`cmhash train` and `cmhash eval`: run a recipe on a dataset, and score a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cmhash.commands import DataRootOption, DatasetOption, JsonOption, stderr, stdout
from cmhash.errors import ConfigError


def _parse_sets(pairs: list[str]) -> dict:
    """`key=value` pairs; values are read as JSON when they parse (numbers, true, lists), else as strings."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def train(
    method: Annotated[str, typer.Argument(help="dcph, dhaph, dmsh, or the pairwise baseline.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint, metrics.jsonl, resume state.")],
    preset: Annotated[str, typer.Option(help="offline (EfficientNet-Lite0 + MiniLM, frozen) or paper.")] = "offline",
    data: DatasetOption = "coco-mini",
    data_root: DataRootOption = None,
    bits: Annotated[int, typer.Option(help="Code length K.")] = 64,
    seed: Annotated[Optional[int], typer.Option(help="Run seed (default: the recipe's own).")] = None,
    split_seed: Annotated[int, typer.Option(help="Seed of the proportional split (datasets without their own).")] = 0,
    select_on: Annotated[str, typer.Option(
        help="val (default), or test-queries: the authors' protocol, which picks the epoch on the test set "
             "and so over-reports.")] = "val",
    set_: Annotated[list[str], typer.Option("--set", help="Override a recipe setting: --set epochs=10 "
                                                          "--set labelnet=random (repeatable).")] = [],
    image_weights: Annotated[Optional[str], typer.Option(help="Image backbone weights (paper presets).")] = None,
    text_weights: Annotated[Optional[str], typer.Option(help="Text backbone weights (paper presets).")] = None,
    tokenizer: Annotated[Optional[str], typer.Option(help="tokenizer.json for a user-supplied text backbone.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (under torchrun, each rank takes its LOCAL_RANK GPU).")] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Train a hasher; rerun the same command to resume an interrupted run.

    Examples:

    * `cmhash train dmsh --preset offline --data coco-mini --bits 64 --seed 0 --out runs/dmsh64`
    * `cmhash train dhaph --out runs/dhaph --set hier_grad=to_codes`
    * `torchrun --nproc-per-node 2 -m cmhash train dcph --out runs/ddp` (DDP; gloo on CPU)
    """
    from cmhash.zoo.data import load_dataset
    from cmhash.zoo.recipes import make_config
    from cmhash.zoo.train import train as run

    changes = {"bits": bits, **_parse_sets(set_)}
    if seed is not None:
        changes["seed"] = seed
    config = make_config(method, preset, **changes)
    dataset = load_dataset(data, data_root)
    weights = {k: v for k, v in (("image", image_weights), ("text", text_weights)) if v}
    result = run(method, config, dataset, out, split_seed=split_seed, select_on=select_on, device=device,
                 backbone_weights=weights, tokenizer_file=tokenizer, progress=progress)
    if result is None:  # a non-zero torchrun rank
        return
    summary = {"out": str(result.out), "selected_epoch": result.selected_epoch, select_on: result.val,
               "test": result.test, "seconds": round(result.seconds, 2)}
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    stderr.print(f"trained {method} ({preset}, {bits} bits) in {result.seconds:.1f} s; epoch "
                 f"{result.selected_epoch + 1} selected on {select_on}; checkpoint in {result.out}")
    _print_scores(result.test, "test queries → database")


def _print_scores(scores: dict, title: str) -> None:
    table = Table(title=title)
    for col in ("direction", "mAP@all", *(f"P@{n}" for n in scores.get("precision_i2t", {}))):
        table.add_column(col)
    for d, name in (("i2t", "I→T"), ("t2i", "T→I"), ("t2t", "T→T")):
        if f"map_{d}" in scores:
            precision = scores.get(f"precision_{d}", {})
            table.add_row(name, f"{scores[f'map_{d}']:.4f}", *(f"{v:.4f}" for v in precision.values()))
    stdout.print(table)


def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (config.json + model.safetensors).")],
    data: DatasetOption = "coco-mini",
    data_root: DataRootOption = None,
    plots: Annotated[Optional[Path], typer.Option(help="Folder for the PR-curve PNG (default: the checkpoint).")] = None,
    image_weights: Annotated[Optional[str], typer.Option(help="Image backbone weights (trained-backbone checkpoints).")] = None,
    text_weights: Annotated[Optional[str], typer.Option(help="Text backbone weights (trained-backbone checkpoints).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Score a checkpoint: mAP@all and precision@N per direction, and the PR curves as a PNG.

    Example: `cmhash eval runs/dmsh64 --data coco-mini --json`
    """
    from cmhash.runtime.plots import save_pr_curves
    from cmhash.zoo.data import load_dataset
    from cmhash.zoo.scoring import evaluate_checkpoint

    dataset = load_dataset(data, data_root)
    weights = {k: v for k, v in (("image", image_weights), ("text", text_weights)) if v}
    scores, curves, split = evaluate_checkpoint(checkpoint, dataset, backbone_weights=weights, progress=not as_json)
    png = (plots or checkpoint) / "pr_curves.png"
    save_pr_curves(curves, png, title=f"{checkpoint.name} on {dataset.name}")
    if as_json:
        print(json.dumps({"scores": scores, "split": split.sizes(), "pr_curves_png": str(png)}, indent=2))
        return
    _print_scores(scores, f"{checkpoint.name}: {split.sizes()['query']} queries → {split.sizes()['database']} database")
    stderr.print(f"PR curves: {png}")
