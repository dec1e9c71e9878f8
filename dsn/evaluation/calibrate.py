"""Choosing a checkpoint's decision threshold on validation writers, as the checkpoint will be used.

Training picks a threshold at its own, cheaper Sinkhorn setting, and a shipped
model may run more iterations, which moves every distance a little. Calibration
scores the validation protocol with the checkpoint exactly as it ships, puts the
threshold at the validation EER and records that evaluation in metrics.json, so
the validation numbers a model card quotes are the ones that set its threshold.
Test writers are never looked at here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dsn.data.dataset import split_images_of
from dsn.evaluation.evaluate import evaluate, pair_metrics
from dsn.evaluation.metrics import distance_spread
from dsn.hub.modelcard import METRICS_NAME
from dsn.loading import load
from dsn.model.weights import WEIGHTS_NAME


def calibrate(
    folder: str | Path,
    data: Sequence[str | Path],
    sinkhorn_iterations: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Set the threshold of the checkpoint in ``folder`` to its EER threshold on the val writers of ``data``.

    Several dataset folders pool their val writers (one threshold for all of
    them, as for a model trained on all of them). Rewrites config.json and the
    weights file beside it (same tensors) and the "val" entry of metrics.json;
    returns the new validation metrics.
    """
    folder = Path(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"{folder} is not a checkpoint folder (no {WEIGHTS_NAME})")
    if not data:
        raise ValueError("give at least one dataset folder whose val writers set the threshold")
    model = load(folder, allow_untrained=False)
    if sinkhorn_iterations is not None:
        if sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be at least 1, not {sinkhorn_iterations}")
        model.config.sinkhorn_iterations = int(sinkhorn_iterations)
    images = split_images_of(data, "val")
    result = evaluate(model, images, progress=progress)
    if "eer_threshold" not in result.metrics:
        raise ValueError("the val writers need both genuine and forged pairs to choose a threshold")
    model.config.threshold = float(result.metrics["eer_threshold"])
    val = pair_metrics(result.scores, model.config.threshold)
    model.save(folder)
    metrics_path = folder / METRICS_NAME
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    roots = [str(root) for root in data]
    metrics["val"] = val
    metrics["val_distances"] = distance_spread(result.scores.distance, result.scores.genuine)  # for the app's plain reading
    metrics["val_info"] = {
        "data": roots[0] if len(roots) == 1 else roots,
        "split": "val",
        "n_images": len(result.images),
        "n_pairs": len(result.pairs),
        "sinkhorn_iterations": model.config.sinkhorn_iterations,
        "command": command,
    }
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return val
