"""Double-margin contrastive loss (DetailSemNet's training objective).

Genuine pairs are pulled below ``pos_margin`` and forged pairs pushed above
``neg_margin``; pairs already on the right side of their margin cost nothing,
so the gap between the margins is where the decision threshold can live.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def double_margin_loss(
    distance: torch.Tensor,
    genuine: torch.Tensor,
    pos_margin: float = 0.3,
    neg_margin: float = 0.9,
    weight: torch.Tensor | None = None,
    active_only: bool = False,
) -> torch.Tensor:
    """Class-balanced: positives and negatives each contribute their mean, so batches with
    many more negatives than positives (all pairs of a batch) do not drown the positives.

    ``active_only`` takes each mean over the pairs still on the wrong side of their margin: as training
    goes on most pairs cost nothing, and a mean over all of them shrinks the hard ones' pull with it.
    """
    genuine = genuine.bool()
    per_pair = torch.where(genuine, F.relu(distance - pos_margin), F.relu(neg_margin - distance)).pow(2)
    if weight is None:
        weight = torch.ones_like(distance)
    if active_only:
        weight = weight * (per_pair.detach() > 0)
    pos_w = weight * genuine
    neg_w = weight * (~genuine)
    pos = (per_pair * pos_w).sum() / pos_w.sum().clamp(min=1e-8)
    neg = (per_pair * neg_w).sum() / neg_w.sum().clamp(min=1e-8)
    return pos + neg
