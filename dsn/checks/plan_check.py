"""Is the correspondence view honest? Erase each matched reference patch and re-verify.

The transport plan attributes to reference patch i the share
sum_j P_ij C_ij / sum P C of the structural distance (what the
correspondence view draws). Erasing that patch's ink from the reference
(setting it to blank paper) and verifying again measures how much the
structural distance really depends on it. If the view is honest, the two
agree in rank: patches the plan calls expensive change the distance most.
The rank correlation is computed over ink patches only; an erased patch
without ink leaves the image, and so the distance, exactly as it was.

Unlike the attribution checks this re-runs the whole model (ink masks
recomputed, Sinkhorn run to convergence): it tests the view against the
verifier itself, not against a linearisation of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr

from dsn.inference import PairAnalysis, compare, embed
from dsn.inspect.analysis import structural_shares
from dsn.model.detailsemnet import DetailSemNet, Embedding

Progress = Callable[[float, str], None]


@dataclass
class PlanCheck:
    patches: np.ndarray  # reference token index of each ink patch checked
    share: np.ndarray  # the plan's share of the structural distance, per patch
    change: np.ndarray  # structural distance (original) - structural distance (patch erased)
    structural: float  # the pair's structural distance
    spearman: float  # rank correlation of share and change over the ink patches
    seconds: float

    def to_dict(self) -> dict:
        return {
            "patches": self.patches.tolist(),
            "share": self.share.tolist(),
            "change": self.change.tolist(),
            "structural_distance": self.structural,
            "spearman": self.spearman,
            "seconds": self.seconds,
        }


def erase_patch(image: np.ndarray, grid: tuple[int, int], token: int) -> np.ndarray:
    """``image`` with the cell of ``token`` (row-major over ``grid``) set to blank paper."""
    rows, cols = grid
    height, width = image.shape
    r, c = divmod(int(token), cols)
    y0, y1 = round(r * height / rows), round((r + 1) * height / rows)
    x0, x1 = round(c * width / cols), round((c + 1) * width / cols)
    out = image.copy()
    out[y0:y1, x0:x1] = 0.0
    return out


def structural_after_erasing(
    model: DetailSemNet, analysis: PairAnalysis, tokens: np.ndarray, batch_size: int = 16, progress: Progress | None = None
) -> np.ndarray:
    """The structural distance with each reference token's cell erased in turn (query unchanged)."""
    image = analysis.reference.image.astype(np.float32)
    query = embed(model, analysis.query.tensor())
    out = []
    for start in range(0, len(tokens), batch_size):
        if progress is not None:
            progress(start / max(len(tokens), 1), f"re-verifying with patch {start + 1} of {len(tokens)} erased")
        chunk = tokens[start : start + batch_size]
        images = torch.from_numpy(np.stack([erase_patch(image, analysis.grid, t) for t in chunk]))[:, None]
        erased = embed(model, images)
        n = len(chunk)
        repeated = Embedding(query.global_feature.expand(n, -1), query.tokens.expand(n, -1, -1), query.ink_mask.expand(n, -1), query.grid)
        out.append(compare(model, erased, repeated).structural_distance.numpy())
    return np.concatenate(out) if out else np.zeros(0)


def plan_check(model: DetailSemNet, analysis: PairAnalysis, progress: Progress | None = None) -> PlanCheck:
    """Erase every reference ink patch in turn; compare the measured change with the plan's share."""
    started = time.perf_counter()
    ink = np.flatnonzero(analysis.ink("reference"))
    share = structural_shares(analysis)[0][ink]
    structural = float(analysis.verification.structural_distance[0])
    change = structural - structural_after_erasing(model, analysis, ink, progress=progress)
    rho = float(spearmanr(share, change).statistic) if len(ink) >= 3 and np.ptp(share) > 0 and np.ptp(change) > 0 else 0.0
    if progress is not None:
        progress(1.0, "plan check done")
    return PlanCheck(ink, share, change, structural, rho, time.perf_counter() - started)
