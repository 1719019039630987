"""Model cards: `model_cards/template.md.j2` rendered from a run's `config.json`.

Everything the card states comes from the config (method, bits, backbones, split sizes, selected
epoch, test metrics), so a card cannot drift from the checkpoint it describes. The YAML header is
`ModelCardData` with one `EvalResult` per retrieval direction (I→T, T→I) for the run's dataset and
code length; `ModelCard(str(card)).data.eval_results` parses them back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import importlib.resources

from huggingface_hub import EvalResult, ModelCard, ModelCardData

import cmhash
from cmhash.errors import CheckpointNotFoundError, WeightsError
from cmhash.runtime.formats.checkpoint import CONFIG_NAME, read_checkpoint

TEMPLATE = "template.md.j2"  # in model_cards/, installed as package data of cmhash.model_cards
LICENSE = "apache-2.0"  # of the weights in the repo (the hash heads); the data and backbones keep theirs
TASK = ("cross-modal-retrieval", "Cross-modal retrieval (image ↔ text)")
DIRECTIONS = (("i2t", "image → text", "I→T"), ("t2i", "text → image", "T→I"))

# Papers, checked against publisher and library records (IEEE TKDE 35(7) 2023, TKDE 36(11) 2024,
# Neurocomputing 616 2025). The pairwise baseline has no paper of its own.
METHODS: dict[str, dict[str, str]] = {
    "dcph": {
        "name": "DCPH",
        "title": "Deep Cross-Modal Proxy Hashing",
        "venue": "IEEE Transactions on Knowledge and Data Engineering 35(7), 2023",
        "bibtex": """@article{tu2023dcph,
  title   = {Deep Cross-Modal Proxy Hashing},
  author  = {Tu, Rong-Cheng and Mao, Xian-Ling and Tu, Rongxin and Bian, Binbin and Cai, Chengfei and
             Wang, Hongfa and Wei, Wei and Huang, Heyan},
  journal = {IEEE Transactions on Knowledge and Data Engineering},
  volume  = {35},
  number  = {7},
  year    = {2023},
  doi     = {10.1109/TKDE.2022.3187023}
}""",
    },
    "dhaph": {
        "name": "DHaPH",
        "title": "Deep Hierarchy-aware Proxy Hashing with Self-paced Learning for Cross-modal Retrieval",
        "venue": "IEEE Transactions on Knowledge and Data Engineering 36(11), 2024",
        "bibtex": """@article{huo2024dhaph,
  title   = {Deep Hierarchy-aware Proxy Hashing with Self-paced Learning for Cross-modal Retrieval},
  author  = {Huo, Yadong and Qin, Qibing and Zhang, Wenfeng and Huang, Lei and Nie, Jie},
  journal = {IEEE Transactions on Knowledge and Data Engineering},
  volume  = {36},
  number  = {11},
  pages   = {5926--5939},
  year    = {2024}
}""",
    },
    "dmsh": {
        "name": "DMsH-LN",
        "title": "Deep Multi-similarity Hashing via Label-guided Network for Cross-modal Retrieval",
        "venue": "Neurocomputing 616, 2025",
        "bibtex": """@article{wu2025dmshln,
  title   = {Deep Multi-similarity Hashing via Label-guided Network for Cross-modal Retrieval},
  author  = {Wu, Lei and Qin, Qibing and Hou, Jinkui and Dai, Jiangyan and Huang, Lei and Zhang, Wenfeng},
  journal = {Neurocomputing},
  volume  = {616},
  pages   = {128830},
  year    = {2025},
  doi     = {10.1016/j.neucom.2024.128830}
}""",
    },
    "pairwise": {
        "name": "pairwise baseline",
        "title": ("a linear head on frozen features with a DCMH-style pairwise likelihood loss "
                  "(a baseline, no paper of its own)"),
        "venue": "",
        "bibtex": "",
    },
}
DATASETS = {
    "coco-mini": "coco-mini (159 image–caption pairs of COCO 2017, 80 object classes)",
    "mirflickr25k": "MIRFlickr-25K",
}


def _read(run_dir: Path) -> dict[str, Any]:
    """The run's checkpoint config (read by runtime/formats/checkpoint.py), as the card's JSON data."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise CheckpointNotFoundError(f"{run_dir} has no config.json: train a run first (cmhash train ... --out "
                                      f"{run_dir})")
    config = read_checkpoint(run_dir).config
    missing = [k for k in ("training", "metrics") if getattr(config, k) is None]
    if missing or "test" not in config.metrics:
        raise WeightsError(f"{path} lacks {', '.join(missing) or 'metrics.test'}: a card needs a finished run "
                           "(its config.json gets the test metrics when training ends)")
    if config.method not in METHODS:
        raise WeightsError(f"{path} names method {config.method!r}; cards know {', '.join(METHODS)}")
    return config.to_dict()


