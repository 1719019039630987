"""What the `cmhash encode`, `cmhash index build` and `cmhash search` commands do, as plain functions.

Torch-free, so they run in a runtime-only install. Each returns data; the CLI only prints it.

Search results: each query gets at most k hits ordered by (Hamming distance, insertion order), the
index's own order. When k is larger than the index, a query gets every item (fewer than k hits);
`SearchResult.index_size` says how many there were. The padding the index uses internally (id -1)
never reaches the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from cmhash.errors import CodeFormatError, DataFormatError, InvalidInputError
from cmhash.runtime.formats.codes_file import CodesFile, load_codes, save_codes
from cmhash.runtime.formats.model_id import check_same_model
from cmhash.runtime.encoder import EncodeResult, load_encoder
from cmhash.runtime.input_files import image_paths, read_texts, readable_images
from cmhash.runtime.io import atomic_write, refuse_to_replace
from cmhash.validators import positive_int

ITEMS_FORMAT = "cmhash-index-items/1"


@dataclass
class EncoderOptions:
    """How to run the encoder: passed through to `load_encoder` and `encode`."""

    backend: str = "onnxruntime"
    provider: str = "cpu"
    allow_fallback: bool = False
    precision: str = "fp32"
    threads: int | None = None
    batch_size: int = 32
    progress: bool | None = None

    def load(self, model: str | os.PathLike, modality: str):
        return load_encoder(model, modality, backend=self.backend, provider=self.provider,
                            allow_fallback=self.allow_fallback, precision=self.precision, threads=self.threads)

    def run(self, encoder: Any, inputs: list) -> EncodeResult:
        return encoder.encode(inputs, batch_size=self.batch_size, progress=self.progress)


def encode_images(model: str | os.PathLike, paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                  options: EncoderOptions | None = None, overwrite: bool = False,
                  skip_unreadable: bool = False) -> CodesFile:
    """Encode image files (ids 0..n-1 in the order given; folders by `input_files.image_folder`) and
    write a codes file (an existing `out` only with `overwrite`).

    An unreadable image stops the run, naming it; with `skip_unreadable` it is left out instead (its
    id too, so the others keep theirs) and listed in the result's `skipped`."""
    refuse_to_replace(out, overwrite, "a codes file")
    options = options or EncoderOptions()
    files = image_paths(paths)
    ids, skipped = (readable_images(files) if skip_unreadable else (list(range(len(files))), []))
    if not ids:
        raise InvalidInputError(f"none of the {len(files)} images could be read (first: {skipped[0][1]})")
    kept = [files[i] for i in ids]
    encoder = options.load(model, "image")
    result = options.run(encoder, [str(f) for f in kept])
    data = CodesFile(result.codes, np.array(ids, dtype=np.int64), [str(f) for f in kept], encoder.bits,
                     "image", encoder.method, str(model), model_id=encoder.model_id, skipped=skipped)
    save_codes(out, data)
    return data


def encode_texts(model: str | os.PathLike, text_file: str | os.PathLike, out: str | os.PathLike,
                 options: EncoderOptions | None = None, lines: Sequence[str] | None = None,
                 overwrite: bool = False) -> CodesFile:
    """Encode the texts of a text file (`input_files.read_texts`: id = 0-based line number) and write a
    codes file (an existing `out` only with `overwrite`).

    `lines` replaces the file's content (the CLI reads stdin for FILE "-").
    """
    refuse_to_replace(out, overwrite, "a codes file")
    options = options or EncoderOptions()
    texts, ids = read_texts(text_file, lines)
    encoder = options.load(model, "text")
    result = options.run(encoder, texts)
    data = CodesFile(result.codes, ids, texts, encoder.bits, "text", encoder.method, str(model), result.truncated,
                     result.no_known_words, model_id=encoder.model_id)
    save_codes(out, data)
    return data


def items_path(index: str | os.PathLike) -> Path:
    index = Path(index)
    return index.with_name(index.name + ".items.json")


def index_meta(data: CodesFile, method: str = "auto") -> dict[str, Any]:
    """What an index built from `data` records: its default search method, and which export made the
    codes (searches with another one are refused)."""
    meta: dict[str, Any] = {"search_method": method} if method != "auto" else {}
    if data.model_id:
        meta["model_id"] = data.model_id
    return meta


def write_items(index: str | os.PathLike, data: CodesFile) -> None:
    """The index's `.items.json` sidecar: what each id stands for."""
    sidecar = {"format": ITEMS_FORMAT, "bits": data.bits, "modality": data.modality, "method": data.method,
               "model": data.model, "model_id": data.model_id, "ids": data.ids.tolist(), "items": data.items}
    with atomic_write(items_path(index), "w") as fh:
        json.dump(sidecar, fh)


