"""Distributed encoding: a Ray Data pipeline of image paths or texts through the runtime encoder.

    with ray_cluster():
        summary = encode_distributed("exports/dmsh64", "image", paths, np.arange(len(paths)), "codes/")

The inputs become Arrow blocks; an actor pool (`workers` actors) runs `EncodeBatches`, which loads
the encoder once per actor and then encodes batch after batch; the workers write Parquet parts,
and a manifest names them (code_shards.py). Codes are the encoder's own output, so they are
identical to single-node `cmhash encode` on the same inputs.

On a real cluster, image paths must be readable at the same path on every node (shared storage),
and every node needs cmhash and the export folder (also at the same path).
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmhash.errors import ClusterError, CmhashError, InvalidInputError
from cmhash.validators import positive_int
from cmhash.runtime.distributed.cluster import cluster_cpus, init
from cmhash.runtime.distributed.code_shards import (CodeShardsInfo, codes_to_arrow, is_code_shards, pyarrow_module,
                                                    read_table, write_code_shards_manifest)
from cmhash.runtime.export_folder import ExportFolder

ROWS_PER_BLOCK = 4096  # upper bound of a block (a unit of work for one actor)
BLOCKS_PER_WORKER = 4  # so that a slow block does not leave the other workers idle at the end


class EncodeBatches:
    """Ray Data's map_batches callable: each actor loads the encoder once, then encodes its batches."""

    def __init__(self, model: str, modality: str, options: dict[str, Any]) -> None:
        from cmhash.runtime.pipeline import EncoderOptions

        self.options = EncoderOptions(**{**options, "progress": False})
        self.encoder = self.options.load(model, modality)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        result = self.options.run(self.encoder, batch.column("input").to_pylist())
        n = batch.num_rows
        flags = {name: np.zeros(n, bool) if value is None else np.asarray(value, bool)
                 for name, value in (("truncated", result.truncated), ("no_known_words", result.no_known_words))}
        return pa.table({"id": batch.column("id"), "item": batch.column("item"),
                         "code": codes_to_arrow(result.codes), "truncated": pa.array(flags["truncated"]),
                         "no_known_words": pa.array(flags["no_known_words"])})


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; with --ray the codes are written into a folder "
                                f"(e.g. {out.with_suffix('')}.codes/)")
    if out.is_dir() and any(out.iterdir()) and not is_code_shards(out):
        raise InvalidInputError(f"--out {out} is a folder that holds other files; give a new or empty folder "
                                "(or an earlier --ray output, which is replaced)")


def pq_rows(path: Path) -> int:
    """Rows of a Parquet file, from its footer (reads no data)."""
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _blocks(table: Any, workers: int) -> list[Any]:
    n = table.num_rows
    count = min(n, max(workers * BLOCKS_PER_WORKER, math.ceil(n / ROWS_PER_BLOCK)))
    bounds = np.linspace(0, n, count + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _cmhash_cause(exc: BaseException) -> CmhashError | None:
    """The CmhashError an actor raised, under Ray's RayTaskError / UserCodeException wrappers."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, CmhashError) and type(e).__module__.startswith("cmhash"):  # not Ray's dual-class wrapper
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


def encode_distributed(model: str | os.PathLike, modality: str, inputs: Sequence[str], ids: np.ndarray,
                       out: str | os.PathLike, *, items: Sequence[str] | None = None, workers: int | None = None,
                       cpus_per_worker: float = 1, options: Any = None) -> dict[str, Any]:
    """Encode `inputs` (image paths or texts) with `workers` actors into the codes folder `out`.

    `items`: what each id stands for in the output (default: the inputs). `options`: an
    EncoderOptions (its `threads` defaults to max(1, cpus_per_worker) per actor). Returns a summary:
    out, count, bits, modality, method, truncated_ids, no_known_word_ids.
    """
    from cmhash.runtime.pipeline import EncoderOptions

    pa = pyarrow_module("distributed encoding (--ray)")
    ray = init()
    folder = ExportFolder(model)
    folder.encoder(modality)  # fail here, not in every actor, when the export lacks this tower
    n = len(inputs)
    ids = np.asarray(ids, np.int64)
    if n == 0 or ids.shape != (n,) or (items is not None and len(items) != n):
        raise InvalidInputError(f"need one id (and item) per input: {n} inputs, {ids.shape[0]} ids")
    out = Path(out).resolve()
    _check_out(out)
    workers = workers or max(1, int(cluster_cpus() // max(cpus_per_worker, 1)))
    positive_int(workers, "workers")
    options = options or EncoderOptions()
    actor_options = {**vars(options), "threads": options.threads or max(1, int(cpus_per_worker))}
    table = pa.table({"id": pa.array(ids), "input": pa.array(list(map(str, inputs)), pa.string()),
                      "item": pa.array(list(map(str, items if items is not None else inputs)), pa.string())})
    run = f"run-{uuid.uuid4().hex[:12]}"
    ctx = ray.data.DataContext.get_current()
    # An unreadable image then arrives as our DataFormatError, not as UserCodeException (older Ray lacks
    # the setting; its errors arrive wrapped, and _cmhash_cause still finds ours where the chain keeps it).
    keep = getattr(ctx, "raise_original_map_exception", None)
    if keep is not None:
        ctx.raise_original_map_exception = True
    try:
        ray.data.from_arrow(_blocks(table, workers)).map_batches(
            EncodeBatches, fn_constructor_args=(str(Path(model).resolve()), modality, actor_options),
            batch_size=options.batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker).write_parquet(str(out / run))
    except Exception as exc:
        shutil.rmtree(out / run, ignore_errors=True)  # parts of a failed run are never listed: drop them
        cause = _cmhash_cause(exc)
        if cause is not None:
            raise cause from None
        raise ClusterError(f"distributed encoding failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if keep is not None:
            ctx.raise_original_map_exception = keep
    parts = sorted(str(p.relative_to(out)) for p in (out / run).glob("*.parquet"))
    info = CodeShardsInfo(out, folder.bits, modality, folder.method, str(model), n, parts, folder.manifest.model_id)
    written = sum(pq_rows(out / p) for p in parts)
    if written != n:
        raise ClusterError(f"distributed encoding wrote {written} rows for {n} inputs to {out / run}; run it again")
    write_code_shards_manifest(info)
    flagged = read_table(info, columns=["id", "truncated", "no_known_words"],  # only the flagged rows
                         filters=[[("truncated", "==", True)], [("no_known_words", "==", True)]])
    col = {name: flagged.column(name).to_numpy(zero_copy_only=False) for name in flagged.column_names}
    return {"out": str(out), "count": n, "bits": folder.bits, "modality": modality, "method": folder.method,
            "truncated_ids": sorted(col["id"][col["truncated"].astype(bool)].tolist()),
            "no_known_word_ids": sorted(col["id"][col["no_known_words"].astype(bool)].tolist()),
            "parts": len(parts), "workers": workers}
