"""`cmhash publish`, `cmhash download` and `cmhash zoo list`: the Hugging Face Hub and the model zoo.

The Hub endpoint is HF_ENDPOINT (default https://huggingface.co); the token is HF_TOKEN or the one
`hf auth login` saved; the cache is HF_HUB_CACHE. Each command calls one function of
`cmhash.zoo.hub` / `cmhash.zoo.registry` and prints its result on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from cmhash.commands import JsonOption, stderr, stdout

zoo_app = typer.Typer(help="The model zoo: the hashers shipped with cmhash and the published ones.",
                      no_args_is_help=True)


def publish(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder (config.json + model.safetensors).")],
    repo: Annotated[str, typer.Option("--repo", help="The Hub model repository, ORG/NAME (created if needed).")],
    private: Annotated[bool, typer.Option(
        "--private", help="Create the repository private (new repos only; default: the namespace's default).")] = False,
    with_onnx: Annotated[Optional[Path], typer.Option(
        "--with-onnx", help="An ONNX export folder to publish under onnx/.")] = None,
    token: Annotated[Optional[str], typer.Option(
        help="Hub token with write access (default: HF_TOKEN, else the token of `hf auth login`).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a trained run to the Hugging Face Hub and print the commit id (stdout).

    Uploads exactly config.json, model.safetensors, a model card (README.md) rendered from the run's
    config, manifest.json (sha256 + size of every file) and, with --with-onnx, the export under onnx/.
    metrics.jsonl and the train_state.* resume files stay local. Pin the printed commit when you
    download.

    Examples:

    * `cmhash publish runs/dmsh64 --repo my-lab/dmsh-coco-mini-64`
    * `cmhash publish runs/dmsh64 --repo my-lab/dmsh-coco-mini-64 --private --json`
    """
    from cmhash.zoo.hub import publish as run

    commit = run(run_dir, repo, private=private, with_onnx=with_onnx, token=token)
    if as_json:
        print(json.dumps({"repo_id": repo, "commit": commit, "source": f"hf-hub:{repo}@{commit}"}, indent=2))
        return
    stderr.print(f"published {run_dir} to {repo}; download this exact version with: "
                 f"cmhash download {repo}@{commit}", highlight=False, soft_wrap=True)
    print(commit)


def download(
    source: Annotated[str, typer.Argument(
        help="ORG/NAME or ORG/NAME@REVISION (branch, tag or 40-hex commit), or zoo:NAME (see `cmhash zoo list`).")],
    offline: Annotated[bool, typer.Option(
        "--offline", help="Only read the local cache; never touch the network (also: HF_HUB_OFFLINE=1).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Fetch the files again even if they are cached.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Download a published checkpoint into the Hub cache, check its manifest, print its local folder.

    With a 40-hex commit the cached copy is used without any network call; offline, a branch name
    resolves through the cache's refs.

    Examples:

    * `cmhash download my-lab/dmsh-coco-mini-64@0123456789abcdef0123456789abcdef01234567`
    * `cmhash download my-lab/dmsh-coco-mini-64 --offline`
    * `cmhash download zoo:dmsh-coco-mini-64 --json`
    """
    from cmhash.zoo.hub import download as run

    path = run(source, local_files_only=offline or None, force_download=force)
    if as_json:
        print(json.dumps({"source": source, "path": str(path), "commit": path.name}, indent=2))
        return
    print(path)


@zoo_app.command("list")
def list_models(as_json: JsonOption = False) -> None:
    """List the zoo: the hashers shipped inside cmhash and the published ones (each pinned to a Hub commit).

    Columns: name, shipped or Hub repo@commit, method, bits, dataset and test mAP (from each hasher's
    config.json). Load one with `load_hasher("zoo:NAME")`, or run the demo with it:
    `cmhash demo --model NAME`. Example: `cmhash zoo list --json`
    """
    from cmhash.zoo.registry import list_models as entries

    models = entries()
    if as_json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return
    table = Table(title="cmhash model zoo")
    for column in ("name", "where", "method", "bits", "dataset", "I→T mAP", "T→I mAP"):
        table.add_column(column, overflow="fold")
    for m in models:
        scores = [f"{m.metrics[k]:.4f}" if k in m.metrics else "-" for k in ("map_i2t", "map_t2i")]
        where = "shipped" if m.shipped else f"{m.repo_id}@{m.revision[:12]}"
        table.add_row(m.name, where, m.method, str(m.bits), m.dataset, *scores)
    stdout.print(table)
    if not models:
        stderr.print("the zoo is empty: this install lacks its shipped hashers (reinstall cmhash)")
