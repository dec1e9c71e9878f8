"""One training step: every scoreable pair of a batch, the double-margin losses, and the
step as a module so that DDP can synchronise it and autocast can wrap its backbone pass."""

from __future__ import annotations

import math

import torch

from dsn.model.detailsemnet import DetailSemNet, Embedding
from dsn.precision import autocast
from dsn.training.config import TrainConfig
from dsn.training.losses import double_margin_loss


class WriterHead(torch.nn.Module):
    """Cosine-softmax writer classifier on the global feature: a training-only auxiliary task
    (as SigNet learns writer-discriminative features), dropped when the model is saved."""

    def __init__(self, dim: int, writers: list[int], scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("writer_ids", torch.tensor(sorted(writers)), persistent=False)
        self.weight = torch.nn.Parameter(torch.randn(len(writers), dim) * dim**-0.5)
        self.scale = scale

    def loss(self, feature: torch.Tensor, writers: torch.Tensor) -> torch.Tensor:
        logits = self.scale * torch.nn.functional.normalize(feature, dim=-1) @ torch.nn.functional.normalize(self.weight, dim=-1).T
        return torch.nn.functional.cross_entropy(logits, torch.searchsorted(self.writer_ids, writers))


def batch_pairs(
    writers: torch.Tensor, genuine: torch.Tensor, random_weight: float, groups: torch.Tensor | None = None
) -> tuple[torch.Tensor, ...]:
    """All scoreable pairs (a, b, is_genuine_pair, weight) of a batch, genuine image first.

    Weights make each kind of negative count as a whole (skilled 1, random ``random_weight``),
    however many pairs of it the batch holds. Genuine signatures of two writers in one name
    group (``groups`` >= 0: same name, other hand) count as skilled forgeries.
    """
    n = len(writers)
    a, b = torch.triu_indices(n, n, offset=1, device=writers.device)
    same = writers[a] == writers[b]
    ga, gb = genuine[a], genuine[b]
    positive = same & ga & gb
    skilled = same & (ga ^ gb)
    random = ~same & ga & gb
    if groups is not None:
        same_name = ~same & ga & gb & (groups[a] == groups[b]) & (groups[a] >= 0)
        skilled, random = skilled | same_name, random & ~same_name
    keep = positive | skilled | random
    a, b = a[keep], b[keep]
    positive, skilled, random = positive[keep], skilled[keep], random[keep]
    # put the genuine signature on the reference side
    swap = skilled & ~genuine[a]
    a, b = torch.where(swap, b, a), torch.where(swap, a, b)
    weight = torch.ones(len(a), device=writers.device)
    weight[skilled] = 1.0 / skilled.sum().clamp(min=1)
    weight[random] = random_weight / random.sum().clamp(min=1)
    weight[positive] = 1.0 / positive.sum().clamp(min=1)
    return a, b, positive, weight


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_step(
    model: DetailSemNet,
    images: torch.Tensor,
    writers: torch.Tensor,
    genuine: torch.Tensor,
    cfg: TrainConfig,
    writer_head: WriterHead | None = None,
    groups: torch.Tensor | None = None,
    precision: str = "fp32",
) -> dict:
    """The batch's losses. In bf16 only the backbone pass is autocast; the matching and losses run in float32."""
    with autocast(images.device, precision):
        emb = model.embed(images)
    if precision != "fp32":
        emb = Embedding(emb.global_feature.float(), emb.tokens.float(), emb.ink_mask, emb.grid)
    with torch.autocast(images.device.type, enabled=False):
        a, b, positive, weight = batch_pairs(writers, genuine, cfg.random_negative_weight, groups)
        result = model.compare(emb[a], emb[b], iterations=cfg.train_sinkhorn_iterations)

        def loss_of(distance: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            margins = cfg.pos_margin * scale, cfg.neg_margin * scale
            return double_margin_loss(distance, positive, *margins, weight, active_only=cfg.pair_mean == "active")

        main = loss_of(result.distance)
        # each part alone must also separate (its margins scaled by its share of the total)
        share = 1.0 / (1.0 + cfg.structural_weight)
        parts = loss_of(result.global_distance, share) + loss_of(
            result.structural_distance * cfg.structural_weight, cfg.structural_weight * share
        )
        loss = main + cfg.part_loss_weight * parts
        if writer_head is not None and bool(genuine.any()):  # same backbone pass, one more task
            loss = loss + cfg.writer_loss_weight * writer_head.loss(emb.global_feature[genuine], writers[genuine])
    return {"loss": loss, "main": main.detach(), "pairs": len(a)}


class TrainStep(torch.nn.Module):
    """The model (and the writer head) behind one ``forward``: what DDP wraps, so gradients of
    every process are averaged, whatever methods of the model the step calls."""

    def __init__(self, model: DetailSemNet, cfg: TrainConfig, writer_head: WriterHead | None = None, precision: str = "fp32") -> None:
        super().__init__()
        self.model, self.writer_head, self.cfg, self.precision = model, writer_head, cfg, precision

    def forward(self, images: torch.Tensor, writers: torch.Tensor, genuine: torch.Tensor, groups: torch.Tensor | None = None) -> dict:
        return train_step(self.model, images, writers, genuine, self.cfg, self.writer_head, groups, self.precision)
