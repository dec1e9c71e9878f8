"""Sanity checks for saliency maps by cascading randomisation (Adebayo et al., NeurIPS 2018).

The model's weights are re-initialised block by block from the top (matching
head, last stage) down to the stem, and after each step every method's map is
compared with the trained model's: the Spearman rank correlation of |map| over
the ink pixels and the SSIM of the two maps scaled to [0, 1]. A method that
explains the model must change as the model is destroyed; a map that stays
similar shows the input (its ink), not what the network learned.

Correlation is taken over the ink only: every method here is zero or near zero
on blank paper, and counting those pixels would make any two maps look alike.
Quantus' ``ModelParameterRandomisation`` randomises one leaf layer at a time
(about 150 steps for this network, each needing every map again) and expects a
classifier's logits; the block cascade below is the same test at the
granularity Adebayo et al. plot, with scikit-image's SSIM and SciPy's Spearman.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from timm.layers import LayerScale2d

from dsn.inference import PairAnalysis
from dsn.inspect.attribution import METHODS, attribute
from dsn.model.detailsemnet import DetailSemNet

Progress = Callable[[float, str], None]
SEED = 0


def cascade(model: DetailSemNet) -> list[tuple[str, list[torch.nn.Module]]]:
    """(name, modules) from the output down to the input; a stage's downsampling goes with its first block."""
    steps: list[tuple[str, list[torch.nn.Module]]] = [("matching head", [model.match_proj, model.backbone.norm])]
    for s, stage in reversed(list(enumerate(model.backbone.stages))):
        for b, block in reversed(list(enumerate(stage.blocks))):
            modules = [block, stage.downsample] if b == 0 else [block]
            steps.append((f"stage {s + 1} block {b + 1}", modules))
    steps.append(("stem", [model.backbone.stem]))
    return steps


def randomise(modules: Sequence[torch.nn.Module], seed: int) -> None:
    """Re-initialise every convolution, linear layer and normalisation in ``modules`` as at construction.

    Layer scales keep their trained values: reset to their 1e-5 start they would switch a
    randomised block off (its residual branch would vanish) instead of making it random.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in modules:
            for layer in module.modules():
                owns_weights = any(True for _ in layer.parameters(recurse=False))
                if owns_weights and hasattr(layer, "reset_parameters") and not isinstance(layer, LayerScale2d):
                    layer.reset_parameters()  # for normalisations this also resets the running statistics
    finally:
        torch.random.set_rng_state(generator_state)


def rank_correlation(a: np.ndarray, b: np.ndarray, ink: np.ndarray, absolute: bool = False) -> float:
    """Spearman correlation of a and b (or of |a| and |b|) over the ink pixels (0 when either is constant there)."""
    x, y = a[ink].ravel(), b[ink].ravel()
    if absolute:
        x, y = np.abs(x), np.abs(y)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def map_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of |a| and |b|, each scaled to [0, 1] by its own maximum."""
    x, y = np.abs(a).astype(np.float64), np.abs(b).astype(np.float64)
    x, y = x / (x.max() or 1.0), y / (y.max() or 1.0)
    return float(structural_similarity(x, y, data_range=1.0))


@dataclass
class SanityCheck:
    """Similarity to the trained model's map after each cascade step, per method."""

    side: str
    target: str
    steps: list[str]  # cascade step names, top first: after step k, blocks 0..k are random
    spearman: dict[str, list[float]] = field(default_factory=dict)  # method -> one value per step (signed maps)
    spearman_abs: dict[str, list[float]] = field(default_factory=dict)  # the same on |map|: ignores sign flips
    ssim: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def verdicts(self, threshold: float = 0.5) -> dict[str, str]:
        """Per method, in words: does its map still look like the trained one once the whole network is random?"""
        out = {}
        for method, values in self.spearman.items():
            signed, magnitude, ssim = values[-1], self.spearman_abs[method][-1], self.ssim[method][-1]
            numbers = f"rank correlation {signed:.2f}, of |map| {magnitude:.2f}, SSIM {ssim:.2f} with every weight random"
            if signed < threshold and magnitude < threshold:
                out[method] = f"passes: {numbers}"
            elif signed < threshold:
                out[method] = f"partly: its sign follows the model, its magnitude still follows the ink ({numbers})"
            else:
                out[method] = f"fails: the map barely changes when the model is destroyed ({numbers})"
        return out

    def to_dict(self) -> dict:
        return {
            "side": self.side,
            "target": self.target,
            "steps": self.steps,
            "spearman": self.spearman,
            "spearman_abs": self.spearman_abs,
            "ssim": self.ssim,
            "seconds": self.seconds,
        }


def sanity_check(
    model: DetailSemNet,
    analysis: PairAnalysis,
    side: str = "query",
    target: str = "total",
    methods: Sequence[str] = METHODS,
    steps: int = 16,
    progress: Progress | None = None,
    cascade_steps: int | None = None,
) -> SanityCheck:
    """Run the cascade on a copy of ``model`` (the caller's model is never changed).

    ``steps``: Integrated Gradients steps / Gradient SHAP samples per map. ``cascade_steps`` stops after
    that many steps (default: all, down to the stem). ``progress`` may raise to stop the work.
    """
    started = time.perf_counter()
    report = progress or (lambda fraction, text: None)
    ink = analysis.preprocessed(side).image > 0
    broken = copy.deepcopy(model).eval()
    plan = cascade(broken)[:cascade_steps] if cascade_steps else cascade(broken)
    total = (1 + len(plan)) * len(methods)  # the trained model's maps, then each cascade step's
    originals = {}
    for i, method in enumerate(methods):
        report(i / total, f"trained model: {method.replace('_', ' ')} ({i + 1} of {len(methods)} maps)")
        originals[method] = attribute(model, analysis, method, target=target, side=side, steps=steps).map
    result = SanityCheck(side, target, [name for name, _ in plan])
    for k, (name, modules) in enumerate(plan):
        randomise(modules, SEED + k)
        for i, method in enumerate(methods):
            done = (1 + k) * len(methods) + i
            report(done / total, f"step {k + 1} of {len(plan)}: {name} randomised, {method.replace('_', ' ')}")
            randomised = attribute(broken, analysis, method, target=target, side=side, steps=steps).map
            result.spearman.setdefault(method, []).append(rank_correlation(originals[method], randomised, ink))
            result.spearman_abs.setdefault(method, []).append(rank_correlation(originals[method], randomised, ink, absolute=True))
            result.ssim.setdefault(method, []).append(map_ssim(originals[method], randomised))
    result.seconds = time.perf_counter() - started
    report(1.0, "sanity check done")
    return result
