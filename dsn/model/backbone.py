"""DetailSemNet's backbone: a 4-stage hierarchical MetaFormer whose token mixer is the DSI.

Registered with timm, so ``timm.create_model("dsnet_base")`` works once
``dsn`` is imported. Sizes:

- ``dsnet_tiny``  - small enough to train on two CPU cores,
- ``dsnet_small`` - a middle ground,
- ``dsnet_base``  - the paper's model (dims 96/192/320/384, depths 3/3/9/3, ~20M parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import DropPath, LayerScale2d, Mlp
from timm.models import register_model
from torch import nn

from dsn.model.dsi import DetailSemanticsIntegrator, init_weights

SIZES: dict[str, dict] = {
    "dsnet_tiny": dict(dims=(32, 64, 128, 160), depths=(2, 2, 4, 2), mlp_ratios=(3, 3, 3, 3)),
    "dsnet_small": dict(dims=(64, 128, 224, 288), depths=(2, 2, 6, 2), mlp_ratios=(4, 4, 4, 4)),
    "dsnet_base": dict(dims=(96, 192, 320, 384), depths=(3, 3, 9, 3), mlp_ratios=(4, 4, 4.5, 4.5)),
}
# Pool sizes of the semantic branch per stage: the early, large grids pool most;
# the last stage (7x7 at 224 px) does not pool, so it has no frequency split.
POOL_SIZES = (4, 2, 2, 1)


def conv_bn(in_dim: int, out_dim: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_dim))


class DSIBlock(nn.Module):
    """MetaFormer block: x + DSI(norm(x)), then x + MLP(norm(x)), each with layer scale."""

    def __init__(self, dim: int, pool_size: int, mlp_ratio: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.mixer = DetailSemanticsIntegrator(dim, pool_size)
        self.ls1 = LayerScale2d(dim, 1e-5)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, use_conv=True)
        self.ls2 = LayerScale2d(dim, 1e-5)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.mixer(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class DSNetStage(nn.Module):
    def __init__(
        self, in_dim: int, dim: int, depth: int, pool_size: int, mlp_ratio: float, drop_paths: Sequence[float], first: bool
    ) -> None:
        super().__init__()
        self.downsample = nn.Identity() if first else conv_bn(in_dim, dim, 2)
        self.blocks = nn.ModuleList(DSIBlock(dim, pool_size, mlp_ratio, dp) for dp in drop_paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class DSNet(nn.Module):
    """Hierarchical DSI backbone for single-channel (ink-bright) signature images."""

    def __init__(
        self,
        dims: Sequence[int] = (96, 192, 320, 384),
        depths: Sequence[int] = (3, 3, 9, 3),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        pool_sizes: Sequence[int] = POOL_SIZES,
        in_chans: int = 1,
        num_classes: int = 0,
        drop_path_rate: float = 0.0,
        img_size: int | None = None,  # accepted like timm models do; nothing here depends on it (no positional embedding)
    ) -> None:
        super().__init__()
        self.dims = tuple(dims)
        self.pool_sizes = tuple(pool_sizes)  # per stage; 1 = no frequency split there
        self.num_features = dims[-1]
        self.num_classes = num_classes
        self.stem = nn.Sequential(conv_bn(in_chans, dims[0] // 2, 2), nn.GELU(), conv_bn(dims[0] // 2, dims[0], 2))
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        stages, start = [], 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            in_dim = dims[max(i - 1, 0)]
            stages.append(DSNetStage(in_dim, dim, depth, pool_sizes[i], mlp_ratios[i], rates[start : start + depth], i == 0))
            start += depth
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm2d(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map (B, C, H/32, W/32); ``dsi.recording_dsi_maps`` collects every DSI's parts."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(pre-norm tokens (B, N, C), normed tokens (B, N, C), grid), the interface DetailSemNet embeds with."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), self.norm(x).flatten(2).transpose(1, 2), grid

    @property
    def cam_layer(self) -> nn.Module:
        """The module whose (B, C, h, w) output Grad-CAM attributes to."""
        return self.stages[-1]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_sized(cls: type[nn.Module], sizes: dict[str, dict], name: str, pretrained: bool, hint: str, **kwargs) -> nn.Module:
    """A timm entry point: ``cls`` with the preset ``sizes[name]``; there are no timm-hosted weights (``hint`` says what to do)."""
    if pretrained:
        raise ValueError(f"{name}: no timm-hosted weights exist; {hint}")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return cls(**{**sizes[name], **kwargs})


def _create(name: str, pretrained: bool = False, **kwargs) -> DSNet:
    return create_sized(DSNet, SIZES, name, pretrained, "load a DetailSemNet checkpoint with DetailSemNet.load(...)", **kwargs)


@register_model
def dsnet_tiny(pretrained: bool = False, **kwargs) -> DSNet:
    return _create("dsnet_tiny", pretrained, **kwargs)


@register_model
def dsnet_small(pretrained: bool = False, **kwargs) -> DSNet:
    return _create("dsnet_small", pretrained, **kwargs)


@register_model
def dsnet_base(pretrained: bool = False, **kwargs) -> DSNet:
    return _create("dsnet_base", pretrained, **kwargs)
