"""Pixel attributions (Captum) for one part of a pair's distance, w.r.t. one of the two images.

The other image is embedded once and held fixed, so every method explains
the same function: image -> distance to the fixed side. The ink masks are
also held at the analysed pair's masks: which tokens take part in matching
is a discrete choice (a threshold on the input), and letting it flip along
an integration path from blank paper would break completeness for reasons
unrelated to what the network sees. With these masks fixed, the function at
the real input is exactly the distance the app shows.

Blank paper is all zeros in the model's ink-bright input, so zeros are the
natural "absence of signature" baseline for Integrated Gradients, Gradient
SHAP and Occlusion.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dsn.inference import PairAnalysis
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.matching import cosine_cost, sinkhorn

METHODS = ("integrated_gradients", "saliency", "gradient_shap", "occlusion", "layer_gradcam")
TARGETS = ("total", "global", "structural")
LABELS = {  # display names
    "integrated_gradients": "Integrated Gradients",
    "saliency": "Saliency",
    "gradient_shap": "Gradient SHAP",
    "occlusion": "Occlusion",
    "layer_gradcam": "Layer Grad-CAM",
}
SIDES = ("reference", "query")
HEAVY = {  # methods that take seconds on a CPU: the UI should say so before running them
    "integrated_gradients": "one forward and backward pass per step",
    "gradient_shap": "one forward and backward pass per sample",
    "occlusion": "one forward pass per 16x16 window position that covers ink (up to 729)",
}
OCCLUSION_WINDOW = 16
OCCLUSION_STRIDE = 8
SHAP_NOISE = 0.05  # std of the noise GradientShap adds to the input, and the amplitude of the noisy-paper baselines
SEED = 0

Progress = Callable[[float, str], None]


@dataclass
class Attribution:
    method: str
    target: str
    side: str
    map: np.ndarray  # (H, W) float32, same size as the model input; sign: + raises the distance
    delta: float | None  # Integrated Gradients: |sum(attribution) - (f(input) - f(baseline))|
    seconds: float
    steps: int | None  # integration steps / samples, where the method has them

    @property
    def signed(self) -> bool:
        """Saliency is |gradient|: no sign to show."""
        return self.method != "saliency"


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def distance_function(model: DetailSemNet, analysis: PairAnalysis, target: str, side: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, 1, H, W) images for ``side`` -> (B,) chosen distance part to the fixed other side.

    Same arithmetic as ``DetailSemNet.compare`` in eval mode, except that
    Sinkhorn is differentiated through its iterations: its default envelope
    gradient is the gradient of the entropy-regularised OT objective, not of
    the reported sum(plan * cost), and Integrated Gradients then misses
    completeness by a constant amount however many steps it takes (23% of
    the structural change in our measurement; unrolled: under 0.01%).
    """
    device = next(model.parameters()).device
    other = "query" if side == "reference" else "reference"
    with torch.no_grad():
        fixed = model.embed(analysis.preprocessed(other).tensor().to(device))
    masks = {s: torch.from_numpy(analysis.ink(s)).to(device)[None] for s in SIDES}
    config = model.config

    def distance(images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        moving = model.embed(images)
        pairs = {side: (moving.global_feature, moving.tokens), other: (fixed.global_feature.expand(n, -1), fixed.tokens.expand(n, -1, -1))}
        (g_ref, t_ref), (g_query, t_query) = pairs["reference"], pairs["query"]
        global_distance = (g_ref - g_query).norm(dim=-1)
        if target == "global":
            return global_distance.float()
        cost = cosine_cost(t_ref, t_query)
        ref_mask, query_mask = masks["reference"].expand(n, -1), masks["query"].expand(n, -1)
        structural = sinkhorn(cost, ref_mask, query_mask, config.epsilon_eval, config.sinkhorn_iterations, unroll=True).distance
        return structural.float() if target == "structural" else (global_distance + config.structural_weight * structural).float()

    return distance


def _counted(function: Callable[[torch.Tensor], torch.Tensor], calls: int, progress: Progress | None, label: str) -> Callable:
    """Report progress once per model call (Captum has no callback of its own)."""
    done = [0]

    def wrapped(images: torch.Tensor) -> torch.Tensor:
        out = function(images)
        done[0] += 1
        if progress is not None:
            progress(min(done[0] / max(calls, 1), 0.99), f"{label}: batch {done[0]} of ~{calls}")
        return out

    return wrapped


def _skip_unchanged(function: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, value: torch.Tensor) -> Callable:
    """Occluding blank paper with the blank baseline changes nothing: reuse f(input) instead of running the model."""

    def wrapped(images: torch.Tensor) -> torch.Tensor:
        same = (images == image).flatten(1).all(1)
        out = value.expand(images.shape[0]).clone()
        if not bool(same.all()):
            out[~same] = function(images[~same])
        return out

    return wrapped


@contextlib.contextmanager
def _seeded(device: torch.device) -> Iterator[None]:
    """Fixed seeds for torch and numpy (Captum draws from both), restoring the caller's random state afterwards."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


def _window_count(size: tuple[int, int], window: int, stride: int) -> int:
    """How many positions Occlusion tries (Captum calls the model wrapper once per batch of them)."""
    return ((size[0] - window) // stride + 1) * ((size[1] - window) // stride + 1)


MAX_STEPS = 256  # Integrated Gradients steps / Gradient SHAP samples: more changes nothing visible and holds the model for minutes


def attribute(
    model: DetailSemNet,
    analysis: PairAnalysis,
    method: str,
    target: str = "total",
    side: str = "query",
    steps: int = 32,
    progress: Progress | None = None,
    batch_size: int | None = None,
    occlusion_window: int = OCCLUSION_WINDOW,
    occlusion_stride: int = OCCLUSION_STRIDE,
) -> Attribution:
    """Attribute one part of the pair's distance to the pixels of one image.

    ``steps`` is the number of Integrated Gradients steps or Gradient SHAP
    samples; ``batch_size`` bounds how many images go through the model at
    once (default 16 on CPU, 64 on GPU). Occlusion slides a blank
    ``occlusion_window`` square by ``occlusion_stride`` pixels and skips the
    windows that hide no ink. Seeds are fixed: the same call gives the same map.
    """
    _check("method", method, METHODS)
    _check("target", target, TARGETS)
    _check("side", side, SIDES)
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    if method == "occlusion" and not 1 <= occlusion_stride <= occlusion_window <= min(analysis.preprocessed(side).image.shape):
        raise ValueError(f"occlusion needs 1 <= stride <= window <= image size, got window {occlusion_window}, stride {occlusion_stride}")
    # imported here: `python -m dsn train` on a GPU box without Captum imports this module's constants
    from captum.attr import GradientShap, IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    start = time.perf_counter()
    model.eval()
    device = next(model.parameters()).device
    batch = batch_size or (64 if device.type == "cuda" else 16)
    image = analysis.preprocessed(side).tensor().to(device)
    blank = torch.zeros_like(image)
    image.requires_grad_(method != "occlusion")  # Captum would set it anyway, with a warning
    function = distance_function(model, analysis, target, side)
    label = method.replace("_", " ")
    delta: float | None = None
    used_steps: int | None = None
    with _seeded(device), torch.enable_grad():
        if method == "integrated_gradients":
            calls = math.ceil(steps / batch) + 1
            ig = IntegratedGradients(_counted(function, calls, progress, label))
            attr, deltas = ig.attribute(image, baselines=blank, n_steps=steps, internal_batch_size=batch, return_convergence_delta=True)
            delta, used_steps = float(deltas.abs().max()), steps
        elif method == "saliency":
            attr = Saliency(_counted(function, 1, progress, label)).attribute(image, abs=True)
        elif method == "gradient_shap":
            noise = (SHAP_NOISE * torch.rand(3, *image.shape[1:], device=device)).clamp(0, 1)
            baselines = torch.cat([blank, noise])  # blank paper, and blank paper with faint specks
            chunks = [min(batch, steps - k) for k in range(0, steps, batch)]
            shap = GradientShap(_counted(function, len(chunks), progress, label))
            attr = sum(shap.attribute(image, baselines=baselines, n_samples=n, stdevs=SHAP_NOISE) * n for n in chunks) / steps
            used_steps = steps
        elif method == "occlusion":
            with torch.no_grad():
                value = function(image)
            calls = math.ceil(_window_count(tuple(image.shape[-2:]), occlusion_window, occlusion_stride) / batch) + 1
            occlusion = Occlusion(_counted(_skip_unchanged(function, image, value), calls, progress, label))
            window, stride = (1, occlusion_window, occlusion_window), (1, occlusion_stride, occlusion_stride)
            attr = occlusion.attribute(image, sliding_window_shapes=window, strides=stride, baselines=0.0, perturbations_per_eval=batch)
        else:  # layer_gradcam on the last stage, signed: + where the stage's features raise the distance
            gradcam = LayerGradCam(_counted(function, 1, progress, label), model.backbone.cam_layer)
            coarse = gradcam.attribute(image, relu_attributions=False)
            attr = LayerAttribution.interpolate(coarse, tuple(image.shape[-2:]), interpolate_mode="bilinear")
    values = torch.nan_to_num(attr.detach()[0, 0].float()).cpu().numpy().astype(np.float32)
    if progress is not None:
        progress(1.0, f"{label}: done")
    return Attribution(method, target, side, values, delta, time.perf_counter() - start, used_steps)
