"""One verified pair and everything the explorer's views need, computed once.

The app shows a verdict, the patch correspondence, the DSI's detail and
semantic parts and attributions for the same pair; recomputing the model for
each view would make every click slow, so ``analyze_pair`` runs preprocessing
and one backbone pass over both images and keeps the results here. The
helpers below turn them into plain numpy arrays for ``dsn.figures``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from .dsi import DSIMaps
from .model import DetailSemNet, Embedding, Verification
from .preprocess import Preprocessed, preprocess

SIDES = ("reference", "query")


@dataclass
class PairAnalysis:
    """A verified pair (batch of one) with the DSI maps of both images."""

    reference: Preprocessed
    query: Preprocessed
    verification: Verification  # batch of 1, tensors on the CPU in float32
    threshold: float
    maps_ref: list[DSIMaps]  # one per block, batch item 0 (the reference)
    maps_query: list[DSIMaps]
    seconds: float  # wall time of preprocessing + model
    untrained: bool  # the model has no trained weights: its verdicts mean nothing

    # ------------------------------------------------------------------ arrays
    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.verification.grid)

    @property
    def cell(self) -> tuple[float, float]:
        """Model pixels per token (x, y): 32 at 224 px."""
        size = self.reference.image.shape
        return size[1] / self.grid[1], size[0] / self.grid[0]

    @property
    def plan(self) -> np.ndarray:
        """(N, N) mass moved from reference token i to query token j; zero on non-ink tokens."""
        return self.verification.plan[0].numpy()

    @property
    def cost(self) -> np.ndarray:
        """(N, N) cosine cost 1 - cos between token features."""
        return self.verification.transport.cost[0].numpy()

    def preprocessed(self, side: str) -> Preprocessed:
        return self.reference if _check_side(side) == "reference" else self.query

    def ink(self, side: str) -> np.ndarray:
        """(N,) bool: tokens that take part in the matching."""
        mask = self.verification.mask_ref if _check_side(side) == "reference" else self.verification.mask_query
        return mask[0].numpy().astype(bool)

    def maps(self, side: str) -> list[DSIMaps]:
        return self.maps_ref if _check_side(side) == "reference" else self.maps_query

    def token_label(self, index: int) -> str:
        row, col = divmod(int(index), self.grid[1])
        return f"({row}, {col})"

    # ----------------------------------------------------------------- summary
    def summary(self) -> dict:
        """JSON-friendly numbers behind the verdict; ``margin`` > 0 means accepted as genuine."""
        v = self.verification
        distance = float(v.distance[0])
        structural = float(v.structural_distance[0])
        return {
            "verdict": "genuine" if distance <= self.threshold else "forged",
            "distance": distance,
            "global_distance": float(v.global_distance[0]),
            "structural_distance": structural,
            "structural_weight": float(v.structural_weight),
            "weighted_structural_distance": float(v.structural_weight) * structural,
            "threshold": float(self.threshold),
            "margin": float(self.threshold) - distance,
            "ink_tokens_reference": int(v.mask_ref[0].sum()),
            "ink_tokens_query": int(v.mask_query[0].sum()),
            "tokens": int(v.mask_ref.shape[1]),
            "marginal_error": float(v.transport.marginal_error[0]),
            "seconds": float(self.seconds),
            "untrained": bool(self.untrained),
        }


def _check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


def is_untrained(model: DetailSemNet) -> bool:
    """Weights come only from ``DetailSemNet.load``, which records where they came from."""
    return getattr(model, "source", None) is None


def _as_preprocessed(source: object, size: int, mode: str = "letterbox") -> Preprocessed:
    return source if isinstance(source, Preprocessed) else preprocess(source, size=size, mode=mode)


def _to_cpu_float(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.float32) if t.is_floating_point() else t.detach().to("cpu")


def _split_maps(maps: list[DSIMaps], item: int) -> list[DSIMaps]:
    fields = ("semantic_input", "detail_input", "detail_conv", "salient_conv", "semantics_attend")
    return [DSIMaps(m.stage, m.block, m.pool_size, **{f: _to_cpu_float(getattr(m, f)[item : item + 1]) for f in fields}) for m in maps]


def analyze_pair(
    model: DetailSemNet,
    reference_source: object,
    query_source: object,
    threshold: float | None = None,
    with_maps: bool = True,
    untrained: bool | None = None,
) -> PairAnalysis:
    """Preprocess both images, run one backbone pass over both, and compare them.

    Sources are anything ``preprocess`` accepts (or an already ``Preprocessed``
    image). On CUDA the backbone runs under bf16 autocast; the matching always
    runs in float32 because Sinkhorn at a small epsilon needs the precision.
    """
    start = time.perf_counter()
    size = model.config.img_size
    reference = _as_preprocessed(reference_source, size, model.config.preprocessing)
    query = _as_preprocessed(query_source, size, model.config.preprocessing)
    device = next(model.parameters()).device
    model.eval()
    maps: list[DSIMaps] | None = [] if with_maps else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    with torch.inference_mode():
        images = torch.cat([reference.tensor(), query.tensor()]).to(device)
        with autocast:
            both = model.embed(images, maps)
        both = Embedding(both.global_feature.float(), both.tokens.float(), both.ink_mask, both.grid)
        verification = model.compare(both[0], both[1])
        verification = Verification(
            distance=_to_cpu_float(verification.distance),
            global_distance=_to_cpu_float(verification.global_distance),
            structural_distance=_to_cpu_float(verification.structural_distance),
            structural_weight=verification.structural_weight,
            transport=type(verification.transport)(**{k: _to_cpu_float(v) for k, v in vars(verification.transport).items()}),
            mask_ref=verification.mask_ref.cpu(),
            mask_query=verification.mask_query.cpu(),
            grid=verification.grid,
        )
        maps_ref = _split_maps(maps, 0) if maps else []
        maps_query = _split_maps(maps, 1) if maps else []
    return PairAnalysis(
        reference=reference,
        query=query,
        verification=verification,
        threshold=float(model.config.threshold if threshold is None else threshold),
        maps_ref=maps_ref,
        maps_query=maps_query,
        seconds=time.perf_counter() - start,
        untrained=is_untrained(model) if untrained is None else untrained,
    )


# ----------------------------------------------------------------------------- helpers for figures


def ink_token_centres(analysis: PairAnalysis, side: str) -> np.ndarray:
    """(N, 2) model-pixel (x, y) centres of all grid tokens, row-major; select ink ones with ``analysis.ink(side)``."""
    _check_side(side)
    rows, cols = analysis.grid
    cell_x, cell_y = analysis.cell
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([(c + 0.5) * cell_x, (r + 0.5) * cell_y], axis=1)


def structural_shares(analysis: PairAnalysis) -> tuple[np.ndarray, np.ndarray]:
    """Each token's share of the structural distance: row / column sums of plan * cost, normalised to 1.

    Both sides sum to one; a large share marks a patch whose best affordable
    matches are still unlike it - where the pair differs.
    """
    contribution = analysis.plan * analysis.cost
    total = contribution.sum()
    if total <= 0:
        return np.zeros(contribution.shape[0]), np.zeros(contribution.shape[1])
    return contribution.sum(1) / total, contribution.sum(0) / total


def find_maps(analysis: PairAnalysis, side: str, stage: int, block: int) -> DSIMaps:
    for m in analysis.maps(side):
        if m.stage == stage and m.block == block:
            return m
    available = sorted({(m.stage, m.block) for m in analysis.maps_ref})
    if not available:
        raise ValueError("This analysis has no DSI maps; run analyze_pair(..., with_maps=True).")
    raise ValueError(f"No DSI block at stage {stage}, block {block}; available (stage, block): {available}")


def channel_energy(features: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) -> (H, W) root-mean-square over channels: how strongly each place responds."""
    return features[0].float().pow(2).mean(0).sqrt().numpy()


def radial_power_profile(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean FFT power per radial frequency band, over channels.

    Returns (frequency in cycles per feature-map pixel, 0 .. 0.5, power). The
    detail part of a pooling DSI should carry its power at high frequencies,
    the semantic part (a pooled, upsampled map) at low ones.
    """
    x = features[0].float().numpy()
    _, h, w = x.shape
    power = (np.abs(np.fft.fft2(x, norm="ortho")) ** 2).mean(0)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    bins = max(2, min(h, w) // 2)
    edges = np.linspace(0.0, 0.5, bins + 1)
    edges[-1] = np.inf  # corners (|f| up to 0.71) join the top band
    index = np.clip(np.digitize(radius, edges) - 1, 0, bins - 1)
    sums = np.bincount(index.ravel(), power.ravel(), bins)
    counts = np.maximum(np.bincount(index.ravel(), minlength=bins), 1)
    centres = (np.linspace(0.0, 0.5, bins + 1)[:-1] + 0.25 / bins).astype(np.float64)
    return centres, sums / counts
