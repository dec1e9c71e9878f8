"""The DSI backbone: timm registration, sizes, gradient flow, and the detail/semantics maps."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import dsn.model.backbone  # noqa: F401  (registers dsnet_* with timm)
from dsn.model.backbone import POOL_SIZES, SIZES
from dsn.model.dsi import DetailSemanticsIntegrator, recording_dsi_maps

pytestmark = pytest.mark.usefixtures("one_thread")


def images(batch: int = 1, size: int = 224) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(SIZES))
def test_every_size_is_a_timm_model_with_a_7x7_final_grid(name: str) -> None:
    model = timm.create_model(name).eval()
    with torch.inference_mode():
        features = model.forward_features(images())
    assert features.shape == (1, SIZES[name]["dims"][-1], 7, 7)
    assert model.num_features == SIZES[name]["dims"][-1]


def test_base_has_the_papers_parameter_count() -> None:
    params = sum(p.numel() for p in timm.create_model("dsnet_base").parameters())
    assert 19e6 <= params <= 21e6, params


def test_timm_refuses_pretrained_weights_with_a_pointer() -> None:
    with pytest.raises(ValueError, match=r"DetailSemNet\.load"):
        timm.create_model("dsnet_tiny", pretrained=True)


def test_gradients_reach_the_stem() -> None:
    model = timm.create_model("dsnet_tiny").train()
    model.forward_features(images(2, 64)).square().mean().backward()
    first_conv = model.stem[0][0].weight.grad
    assert first_conv is not None and torch.isfinite(first_conv).all() and first_conv.abs().sum() > 0


def test_dsi_maps_have_one_entry_per_block_with_stage_shapes() -> None:
    model = timm.create_model("dsnet_tiny").eval()
    dims, depths = SIZES["dsnet_tiny"]["dims"], SIZES["dsnet_tiny"]["depths"]
    with torch.inference_mode(), recording_dsi_maps(model) as maps:
        model.forward_features(images(2))

    assert [(m.stage, m.block) for m in maps] == [(s, b) for s, depth in enumerate(depths) for b in range(depth)]
    for m in maps:
        dim, side = dims[m.stage], 56 // 2**m.stage
        detail_dim = dim // 4
        assert m.pool_size == POOL_SIZES[m.stage]
        assert m.semantic_input.shape == m.detail_input.shape == (2, dim, side, side)
        assert m.detail_conv.shape == m.salient_conv.shape == (2, detail_dim, side, side)
        assert m.semantics_attend.shape == (2, dim - 2 * detail_dim, side, side)
        for tensor in (m.semantic_input, m.detail_input, m.detail_conv, m.salient_conv, m.semantics_attend):
            assert not tensor.requires_grad
        if m.pool_size == 1:  # no frequency split in the last stage
            assert torch.equal(m.semantic_input, m.detail_input)

    before = len(maps)
    with torch.inference_mode():
        model.forward_features(images(2))
    assert len(maps) == before, "a call outside the recording block must not collect anything"
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in model.modules()), "no hooks left behind"


def test_maps_do_not_change_the_output() -> None:
    model = timm.create_model("dsnet_tiny").eval()
    with torch.inference_mode():
        plain = model.forward_features(images(1, 64))
        with recording_dsi_maps(model) as maps:
            collected = model.forward_features(images(1, 64))
    assert maps and torch.equal(plain, collected)


@pytest.mark.parametrize("side", [56, 14, 13, 7])
@pytest.mark.parametrize("pool_size", [2, 4])
def test_disentangle_splits_into_cell_means_and_residual(pool_size: int, side: int) -> None:
    """semantic part = each pixel's pooling-cell mean, detail = the rest; they add up to the input.

    Ragged grids (13, 14 with pool 4) matter: nearest-neighbour upsampling
    misplaces cells there, and the detail part then is not high-pass.
    """
    dsi = DetailSemanticsIntegrator(8, pool_size)
    x = torch.randn(2, 8, side, side, generator=torch.Generator().manual_seed(side))
    pooled, detail = dsi.disentangle(x)
    cells = -(-side // pool_size)
    assert pooled.shape == (2, 8, cells, cells)

    semantic = x - detail
    for i in range(side):
        for j in range(side):
            ci, cj = i // pool_size, j // pool_size
            cell = x[:, :, ci * pool_size : (ci + 1) * pool_size, cj * pool_size : (cj + 1) * pool_size]
            assert torch.allclose(semantic[:, :, i, j], cell.mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(semantic + detail, x, atol=1e-6)
    assert torch.allclose(F.avg_pool2d(detail, pool_size, ceil_mode=True, count_include_pad=False), torch.zeros_like(pooled), atol=1e-5)


def test_disentangle_maps_reconstruct_the_stage_input() -> None:
    """In pooling stages the recorded semantic + detail maps add up to what the DSI mixed."""
    model = timm.create_model("dsnet_tiny").eval()
    inputs: list[torch.Tensor] = []
    handles = [
        block.mixer.register_forward_pre_hook(lambda _module, args: inputs.append(args[0].detach()))
        for stage in model.stages
        for block in stage.blocks
    ]
    try:
        with torch.inference_mode(), recording_dsi_maps(model) as maps:
            model.forward_features(images(1, 80))  # 80 px: a ragged 5x5 grid in stage 2
    finally:
        for handle in handles:
            handle.remove()
    assert len(inputs) == len(maps)
    for m, x in zip(maps, inputs):
        if m.pool_size > 1:
            assert torch.allclose(m.semantic_input + m.detail_input, x, atol=1e-5)


def test_recording_is_per_thread_and_ends_with_the_block() -> None:
    """Maps come only from passes inside ``recording_dsi_maps`` on the recording thread."""
    import threading

    model = timm.create_model("dsnet_tiny").eval()
    blocks = sum(len(stage.blocks) for stage in model.stages)
    with torch.inference_mode(), recording_dsi_maps(model) as maps:
        other = threading.Thread(target=lambda: model.forward_features(images(1)))
        other.start()
        other.join()
        assert maps == [], "another thread's forward pass must not be recorded"
        model.forward_features(images(1))
    assert len(maps) == blocks
    with torch.inference_mode():
        model.forward_features(images(1))
    assert len(maps) == blocks, "nothing is recorded after the block"
