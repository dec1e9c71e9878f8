"""What the explorer's views read from one analysed pair, as plain numpy arrays.

``dsn.inference.analyze_pair`` runs preprocessing and one backbone pass over both
images and keeps everything in a ``PairAnalysis``; the helpers here turn it into
token centres, structural shares and DSI maps for ``dsn.inspect.figures``.
"""

from __future__ import annotations

import numpy as np
import torch

from dsn.inference import PairAnalysis, check_side
from dsn.model.dsi import DSIMaps

# ----------------------------------------------------------------------------- helpers for figures


def ink_token_centres(analysis: PairAnalysis, side: str) -> np.ndarray:
    """(N, 2) model-pixel (x, y) centres of all grid tokens, row-major; select ink ones with ``analysis.ink(side)``."""
    check_side(side)
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


# ----------------------------------------------------------------------------- JSON for the API and the views
def _patch(analysis: PairAnalysis, token: int) -> dict:
    row, col = divmod(int(token), analysis.grid[1])
    return {"token": int(token), "row": row, "col": col}


def match_list(analysis: PairAnalysis, top_k: int = 30, reference_patch: int | None = None) -> list[dict]:
    """The ``top_k`` heaviest plan entries (of one reference patch if given): JSON-friendly, heaviest first.

    ``mass`` is the fraction of all transported mass, ``cost`` is 1 − cosine between the patch features.
    """
    plan, cost = analysis.plan, analysis.cost
    share = plan / max(float(plan.sum()), 1e-12)
    if reference_patch is None:
        order = np.argsort(share, axis=None)[::-1][: max(0, int(top_k))]
        entries = [divmod(int(k), share.shape[1]) for k in order]
    else:
        row = share[int(reference_patch)]
        entries = [(int(reference_patch), int(j)) for j in np.argsort(row)[::-1][: max(0, int(top_k))]]
    return [
        {"reference_patch": _patch(analysis, i), "query_patch": _patch(analysis, j), "mass": float(share[i, j]), "cost": float(cost[i, j])}
        for i, j in entries
        if share[i, j] > 0
    ]


def dsi_stats(analysis: PairAnalysis, stage: int, block: int) -> dict:
    """JSON-friendly numbers behind the two figures (the /dsi API).

    For each side and DSI part: the mean channel-RMS energy; and the radial
    frequency profile of the detail and semantic inputs.
    """
    out: dict = {"stage": int(stage), "block": int(block), "stage_label": f"stage {int(stage) + 1}, block {int(block) + 1}"}
    for side in ("reference", "query"):
        maps = find_maps(analysis, side, int(stage), int(block))
        out["pool_size"] = int(maps.pool_size)
        out["frequency_split"] = maps.pool_size > 1
        out["grid"] = list(maps.detail_input.shape[-2:])
        parts = ("semantic_input", "detail_input", "detail_conv", "salient_conv", "semantics_attend")
        energy = {part: float(np.mean(channel_energy(getattr(maps, part)))) for part in parts}
        profile = {}
        for part in ("detail_input", "semantic_input"):
            frequency, power = radial_power_profile(getattr(maps, part))
            profile[part] = {"frequency": frequency.tolist(), "power": power.tolist()}
        out[side] = {"mean_energy": energy, "frequency_profile": profile}
    return out
