"""`cmhash data ...`: inspect the datasets the readers understand."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cmhash.commands import DataRootOption, JsonOption, stdout

app = typer.Typer(help="Inspect datasets (coco-mini, mirflickr25k, or a folder in a supported format).",
                  no_args_is_help=True)


@app.command()
def info(
    dataset: Annotated[str, typer.Argument(help="A known name (coco-mini, mirflickr25k) or a folder.")] = "coco-mini",
    data_root: DataRootOption = None,
    as_json: JsonOption = False,
) -> None:
    """Summarise a dataset: pairs, classes, texts, bag-of-words size and the default split.

    Examples: `cmhash data info coco-mini --data-root /data` · `cmhash data info /data/my-clip-set --json`
    """
    from cmhash.zoo.data import load_dataset, proportional_split

    ds = load_dataset(dataset, data_root)
    split = ds.split or proportional_split(len(ds), seed=0)
    summary = {
        "name": ds.name,
        "pairs": len(ds),
        "classes": ds.num_classes,
        "labels_per_pair": round(float(ds.labels.sum(axis=1).mean()), 3),
        "images": None if ds.images is None else len(ds.images),
        "texts_per_pair": None if ds.texts is None else round(sum(map(len, ds.texts)) / len(ds), 2),
        "bow_dim": None if ds.bow is None else int(ds.bow.shape[1]),
        "split": {k: int(v) for k, v in split.sizes().items()},
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"dataset {ds.name}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, "—" if value is None else str(value))
    stdout.print(table)
