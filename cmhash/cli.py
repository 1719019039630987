"""The `cmhash` command line: a thin Typer app that mounts one sub-app per area.

Commands import heavy libraries (torch, the zoo) inside their bodies, so `cmhash --help`,
`cmhash doctor` and the runtime commands work in a runtime-only install.
Data goes to stdout, messages to stderr; typed cmhash errors print one clear line and exit 2.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import cmhash
from cmhash.commands import backbones as backbones_commands
from cmhash.commands import data as data_commands
from cmhash.commands import demo as demo_commands
from cmhash.commands import export as export_commands
from cmhash.commands import hub as hub_commands
from cmhash.commands import runtime as runtime_commands
from cmhash.commands import train as train_commands
from cmhash.errors import CmhashError

app = typer.Typer(
    name="cmhash",
    help="Deep cross-modal hashing: train hashers, export them, and search Hamming codes without PyTorch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(data_commands.app, name="data")
app.add_typer(backbones_commands.app, name="backbones")
app.add_typer(export_commands.app, name="export")
app.command("demo")(demo_commands.demo)
app.command("train")(train_commands.train)
app.command("eval")(train_commands.evaluate)
app.command("publish")(hub_commands.publish)
app.command("download")(hub_commands.download)
app.add_typer(hub_commands.zoo_app, name="zoo")
app.add_typer(runtime_commands.encode_app, name="encode")
app.add_typer(runtime_commands.index_app, name="index")
app.command("search")(runtime_commands.search)

stdout = Console()
stderr = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"cmhash {cmhash.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Deep cross-modal hashing: train hashers, export them, and search Hamming codes without PyTorch."""


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Show what is installed and what actually works: torch, onnxruntime providers, CuPy/GPU,
    TensorRT and faiss. Each check does real work, e.g. a tiny ONNX session per provider.

    Example: `cmhash doctor --json`
    """
    from cmhash.doctor import as_dicts, run_checks

    checks = run_checks()
    if as_json:
        print(json.dumps(as_dicts(checks), indent=2))
        return
    table = Table(title=f"cmhash {cmhash.__version__} doctor")
    table.add_column("component")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    colour = {"ok": "green", "missing": "yellow", "broken": "red"}
    for c in checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail)
    stdout.print(table)


def main() -> None:
    """Console entry point: typed cmhash errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=True)
    except CmhashError as exc:
        stderr.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
