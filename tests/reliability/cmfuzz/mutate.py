"""Mutations of real files, all driven by one `random.Random` (hypothesis's `st.randoms()` in the tests,
a seeded `random.Random` in the long-run bench), so every case is reproducible from its seed.

Each file has a kind that adds structure-aware mutations to the byte-level ones:

- "binary": bytes only (ONNX, engines);
- "json": change the type or size of one field, delete or add keys, nest deeply (config.json, manifests);
- "text": lines and numbers (dataset .txt files);
- "cmhx": forge the index header's fields, with or without fixing its CRCs (a careful forger);
- "safetensors": forge the 8-byte header length, or mutate the JSON header and re-encode it correctly,
  so forged shapes, dtypes and offsets reach the parser's checks;
- "mat": MATLAB v5: mutate the decompressed element (forged dims, types) and recompress it.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from typing import Any, Callable

INTERESTING_INTS = (0, 1, -1, 2, 7, 8, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                    2**40, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**31), -(2**63))
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x22, 0x5B, 0x7B, 0x5C)
_DEEP = "__cmfuzz_deep__"


# ------------------------------------------------------------------------------------------ bytes
def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)] if data else data


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return b"\x00"
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 4, 8, 32))):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _set_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.choice(INTERESTING_BYTES)])
    out = bytearray(data)
    for _ in range(rng.choice((1, 2, 4, 16))):
        out[rng.randrange(len(out))] = rng.choice(INTERESTING_BYTES)
    return bytes(out)


def _insert(data: bytes, rng: random.Random) -> bytes:
    pos = rng.randrange(len(data) + 1)
    chunk = bytes(rng.getrandbits(8) for _ in range(rng.choice((1, 4, 64, 1024))))
    return data[:pos] + chunk + data[pos:]


def _delete(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.choice((1, 8, 64, 4096)))
    return data[:a] + data[b:]


def _duplicate(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    a = rng.randrange(len(data))
    chunk = data[a:a + rng.choice((4, 64, 1024))]
    pos = rng.randrange(len(data) + 1)
    return data[:pos] + chunk + data[pos:]


def forge_int(data: bytes, rng: random.Random, offsets: tuple[int, ...] = ()) -> bytes:
    """Write an interesting integer as u8/u16/u32/u64 (LE, sometimes BE) at a field offset or anywhere."""
    size = rng.choice((1, 2, 4, 8))
    if offsets and rng.random() < 0.8:
        pos = rng.choice(offsets)
    else:
        pos = rng.randrange(max(1, len(data)))
    value = rng.choice(INTERESTING_INTS) % (1 << (8 * size))
    raw = value.to_bytes(size, "big" if rng.random() < 0.2 else "little")
    out = bytearray(data.ljust(pos + size, b"\x00"))
    out[pos:pos + size] = raw
    return bytes(out)


BYTE_OPS: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    _truncate, _flip_bits, _set_bytes, _insert, _delete, _duplicate, forge_int,
    lambda data, rng: b"",
)


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    return rng.choice(BYTE_OPS)(data, rng)


# ------------------------------------------------------------------------------------------- JSON
def _paths(node: Any, prefix: tuple = (), out: list | None = None, limit: int = 4000) -> list[tuple]:
    """Every path (tuple of keys/indices) into a JSON value, breadth-limited for big files."""
    out = [] if out is None else out
    out.append(prefix)
    if len(out) >= limit:
        return out
    if isinstance(node, dict):
        for k, v in node.items():
            _paths(v, prefix + (k,), out, limit)
    elif isinstance(node, list):
        for i, v in enumerate(node[:64]):
            _paths(v, prefix + (i,), out, limit)
    return out


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


def _interesting_value(old: Any, rng: random.Random) -> Any:
    """A value of another type, or of the same type and a forged size."""
    pick = rng.randrange(12)
    if pick == 0 and isinstance(old, bool):
        return not old
    if pick <= 2 and isinstance(old, (int, float)) and not isinstance(old, bool):
        return rng.choice((0, -1, -old, old + 1, old * 1024, 2**31, 2**40, 2**63, 2**64, 10**30, 1.5,
                           float("nan"), float("inf"), -float("inf"), 1e308, str(old)))
    if pick <= 2 and isinstance(old, str):
        return rng.choice(("", " ", old[: len(old) // 2], old + old, old.upper(), "\x00", "é" * 3, "../../etc",
                           "x" * 100_000, "1e999", "-1", "64", "NaN"))
    if pick <= 2 and isinstance(old, list):
        return rng.choice(([], old[: len(old) // 2], old + old, old[::-1], [old], old + [None], [10**30] * 3))
    if pick <= 2 and isinstance(old, dict):
        keys = list(old)
        if keys and rng.random() < 0.6:
            drop = rng.choice(keys)
            return {k: v for k, v in old.items() if k != drop}
        return {**old, rng.choice(("extra", "", "__tensor__", "0", "format")): rng.choice((1, "x", None, []))}
    return rng.choice((None, True, False, 0, -1, 2**63, 10**30, -(10**30), 0.5, float("nan"), "", "x", "8",
                       [], {}, [1, 2], {"a": 1}, [None], _DEEP))


def _dump(value: Any, rng: random.Random) -> bytes:
    text = json.dumps(value, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    if _DEEP in text:
        depth = rng.choice((64, 500, 3000, 100_000))
        text = text.replace(json.dumps(_DEEP), "[" * depth + "]" * depth, 1)
    return text.encode("utf-8")


def mutate_json_value(doc: Any, rng: random.Random) -> Any:
    """Replace one node, delete a key, or rename one; returns the new document."""
    paths = _paths(doc)
    path = rng.choice(paths)
    new = _interesting_value(_get(doc, path), rng)
    if not path:
        return new
    parent = _get(doc, path[:-1])
    key = path[-1]
    if isinstance(parent, dict) and rng.random() < 0.15:
        del parent[key]
    elif isinstance(parent, dict) and rng.random() < 0.1:
        parent[f"{key}_"] = parent.pop(key)
    else:
        parent[key] = new
    return doc


def mutate_json(data: bytes, rng: random.Random) -> bytes:
    try:
        doc = json.loads(data)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            doc = mutate_json_value(doc, rng)
        return _dump(doc, rng)
    except (ValueError, RecursionError):  # already broken by an earlier mutation: stay at the byte level
        return mutate_bytes(data, rng)


# ------------------------------------------------------------------------------------------- text
_TOKENS = ("-1", "0", "1", "2", "0.5", "1e308", "-1e308", "nan", "inf", "abc", "", "99999999999999999999",
           "1,2", "\t", "é", "0x10")


def mutate_text(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    op = rng.randrange(7)
    i = rng.randrange(len(lines))
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[i])
    elif op == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 3:
        words = lines[i].split(b" ")
        words[rng.randrange(len(words))] = rng.choice(_TOKENS).encode()
        lines[i] = b" ".join(words)
    elif op == 4:
        lines.insert(i, rng.choice((b"", b" ", b"\xff\xfe", b"x" * 100_000, b"\x00")))
    elif op == 5:
        lines = lines[: rng.randrange(len(lines) + 1)]
    else:
        lines[i] = lines[i] + rng.choice((b"\xc3", b"\xff", b" 1", b",,", b"\r"))
    return b"\n".join(lines)


# ------------------------------------------------------------------------------------ structured
# The .cmhx header (docs/formats/index-file.md). Both versions: version 8, header_size 12, bits 16,
# code_bytes 20, count 24, payload_crc 48, header_crc 52. Version 1: ids_offset 32, codes_offset 40.
# Version 2: flags 32, meta_len 40, meta_crc 44.
CMHX_FIELDS = {1: (8, 12, 16, 20, 24, 32, 40, 48, 52), 2: (8, 12, 16, 20, 24, 32, 40, 44, 48, 52)}
_CRC_FIELDS = 2  # the last two fields of each tuple: payload and header CRCs


def _cmhx_version(data: bytes) -> int:
    return 1 if len(data) >= 12 and struct.unpack_from("<I", data, 8)[0] == 1 else 2


def _fix_cmhx_crcs(data: bytes, payload: bool) -> bytes:
    if len(data) < 64:
        return data
    out = bytearray(data)
    if payload:
        out[48:52] = struct.pack("<I", _payload_crc(bytes(out)))
        if _cmhx_version(data) == 2:
            meta_len = struct.unpack_from("<I", out, 40)[0]
            out[44:48] = struct.pack("<I", zlib.crc32(bytes(out[64:64 + meta_len])))
    out[52:56] = struct.pack("<I", zlib.crc32(bytes(out[:52])))
    return bytes(out)


def _payload_crc(data: bytes) -> int:
    """CRC of the payload sections as the writer computes it: skip the zero padding between them."""
    count, bits = struct.unpack_from("<Q", data, 24)[0], struct.unpack_from("<I", data, 16)[0]
    if _cmhx_version(data) == 1:
        codes_offset = struct.unpack_from("<Q", data, 40)[0]
        ids_end = min(len(data), 64 + 8 * count)
        return zlib.crc32(data[codes_offset:], zlib.crc32(data[64:ids_end]))
    from cmhash.runtime.formats.index_file import layout

    flags = struct.unpack_from("<Q", data, 32)[0]
    lay = layout(bits, count, flags, struct.unpack_from("<I", data, 40)[0])
    crc = zlib.crc32(data[lay["codes"]:lay["codes"] + count * (bits // 8)])
    if lay["ids"]:
        crc = zlib.crc32(data[lay["ids"]:lay["ids"] + 8 * count], crc)
    if lay["dead"]:
        crc = zlib.crc32(data[lay["dead"]:lay["dead"] + (count + 7) // 8], crc)
    return crc


def mutate_cmhx(data: bytes, rng: random.Random) -> bytes:
    fields = CMHX_FIELDS[_cmhx_version(data)]
    op = rng.randrange(4)
    if op == 0:  # forged header field, CRCs fixed: only the consistency checks stand in the way
        return _fix_cmhx_crcs(forge_int(data, rng, fields[:-_CRC_FIELDS]), payload=False)
    if op == 1:  # payload changed (negative or repeated ids, tombstones, the metadata JSON), CRCs fixed
        out = mutate_bytes(data[64:], rng)
        return _fix_cmhx_crcs(data[:64] + out, payload=True)
    if op == 2:
        return forge_int(data, rng, fields)
    return mutate_bytes(data, rng)


def mutate_safetensors(data: bytes, rng: random.Random) -> bytes:
    if len(data) < 8 or rng.random() < 0.3:
        return forge_int(data, rng, (0, 4)) if rng.random() < 0.5 else mutate_bytes(data, rng)
    n = struct.unpack_from("<Q", data)[0]
    try:
        header = json.loads(data[8:8 + n])
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        nested = [k for k, v in meta.items() if isinstance(v, str) and v[:1] in "[{"]
        if nested and rng.random() < 0.5:  # a JSON document stored in the metadata (the training state)
            key = rng.choice(nested)
            meta[key] = mutate_json(meta[key].encode(), rng).decode("utf-8", "replace")
            header["__metadata__"] = meta
        else:
            for _ in range(rng.choice((1, 1, 2))):
                header = mutate_json_value(header, rng)
        raw = _dump(header, rng)
    except (ValueError, RecursionError):
        return mutate_bytes(data, rng)
    body = data[8 + n:]
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


_MI_COMPRESSED = 15


def mutate_mat(data: bytes, rng: random.Random) -> bytes:
    """Mutate the first compressed element's inflated bytes (dims sit at offsets 32..40) and re-deflate."""
    if len(data) < 136 or rng.random() < 0.3:
        return mutate_bytes(data, rng)
    dtype, nbytes = struct.unpack_from("<II", data, 128)
    if dtype != _MI_COMPRESSED:
        return mutate_bytes(data, rng)
    try:
        inner = zlib.decompress(data[136:136 + nbytes])
    except zlib.error:
        return mutate_bytes(data, rng)
    if rng.random() < 0.6:
        inner = forge_int(inner, rng, (0, 4, 8, 16, 24, 28, 32, 36, 40, 44, 48))
    else:
        inner = mutate_bytes(inner, rng)
    packed = zlib.compress(inner)
    return data[:128] + struct.pack("<II", _MI_COMPRESSED, len(packed)) + packed + data[136 + nbytes:]


