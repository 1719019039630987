"""`cmhash export ...`: ONNX encoders (validated, optional fp16) and TensorRT engines."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer

from cmhash.commands import DataRootOption, JsonOption, OverwriteOption, stderr, stdout
from cmhash.errors import ConfigError, ExportValidationError

app = typer.Typer(help="Export a checkpoint's encoders: validated ONNX, an fp16 variant, TensorRT engines.",
                  no_args_is_help=True, rich_markup_mode="markdown")

DatasetOption = Annotated[Optional[str], typer.Option(
    "--data", help="Dataset name or folder for the checks (default: the one the checkpoint trained on, e.g. coco-mini).")]
ImagesOption = Annotated[Optional[Path], typer.Option(
    "--images", help="Check on your own photos instead of a dataset: a folder of images, searched recursively (with --texts).")]
Int8TargetOption = Annotated[str, typer.Option(
    "--target", help="int8 for cpu (onnxruntime's fast uint8 kernels) or tensorrt (symmetric int8, what "
                     "`cmhash export trt --precision int8` builds from).")]
CalibrationOption = Annotated[Optional[Path], typer.Option(
    help="int8: a folder of photos the image tower is calibrated on (default: the checkpoint's training images).")]
TextsOption = Annotated[Optional[Path], typer.Option(
    "--texts", help="With --images: a UTF-8 file, one caption per line, for the text encoder's checks.")]


@contextlib.contextmanager
def _steps(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr that shows the current step and leaves a line per finished step."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    if not enabled:
        yield lambda _msg: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr,
                  transient=True) as progress:
        task = progress.add_task("starting", total=None)
        last: list[str] = []

        def step(message: str) -> None:
            if last:
                progress.console.print(f"[green]✓[/] {last[-1]}")
            last.append(message)
            progress.update(task, description=message)

        yield step
        if last:
            progress.console.print(f"[green]✓[/] {last[-1]}")


def _load(dataset: str | None, data_root: str | None, images: Path | None = None, texts: Path | None = None):
    """The check inputs: --images/--texts, else --data, else None (the checkpoint's own dataset)."""
    if (images is None) != (texts is None):
        raise typer.BadParameter("--images and --texts go together: the checks cover both encoders")
    if images is not None:
        from cmhash.zoo.data.loose import folder_pairs

        return folder_pairs(images, texts)
    if dataset is None:
        return None
    from cmhash.zoo.data import load_dataset

    return load_dataset(dataset, data_root)


def _print_reports(validation: dict | None, *variants: dict | None) -> None:
    from cmhash.export.validate import report_table
    from cmhash.export.variant_check import variant_table

    if validation:
        stdout.print(report_table(validation))
    for report in variants:
        if report and "map" in report:
            stdout.print(variant_table(report))


@app.command("onnx")
def export_onnx(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (config.json + model.safetensors).")],
    out: Annotated[Path, typer.Option("--out", help="The export folder to write.")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write and check half-precision variants.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Also write and check int8 variants (smaller, faster on CPUs).")] = False,
    calibration: CalibrationOption = None,
    int8_target: Annotated[str, typer.Option(
        "--int8-target", help="With --int8: cpu (onnxruntime) or tensorrt (symmetric int8 for TensorRT).")] = "cpu",
    validate: Annotated[bool, typer.Option(help="Check the export against PyTorch on the dataset.")] = True,
    dataset: DatasetOption = None,
    data_root: DataRootOption = None,
    images: ImagesOption = None,
    texts: TextsOption = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (the dynamo exporter needs >= 18).")] = 18,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Export the image and text encoders of a checkpoint to ONNX, then validate them.

    Writes `image.onnx`, `text.onnx`, the tokenizer (or BoW vocabulary), `export.json` and
    `validation.json`; with `--fp16` also `*.fp16.onnx` and `validation.fp16.json`.

    Examples:

    * `cmhash export onnx runs/dmsh64 --out exports/dmsh64`
    * `cmhash export onnx runs/dmsh64 --out exports/dmsh64 --fp16 --json`
    * `cmhash export onnx CKPT --out exports/mine --images photos/ --texts captions.txt` (check on your data)
    """
    from cmhash.export.onnx import export_checkpoint

    try:
        with _steps(progress and not as_json) as step:
            result = export_checkpoint(checkpoint, out, fp16=fp16, validate=validate,
                                       dataset=_load(dataset, data_root, images, texts), data_root=data_root,
                                       opset=opset, on_step=step, overwrite=overwrite, int8=int8,
                                       calibration=calibration, int8_target=int8_target)
    except ExportValidationError as exc:
        partial = getattr(exc, "result", None)
        if as_json and partial is not None:
            print(json.dumps({"folder": str(partial.folder), "validation": partial.validation, "fp16": partial.fp16,
                              "int8": partial.int8},
                             indent=2))
        elif partial is not None:
            _print_reports(partial.validation, partial.fp16, partial.int8)
        raise
    if as_json:
        print(json.dumps({"folder": str(result.folder), "files": result.manifest.data["files"],
                          "validation": result.validation, "fp16": result.fp16, "int8": result.int8}, indent=2))
        return
    _print_reports(result.validation, result.fp16, result.int8)
    stderr.print(f"exported {', '.join(result.manifest.modalities)} encoder(s) to {result.folder}")


@app.command("validate")
def validate_folder(
    folder: Annotated[Path, typer.Argument(help="An export folder (export.json + *.onnx).")],
    checkpoint: Annotated[Optional[Path], typer.Option(
        help="The source checkpoint (default: the path recorded in export.json; its sha256 must match).")] = None,
    dataset: DatasetOption = None,
    data_root: DataRootOption = None,
    images: ImagesOption = None,
    texts: TextsOption = None,
    atol: Annotated[float, typer.Option(help="Largest allowed |hash - PyTorch hash|.")] = 1e-4,
    fp16: Annotated[Optional[bool], typer.Option(
        "--fp16/--no-fp16", help="Also check the fp16 variants (default: when the folder has them).")] = None,
    int8: Annotated[Optional[bool], typer.Option(
        "--int8/--no-int8", help="Also check the int8 variants (default: when the folder has them).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Re-run the checks of an export folder against PyTorch on real data and print the table.

    Examples:

    * `cmhash export validate exports/dmsh64`
    * `cmhash export validate exports/dmsh64 --checkpoint runs/dmsh64 --json`
    """
    from cmhash.export.fp16 import validate_fp16
    from cmhash.export.int8 import validate_int8
    from cmhash.export.validate import run_checks, validate_export
    from cmhash.runtime.formats.export_manifest import read_export_manifest

    manifest = read_export_manifest(folder)
    wanted = {p: (flag if flag is not None else all(p in e.files for e in manifest.encoders.values()))
              for p, flag in (("fp16", fp16), ("int8", int8))}
    ds = _load(dataset, data_root, images, texts)
    with _steps(progress and not as_json) as step:
        checks = [("validation", lambda: validate_export(folder, checkpoint=checkpoint, dataset=ds, data_root=data_root,
                                                         atol=atol, on_step=step))]
        checks += [(p, lambda check=check: check(folder, dataset=ds, data_root=data_root, on_step=step))
                   for p, check in (("fp16", validate_fp16), ("int8", validate_int8)) if wanted[p]]
        found, failure = run_checks(checks)
    reports: dict[str, Any] = {"validation": None, "fp16": None, "int8": None, **found}
    if as_json:
        print(json.dumps(reports, indent=2))
    else:
        _print_reports(reports["validation"], reports["fp16"], reports["int8"])
    if failure is not None:
        raise failure


@app.command("int8")
def export_int8(
    folder: Annotated[Path, typer.Argument(help="An export folder made by `cmhash export onnx`.")],
    calibration: CalibrationOption = None,
    target: Int8TargetOption = "cpu",
    dataset: DatasetOption = None,
    data_root: DataRootOption = None,
    images: ImagesOption = None,
    texts: TextsOption = None,
    progress: Annotated[bool, typer.Option(help="Show progress on stderr.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Add int8 variants (`image.int8.onnx`, `text.int8.onnx`) to an export folder and check them.

    Text towers: dynamic quantization of the weights. Image towers: static QDQ quantization,
    calibrated on real images. The check against fp32 on real data (bit agreement, ΔmAP) is written
    to validation.int8.json and export.json; it fails below 99% agreement or beyond |ΔmAP| 0.01.

    Examples:

    * `cmhash export int8 exports/dmsh64`
    * `cmhash export int8 exports/mine --calibration photos/ --images photos/ --texts captions.txt`
    * `cmhash export int8 exports/dmsh64 --target tensorrt` (then `cmhash export trt ... --precision int8`)
    """
    from cmhash.export.int8 import add_int8_variants, validate_int8

    ds = _load(dataset, data_root, images, texts)
    report, failure = None, None
    with _steps(progress and not as_json) as step:
        add_int8_variants(folder, calibration=calibration, dataset=ds, data_root=data_root, target=target,
                          on_step=step)
        try:
            report = validate_int8(folder, dataset=ds, data_root=data_root, on_step=step)
        except ExportValidationError as exc:
            report, failure = exc.report, exc
    if as_json:
        print(json.dumps({"folder": str(folder), "int8": report}, indent=2))
    else:
        _print_reports(None, report)
    if failure is not None:
        raise failure


@app.command("trt")
def export_trt(
    folder: Annotated[Path, typer.Argument(help="An export folder made by `cmhash export onnx`.")],
    min_batch: Annotated[int, typer.Option(help="Smallest batch of the optimization profile.")] = 1,
    opt_batch: Annotated[int, typer.Option(help="Batch TensorRT tunes for.")] = 32,
    max_batch: Annotated[int, typer.Option(help="Largest batch.")] = 256,
    min_seq: Annotated[Optional[int], typer.Option(help="Shortest token sequence (default 1).")] = None,
    opt_seq: Annotated[Optional[int], typer.Option(help="Sequence length to tune for (default 16).")] = None,
    max_seq: Annotated[Optional[int], typer.Option(help="Longest sequence (default: the tokenizer's max_length).")] = None,
    workspace_mb: Annotated[int, typer.Option(help="Builder workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Optional[Path], typer.Option(
        help="Timing cache file, read before and written after each build (default: DIR/tensorrt.timing.cache).")] = None,
    version_compatible: Annotated[bool, typer.Option(
        "--version-compatible", help="Engine runs on later TensorRT releases of the same major version.")] = False,
    hardware_compatible: Annotated[bool, typer.Option(
        "--hardware-compatible", help="Engine runs on any Ampere-or-newer GPU (may be slower).")] = False,
    precision: Annotated[str, typer.Option(
        help="fp16 (TensorRT 10: FP16 flag; 11: from the fp16 ONNX), fp32, or int8 (from the QDQ int8 ONNX of "
             "`cmhash export int8`).")] = "fp16",
    modality: Annotated[Optional[list[str]], typer.Option(help="Only these encoders (repeatable).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Build TensorRT engines (`image.engine`, `text.engine`) plus a sidecar JSON each.

    The sidecar records the TensorRT and CUDA versions, the GPU, the precision path and profiles;
    loading checks it first and prints this very command when the engine must be rebuilt.

    Examples:

    * `cmhash export trt exports/dmsh64 --min-batch 1 --opt-batch 32 --max-batch 256`
    * `cmhash export trt exports/dmsh64 --max-seq 64 --workspace-mb 2048 --timing-cache ~/.cache/trt.cache`
    """
    from cmhash.export.engine_meta import BuildOptions
    from cmhash.export.tensorrt import build_engines

    seq = (min_seq, opt_seq, max_seq)
    if any(v is not None for v in seq) and not all(v is not None for v in seq):
        raise ConfigError("give all three of --min-seq, --opt-seq and --max-seq, or none of them")
    options = BuildOptions(batch=(min_batch, opt_batch, max_batch),
                           sequence=seq if all(v is not None for v in seq) else None,  # type: ignore[arg-type]
                           workspace_mb=workspace_mb, timing_cache=str(timing_cache) if timing_cache else None,
                           version_compatible=version_compatible, hardware_compatible=hardware_compatible,
                           precision=precision, modalities=tuple(modality) if modality else None)
    with _steps(not as_json) as step:
        engines = build_engines(folder, options, on_step=step)
    if as_json:
        print(json.dumps({m: meta.to_dict() for m, meta in engines.items()}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"TensorRT engines in {folder}")
    for col in ("encoder", "precision path", "TensorRT", "GPU", "profiles (min / opt / max)"):
        table.add_column(col, overflow="fold")
    for m, meta in engines.items():
        profiles = "; ".join(f"{n}: {p['min']} / {p['opt']} / {p['max']}" for n, p in meta.profiles.items())
        table.add_row(m, meta.precision_path, meta.tensorrt_version,
                      f"{meta.gpu_name} (sm_{(meta.compute_capability or '?').replace('.', '')})", profiles)
    stdout.print(table)
