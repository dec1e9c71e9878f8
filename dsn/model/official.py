"""The authors' DetailSemNet backbone (Shih et al., ECCV 2024), re-implemented to compute the same function.

Written from a reading of the official code (github ``nycu-acm/DetailSemNet_OSV``,
commit ``bfd550a``, ``models/dsnet/transformer.py``), not copied from it. It
differs from our ``dsnet_*`` (``dsn.model.backbone``) in ways that change what the
explorer shows:

- iFormer-style blocks on channels-last tokens with LayerNorm, a learned
  positional embedding added after each stage's patch embedding, layer scale
  only in stages 3-4;
- each block splits its channels by a per-block *attention-head schedule*:
  ``heads * head_dim`` channels are semantic (average-pooled, self-attention,
  nearest-upsampled), the rest are detail (the input minus its pooled and
  upsampled self), and the detail half goes through DetailConv (1x1,
  depthwise 3x3, GELU), the other half through SalientConv (3x3 max-pool,
  1x1, GELU); both parts are first projected by their own 1x1 convs from
  the full input;
- pooling 2 in stages 1-2 and none in stages 3-4 (there both branches see
  the same features).

Sizes: ``dsnet_official`` is the paper's network (dims 96/192/320/384, depths
3/3/9/3, 21.0 M parameters with the matching head); ``dsnet_official_tiny``
keeps its structure at a size that trains on two CPU cores.
``dsn.hub.convert_official`` maps an official ``state_dict`` onto these modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp, trunc_normal_
from timm.models import register_model
from torch import nn

from dsn.model.backbone import create_sized
from dsn.model.dsi import expand_cells, init_weights, is_recording, record

LAYER_NORM_EPS = 1e-6

SIZES: dict[str, dict] = {
    "dsnet_official": dict(
        dims=(96, 192, 320, 384),
        depths=(3, 3, 9, 3),
        num_heads=(3, 6, 10, 12),
        attention_heads=(1,) * 3 + (3,) * 3 + (7,) * 4 + (9,) * 5 + (11,) * 3,
    ),
    # Same proportions of semantic channels per stage as the paper's schedule, head_dim 16.
    "dsnet_official_tiny": dict(
        dims=(32, 64, 128, 160),
        depths=(2, 2, 4, 2),
        num_heads=(2, 4, 8, 10),
        attention_heads=(1, 1, 2, 2, 5, 5, 7, 7, 9, 9),
    ),
    # Between the two: the paper's head_dim (32) and semantic shares, two thirds of its depth in stage 3.
    "dsnet_official_small": dict(
        dims=(64, 128, 256, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 8, 10),
        attention_heads=(1, 1, 2, 2, 5, 5, 5, 7, 7, 7, 9, 9),
    ),
}
POOL_SIZES = (2, 2, 1, 1)


class ConvBN(nn.Module):
    """Stride-2 3x3 patch embedding (conv with bias + BatchNorm), NCHW in, NHWC out."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_dim, dim, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).permute(0, 2, 3, 1)


