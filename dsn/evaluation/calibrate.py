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
from dsn.evaluation.multi_reference import rule_thresholds, writer_distances
from dsn.hub.modelcard import METRICS_NAME
from dsn.loading import load
from dsn.model.weights import WEIGHTS_NAME, save_config

# K values a reference-set threshold is chosen for; more references use the largest (see DetailSemNetConfig).
REFERENCE_COUNTS = tuple(range(2, 11))


def calibrate(
    folder: str | Path,
    data: Sequence[str | Path],
    sinkhorn_iterations: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Set the threshold of the checkpoint in ``folder`` to its EER threshold on the val writers of ``data``.

    Several dataset folders pool their val writers (one threshold for all of
    them, as for a model trained on all of them). The same val distances set the
    thresholds of the reference-set rules (mean and minimum of K = 2-10 distances)
    and which rule decides. Rewrites config.json (the weights file stays byte for
    byte) and the "val" entries of metrics.json; returns the new validation metrics.
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
    matrices = writer_distances(result.images, result.pairs, result.scores.distance)
    model.config.reference_thresholds, reference_rows = rule_thresholds(matrices, REFERENCE_COUNTS)
    model.config.reference_rule = _better_rule(reference_rows)
    save_config(model, folder)  # the weights file stays byte for byte
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
    metrics["val_references"] = reference_rows
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return val


def _better_rule(rows: list[dict]) -> str:
    """The rule with the lower mean val EER over the K values both were measured at (ties: mean)."""
    by_rule: dict[str, dict[int, float]] = {}
    for row in rows:
        by_rule.setdefault(row["rule"], {})[row["references"]] = row["eer"]
    mean, minimum = by_rule.get("mean", {}), by_rule.get("min", {})
    shared = sorted(set(mean) & set(minimum))
    if not shared:
        return "mean"
    return "min" if sum(minimum[k] for k in shared) < sum(mean[k] for k in shared) else "mean"
