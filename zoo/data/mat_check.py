"""A structural check of MATLAB v5 (.mat up to -v7) files, run before scipy parses them.

Why: `scipy.io.loadmat` trusts the element tags of a v5 file, and some damaged files crash the whole
process (a segmentation fault, found by tests/reliability: a data element whose type code is not a
MATLAB type) instead of raising. A dataset file is untrusted input, so this walks every element in
pure Python first and refuses, with a `DataFormatError`, anything scipy should not see: unknown
element types, sizes that overrun their parent, dimensions whose product disagrees with the data
size (a forged dimension is refused before anything is allocated from it), corrupt compressed
streams, and headers scipy would take for MATLAB v4 (a format without any check, whose forged
dimensions made scipy allocate without bound). Files that pass are the well-formed v5 ones, which
scipy then reads as before.

Format reference: MathWorks, "MAT-File Format" (matfile_format.pdf), version 5 chapter.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from cmhash.errors import DataFormatError

_HEADER = 128
# Data types (miINT8 ... miUTF32) and their element sizes.
_SIZES = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}
_UTF = {16, 17, 18}
_MATRIX, _COMPRESSED = 14, 15
_INT32, _UINT32, _INT8 = 5, 6, 1
# Array classes.
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5
_NUMERIC = set(range(6, 16))  # mxDOUBLE ... mxUINT64
_MAX_DEPTH = 32  # cells of cells: real dataset files nest two or three levels
_KEEP = 64 << 20  # decompressed bytes held for checking; a bigger numeric array is checked by its header


class _Bad(Exception):
    """Internal: what is wrong, at which byte offset; `check_mat_v5` words it for the user."""


def _tag(buf: bytes, pos: int, end: int, fmt: str) -> tuple[int, int, int, int]:
    """(type, nbytes, data start, next element start) of the element at `pos`."""
    if pos + 8 > end:
        raise _Bad(f"an element tag at byte {pos} runs past the end of its parent")
    first, second = struct.unpack_from(fmt + "II", buf, pos)
    if first >> 16:  # small data element: type and size share the first word, data in the second
        mtype, nbytes = first & 0xFFFF, first >> 16
        if nbytes > 4:
            raise _Bad(f"a small data element at byte {pos} declares {nbytes} bytes (at most 4)")
        return mtype, nbytes, pos + 4, pos + 8
    mtype, nbytes = first, second
    start = pos + 8
    if start + nbytes > end:
        raise _Bad(f"the element at byte {pos} declares {nbytes} bytes, past the end of its parent")
    padded = nbytes if mtype == _COMPRESSED else (nbytes + 7) // 8 * 8  # compressed elements are not padded
    return mtype, nbytes, start, min(start + padded, end)


def _data(buf: bytes, pos: int, end: int, fmt: str, want: set[int] | None, what: str) -> tuple[int, int, int, int]:
    mtype, nbytes, start, nxt = _tag(buf, pos, end, fmt)
    if mtype not in _SIZES or (want is not None and mtype not in want):
        raise _Bad(f"the {what} at byte {pos} has data type {mtype}, which is not valid there")
    if nbytes % _SIZES[mtype]:
        raise _Bad(f"the {what} at byte {pos} holds {nbytes} bytes, not a whole number of type-{mtype} values")
    return mtype, nbytes, start, nxt


def _matrix(buf: bytes, start: int, end: int, fmt: str, depth: int) -> None:
    """Check one miMATRIX body (array flags, dims, name, then the class's data)."""
    if depth > _MAX_DEPTH:
        raise _Bad(f"arrays nest deeper than {_MAX_DEPTH} levels")
    if start == end:
        return  # an empty matrix: MATLAB writes these for empty cells
    _, nbytes, pos, nxt = _data(buf, start, end, fmt, {_UINT32}, "array flags")
    if nbytes != 8:
        raise _Bad(f"the array flags at byte {start} are {nbytes} bytes, not 8")
    flags, nzmax = struct.unpack_from(fmt + "II", buf, pos)
    mclass, complex_ = flags & 0xFF, bool(flags & 0x800)
    _, nbytes, pos, nxt = _data(buf, nxt, end, fmt, {_INT32}, "dimensions")
    dims = struct.unpack_from(fmt + f"{nbytes // 4}i", buf, pos)
    if len(dims) < 2 or min(dims) < 0:
        raise _Bad(f"the dimensions at byte {pos} are {list(dims)}: need two or more sizes >= 0")
    count = 1
    for d in dims:
        count *= d
    _, _, _, nxt = _data(buf, nxt, end, fmt, {_INT8}, "array name")
    if mclass in _NUMERIC or mclass == _CHAR:
        for part in ("real part", "imaginary part")[: 1 + complex_]:
            mtype, nbytes, _, nxt = _data(buf, nxt, end, fmt, None, part)
            if mtype in _UTF:  # text in UTF-8/16/32: characters and code units need not match one to one
                continue
            if nbytes != count * _SIZES[mtype]:
                raise _Bad(f"the {part} of a {'x'.join(map(str, dims))} array holds {nbytes} bytes, "
                           f"not {count} values")
    elif mclass == _SPARSE:
        if len(dims) != 2:
            raise _Bad(f"a sparse array has dimensions {list(dims)}")
        _, nbytes, _, nxt = _data(buf, nxt, end, fmt, {_INT32}, "sparse row indices")
        ir = nbytes // 4
        _, nbytes, _, nxt = _data(buf, nxt, end, fmt, {_INT32}, "sparse column starts")
        if nbytes // 4 != dims[1] + 1:
            raise _Bad(f"a sparse array with {dims[1]} columns has {nbytes // 4} column starts")
        for part in ("real part", "imaginary part")[: 1 + complex_]:
            mtype, nbytes, _, nxt = _data(buf, nxt, end, fmt, None, f"sparse {part}")
            if nbytes // _SIZES[mtype] > max(ir, nzmax):
                raise _Bad(f"the sparse {part} holds more values than row indices")
    elif mclass == _CELL:
        for _ in range(count):
            nxt = _element(buf, nxt, end, fmt, depth + 1, cell=True)
    elif mclass in (_STRUCT, _OBJECT):
        if mclass == _OBJECT:
            _, _, _, nxt = _data(buf, nxt, end, fmt, {_INT8}, "object class name")
        _, nbytes, pos, nxt = _data(buf, nxt, end, fmt, {_INT32}, "field name length")
        if nbytes != 4:
            raise _Bad(f"the field name length at byte {pos} is {nbytes} bytes, not 4")
        (name_len,) = struct.unpack_from(fmt + "i", buf, pos)
        _, nbytes, _, nxt = _data(buf, nxt, end, fmt, {_INT8}, "field names")
        if name_len <= 0 or nbytes % name_len:
            raise _Bad(f"field names of {nbytes} bytes do not split into names of {name_len} bytes")
        for _ in range(count * (nbytes // name_len)):
            nxt = _element(buf, nxt, end, fmt, depth + 1, cell=True)
    else:
        raise _Bad(f"array class {mclass} (function handles, opaque objects) cannot hold dataset values")


def _element(buf: bytes, pos: int, end: int, fmt: str, depth: int, cell: bool = False) -> int:
    """Check the element at `pos`; return where the next one starts."""
    mtype, nbytes, start, nxt = _tag(buf, pos, end, fmt)
    if mtype == _MATRIX:
        _matrix(buf, start, start + nbytes, fmt, depth)
        return nxt
    if mtype == _COMPRESSED and not cell:
        data = buf[start:start + nbytes]
        head, total = _inflate(data, pos, keep=_KEEP)
        if total > len(head) and _class_of(head, fmt) in _NUMERIC | {_CHAR}:
            # A big numeric array (image pixels): its header and sizes are all there is to check,
            # so the data is counted while inflating, not kept (scipy will inflate it once more).
            mtype, nbytes, start, inner_end = _tag(head, 0, total, fmt)
            if mtype != _MATRIX:
                raise _Bad(f"the compressed element at byte {pos} does not hold a matrix")
            _matrix(head, start, start + nbytes, fmt, depth)
        else:
            inner = head if total == len(head) else _inflate(data, pos)[0]
            inner_end = _element(inner, 0, len(inner), fmt, depth)
        if inner_end != total:  # scipy reads past a short element into what follows (it crashed on one)
            raise _Bad(f"the compressed element at byte {pos} holds {total - inner_end} bytes after its matrix")
        return nxt
    raise _Bad(f"the element at byte {pos} has type {mtype}; a variable must be a matrix or compressed")


def _class_of(head: bytes, fmt: str) -> int:
    """The array class in a matrix element's flags (0 when the head is too short to say)."""
    return struct.unpack_from(fmt + "I", head, 16)[0] & 0xFF if len(head) >= 20 else 0


def _inflate(data: bytes, pos: int, keep: int | None = None) -> tuple[bytes, int]:
    """Decompress a miCOMPRESSED element (one complete zlib stream): (its first `keep` bytes, or all of
    them, and the total decompressed size)."""
    inflater = zlib.decompressobj()
    try:
        if keep is None:
            out = inflater.decompress(data) + inflater.flush()
            total = len(out)
        else:
            out = inflater.decompress(data, keep)
            total = len(out)
            while inflater.unconsumed_tail:
                total += len(inflater.decompress(inflater.unconsumed_tail, _KEEP))
            total += len(inflater.flush())
    except zlib.error as exc:
        raise _Bad(f"the compressed element at byte {pos} is corrupt ({exc})") from None
    if not inflater.eof:
        raise _Bad(f"the compressed element at byte {pos} is truncated")
    return out, total


def check_mat_v5(path: str | Path) -> None:
    """Raise DataFormatError unless `path` is a well-formed MATLAB v5 file (see the module docstring)."""
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc}") from exc
    fix = "Fix: download or re-save the file (in MATLAB: save(FILE, VARS, '-v7'))."
    if len(buf) < _HEADER:
        raise DataFormatError(f"{path} is {len(buf)} bytes, shorter than a MATLAB v5 header. {fix}")
    if 0 in buf[:4]:  # scipy's rule for MATLAB v4 files, whose headers hold no checks at all
        raise DataFormatError(f"{path} starts like a MATLAB v4 file (a zero byte in its first four), or its "
                              f"header is damaged; cmhash reads v5 to v7.3 .mat files. {fix}")
    endian = buf[126:128]
    if endian not in (b"IM", b"MI"):
        raise DataFormatError(f"{path} is not a MATLAB v5 file (endian mark {endian!r}); cmhash reads v5 to v7.3 "
                              f".mat files. {fix}")
    fmt = "<" if endian == b"IM" else ">"
    (version,) = struct.unpack_from(fmt + "H", buf, 124)
    if version != 0x0100:
        raise DataFormatError(f"{path} has MAT-file version {version:#06x}, not 0x0100 (v5). {fix}")
    pos = _HEADER
    try:
        while pos < len(buf):
            pos = _element(buf, pos, len(buf), fmt, 0)
    except _Bad as exc:
        raise DataFormatError(f"{path} is damaged: {exc}. {fix}") from None
    except struct.error:  # a header that runs past the part of a big element that is kept for checking
        raise DataFormatError(f"{path} is damaged: an array header runs past its data. {fix}") from None
