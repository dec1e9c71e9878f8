"""Verify one pair of signature files and report the decision as plain data.

This is the scripting / CLI path: it returns a JSON-ready dict with the
verdict and the parts of the distance that produced it. The explorer app's
richer explanation (maps, correspondences) lives in ``dsn.analysis``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .model import DetailSemNet
from .preprocess import preprocess


def verify_files(model: DetailSemNet, ref: str | Path, query: str | Path, threshold: float | None = None) -> dict:
    """Score ``query`` against the genuine reference ``ref``; accept iff distance <= threshold.

    ``threshold`` defaults to the one stored with the checkpoint (chosen on
    validation writers), because the distance scale is specific to the
    weights. Raises ``PreprocessError`` for unreadable or blank images.
    """
    started = time.perf_counter()
    size = model.config.img_size
    mode = model.config.preprocessing
    ref_image, query_image = preprocess(ref, size=size, mode=mode), preprocess(query, size=size, mode=mode)
    model.eval()
    with torch.inference_mode():
        result = model(ref_image.tensor(), query_image.tensor())
    seconds = time.perf_counter() - started
    used_threshold = model.config.threshold if threshold is None else float(threshold)
    distance = float(result.distance[0])
    genuine = distance <= used_threshold
    return {
        "verdict": "GENUINE" if genuine else "FORGED",
        "genuine": genuine,
        "distance": distance,
        "global_distance": float(result.global_distance[0]),
        "structural_distance": float(result.structural_distance[0]),
        "structural_weight": float(result.structural_weight),
        "threshold": used_threshold,
        "threshold_source": "checkpoint" if threshold is None else "given",
        "margin": used_threshold - distance,
        "ink_tokens": [int(result.mask_ref[0].sum()), int(result.mask_query[0].sum())],
        "marginal_error": float(result.transport.marginal_error[0]),
        "seconds": seconds,
        "reference": str(ref),
        "query": str(query),
    }


def load_verifier(weights: str | None) -> tuple[DetailSemNet, str, bool]:
    """(model, source label, untrained?) for ``weights``, else the embedded default, else random weights.

    Random weights keep the command usable before a checkpoint exists; callers
    must tell the user loudly that such a verdict means nothing.
    """
    from .weights import default_weights

    source = weights or default_weights()
    if source is None:
        return DetailSemNet().eval(), "random initialisation (untrained)", True
    return DetailSemNet.load(source), str(source), False
