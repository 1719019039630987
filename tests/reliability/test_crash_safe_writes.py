"""Writers killed with SIGKILL at random points leave a file that loads intact: the previous version or
the new one, never a torn or mixed one (cmfuzz.kill drives the writers).

Per file type: 24 kills at a uniformly random moment in [0, 0.25 s] of a writer that saves versions in
a loop through cmhash's real save functions (HammingIndex.save, CrossModalHasher.save_pretrained,
state_io.save_state, formats.export_manifest.write_export_manifest).
"""

from __future__ import annotations

import collections
import os
import random

import pytest

from cmfuzz.kill import KINDS, KillHarness

KILLS = 24
MAX_DELAY = 0.25


@pytest.fixture(scope="module")
def harness():
    h = KillHarness()
    yield h
    h.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_killed_writer_leaves_a_whole_version(kind, harness, tmp_path):
    harness.init(kind, tmp_path)
    rng = random.Random(f"kill:{kind}")
    trials = [harness.trial(kind, tmp_path, rng, MAX_DELAY) for _ in range(KILLS)]  # each identifies the result
    versions = collections.Counter(t.version for t in trials)
    mid_write = sum(t.mid_write for t in trials)
    # Not vacuous: some kills landed inside a write (its temporary file was left behind), and the
    # writer got far enough to replace the file at least once.
    assert mid_write >= 1, f"no kill landed inside a write ({versions})"
    assert len(versions) >= 2, f"the file was never replaced: {versions}"


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    """The data is on disk before the rename, and the rename is on disk before the call returns."""
    from cmhash.runtime import io as rio

    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(rio.os, "fsync", lambda fd: (calls.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))),
                                                     real_fsync(fd))[1])
    monkeypatch.setattr(rio.os, "replace", lambda a, b: (calls.append(("replace", None)), real_replace(a, b))[1])
    with rio.atomic_write(tmp_path / "x.bin") as fh:
        fh.write(b"data")
    assert calls == [("fsync", False), ("replace", None), ("fsync", True)]
    assert (tmp_path / "x.bin").read_bytes() == b"data"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from cmhash.runtime.io import atomic_write

    path = tmp_path / "x.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
