"""Deletion and insertion curves (Petsiuk et al., BMVC 2018, "RISE"): does the map rank the ink that matters?

Deletion removes the image's ink pixels in the order a map ranks them (most
distance-raising first) and records the distance after each step; insertion
starts from blank paper and adds them in the same order. If the map is
faithful, deletion lowers the distance faster than a random order does (a
smaller area under the curve) and insertion raises it faster (a larger area).
The random baseline is the mean of ``RANDOM_ORDERS`` seeded orders.

The function is the one the attributions explain (``attribution.distance_function``):
the other image held fixed, the ink masks held at the pair's, so deleting all
ink ends exactly at the blank-paper distance and the curves use the same
arithmetic as the maps. Only ink pixels are ranked: blank paper is already the
"removed" value, so ranking it would only pad the curve with steps that
change nothing. Quantus' ``PixelFlipping`` ranks every pixel and runs the
model once per step and sample; here all the steps of a curve go through the
network in a few batches, about 20 times fewer calls for these images. Quantus
also requires ``opencv-python``, the GUI build of OpenCV, which clashes with
the ``opencv-python-headless`` a server needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from dsn.inference import PairAnalysis
from dsn.inspect.attribution import distance_function
from dsn.model.detailsemnet import DetailSemNet

Progress = Callable[[float, str], None]
RANDOM_ORDERS = 5
SEED = 0


def ink_order(values: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Flat indices of the ink pixels, highest attribution first (ties broken by position, so it is reproducible)."""
    flat = np.flatnonzero(ink.ravel())
    return flat[np.argsort(-values.ravel()[flat], kind="stable")]


def random_orders(ink: np.ndarray, count: int = RANDOM_ORDERS, seed: int = SEED) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = np.flatnonzero(ink.ravel())
    return [rng.permutation(flat) for _ in range(count)]


def _images(image: np.ndarray, order: np.ndarray, fractions: np.ndarray, insertion: bool) -> np.ndarray:
    """One image per fraction: the first ``fraction`` of ``order`` removed (deletion) or the only ink kept (insertion)."""
    out = np.repeat((np.zeros_like(image) if insertion else image)[None], len(fractions), axis=0).reshape(len(fractions), -1)
    flat = image.ravel()
    for k, fraction in enumerate(fractions):
        chosen = order[: round(fraction * len(order))]
        out[k, chosen] = flat[chosen] if insertion else 0.0
    return out.reshape(len(fractions), *image.shape)


@dataclass
class Curves:
    fractions: np.ndarray  # share of the ink removed / inserted
    deletion: np.ndarray  # distance after each step
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))


@dataclass
class Faithfulness:
    side: str
    target: str
    curves: dict[str, Curves]  # method -> curves
    random: Curves  # mean over the random orders
    random_spread: dict[str, float] = field(default_factory=dict)  # std of the random orders' AUCs
    seconds: float = 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        """Per method: both AUCs and their gain over random order (positive = more faithful than chance)."""
        out = {}
        for method, c in self.curves.items():
            out[method] = {
                "deletion_auc": c.deletion_auc,
                "insertion_auc": c.insertion_auc,
                "deletion_gain": self.random.deletion_auc - c.deletion_auc,
                "insertion_gain": c.insertion_auc - self.random.insertion_auc,
            }
        out["random"] = {"deletion_auc": self.random.deletion_auc, "insertion_auc": self.random.insertion_auc, **self.random_spread}
        return out

    def to_dict(self) -> dict:
        curves = {m: {"deletion": c.deletion.tolist(), "insertion": c.insertion.tolist()} for m, c in self.curves.items()}
        curves["random"] = {"deletion": self.random.deletion.tolist(), "insertion": self.random.insertion.tolist()}
        return {
            "side": self.side,
            "target": self.target,
            "fractions": self.random.fractions.tolist(),
            "curves": curves,
            "summary": self.summary(),
            "seconds": self.seconds,
        }


def faithfulness(
    model: DetailSemNet,
    analysis: PairAnalysis,
    maps: Mapping[str, np.ndarray],
    side: str = "query",
    target: str = "total",
    steps: int = 20,
    batch_size: int = 24,
    progress: Progress | None = None,
) -> Faithfulness:
    """Deletion and insertion curves of each map in ``maps`` (method -> (H, W) attribution of ``side``)."""
    started = time.perf_counter()
    report = progress or (lambda fraction, text: None)
    function = distance_function(model, analysis, target, side)
    device = next(model.parameters()).device
    image = analysis.preprocessed(side).image.astype(np.float32)
    ink = image > 0
    fractions = np.linspace(0.0, 1.0, steps + 1)
    orders = {method: ink_order(np.asarray(values), ink) for method, values in maps.items()}
    randoms = random_orders(ink)
    jobs = [*orders.items(), *((f"random {i}", order) for i, order in enumerate(randoms))]

    def distances(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = torch.from_numpy(images[start : start + batch_size]).to(device)[:, None]
                out.append(function(chunk).float().cpu().numpy())
        return np.concatenate(out)

    results: dict[str, Curves] = {}
    for k, (name, order) in enumerate(jobs):
        report(k / len(jobs), f"deletion and insertion: {name.replace('_', ' ')}")
        both = distances(np.concatenate([_images(image, order, fractions, False), _images(image, order, fractions, True)]))
        results[name] = Curves(fractions, both[: len(fractions)], both[len(fractions) :])
    random_curves = [results.pop(f"random {i}") for i in range(len(randoms))]
    mean = Curves(fractions, np.mean([c.deletion for c in random_curves], 0), np.mean([c.insertion for c in random_curves], 0))
    spread = {
        "deletion_auc_std": float(np.std([c.deletion_auc for c in random_curves])),
        "insertion_auc_std": float(np.std([c.insertion_auc for c in random_curves])),
    }
    report(1.0, "faithfulness done")
    return Faithfulness(side, target, results, mean, spread, time.perf_counter() - started)
