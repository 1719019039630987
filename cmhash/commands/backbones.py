"""`cmhash backbones ...`: list the registered backbones and check the offline ones on real data."""

from __future__ import annotations

import json
import time

import typer
from rich.table import Table

from cmhash.commands import DataRootOption, JsonOption, stderr, stdout

app = typer.Typer(help="Backbones: the frozen feature extractors under the hash heads.", no_args_is_help=True)


@app.command("list")
def list_backbones(as_json: JsonOption = False) -> None:
    """List every registered backbone with its input, output size, weights and preprocessing."""
    from cmhash.zoo.backbones import backbone_names, get_config

    configs = [get_config(name).to_dict() for name in backbone_names()]
    if as_json:
        print(json.dumps(configs, indent=2))
        return
    table = Table(title="backbones")
    for column in ("name", "input", "out_dim", "weights", "preprocessing"):
        table.add_column(column, overflow="fold")
    for c in configs:
        pre = c["preprocess"]
        text = (f"resize {pre['resize']} → crop {pre['crop']}, {pre['interpolation']}" if pre
                else f"tokens ≤ {c['max_length']}" if c["max_length"] else f"{c['input_dim']}-d BoW")
        table.add_row(c["name"], c["input_kind"], str(c["out_dim"]), c["weights"], text)
    stdout.print(table)


@app.command()
def check(data_root: DataRootOption = None, images: int = typer.Option(16, help="How many coco-mini pairs to encode.")) -> None:
    """Run the offline backbones (EfficientNet-Lite0, MiniLM) on real coco-mini pairs.

    Prints feature sizes, speed, ImageNet top-1 confidence, and whether captions of the same image
    are closer than captions of different images. Example: `cmhash backbones check --images 32`
    """
    import numpy as np
    import torch

    from cmhash.errors import DataNotFoundError
    from cmhash.zoo.backbones import build_backbone, build_tokenizer, get_config
    from cmhash.zoo.data import load_dataset

    try:
        ds = load_dataset("coco-mini", data_root)
    except DataNotFoundError as exc:
        stderr.print(f"[yellow]skipped:[/] coco-mini not found ({exc})")
        return
    ds = ds.subset(np.arange(min(images, len(ds))))
    rows = []
    with torch.no_grad():
        cfg = get_config("efficientnet-lite0")
        start = time.perf_counter()
        net = build_backbone(cfg)
        pixels = torch.from_numpy(cfg.preprocess(ds.images))
        feats = net(pixels)
        prob = net.classify(pixels).softmax(dim=1).max(dim=1).values
        rows.append(("efficientnet-lite0", f"{tuple(feats.shape)}", f"{time.perf_counter() - start:.1f} s",
                     f"mean ImageNet top-1 probability {float(prob.mean()):.2f}"))

        cfg = get_config("minilm-l6")
        start = time.perf_counter()
        net = build_backbone(cfg)
        captions = [c for caps in ds.texts for c in caps[:2]]
        batch = build_tokenizer(cfg)(captions)
        emb = net(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
        pairs = emb.reshape(len(ds), 2, -1)
        same = float((pairs[:, 0] * pairs[:, 1]).sum(dim=1).mean())
        cross = pairs[:, 0] @ pairs[:, 1].T
        different = float((cross.sum() - cross.diagonal().sum()) / (len(ds) * (len(ds) - 1)))
        rows.append(("minilm-l6", f"{tuple(emb.shape)}", f"{time.perf_counter() - start:.1f} s",
                     f"caption cosine: same image {same:.2f} vs different {different:.2f}"))
    table = Table(title=f"offline backbones on {len(ds)} coco-mini pairs")
    for column in ("backbone", "features", "load+encode", "sanity"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    stdout.print(table)