def build_index(codes: str | os.PathLike, out: str | os.PathLike, method: str = "auto",
                overwrite: bool = False) -> dict[str, Any]:
    """A HammingIndex of a codes file, saved to `out`, with `out.items.json` mapping ids to items.

    `method` (HammingIndex's) is saved as the index's default search method. An existing `out` is
    replaced only with `overwrite`."""
    from cmhash.runtime.index import HammingIndex

    refuse_to_replace(out, overwrite, "an index")
    data = load_codes(codes)
    index = HammingIndex(data.bits, method=method, meta=index_meta(data, method) or None)
    index.add(data.codes, data.ids)
    index.save(out)
    write_items(out, data)
    return {"index": str(out), "items": str(items_path(out)), "count": len(index), "bits": data.bits,
            "modality": data.modality}


@dataclass
class Hit:
    rank: int
    id: int
    distance: int
    item: str | None


@dataclass
class QueryResult:
    query: str
    modality: str
    hits: list[Hit]
    truncated: bool = False


@dataclass
class SearchResult:
    index_size: int
    k: int
    queries: list[QueryResult] = field(default_factory=list)
    items_missing: bool = False  # no INDEX.items.json next to the index: hits have ids but no items

    def to_dict(self) -> dict[str, Any]:
        return {"index_size": self.index_size, "k": self.k,
                "queries": [{"query": q.query, "modality": q.modality, "truncated": q.truncated,
                             "results": [vars(h) for h in q.hits]} for q in self.queries]}


def _items(index: str | os.PathLike) -> dict[int, str]:
    path = items_path(index)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != ITEMS_FORMAT:
            raise ValueError(f"format is not {ITEMS_FORMAT}")
        return dict(zip(data["ids"], data["items"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataFormatError(f"{path} is not a cmhash items file ({exc}); rebuild it with: cmhash index build") from exc


@contextlib.contextmanager
def open_index(index: str | os.PathLike, ray_address: str | None = None, method: str | None = None) -> Iterator[Any]:
    """A saved index for searching: a `.cmhx` file (memory-mapped), or a sharded index folder from
    `cmhash index build --shards N`, loaded onto Ray actors for the duration of the block.
    `method`: the search method (None: the one the index was built with)."""
    if Path(index).is_dir():
        from cmhash.runtime.distributed.cluster import ray_cluster
        from cmhash.runtime.distributed.sharded_index import ShardedIndex

        with ray_cluster(ray_address), ShardedIndex.load(index, method=method or "auto") as sharded:
            yield sharded
        return
    from cmhash.runtime.index import HammingIndex

    # read-only: a one-shot search need not copy the codes; the CRC pass still catches a damaged file
    yield HammingIndex.load(index, mmap=True, verify=True, method=method)


def search(index: str | os.PathLike, model: str | os.PathLike, k: int, *, texts: Sequence[str] = (),
           images: Sequence[str | os.PathLike] = (), options: EncoderOptions | None = None,
           ray_address: str | None = None, method: str | None = None) -> SearchResult:
    """Encode the query texts and images with the export's encoders, then search the index."""
    if not texts and not images:
        raise InvalidInputError("no query: give at least one text or image")
    positive_int(k, "k")
    options = options or EncoderOptions()
    with open_index(index, ray_address, method) as hamming:
        items = _items(index)
        result = SearchResult(len(hamming), int(k), items_missing=not items_path(index).is_file())
        for modality, queries in (("text", list(texts)), ("image", [str(p) for p in images])):
            if not queries:
                continue
            encoder = options.load(model, modality)
            if encoder.bits != hamming.bits:
                raise CodeFormatError(f"the index {index} holds {hamming.bits}-bit codes but {model} makes {encoder.bits}-bit "
                                      "codes: search with the model whose codes built the index")
            check_same_model(hamming.meta.get("model_id", ""), encoder.model_id, str(index), str(model))
            encoded = options.run(encoder, queries)
            dist, ids = hamming.search(encoded.codes, k)
            truncated = encoded.truncated if encoded.truncated is not None else np.zeros(len(queries), bool)
            for q, d_row, i_row, cut in zip(queries, dist, ids, truncated):
                hits = [Hit(r + 1, int(i), int(d), items.get(int(i))) for r, (d, i) in enumerate(zip(d_row, i_row)) if i >= 0]
                result.queries.append(QueryResult(q, modality, hits, bool(cut)))
    return result
