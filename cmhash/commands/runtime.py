"""`cmhash encode images|texts`, `cmhash index build` and `cmhash search`: the torch-free runtime.

Each command calls one function of `cmhash.runtime.pipeline` and prints its result: data on stdout
(a table, or JSON with --json), messages and progress bars on stderr.
"""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from cmhash.commands import JsonOption, OverwriteOption, stderr, stdout
from cmhash.commands.ray_options import (RayAddressOption, RayOption, SearchRayAddressOption, ShardsOption, WorkersOption,
                                         use_ray)

encode_app = typer.Typer(help="Encode images or texts into packed hash codes with an exported model (no torch).",
                         no_args_is_help=True, rich_markup_mode="markdown")
index_app = typer.Typer(help="Build Hamming indexes from encoded codes.", no_args_is_help=True,
                        rich_markup_mode="markdown")

ModelOption = Annotated[Path, typer.Option("--model", help="An export folder (made by `cmhash export onnx`).")]
BackendOption = Annotated[str, typer.Option(
    help="onnxruntime, or tensorrt (a native engine from `cmhash export trt`; needs TensorRT, CuPy and a GPU).")]
ProviderOption = Annotated[str, typer.Option(
    help="onnxruntime execution provider: cpu, cuda or tensorrt. A GPU provider that onnxruntime cannot give is an "
         "error unless --allow-cpu-fallback.")]
FallbackOption = Annotated[bool, typer.Option(
    "--allow-cpu-fallback", help="Run on the CPU (with a warning) when the GPU provider is unavailable.")]
PrecisionOption = Annotated[str, typer.Option(help="fp32, fp16 (exports made with --fp16) or int8 (with --int8 or "
                                                   "`cmhash export int8`).")]
ThreadsOption = Annotated[Optional[int], typer.Option(help="CPU threads for onnxruntime (default: all cores).")]
BatchOption = Annotated[int, typer.Option("--batch-size", help="Inputs per encoder call.")]
ProgressOption = Annotated[Optional[bool], typer.Option(
    "--progress/--no-progress", help="Progress bar on stderr (default: for 256+ inputs on a terminal).")]


@contextmanager
def _warnings_as_notes():
    """Print the provider fallback warning as one line on stderr, not as a Python warning with a path."""
    from cmhash.errors import ProviderFallbackWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ProviderFallbackWarning)
        yield
    for w in caught:
        if issubclass(w.category, ProviderFallbackWarning):
            stderr.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _options(backend: str, provider: str, fallback: bool, precision: str, threads: Optional[int], batch_size: int,
             progress: Optional[bool]):
    from cmhash.runtime.pipeline import EncoderOptions

    return EncoderOptions(backend=backend, provider=provider, allow_fallback=fallback, precision=precision,
                          threads=threads, batch_size=batch_size, progress=progress)


def _check_method(method: str) -> str:
    """--method checked before any work starts, in the CLI's words."""
    from cmhash.runtime.index import METHODS

    if method not in METHODS:
        raise typer.BadParameter(f"{method!r} is not one of {', '.join(METHODS)}", param_hint="--method")
    return method


def _summary(data, out: Path) -> dict:
    truncated = [] if data.truncated is None else data.ids[data.truncated].tolist()
    unknown = [] if data.no_known_words is None else data.ids[data.no_known_words].tolist()
    return {"out": str(out), "count": int(data.codes.shape[0]), "bits": data.bits, "modality": data.modality,
            "method": data.method, "truncated_ids": truncated, "no_known_word_ids": unknown,
            "skipped": [{"file": str(f), "why": why} for f, why in data.skipped]}


def _report(summary: dict, as_json: bool, what: str) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    if summary["truncated_ids"]:
        ids = summary["truncated_ids"]
        listed = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
        stderr.print(f"[yellow]note:[/] {len(ids)} text(s) were longer than the tokenizer's max_length and were "
                     f"truncated as in training (line numbers, 0-based: {listed})", highlight=False, soft_wrap=True)
    if summary["no_known_word_ids"]:
        ids = summary["no_known_word_ids"]
        listed = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
        stderr.print(f"[yellow]note:[/] {len(ids)} text(s) share no word with the model's bag-of-words vocabulary, "
                     f"so their codes carry no information (line numbers, 0-based: {listed})",
                     highlight=False, soft_wrap=True)
    for entry in summary.get("skipped", []):
        stderr.print(f"[yellow]skipped:[/] {escape(entry['why'])}", highlight=False, soft_wrap=True)
    if summary.get("other_files"):
        stderr.print(f"[yellow]note:[/] {summary['other_files']} file(s) in the folder(s) are not images "
                     f"(by suffix) and were left out", highlight=False, soft_wrap=True)
    stderr.print(f"encoded {summary['count']} {what} into {summary['bits']}-bit codes: {escape(summary['out'])}",
                 highlight=False, soft_wrap=True)