def _interesting_string(old: str, rng: random.Random) -> str:
    try:
        json.loads(old)
        if old[:1] in "[{":
            return mutate_json(old.encode(), rng).decode("utf-8", "replace")
    except (ValueError, RecursionError):
        pass
    value = _interesting_value(old, rng)
    return value if isinstance(value, str) else json.dumps(value, allow_nan=True)


_PREPROCESS = ('{"resize": 256, "crop": 224, "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], '
               '"std": [0.5, 0.5, 0.5]}')


def mutate_onnx(data: bytes, rng: random.Random) -> bytes:
    """Mutate an ONNX model's metadata_props (values, keys, the input kind and its preprocessing) or its
    output names, and re-serialize; byte-level otherwise."""
    import onnx

    if rng.random() < 0.3:
        return mutate_bytes(data, rng)
    try:
        model = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - an earlier mutation broke it: stay at the byte level
        return mutate_bytes(data, rng)
    props = list(model.metadata_props)
    op = rng.randrange(5)
    if op == 0 and props:
        p = rng.choice(props)
        p.value = _interesting_string(p.value, rng)
    elif op == 1 and props:
        victim = rng.choice(props)
        kept = [p for p in props if p is not victim]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
    elif op == 2:  # claim another input kind, with preprocessing or a max_length that may be forged
        updates = {"input_kind": rng.choice(("pixels", "tokens", "bow", "")),
                   "preprocess": _interesting_string(_PREPROCESS, rng) if rng.random() < 0.7 else _PREPROCESS,
                   "max_length": rng.choice(("32", "0", "-1", "1e9", "x", "99999999999999999999"))}
        for p in model.metadata_props:
            if p.key in updates:
                p.value = updates.pop(p.key)
        for key, value in updates.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    elif op == 3 and model.graph.output:
        out = rng.choice(list(model.graph.output))
        out.name = rng.choice(("", "codes", "hash", "other"))
    else:
        p = rng.choice(props) if props else model.metadata_props.add()
        p.key = rng.choice(("bits", "modality", "cmhash_format", "", "x"))
        p.value = rng.choice(("0", "7", "16", "-8", "1e3", "text", "image", "cmhash-encoder/1", "", "\x00"))
    return model.SerializeToString()


