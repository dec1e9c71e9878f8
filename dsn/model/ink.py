"""Which final-stage tokens see ink: the structural matching only transports ink tokens.

Computed in torch on the model input, batched, by the model itself, so every caller
(training, evaluation, the app) gets the same mask from the same images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TOKEN_INK_LEVEL = 0.1  # model-input value above which a pixel counts as ink for token masks
TOKEN_MIN_FRACTION = 0.02  # a token holds ink when more than this share of its cell is ink
AREA_MEAN_MARGIN = 1e-5  # official ink rule: a cell's mean must exceed the image's emptiest cell by this


def token_ink_mask(
    images: torch.Tensor, grid: tuple[int, int], min_fraction: float = TOKEN_MIN_FRACTION, ink_level: float = TOKEN_INK_LEVEL
) -> torch.Tensor:
    """Which last-stage tokens see ink: bool (B, gh*gw), row-major, never all False.

    Tokens over bare background carry no signature information, so the model
    can ignore them; batched in torch because it runs on every training batch.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"token_ink_mask expects (B, 1, H, W) images, got {tuple(images.shape)}")
    return _tokens_with_ink(F.adaptive_avg_pool2d((images > ink_level).float(), tuple(grid)).flatten(1), min_fraction)


def area_mean_ink_mask(images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The official ink rule: a token holds ink when its cell's mean exceeds the emptiest cell's by 1e-5.

    The official code takes the minimum over the whole batch; we take it per
    image, so an image's mask does not depend on what it is batched with (the
    same for a single pair, and for any image with one blank cell). When no
    cell qualifies (a uniform image) the busiest one is kept, so matching
    always has a token.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"area_mean_ink_mask expects (B, 1, H, W) images, got {tuple(images.shape)}")
    means = F.adaptive_avg_pool2d(images.float(), tuple(grid)).flatten(1)  # = F.interpolate(mode="area")
    return _with_busiest(means >= means.min(dim=1, keepdim=True).values + AREA_MEAN_MARGIN, means)


def _tokens_with_ink(fraction: torch.Tensor, min_fraction: float) -> torch.Tensor:
    return _with_busiest(fraction > min_fraction, fraction)


def _with_busiest(chosen: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """``chosen`` plus each row's highest-scoring token, so no row is empty."""
    return chosen | F.one_hot(score.argmax(dim=1), score.shape[1]).bool()
