"""The Detail-Semantics Integrator (DSI), DetailSemNet's token mixer.

A signature's identity lives in two places at once: the overall layout of the
name (low frequency, "semantics") and the fine stroke behaviour - tremor, pen
lifts, sharp turns - that betrays a forgery (high frequency, "details"). The
DSI *disentangles* features into those two parts, processes each with an
operator suited to it, and *re-entangles* them:

- semantic part = average-pooled features (a low-pass filter),
- detail part   = features minus the upsampled semantic part (the high-pass rest),
- DetailConv    (1x1 conv, depthwise 3x3, GELU) and
  SalientConv   (3x3 max-pool, 1x1 conv, GELU) on the detail part,
- SemanticsAttend (self-attention on the pooled tokens, upsampled back),
- fuse: concat, depthwise-conv with residual, 1x1 projection.

Where a stage does not pool (``pool_size == 1``) there is no frequency split:
both branches see the same features.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn


@dataclass
class DSIMaps:
    """What one DSI saw and produced, kept for the explorer's detail-vs-semantics view."""

    stage: int
    block: int
    pool_size: int
    semantic_input: torch.Tensor  # pooled part, upsampled to the stage grid
    detail_input: torch.Tensor  # residual high-frequency part
    detail_conv: torch.Tensor
    salient_conv: torch.Tensor
    semantics_attend: torch.Tensor


_recording = threading.local()  # per thread: a request that records cannot see another's forward passes


@contextlib.contextmanager
def recording_dsi_maps(backbone: nn.Module) -> Iterator[list[DSIMaps]]:
    """Collect what every DSI of ``backbone`` sees and produces during the forward passes inside the block.

    The one way DSI maps come out (no forward arguments): each DSI mixer at
    ``backbone.stages[s].blocks[b].mixer`` appends a ``DSIMaps`` for (stage s, block b).
    """
    maps: list[DSIMaps] = []
    where = {id(block.mixer): (s, b) for s, stage in enumerate(backbone.stages) for b, block in enumerate(stage.blocks)}
    previous = getattr(_recording, "active", None)
    _recording.active = (maps, where)
    try:
        yield maps
    finally:
        _recording.active = previous


def record(mixer: nn.Module, pool_size: int, **parts: torch.Tensor) -> None:
    """Called by a DSI mixer with its parts (NCHW); keeps them only while ``recording_dsi_maps`` is active."""
    active = getattr(_recording, "active", None)
    if active is None or id(mixer) not in active[1]:
        return
    stage, block = active[1][id(mixer)]
    active[0].append(DSIMaps(stage=stage, block=block, pool_size=pool_size, **{k: v.detach() for k, v in parts.items()}))


def is_recording() -> bool:
    return getattr(_recording, "active", None) is not None


class DetailConv(nn.Sequential):
    """Local stroke texture: pointwise mixing, then a depthwise 3x3 looks at neighbours."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Conv2d(dim, out_dim, 1),
            nn.Conv2d(out_dim, out_dim, 3, padding=1, groups=out_dim),
            nn.GELU(),
        )


class SalientConv(nn.Sequential):
    """Strongest local responses (stroke ends, crossings) via 3x3 max-pooling."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__(
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(dim, out_dim, 1),
            nn.GELU(),
        )


class SemanticsAttend(nn.Module):
    """Global layout: multi-head self-attention over the (pooled) tokens."""

    def __init__(self, dim: int, out_dim: int, head_dim: int = 32) -> None:
        super().__init__()
        wanted = max(1, out_dim // head_dim)
        self.num_heads = max(h for h in range(1, wanted + 1) if out_dim % h == 0)
        self.reduce = nn.Conv2d(dim, out_dim, 1)
        self.qkv = nn.Linear(out_dim, out_dim * 3)
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B, N, C
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w)


def expand_cells(pooled: torch.Tensor, pool_size: int, size: tuple[int, int]) -> torch.Tensor:
    """Put each pooled value back over exactly the pixels it averaged.

    ``F.interpolate(mode="nearest")`` does this only when the grid is a multiple
    of ``pool_size``; on ragged grids (ceil-mode pooling) it shifts cells, and the
    detail part then is not ``x`` minus its local mean.
    """
    return pooled.repeat_interleave(pool_size, dim=-2).repeat_interleave(pool_size, dim=-1)[..., : size[0], : size[1]]


class DetailSemanticsIntegrator(nn.Module):
    """Disentangle into detail and semantic parts, process each, re-entangle."""

    def __init__(self, dim: int, pool_size: int = 2, head_dim: int = 32) -> None:
        super().__init__()
        detail_dim = dim // 4
        semantic_dim = dim - 2 * detail_dim
        self.pool_size = pool_size
        self.detail_conv = DetailConv(dim, detail_dim)
        self.salient_conv = SalientConv(dim, detail_dim)
        self.semantics_attend = SemanticsAttend(dim, semantic_dim, head_dim)
        self.fuse = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def disentangle(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (pooled semantic part, detail part); the pooled part is at pooled resolution."""
        if self.pool_size == 1:
            return x, x
        pooled = F.avg_pool2d(x, self.pool_size, ceil_mode=True, count_include_pad=False)
        return pooled, x - expand_cells(pooled, self.pool_size, x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, detail = self.disentangle(x)
        detail_out = self.detail_conv(detail)
        salient_out = self.salient_conv(detail)
        semantic_out = self.semantics_attend(pooled)
        if self.pool_size > 1:
            semantic_out = F.interpolate(semantic_out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        mixed = torch.cat([detail_out, salient_out, semantic_out], dim=1)
        mixed = mixed + self.fuse(mixed)
        if is_recording():
            semantic_in = pooled if self.pool_size == 1 else expand_cells(pooled, self.pool_size, x.shape[-2:])
            record(
                self,
                self.pool_size,
                semantic_input=semantic_in,
                detail_input=detail,
                detail_conv=detail_out,
                salient_conv=salient_out,
                semantics_attend=semantic_out,
            )
        return self.proj(mixed)


def init_weights(module: nn.Module) -> None:
    """Transformer-style init (truncated normal), as timm's MetaFormers do."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
