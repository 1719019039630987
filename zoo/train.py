"""The shared training loop of every recipe: seeded, resumable, validated, logged.

    from cmhash.zoo.train import train
    result = train("dmsh", make_config("dmsh", "offline", bits=64, seed=0), load_dataset("coco-mini"), "runs/dmsh")

What it guarantees:
- Determinism on CPU: the heads are initialized from `seed`; epoch e shuffles with
  `default_rng([seed, e])` and reseeds torch (dropout) from (seed, e), so a resumed run repeats the
  uninterrupted one exactly.
- Every epoch: `train_state.{json,safetensors}` (model, method state, optimizers, schedulers)
  written atomically; a rerun with the same `out` resumes after the last finished epoch.
- The epoch is selected on the validation slice (val queries against the fit pairs, the training
  pairs minus val), never on the test queries, unless `select_on="test-queries"` asks for the
  authors' protocol. The selected weights are `model.safetensors` + `config.json`. The test score
  (queries against the database) is computed once, at the end, and stored in `config.json`.
- `metrics.jsonl`: one JSON line per epoch (mean loss terms, validation mAP, seconds).
- Under `torchrun` each rank trains on its shard of every global batch (`distributed.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

import cmhash
from cmhash.errors import ConfigError, InvalidInputError
from cmhash.runtime.io import atomic_write
from cmhash.zoo.backbones import BackboneConfig, build_backbone, get_config
from cmhash.zoo.config_io import JsonConfig
from cmhash.zoo.data import PairedDataset, Split, default_split
from cmhash.zoo.distributed import World, init_world, shutdown
from cmhash.runtime.formats.checkpoint import WEIGHTS_NAME, CheckpointConfig
from cmhash.zoo.inputs import TowerInput, bow_vocabulary, image_input, text_input
from cmhash.zoo.heads import upgrade_head_keys
from cmhash.zoo.model import CrossModalHasher
from cmhash.zoo.scoring import encode_rows, score_split
from cmhash.zoo.recipes import make_recipe
from cmhash.zoo.state_io import load_state, save_state

log = logging.getLogger(__name__)

SelectOn = Literal["val", "test-queries"]
STATE_NAME = "train_state"
METRICS_NAME = "metrics.jsonl"


@dataclass(frozen=True)
class TrainResult:
    out: Path
    selected_epoch: int
    val: dict[str, Any]
    test: dict[str, Any]
    seconds: float


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.default_rng([seed, epoch]).integers(2**62))


def _batches(n: int, batch_size: int, drop_last: bool, rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(n)
    stop = n - n % batch_size if drop_last else n
    return [perm[i : i + batch_size] for i in range(0, stop, batch_size)]


@contextlib.contextmanager
def _deterministic(enabled: bool):
    """Deterministic kernels while training on CPU, the previous setting restored afterwards.

    With several threads, some CPU kernels add with atomics in thread order, e.g. `index_put_`
    with accumulate (the backward of DHaPH's triplet gather), so the same step rounds differently
    from run to run and a resumed run drifts from the uninterrupted one. Their deterministic
    variants are serial; `warn_only` keeps an op without one running.
    """
    if not enabled:
        yield
        return
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), disable=not enabled, transient=False)


class Trainer:
    """One run of one recipe on one dataset split; see the module docstring."""

    def __init__(self, method: str, config: JsonConfig, dataset: PairedDataset, out: str | os.PathLike, *,
                 split: Split | None = None, split_seed: int = 0, select_on: SelectOn = "val",
                 device: str = "cpu", backbones: Mapping[str, BackboneConfig] | None = None,
                 backbone_weights: Mapping[str, str] | None = None, tokenizer_file: str | None = None,
                 progress: bool = True) -> None:
        if select_on not in ("val", "test-queries"):
            raise ConfigError(f"select_on={select_on!r}: choose 'val' or 'test-queries'")
        self.world: World = init_world(device)
        self.device = torch.device(f"cuda:{self.world.local_rank}" if device == "cuda" else device)
        self.out, self.dataset, self.select_on, self.progress = Path(out), dataset, select_on, progress
        self.split = split if split is not None else default_split(dataset, split_seed)
        self.split_seed = split_seed
        if select_on == "val" and self.split.val.size == 0:
            raise ConfigError("the split has no validation slice to select the epoch on; use a split with val "
                              "pairs, or select_on='test-queries' (the authors' optimistic protocol)")
        modalities = ("image", "text") if dataset.images is not None else ("text",)
        self.recipe = make_recipe(method, config, modalities)
        self.backbone_configs = {m: (backbones or {}).get(m) or get_config(self.recipe.backbones[m])
                                 for m in ("image", "text")}
        weights = dict(backbone_weights or {})
        frozen = not self.recipe.train_backbones
        fit = self.split.fit
        self.inputs: dict[str, TowerInput] = {}
        if "image" in modalities:
            self.inputs["image"] = image_input(dataset, self.backbone_configs["image"], frozen,
                                               weights=weights.get("image"), progress=progress and self.world.is_main)
        text = self.backbone_configs["text"]
        vocabulary = bow_vocabulary(dataset, fit, text.input_dim) if text.input_kind == "bow" else None
        self.inputs["text"] = text_input(dataset, text, frozen, fit, vocabulary=vocabulary,
                                         weights=weights.get("text"), tokenizer_file=tokenizer_file,
                                         progress=progress and self.world.is_main)
        # Seed here, after the inputs: a feature-cache miss builds (and so draws from) a backbone.
        torch.manual_seed(self.recipe.seed)
        trained = {} if frozen else {m: build_backbone(self.backbone_configs[m], weights.get(m)).train()
                                     for m in modalities}
        self.model = CrossModalHasher(self._config(modalities), trained, vocabulary).to(self.device)
        self.labels = torch.from_numpy(dataset.labels.astype(np.float32))
        self.fit = fit
        per_epoch = len(fit) // self.recipe.batch_size if self.recipe.drop_last else -(-len(fit) // self.recipe.batch_size)
        if per_epoch == 0:
            raise InvalidInputError(f"{len(fit)} training pairs give no full batch of {self.recipe.batch_size}; "
                                    "lower batch_size or use more data")
        params = {m: ([p for p in (t.backbone.parameters() if t.backbone is not None else [])],
                      list(t.head.parameters())) for m, t in self.model.towers.items()}
        params.setdefault("image", ([], []))
        with _deterministic(self.device.type == "cpu"):
            self.setup_report = self.recipe.setup(params, self.labels[fit].to(self.device), per_epoch)
        if self.recipe.method is not None:
            self.recipe.method.to(self.device)
        # DCPH leaves one tower idle per epoch, hence find_unused_parameters.
        self.forward = (DistributedDataParallel(self.model, find_unused_parameters=True)
                        if self.world.distributed else self.model)

    # ------------------------------------------------------------------------------- config.json
    def _config(self, modalities: tuple[str, ...]) -> CheckpointConfig:
        r = self.recipe
        return CheckpointConfig(
            cmhash_version=cmhash.__version__,
            method=r.name,
            bits=r.bits,
            recipe=r.config.to_dict(),
            modalities=tuple(modalities),
            image_backbone=self.backbone_configs["image"].to_dict(),
            text_backbone=self.backbone_configs["text"].to_dict(),
            backbones_trained=r.train_backbones,
            data={
                "dataset": self.dataset.name,
                "split_seed": self.split_seed,
                "split": self.split.sizes(),
                "captions": "training: one random caption per pair per visit; evaluation: the first caption",
            },
        )

    # ------------------------------------------------------------------------------------- state
    def _state(self, epoch: int, best: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": epoch, "best": json.dumps(best), "model": self.model.state_dict(),
                "recipe": self.recipe.state_dict()}

    def _resume(self) -> tuple[int, dict[str, Any]]:
        if not (self.out / f"{STATE_NAME}.safetensors").is_file():  # the state's commit file (state_io)
            self._trim_metrics(0)  # a run killed before its first state keeps no metrics line
            return 0, {"epoch": -1, "score": -1.0}
        state = load_state(self.out, STATE_NAME)
        self.model.load_state_dict(upgrade_head_keys(state["model"]), strict=True)
        self.recipe.load_state_dict(state["recipe"])
        start = int(state["epoch"]) + 1
        self._trim_metrics(start)
        if self.world.is_main:
            log.info("resuming %s after epoch %d", self.out, start - 1)
        return start, json.loads(state["best"])

    def _trim_metrics(self, start: int) -> None:
        path = self.out / METRICS_NAME
        if self.world.is_main and path.is_file():
            keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] < start]
            with atomic_write(path, "w") as fh:
                fh.write("".join(ln + "\n" for ln in keep))

    # -------------------------------------------------------------------------------------- loop
    def _train_epoch(self, epoch: int, progress, task) -> dict[str, float]:
        rng = np.random.default_rng([self.recipe.seed, epoch])
        torch.manual_seed(_epoch_seed(self.recipe.seed, epoch))
        active = self.recipe.modalities(epoch)
        self.model.train()
        sums: dict[str, float] = {}
        batches = _batches(len(self.fit), self.recipe.batch_size, self.recipe.drop_last, rng)
        progress.reset(task, total=len(batches), description=f"epoch {epoch + 1}/{self.recipe.epochs}", status="")
        for positions in batches:
            rows = self.fit[positions]
            local, width = self.world.shard(np.arange(len(rows)))
            sizes = [len(p) for p in np.array_split(np.arange(len(rows)), self.world.size)]
            h = {}
            for m in active:  # the same rng draws caption picks on every rank: take all, then shard
                x = self.inputs[m].batch(rows, rng)
                x = tuple(t[local].to(self.device) for t in x)
                h[m] = self.world.gather(self.forward(m, *x), sizes, width)
            labels = self.labels[rows].to(self.device)
            loss, terms = self.recipe.loss(h, labels, epoch, torch.from_numpy(positions).to(self.device))
            self.recipe.zero_grad()
            (loss * self.world.backward_scale()).backward()
            self.recipe.step(epoch)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            progress.update(task, advance=1, status=f"loss {float(loss.detach()):.4f}")
        self.recipe.end_epoch(epoch)
        return {k: v / len(batches) for k, v in sums.items()}

    def _evaluate(self, queries: np.ndarray, database: np.ndarray) -> dict[str, Any]:
        codes = encode_rows(self.model, self.inputs, np.union1d(queries, database), self.device)
        return score_split(codes, self.dataset.labels, queries, database)

    def _select_score(self) -> dict[str, Any]:
        if self.select_on == "val":
            return self._evaluate(self.split.val, self.split.fit)
        return self._evaluate(self.split.query, self.split.database)

    def run(self) -> TrainResult:
        with _deterministic(self.device.type == "cpu"):
            return self._run()

    def _run(self) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        start, best = self._resume()
        with _progress(self.progress and self.world.is_main) as progress:
            task = progress.add_task("train", total=1, status="")
            for epoch in range(start, self.recipe.epochs):
                te = time.perf_counter()
                terms = self._train_epoch(epoch, progress, task)
                record: dict[str, Any] = {"epoch": epoch, "modalities": list(self.recipe.modalities(epoch)),
                                          "loss": terms}
                if self.world.is_main:
                    scores = self._select_score()
                    record[self.select_on] = scores
                    if scores["score"] > best["score"]:
                        best = {"epoch": epoch, "score": scores["score"], self.select_on: scores}
                        self.model.save_pretrained(self.out)
                    record["seconds"] = round(time.perf_counter() - te, 4)
                    # The metrics line first, the state (the commit) last: a resume trims lines past the state.
                    with open(self.out / METRICS_NAME, "a") as fh:
                        fh.write(json.dumps(record) + "\n")
                    save_state(self._state(epoch, best), self.out, STATE_NAME)
                    progress.update(task, status=f"loss {terms.get('total', 0.0):.4f} {self.select_on} "
                                                 f"mAP {scores['score']:.3f} (best {best['score']:.3f} @ {best['epoch'] + 1})")
                self.world.barrier()
        result = self._finish(best) if self.world.is_main else None
        self.world.barrier()
        shutdown(self.world)
        return result

    def _finish(self, best: dict[str, Any]) -> TrainResult:
        """Reload the selected epoch's weights, score the test queries once, store it in config.json.

        `seconds` sums the per-epoch times in metrics.jsonl, so a resumed run reports its whole training.
        """
        with open(self.out / METRICS_NAME) as fh:
            seconds = sum(float(json.loads(line).get("seconds", 0.0)) for line in fh if line.strip())
        self.model.load_state_dict(load_file(str(self.out / WEIGHTS_NAME)), strict=True)
        test = self._evaluate(self.split.query, self.split.database)
        self.model.config = self.model.config.replace(
            training={"selected_epoch": best["epoch"], "selected_on": self.select_on, "epochs": self.recipe.epochs,
                      "seconds": round(seconds, 2), "setup": self.setup_report},
            metrics={self.select_on: best[self.select_on], "test": test})
        self.model.save_pretrained(self.out)
        return TrainResult(self.out, best["epoch"], best[self.select_on], test, seconds)


def train(method: str, config: JsonConfig, dataset: PairedDataset, out: str | os.PathLike, **options: Any) -> TrainResult:
    """Train (or resume) one run; see `Trainer` for the options."""
    return Trainer(method, config, dataset, out, **options).run()
