"""What `cmhash encode ... --ray` and `cmhash index build ... --shards N` do, as plain functions.

Each takes an optional Ray `address` (None: a local cluster, started and stopped by the call;
an address: join that cluster) and returns a summary dict that the CLI prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cmhash.errors import InvalidInputError
from cmhash.runtime.formats.codes_file import CodesFile, load_codes
from cmhash.runtime.distributed.cluster import ray_cluster
from cmhash.runtime.distributed.code_shards import is_code_shards, read_code_shards
from cmhash.runtime.input_files import image_paths, read_texts
from cmhash.runtime.io import refuse_to_replace
from cmhash.runtime.pipeline import EncoderOptions, index_meta, items_path, write_items

ADD_BATCH = 1 << 20  # rows per add call: bounds one Ray message at ~8 MiB of 64-bit codes


def encode_images_ray(model: str | os.PathLike, paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                      options: EncoderOptions | None = None, *, address: str | None = None,
                      workers: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """As `pipeline.encode_images` (ids 0..n-1 in the order given), on Ray, into the codes folder `out`."""
    from cmhash.runtime.distributed.encode import encode_distributed

    refuse_to_replace(out, overwrite, "a codes folder")
    files = image_paths(paths)
    with ray_cluster(address):
        return encode_distributed(model, "image", [str(f.resolve()) for f in files], np.arange(len(files)), out,
                                  items=[str(f) for f in files], workers=workers, options=options)


def encode_texts_ray(model: str | os.PathLike, text_file: str | os.PathLike, out: str | os.PathLike,
                     options: EncoderOptions | None = None, lines: Sequence[str] | None = None, *,
                     address: str | None = None, workers: int | None = None,
                     overwrite: bool = False) -> dict[str, Any]:
    """As `pipeline.encode_texts` (id = 0-based line number), on Ray, into the codes folder `out`."""
    from cmhash.runtime.distributed.encode import encode_distributed

    refuse_to_replace(out, overwrite, "a codes folder")
    texts, ids = read_texts(text_file, lines)
    with ray_cluster(address):
        return encode_distributed(model, "text", texts, ids, out, workers=workers, options=options)


def load_any_codes(codes: str | os.PathLike) -> CodesFile:
    """A codes .npz (`cmhash encode`) or a codes folder (`cmhash encode --ray`), rows in insertion order."""
    return read_code_shards(codes) if is_code_shards(codes) else load_codes(codes)


def build_sharded_index(codes: str | os.PathLike, out: str | os.PathLike, shards: int, *,
                        address: str | None = None, num_cpus: float | None = None,
                        overwrite: bool = False) -> dict[str, Any]:
    """A ShardedIndex of a codes file or folder, saved into the folder `out`, plus `out.items.json`.

    Items are added in the codes' order, so searches return exactly what `cmhash index build`'s
    single-node index returns for the same codes.
    """
    from cmhash.runtime.distributed.sharded_index import ShardedIndex

    refuse_to_replace(out, overwrite, "a sharded index")
    data = load_any_codes(codes)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; a sharded index is saved into a folder (e.g. {out}.shards)")
    with ray_cluster(address), ShardedIndex(data.bits, shards, num_cpus=num_cpus, meta=index_meta(data)) as index:
        for start in range(0, data.codes.shape[0], ADD_BATCH):
            index.add(data.codes[start:start + ADD_BATCH], data.ids[start:start + ADD_BATCH])
        index.save(out)
        counts = index.shard_counts
    write_items(out, data)
    return {"index": str(out), "items": str(items_path(out)), "count": int(sum(counts)), "bits": data.bits,
            "modality": data.modality, "shards": len(counts), "shard_counts": counts}