class Stem(nn.Module):
    """Two stride-2 convs (1 -> dim/2 -> dim) with BatchNorm and GELU between: 4x downsampling."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(dim // 2)
        self.conv2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(x)).permute(0, 2, 3, 1)


def pointwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv applied to channels-last (B, H, W, C) features as a matmul: no layout copies."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def spatial(x: torch.Tensor, op: nn.Module) -> torch.Tensor:
    """A spatial op (depthwise conv, max-pool) on channels-last features, through a channels-last NCHW view."""
    return op(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class SemanticsAttend(nn.Module):
    """Multi-head self-attention over the (pooled) semantic tokens, no output projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, h, w, C) -> (B, h, w, C); channels ordered head by head, as the official code orders them."""
        b, h, w, c = x.shape
        qkv = self.qkv(x.reshape(b, h * w, c)).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return out.transpose(1, 2).reshape(b, h, w, c)


def _pool(x: torch.Tensor, pool_size: int) -> torch.Tensor:
    """Average pooling of channels-last features; ceil mode + ``expand_cells`` equals the official
    pool / nearest upsample on even grids and stays defined on odd ones (where the official code fails)."""
    return F.avg_pool2d(x.permute(0, 3, 1, 2), pool_size, ceil_mode=True, count_include_pad=False)


class OfficialDSI(nn.Module):
    """The official Detail-Semantics Integrator with its channel split (``semantic_dim`` from the head schedule).

    Runs on channels-last features throughout: 1x1 convs are matmuls, spatial
    ops see a channels-last view; the parameters keep the official conv shapes.
    """

    def __init__(self, dim: int, num_heads: int, attention_heads: int, pool_size: int) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.semantic_dim = attention_heads * head_dim
        self.detail_dim = dim - self.semantic_dim
        if self.detail_dim <= 0 or self.detail_dim % 2:
            raise ValueError(f"dim {dim} with {attention_heads}/{num_heads} semantic heads leaves {self.detail_dim} detail channels")
        half = self.detail_dim // 2
        self.pool_size = pool_size
        self.reduce_detail = nn.Conv2d(dim, self.detail_dim, 1)
        self.reduce_semantic = nn.Conv2d(dim, self.semantic_dim, 1)
        self.detail_conv = nn.Sequential(
            nn.Conv2d(half, 2 * half, 1, bias=False), nn.Conv2d(2 * half, 2 * half, 3, padding=1, groups=2 * half, bias=False), nn.GELU()
        )
        self.salient_conv = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(half, 2 * half, 1), nn.GELU())
        self.semantics_attend = SemanticsAttend(self.semantic_dim, attention_heads)
        mixed = 2 * self.detail_dim + self.semantic_dim
        self.fuse = nn.Conv2d(mixed, mixed, 3, padding=1, groups=mixed, bias=False)
        self.proj = nn.Conv2d(mixed, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C); records the parts the explorer shows (NCHW) when asked to."""
        size = x.shape[1:3]
        if self.pool_size > 1:
            pooled = _pool(x, self.pool_size)  # (B, C, h, w)
            low = expand_cells(pooled, self.pool_size, size).permute(0, 2, 3, 1)
            detail = pointwise(x - low, self.reduce_detail)
            semantic = pointwise(pooled.permute(0, 2, 3, 1), self.reduce_semantic)
        else:
            detail, semantic = pointwise(x, self.reduce_detail), pointwise(x, self.reduce_semantic)
        half = self.detail_dim // 2
        pw, dw, act = self.detail_conv
        detail_out = act(spatial(pointwise(detail[..., :half], pw), dw))
        maxpool, salient_pw, salient_act = self.salient_conv
        salient_out = salient_act(pointwise(spatial(detail[..., half:], maxpool), salient_pw))
        semantic_out = self.semantics_attend(semantic)
        if self.pool_size > 1:
            semantic_out = expand_cells(semantic_out.permute(0, 3, 1, 2), self.pool_size, size).permute(0, 2, 3, 1)
        mixed = torch.cat([detail_out, salient_out, semantic_out], dim=-1)
        mixed = mixed + spatial(mixed, self.fuse)
        if is_recording():
            nchw = {
                "detail_input": detail,
                "detail_conv": detail_out,
                "salient_conv": salient_out,
                "semantics_attend": semantic_out,
                "semantic_input": semantic
                if self.pool_size == 1
                else expand_cells(semantic.permute(0, 3, 1, 2), self.pool_size, size).permute(0, 2, 3, 1),
            }
            record(self, self.pool_size, **{k: v.permute(0, 3, 1, 2).contiguous() for k, v in nchw.items()})
        return pointwise(mixed, self.proj)


