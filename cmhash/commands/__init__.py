"""CLI sub-apps. Each command imports the zoo inside its body so `cmhash --help` needs no torch."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

# Every command spells these two alike: --data names a dataset, --data-root the folder that holds them.
DatasetOption = Annotated[Optional[str], typer.Option(
    "--data", help="A dataset name (coco-mini, mirflickr25k) found under --data-root, or a dataset folder.")]
DataRootOption = Annotated[Optional[str], typer.Option(
    "--data-root", help="Folder holding the named datasets (default: $CMHASH_DATA, else ../shared/data).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace what --out already holds (refused "
                                                                   "otherwise, before any work).")]

stdout = Console()
stderr = Console(stderr=True)