@encode_app.command("images")
def encode_images(
    paths: Annotated[list[Path], typer.Argument(help="Image files, or folders (searched recursively for images).")],
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", help="The codes file to write (.npz); with --ray, a folder.")],
    backend: BackendOption = "onnxruntime",
    provider: ProviderOption = "cpu",
    allow_cpu_fallback: FallbackOption = False,
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    batch_size: BatchOption = 32,
    progress: ProgressOption = None,
    ray: RayOption = False,
    ray_address: RayAddressOption = None,
    workers: WorkersOption = None,
    skip_unreadable: Annotated[bool, typer.Option(
        "--skip-unreadable", help="Leave out images that cannot be decoded (each is listed with why; the "
                                  "others keep their ids) instead of stopping.")] = False,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Encode images into packed hash codes (ids 0..n-1, in the order given) and save them as .npz.

    Images are opened with their EXIF orientation; grayscale, RGBA and palette images are converted
    as in training. An unreadable image stops the run and names the file (--skip-unreadable leaves it
    out instead); files without an image suffix in a folder are counted and left out. With --ray, actors on a Ray
    cluster encode in parallel and --out is a folder of Parquet parts (the same codes).

    Examples:

    * `cmhash encode images photos/ --model exports/dmsh64 --out photos.npz`
    * `cmhash encode images a.jpg b.png --model exports/dmsh64 --out q.npz --provider cuda --json`
    * `cmhash encode images photos/ --model exports/dmsh64 --out photos.codes --ray --workers 2`
    """
    options = _options(backend, provider, allow_cpu_fallback, precision, threads, batch_size, progress)
    if use_ray(ray, ray_address):
        from cmhash.runtime.distributed.pipeline import encode_images_ray

        if skip_unreadable:
            from cmhash.errors import InvalidInputError

            raise InvalidInputError("--skip-unreadable runs on one node; drop --ray (or remove the unreadable files)")

        with _warnings_as_notes():
            summary = encode_images_ray(model, paths, out, options, address=ray_address, workers=workers,
                                        overwrite=overwrite)
        _report(summary, as_json, "images")
        return
    from cmhash.runtime.pipeline import encode_images as run

    from cmhash.runtime.input_files import other_files

    with _warnings_as_notes():
        data = run(model, paths, out, options, overwrite=overwrite, skip_unreadable=skip_unreadable)
    _report({**_summary(data, out), "other_files": other_files(paths)}, as_json, "images")


@encode_app.command("texts")
def encode_texts(
    file: Annotated[str, typer.Argument(help="A UTF-8 text file, one text per line (blank lines skipped); - for stdin.")],
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", help="The codes file to write (.npz); with --ray, a folder.")],
    backend: BackendOption = "onnxruntime",
    provider: ProviderOption = "cpu",
    allow_cpu_fallback: FallbackOption = False,
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    batch_size: BatchOption = 32,
    progress: ProgressOption = None,
    ray: RayOption = False,
    ray_address: RayAddressOption = None,
    workers: WorkersOption = None,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Encode texts into packed hash codes (id = 0-based line number) and save them as .npz.

    Texts longer than the tokenizer's max_length are truncated exactly as in training, and the
    command says which. With --ray, actors on a Ray cluster encode in parallel and --out is a
    folder of Parquet parts (the same codes).

    Examples:

    * `cmhash encode texts captions.txt --model exports/dmsh64 --out captions.npz`
    * `cat queries.txt | cmhash encode texts - --model exports/dmsh64 --out q.npz --json`
    * `cmhash encode texts captions.txt --model exports/dmsh64 --out captions.codes --ray-address ray://head:10001`
    """
    lines = sys.stdin.read().splitlines() if file == "-" else None
    options = _options(backend, provider, allow_cpu_fallback, precision, threads, batch_size, progress)
    if use_ray(ray, ray_address):
        from cmhash.runtime.distributed.pipeline import encode_texts_ray

        with _warnings_as_notes():
            summary = encode_texts_ray(model, file, out, options, lines, address=ray_address, workers=workers,
                                       overwrite=overwrite)
        _report(summary, as_json, "texts")
        return
    from cmhash.runtime.pipeline import encode_texts as run

    with _warnings_as_notes():
        data = run(model, file, out, options, lines=lines, overwrite=overwrite)
    _report(_summary(data, out), as_json, "texts")


@index_app.command("build")
def index_build(
    codes: Annotated[Path, typer.Argument(help="A codes file from `cmhash encode` (with --shards, also a --ray "
                                                "codes folder).")],
    out: Annotated[Path, typer.Option(
        "--out", help="The index file to write (the .items.json sidecar goes next to it); with --shards, a folder.")],
    shards: ShardsOption = None,
    ray: RayOption = False,
    ray_address: RayAddressOption = None,
    method: Annotated[str, typer.Option(
        "--method", help="The search method saved with the index: auto (multi-index hashing on large "
                         "indexes, else a scan), scan, or mih. Every method gives the same results.")] = "auto",
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Build a Hamming index from a codes file and save it (atomically, with a checksum).

    Also writes `INDEX.items.json`, which maps ids back to image paths or texts for `cmhash search`.
    With --shards N, the index is split over N Ray actors and saved as a folder (one pair of files
    per shard plus index.json); searched through `ShardedIndex.load`, it returns exactly what the
    single-file index returns.

    Examples:

    * `cmhash index build photos.npz --out photos.cmhx`
    * `cmhash index build photos.codes --out photos.shards --shards 4 --ray-address ray://head:10001`
    """
    if shards is not None or use_ray(ray, ray_address):
        from cmhash.errors import InvalidInputError
        from cmhash.runtime.distributed.pipeline import build_sharded_index

        if shards is None:
            raise InvalidInputError("--ray builds a sharded index: give the number of shards with --shards N")
        _check_method(method)
        summary = build_sharded_index(codes, out, shards, address=ray_address, overwrite=overwrite)
    else:
        from cmhash.runtime.pipeline import build_index

        summary = build_index(codes, out, method=_check_method(method), overwrite=overwrite)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    where = f" in {summary['shards']} shards" if "shards" in summary else ""
    stderr.print(f"indexed {summary['count']} {summary['bits']}-bit {summary['modality']} codes{where}: "
                 f"{escape(summary['index'])}", highlight=False, soft_wrap=True)


def search(
    index: Annotated[Path, typer.Option("--index", help="An index file, or a sharded index folder, from "
                                                         "`cmhash index build`.")],
    model: ModelOption,
    text: Annotated[Optional[list[str]], typer.Option("--text", help="A query text (repeatable).")] = None,
    image: Annotated[Optional[list[Path]], typer.Option("--image", help="A query image (repeatable).")] = None,
    k: Annotated[int, typer.Option("-k", metavar="K",
                                 help="Results per query (at least 1). Larger than the index: every item.")] = 10,
    backend: BackendOption = "onnxruntime",
    provider: ProviderOption = "cpu",
    allow_cpu_fallback: FallbackOption = False,
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    ray_address: SearchRayAddressOption = None,
    method: Annotated[Optional[str], typer.Option(
        "--method", help="Search method: auto, scan or mih (multi-index hashing); default: the one the index "
                         "was built with. Every method gives the same results.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Encode query texts and/or images with the export's encoders and print the k nearest items.

    Results are ordered by Hamming distance, ties by insertion order (as FAISS orders them). Text
    queries search an image index and vice versa: that is cross-modal retrieval.

    Examples:

    * `cmhash search --index photos.cmhx --model exports/dmsh64 --text "a dog on a sofa" -k 10`
    * `cmhash search --index captions.cmhx --model exports/dmsh64 --image q.jpg -k 5 --json`
    * `cmhash search --index photos.shards --model exports/dmsh64 --text "a cat"` (a sharded index
      folder from `cmhash index build --shards N`; loaded onto a local Ray cluster, or --ray-address)
    """
    from cmhash.runtime.pipeline import search as run

    options = _options(backend, provider, allow_cpu_fallback, precision, threads, 32, False)
    with _warnings_as_notes():
        result = run(index, model, k, texts=text or [], images=image or [], options=options, ray_address=ray_address,
                     method=None if method is None else _check_method(method))
    if as_json:
        print(json.dumps({"index": str(index), **result.to_dict()}, indent=2))
        return
    if k > result.index_size:
        stderr.print(f"note: the index holds {result.index_size} items, fewer than k={k}; showing all of them",
                     highlight=False)
    for q in result.queries:
        title = f"{q.modality} query: {escape(q.query)}" + (" (truncated to max_length)" if q.truncated else "")
        table = Table(title=title, title_justify="left")
        for col, justify in (("rank", "right"), ("distance", "right"), ("id", "right"), ("item", "left")):
            table.add_column(col, justify=justify, overflow="fold")
        for h in q.hits:
            table.add_row(str(h.rank), str(h.distance), str(h.id), escape(h.item or ""))
        stdout.print(table)
    if result.items_missing:
        from cmhash.runtime.pipeline import items_path

        stderr.print(f"note: {items_path(index)} is missing, so the item column is empty: copy it together with the "
                     "index, or build the index again with cmhash index build", highlight=False, soft_wrap=True)
