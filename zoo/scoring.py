"""Encode chosen dataset rows with a hasher and score a query/database split.

Shared by the training loop (validation every epoch, test once) and `cmhash eval`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from cmhash.runtime.codes import pack
from cmhash.runtime.metrics import PRCurve, mean_average_precision, pr_curve
from cmhash.zoo.evaluate import evaluate_cross_modal
from cmhash.zoo.inputs import TowerInput


@torch.no_grad()
def encode_rows(model: torch.nn.Module, inputs: Mapping[str, TowerInput], rows: np.ndarray,
                device: torch.device | str = "cpu", batch_size: int = 256) -> dict[str, np.ndarray]:
    """Continuous hash values per modality, as (len(dataset), K) arrays filled at `rows` (NaN elsewhere)."""
    was_training = model.training
    model.eval()
    out: dict[str, np.ndarray] = {}
    for m, source in inputs.items():
        values = np.full((len(source), model.bits), np.nan, dtype=np.float32)
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            x = tuple(t.to(device) for t in source.batch(chunk))
            values[chunk] = model(m, *x).float().cpu().numpy()
        out[m] = values
    model.train(was_training)
    return out


def score_split(values: Mapping[str, np.ndarray], labels: np.ndarray, queries: np.ndarray,
                database: np.ndarray, precision_ns: tuple[int, ...] = (1, 10, 100),
                with_curves: bool = False) -> Any:
    """mAP@all (+ precision@N) of queries against the database; `score` is the mean mAP.

    Both modalities: I→T and T→I. Text only (e.g. MIRFlickr tags without images): T→T.
    """
    ql, dl = labels[queries], labels[database]
    curves: dict[str, PRCurve] = {}
    if "image" in values:
        scores, curves = evaluate_cross_modal(values["image"][queries], values["text"][queries], ql,
                                              values["image"][database], values["text"][database], dl, precision_ns)
        result = {k: v for k, v in scores.to_dict().items()}
        result["score"] = (scores.map_i2t + scores.map_t2i) / 2
    else:
        q, d = pack(values["text"][queries]), pack(values["text"][database])
        result = {"map_t2t": mean_average_precision(q, d, ql, dl)}
        result["score"] = result["map_t2t"]
        if with_curves:
            curves = {"T→T": pr_curve(q, d, ql, dl)}
    return (result, curves) if with_curves else result


def evaluate_checkpoint(folder, dataset, *, backbone_weights: Mapping[str, str] | None = None,
                        tokenizer_file: str | None = None, progress: bool = True) -> tuple[dict[str, Any], dict, Any]:
    """Score a checkpoint folder on a dataset with the split its config records.

    Returns (scores, PR curves, split). The split is the dataset's own, else the proportional split
    with the checkpoint's `split_seed`, so `cmhash eval` reproduces the training run's test score.
    """
    from cmhash.zoo.inputs import image_input, text_input
    from cmhash.zoo.model import CrossModalHasher
    from cmhash.zoo.data import default_split

    model = CrossModalHasher.from_pretrained(folder, backbone_weights)
    split = default_split(dataset, model.config.split_seed)
    frozen = not model.backbones_trained
    weights = dict(backbone_weights or {})
    inputs: dict[str, TowerInput] = {}
    if "image" in model.config.modalities:
        inputs["image"] = image_input(dataset, model.backbone_configs["image"], frozen, weights=weights.get("image"),
                                      progress=progress)
    inputs["text"] = text_input(dataset, model.backbone_configs["text"], frozen, split.fit, vocabulary=model.vocabulary,
                                weights=weights.get("text"), tokenizer_file=tokenizer_file, progress=progress)
    values = encode_rows(model, inputs, np.union1d(split.query, split.database))
    scores, curves = score_split(values, dataset.labels, split.query, split.database, with_curves=True)
    return scores, curves, split
