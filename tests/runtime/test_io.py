"""Crash-safe writes keep the permissions a plain open() would give (mkstemp alone makes 0600 files,
which another user of an export folder or index, such as a server process, could not read)."""

import os
import stat

from cmhash.runtime.io import atomic_write


def test_atomic_write_gives_open_s_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.bin") as fh:
            fh.write(b"x")
        with open(tmp_path / "b.bin", "wb") as fh:
            fh.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o644


def test_atomic_write_leaves_no_temporary_file_on_failure(tmp_path):
    target = tmp_path / "keep.bin"
    target.write_bytes(b"old")
    try:
        with atomic_write(target) as fh:
            fh.write(b"new, half")
            raise RuntimeError("interrupted")
    except RuntimeError:
        pass
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]