class OfficialBlock(nn.Module):
    """x + ls1 * DSI(LN(x)), then x + ls2 * MLP(LN(x)); layer scale is the identity in stages 1-2."""

    def __init__(self, dim: int, num_heads: int, attention_heads: int, pool_size: int, layer_scale: bool, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mixer = OfficialDSI(dim, num_heads, attention_heads, pool_size)
        self.ls1 = LayerScale(dim, 1e-6) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, 4 * dim, act_layer=nn.GELU)
        self.ls2 = LayerScale(dim, 1e-6) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.mixer(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class OfficialStage(nn.Module):
    def __init__(self, downsample: nn.Module, grid: int, dim: int, blocks: list[OfficialBlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        h, w = x.shape[1:3]
        pos = self.pos_embed
        if pos.shape[1:3] != (h, w):  # other input sizes: resize the learned grid, as the official code does
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode="bilinear").permute(0, 2, 3, 1)
        x = x + pos
        for block in self.blocks:
            x = block(x)
        return x


class OfficialDSNet(nn.Module):
    """The official 4-stage DSI transformer for single-channel (ink-bright) images."""

    def __init__(
        self,
        dims: Sequence[int] = SIZES["dsnet_official"]["dims"],
        depths: Sequence[int] = SIZES["dsnet_official"]["depths"],
        num_heads: Sequence[int] = SIZES["dsnet_official"]["num_heads"],
        attention_heads: Sequence[int] = SIZES["dsnet_official"]["attention_heads"],
        img_size: int = 224,
        in_chans: int = 1,
        num_classes: int = 0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(attention_heads) != sum(depths):
            raise ValueError(f"attention_heads needs one entry per block ({sum(depths)}), got {len(attention_heads)}")
        self.dims = tuple(dims)
        self.pool_sizes = POOL_SIZES  # per stage; 1 = no frequency split there
        self.num_features = dims[-1]
        self.num_classes = num_classes
        self.stem = Stem(in_chans, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start, grid = [], 0, img_size // 4
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [
                OfficialBlock(dim, num_heads[i], attention_heads[start + j], POOL_SIZES[i], layer_scale=i >= 2, drop_path=rates[start + j])
                for j in range(depth)
            ]
            downsample = nn.Identity() if i == 0 else ConvBN(dims[i - 1], dim)
            stages.append(OfficialStage(downsample, grid, dim, blocks))
            start, grid = start + depth, grid // 2
        self.stages = nn.ModuleList(stages)
        self.final_map = nn.Identity()  # the last stage's output as an NCHW map: where Grad-CAM hooks
        self.norm = nn.LayerNorm(dims[-1], eps=LAYER_NORM_EPS)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        for stage in self.stages:
            trunc_normal_(stage.pos_embed, std=0.02)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(pre-norm tokens (B, N, C), normed tokens (B, N, C), grid); ``dsi.recording_dsi_maps`` collects DSI parts."""
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = x.permute(0, 3, 1, 2)
            x = stage(x)
        grid = (x.shape[1], x.shape[2])
        tokens = self.final_map(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
        return tokens, self.norm(tokens), grid

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose (B, C, h, w) output Grad-CAM attributes to."""
        return self.final_map

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final normed feature map (B, C, H/32, W/32), as timm models return it."""
        _, normed, (h, w) = self.forward_tokens(x)
        return normed.transpose(1, 2).reshape(normed.shape[0], -1, h, w)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(name: str, pretrained: bool = False, **kwargs) -> OfficialDSNet:
    return create_sized(
        OfficialDSNet, SIZES, name, pretrained, "convert an official checkpoint with `python -m dsn convert-official`", **kwargs
    )


@register_model
def dsnet_official(pretrained: bool = False, **kwargs) -> OfficialDSNet:
    return _create("dsnet_official", pretrained, **kwargs)


@register_model
def dsnet_official_tiny(pretrained: bool = False, **kwargs) -> OfficialDSNet:
    return _create("dsnet_official_tiny", pretrained, **kwargs)


@register_model
def dsnet_official_small(pretrained: bool = False, **kwargs) -> OfficialDSNet:
    return _create("dsnet_official_small", pretrained, **kwargs)
