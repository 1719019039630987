"""CLI sub-apps. Each command imports the zoo inside its body so `cmhash --help` needs no torch."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console

DataOption = Annotated[
    Optional[str],
    typer.Option("--data", help="Data root folder (default: $CMHASH_DATA, else ../shared/data)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]

stdout = Console()
stderr = Console(stderr=True)