_FORGED_SHAPES = ("(9000000000, 8)", "(4611686018427387904,)", "(3037000500, 3037000500)", "(100000000, 8)",
                  "(-1, 8)", "(0, 8)", "(1,)", "()")


def forge_npy_shape(data: bytes, rng: random.Random) -> bytes:
    """One array's .npy header made to claim another shape (huge, negative, empty) with the header length
    kept and the zip rewritten with correct CRCs: numpy sizes its buffer from that shape before reading."""
    import io
    import re
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    i = rng.randrange(len(members))
    name, raw = members[i]
    end = 10 + int.from_bytes(raw[8:10], "little")
    header = re.sub(r"'shape': \([^)]*\)", f"'shape': {rng.choice(_FORGED_SHAPES)}", raw[10:end].decode("latin1"))
    header = header.rstrip()
    if len(header) >= end - 10:
        return mutate_bytes(data, rng)
    members[i] = (name, raw[:10] + (header.ljust(end - 11) + "\n").encode("latin1") + raw[end:])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member, content in members:
            zf.writestr(member, content)
    return buf.getvalue()


def mutate_npz(data: bytes, rng: random.Random) -> bytes:
    """Replace, drop or add one array of an .npz (other dtypes, shapes, values), forge the shape in one
    array's header, or mutate its bytes."""
    import io

    import numpy as np

    r = rng.random()
    if r < 0.3:
        return mutate_bytes(data, rng)
    if r < 0.4:
        try:
            return forge_npy_shape(data, rng)
        except Exception:  # noqa: BLE001 - not a zip of .npy files any more (an earlier mutation)
            return mutate_bytes(data, rng)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception:  # noqa: BLE001 - broken by an earlier mutation
        return mutate_bytes(data, rng)
    key = rng.choice(sorted(arrays) + ["extra"])
    old = arrays.get(key, np.array(0))
    choices = (np.array(rng.choice((0, -1, 7, 2**40, 64))), np.array("abc"), np.array([1, 2, 3]), np.array(1.5),
               np.array(float("nan")), np.zeros((0,), np.uint8), np.zeros((2, 3, 4), np.int64),
               old[: len(old) // 2] if old.ndim else old, old.astype(np.float32) if old.dtype.kind in "iub" else old,
               np.array(["x"] * 3), np.array(True), old.reshape(-1) if old.ndim else old, old.T)
    if rng.random() < 0.15 and key in arrays:
        del arrays[key]
    else:
        arrays[key] = rng.choice(choices)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


KINDS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "binary": mutate_bytes,
    "json": mutate_json,
    "text": mutate_text,
    "cmhx": mutate_cmhx,
    "safetensors": mutate_safetensors,
    "mat": mutate_mat,
    "onnx": mutate_onnx,
    "npz": mutate_npz,
}


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One to three stacked mutations; a quarter of them byte-level whatever the kind."""
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = mutate_bytes if rng.random() < 0.25 else KINDS[kind]
        data = op(data, rng)
    return data