def _eval_results(config: dict[str, Any], model_name: str) -> list[EvalResult]:
    dataset, bits, test = config["data"]["dataset"], int(config["bits"]), config["metrics"]["test"]
    split = config["data"].get("split", {})
    return [
        EvalResult(
            task_type=TASK[0], task_name=TASK[1], dataset_type=dataset, dataset_name=DATASETS.get(dataset, dataset),
            dataset_split="test", dataset_args={"queries": split.get("query"), "database": split.get("database")},
            metric_type="map", metric_value=round(float(test[f"map_{d}"]), 4),
            metric_name=f"mAP@all {arrow} ({bits} bits)", metric_config=f"{d}-{bits}bits",
        )
        for d, arrow, _ in DIRECTIONS if f"map_{d}" in test
    ]


def _backbone(modality: str, c: dict[str, Any], trained: bool) -> dict[str, Any]:
    pre = c.get("preprocess")
    if pre:
        detail = (f"resize {pre['resize']} ({pre['interpolation']}), center-crop {pre['crop']}, "
                  f"mean {pre['mean']}, std {pre['std']}")
    elif c.get("max_length"):
        detail = f"tokenizer {c.get('tokenizer')}, at most {c['max_length']} tokens"
    else:
        detail = f"{c.get('input_dim')}-word bag of words"
    return {"modality": modality, "name": c["name"], "out_dim": c.get("out_dim"), "weights": c.get("weights"),
            "description": c.get("description", ""), "input": detail,
            "state": "trained with the heads (stored in model.safetensors)" if trained
            else "frozen (not stored here: it comes from its own package)"}


def _scores(block: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for d, _, short in DIRECTIONS:
        if f"map_{d}" in block:
            rows.append({"direction": short, "map": block[f"map_{d}"], "precision": block.get(f"precision_{d}", {})})
    return rows


def card_context(config: dict[str, Any], *, repo_id: str | None = None,
                 onnx_files: Sequence[str] = ()) -> dict[str, Any]:
    """The template variables, all taken from `config.json`."""
    method, dataset, bits = config["method"], config["data"]["dataset"], int(config["bits"])
    trained = bool(config.get("backbones_trained"))
    training, split = config["training"], config["data"].get("split", {})
    test_rows = _scores(config["metrics"]["test"])
    return {
        "repo_id": repo_id or f"ORG/{method}-{dataset}-{bits}",
        "method": {"key": method, **METHODS[method]},
        "bits": bits, "dataset": dataset, "dataset_name": DATASETS.get(dataset, dataset),
        "modalities": config.get("modalities", ["image", "text"]),
        "backbones": [_backbone(m, config[f"{m}_backbone"], trained) for m in ("image", "text")],
        "backbones_trained": trained,
        "split": split,
        "split_seed": config["data"].get("split_seed"),
        "captions": config["data"].get("captions"),
        "epochs": training.get("epochs"), "selected_epoch": int(training.get("selected_epoch", 0)) + 1,
        "selected_on": training.get("selected_on"), "seconds": training.get("seconds"),
        "setup": training.get("setup") or {},
        "recipe": sorted(config.get("recipe", {}).items()),
        "test": test_rows, "val": _scores(config["metrics"].get(training.get("selected_on", "val"), {})),
        "precision_ns": list(test_rows[0]["precision"]) if test_rows else [],
        "onnx_files": list(onnx_files),
        "small": int(split.get("fit", split.get("train", 0)) or 0) < 1000,
        "cmhash_version": config.get("cmhash_version", cmhash.__version__),
        "format": config.get("format"),
        "vocabulary": config.get("vocabulary"),
    }


def _packaged_template() -> Path:
    """The template shipped with the package (the source tree's model_cards/ in an editable install)."""
    return Path(str(importlib.resources.files("cmhash.model_cards").joinpath(TEMPLATE)))


def render_card(run_dir: str | os.PathLike, *, repo_id: str | None = None, onnx_files: Sequence[str] = (),
                template_path: str | os.PathLike | None = None, shipped: str | None = None) -> ModelCard:
    """The model card of a finished run, from `model_cards/template.md.j2` (or `template_path`).

    `shipped`: the name under `cmhash.zoo.pretrained` of a hasher that ships inside the package; its
    usage section then starts from the package instead of a Hub download.
    """
    run_dir = Path(run_dir)
    config = _read(run_dir)
    template = Path(template_path) if template_path is not None else _packaged_template()
    if not template.is_file():
        raise CheckpointNotFoundError(
            f"model card template {template} not found: pass template_path= a readable .md.j2 file")
    context = {**card_context(config, repo_id=repo_id, onnx_files=onnx_files), "shipped": shipped}
    dataset, method = config["data"]["dataset"], config["method"]
    data = ModelCardData(
        library_name="cmhash", license=LICENSE, model_name=context["repo_id"],
        tags=[method, f"{context['bits']}-bits", "cross-modal-retrieval", "deep-hashing"],
        datasets=[dataset], metrics=["map"], eval_results=_eval_results(config, context["repo_id"]),
    )
    return ModelCard.from_template(data, template_path=str(template), **context)
