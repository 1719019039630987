"""`cmhash demo`: a zoo hasher (default: the shipped DHaPH one), exported and searched through the torch-free
runtime, on real photos."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

stderr = Console(stderr=True)
stdout = Console()


def demo(
    images: Annotated[Optional[Path], typer.Option(help="A folder of your own photos, searched recursively (default: the real "
                                                         "photographs scikit-image ships).")] = None,
    texts: Annotated[Optional[Path], typer.Option(help="A UTF-8 file, one caption per line: searched by the "
                                                        "image→text query, and its first 4 lines are the text→image "
                                                        "queries (default: a list written for the demo).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Results per query.")] = 5,
    out: Annotated[Optional[Path], typer.Option(help="Where to write the contact sheet PNG "
                                                      "(default: ~/.cache/cmhash/demo/contact_sheet.png).")] = None,
    model: Annotated[Optional[str], typer.Option(
        help="A zoo hasher, as `cmhash zoo list` names them (default: the shipped dhaph-coco-mini-64).")] = None,
) -> None:
    """Run the whole pipeline once: zoo hasher → ONNX (cached per model) → runtime encoders → Hamming search.

    The default hasher is DHaPH at 64 bits; the shipped ones (DCPH, DHaPH, DMsH-LN) were trained by
    cmhash on the 80 training pairs of coco-mini with frozen backbones: a demonstration of the
    pipeline, not strong retrieval models.

    Examples:

    * cmhash demo
    * cmhash demo --model dmsh-coco-mini-64
    * cmhash demo --images ~/Pictures/holiday --texts my_captions.txt -k 3
    """
    from cmhash.demo import run
    from cmhash.zoo import pretrained  # here, not at the top: `cmhash --help` must not import the zoo

    with stderr.status("starting") as status:
        result = run(images, texts, k=k, out=out, step=lambda msg: status.update(msg),
                     model=model or pretrained.DEFAULT)
    for q in result.queries:
        table = Table(title=f"{q.kind}: {Path(q.query).name if q.kind.startswith('image') else repr(q.query)}",
                      title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("Hamming distance", justify="right")
        table.add_column("result")
        for rank, hit in enumerate(q.hits, start=1):
            shown = hit.item if q.kind.startswith("image") else Path(hit.item).name
            table.add_row(str(rank), str(hit.distance), shown)
        stdout.print(table)
    timings = Table(title="time per stage", title_justify="left")
    timings.add_column("stage")
    timings.add_column("seconds", justify="right")
    for stage, seconds in result.stages.items():
        timings.add_row(stage, f"{seconds:.2f}")
    stdout.print(timings)
    stdout.print(f"ONNX export ({'made now' if result.exported_now else 'from the cache'}): {result.export_dir}")
    stdout.print(f"contact sheet: {result.sheet}")
    stdout.print("[dim]A hasher trained on 80 images with frozen backbones: expect a demonstration, "
                 "not a good search engine. See RESULTS.md for measured mAP.[/dim]")
    sys.stdout.flush()
