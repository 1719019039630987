"""Every loader of an untrusted file, fed mutated real files: each case must load, or raise a typed
`CmhashError`; never another exception, a hang, or a huge allocation (cmfuzz.runner classifies).

Bounded, derandomized versions of bench/fuzz_loaders.py (which runs >= 10,000 cases per loader).
"""

from __future__ import annotations

import collections

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmfuzz.runner import CaseRunner
from cmfuzz.targets import TARGETS

# Examples per loader: a few seconds each on 2 cores (the tokenizer parses a 466 kB tokenizer.json).
EXAMPLES = {"index": 300, "index-v1": 200, "checkpoint": 150, "hub-manifest": 200, "train-state": 200, "export": 250,
            "runtime-export": 200, "codes-file": 200, "tokenizer": 40, "engine-sidecar": 300, "coco": 200,
            "mirflickr": 200}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_files_load_or_raise_a_typed_error(name, real_folder, tmp_path):
    runner = CaseRunner(TARGETS[name], real_folder(name), tmp_path)
    assert runner.load(timed=False).kind == "ok", "the unmutated real files must load"
    seen: collections.Counter[str] = collections.Counter()

    @settings(max_examples=EXAMPLES[name], derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(rng=st.randoms(use_true_random=False))
    def case(rng):
        outcome = runner.run(rng)
        seen[outcome.kind] += 1
        assert not outcome.failed, f"{outcome.kind} on a mutated {outcome.file}: {outcome.detail}"

    case()
    # The mutations reached the loader's checks (not only no-ops).
    assert seen["typed"] > 0 and seen["typed"] + seen["ok"] == sum(seen.values())


def test_every_loader_of_an_untrusted_file_is_fuzzed():
    """The list the issue asks for: index, export folder, checkpoint folder, sidecars, dataset readers."""
    assert {"index", "export", "runtime-export", "tokenizer", "checkpoint", "hub-manifest", "train-state",
            "engine-sidecar", "coco", "mirflickr", "codes-file"} <= set(TARGETS)


def test_a_coco_file_name_too_long_for_the_os_is_a_typed_error(real_folder, tmp_path):
    """Found by the long run (coco case 3990): a 100,000-character file_name made pathlib raise OSError."""
    import json
    import shutil

    from cmhash.errors import DataNotFoundError
    from cmhash.zoo.data import load_dataset

    folder = tmp_path / "coco"
    shutil.copytree(real_folder("coco"), folder)
    path = folder / "annotations" / "captions_train2017.json"
    captions = json.loads(path.read_text())
    captions["images"][0]["file_name"] = "x" * 100_000
    path.write_text(json.dumps(captions))
    with pytest.raises(DataNotFoundError, match="missing"):
        load_dataset(folder)
