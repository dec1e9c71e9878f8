"""Every attribution method for both images of a pair, on one colour scale.

Methods speak in different units (Saliency is a gradient magnitude, Grad-CAM a
weighted feature map, Occlusion a change of distance per window), so each map
is divided by its own robust maximum over the ink (the 99.5th percentile of
|map| on ink pixels). On the shared, symmetric scale from -1 to +1, a cell at
+1 is that method's strongest push towards "forged", whichever method it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dsn.inference import SIDES, PairAnalysis
from dsn.inspect.attribution import METHODS, Attribution, attribute
from dsn.model.detailsemnet import DetailSemNet

Progress = Callable[[float, str], None]
# Rough relative cost of one map, in backbone passes over one image, for the progress bar only (measured on
# 2 CPU cores: Saliency and Grad-CAM ~0.1 s, Occlusion ~2 s, IG / SHAP ~0.025 s per step or sample).
_PASSES = {"saliency": 3.0, "layer_gradcam": 3.0, "occlusion": 100.0}
_PASSES_PER_STEP = 1.5


@dataclass
class ExplanationGrid:
    """Maps by (method, side) and the ink of each side, for the shared scale."""

    maps: dict[tuple[str, str], Attribution]
    ink: dict[str, np.ndarray]  # side -> (H, W) bool: pixels of the model input that hold ink
    target: str
    steps: int
    seconds: float

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(method for method, _ in self.maps))

    def limit(self, method: str, side: str) -> float:
        """The map's robust maximum: 99.5th percentile of |map| over the ink (its largest |value| if that is 0)."""
        values = np.abs(self.maps[(method, side)].map)
        on_ink = values[self.ink[side]] if self.ink[side].any() else values.ravel()
        limit = float(np.percentile(on_ink, 99.5)) if on_ink.size else 0.0
        return limit if limit > 0 else max(float(values.max(initial=0.0)), 1e-12)

    def scaled(self, method: str, side: str) -> np.ndarray:
        """The map on the grid's shared scale: divided by its own limit and clipped to [-1, 1]."""
        return np.clip(self.maps[(method, side)].map / self.limit(method, side), -1.0, 1.0).astype(np.float32)


def explanation_grid(
    model: DetailSemNet,
    analysis: PairAnalysis,
    target: str = "total",
    steps: int = 32,
    methods: Sequence[str] = METHODS,
    progress: Progress | None = None,
) -> ExplanationGrid:
    """Compute ``methods`` x {reference, query}; ``progress`` is called at every model call and may raise to stop."""
    started = time.perf_counter()
    jobs = [(method, side) for method in methods for side in SIDES]
    weights = [_PASSES.get(method, _PASSES_PER_STEP * steps) for method, _ in jobs]
    done = 0.0
    maps: dict[tuple[str, str], Attribution] = {}
    for (method, side), weight in zip(jobs, weights, strict=True):
        base, span = done / sum(weights), weight / sum(weights)

        def report(fraction: float, text: str, base: float = base, span: float = span, side: str = side) -> None:
            if progress is not None:
                progress(min(base + span * fraction, 0.99), f"{text} ({side})")

        maps[(method, side)] = attribute(model, analysis, method, target=target, side=side, steps=steps, progress=report)
        done += weight
    ink = {side: analysis.preprocessed(side).image > 0 for side in SIDES}
    grid = ExplanationGrid(maps, ink, target, steps, time.perf_counter() - started)
    if progress is not None:
        progress(1.0, "all methods done")
    return grid
