"""Every figure builder on a real model output: traces, hover data, highlight, filters, honesty of scales."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from dsn.inference import PairAnalysis
from dsn.inspect import figures
from dsn.inspect.analysis import structural_shares
from dsn.inspect.attribution import attribute
from dsn.model.detailsemnet import DetailSemNet


def traces(fig: go.Figure, name: str) -> list:
    return [t for t in fig.data if t.name == name]


def test_correspondence_lines_markers_and_hover(analysis: PairAnalysis) -> None:
    fig = figures.correspondence_figure(analysis, top_k=12)
    assert [t.type for t in fig.data[:2]] == ["image", "image"]
    lines = traces(fig, "match")
    assert len(lines) == 12  # top_k respected (there are far more non-zero plan entries)
    assert all("mass:" in t.hovertemplate and "cost" in t.hovertemplate for t in lines)
    widths = [t.line.width for t in lines]
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]  # heavier entries drawn thicker
    for side in ("reference", "query"):
        (markers,) = traces(fig, f"{side} patches")
        assert list(markers.customdata) == list(np.flatnonzero(analysis.ink(side)))
        assert len(markers.hovertext) == len(markers.customdata) and "%{hovertext}" in markers.hovertemplate
    (bar,) = traces(fig, "cost colour bar")
    assert bar.marker.showscale and bar.marker.cmin == 0.0 and "cos" in bar.marker.colorbar.title.text
    assert "UNTRAINED" in fig.layout.title.text or not analysis.untrained
    assert len(figures.correspondence_figure(analysis, top_k=3).data) == len(fig.data) - 9


def test_correspondence_min_mass_filters_lines(analysis: PairAnalysis) -> None:
    share = analysis.plan / analysis.plan.sum()
    cut = float(np.sort(share, axis=None)[-4])  # exactly three entries lie above it
    assert len(traces(figures.correspondence_figure(analysis, top_k=30, min_mass=cut), "match")) == 3
    assert traces(figures.correspondence_figure(analysis, min_mass=1.0), "match") == []


def test_highlight_bolds_one_patch_and_fades_the_rest(analysis: PairAnalysis) -> None:
    patch = int(np.flatnonzero(analysis.ink("reference"))[3])
    plain = figures.correspondence_figure(analysis, top_k=20)
    fig = figures.correspondence_figure(analysis, top_k=20, highlight=patch)
    label = analysis.token_label(patch)
    bold = [t for t in traces(fig, "match") if t.hovertemplate.startswith(f"reference patch {label} ")]
    faded = [t for t in traces(fig, "match") if t not in bold]
    assert bold and all(t.opacity == 1.0 for t in bold) and all(t.opacity < 0.2 for t in faded)
    assert max(t.opacity for t in traces(plain, "match")) > 0.9 and min(t.opacity for t in traces(plain, "match")) > 0.3
    (ref_markers,) = traces(fig, "reference patches")
    sizes = dict(zip(ref_markers.customdata, ref_markers.marker.size))
    assert sizes[patch] > max(s for t, s in sizes.items() if t != patch)
    assert label in fig.layout.title.text
    with pytest.raises(ValueError, match="highlight"):
        figures.correspondence_figure(analysis, highlight=49)


def test_original_background_maps_patches_onto_the_upload(analysis: PairAnalysis) -> None:
    fig = figures.correspondence_figure(analysis, top_k=5, background="original")
    (ref_markers,) = traces(fig, "reference patches")
    height, width = analysis.reference.original.shape[:2]
    scale = 224.0 / height  # originals are shown 224 units tall
    assert np.all((np.array(ref_markers.x) >= 0) & (np.array(ref_markers.x) <= width * scale))
    assert np.all((np.array(ref_markers.y) >= 0) & (np.array(ref_markers.y) <= 224.0))
    (query_markers,) = traces(fig, "query patches")
    assert min(query_markers.x) > width * scale  # the query sits to the right of the reference
    with pytest.raises(ValueError, match="background"):
        figures.correspondence_figure(analysis, background="satellite")


def test_plan_heatmap_is_the_ink_plan_in_percent(analysis: PairAnalysis) -> None:
    fig = figures.plan_heatmap(analysis)
    (heat,) = fig.data
    n_ref, n_query = int(analysis.ink("reference").sum()), int(analysis.ink("query").sum())
    z = np.asarray(heat.z)
    assert z.shape == (n_ref, n_query) and np.asarray(heat.customdata).shape == (n_ref, n_query)
    assert z.sum() == pytest.approx(100.0, abs=0.01)
    # every reference patch sends the same share, up to the Sinkhorn marginal error the analysis reports
    gap = 100.0 * float(analysis.verification.transport.marginal_error[0])
    assert gap < 0.2  # a real coupling: under 0.2 % of the mass misplaced
    assert np.allclose(z.sum(1), 100.0 / n_ref, atol=gap + 1e-3)
    assert "query patch %{x}" in heat.hovertemplate and "%{customdata" in heat.hovertemplate
    assert len(heat.x) == n_query and len(heat.y) == n_ref


def test_structural_share_overlays_both_images(analysis: PairAnalysis) -> None:
    fig = figures.structural_share_figure(analysis)
    assert [t.type for t in fig.data].count("image") == 2
    ref_share, _ = structural_shares(analysis)
    for side in ("reference", "query"):
        (heat,) = traces(fig, f"{side} share")
        z = np.asarray(heat.z, dtype=float)
        assert z.shape == (7, 7) and np.nansum(z) == pytest.approx(100.0, abs=0.01)
        assert np.array_equal(np.isnan(z).ravel(), ~analysis.ink(side))
        texts = np.asarray(heat.text).ravel()
        ink = analysis.ink(side)
        assert all("share of structural distance" in text for text in texts[ink]), "ink patches say their share"
        assert all("no ink: not matched" in text and "nan" not in text.lower() for text in texts[~ink]), "no NaN in hovers"
    assert np.nanmax(np.asarray(traces(fig, "reference share")[0].z, dtype=float)) == pytest.approx(100 * ref_share.max(), rel=1e-5)
    assert fig.layout.coloraxis.cmin == 0.0


def test_dsi_figure_for_a_pooling_and_a_non_pooling_stage(analysis: PairAnalysis) -> None:
    pooled = figures.dsi_figure(analysis, stage=0, block=1)
    heatmaps = [t for t in pooled.data if t.type == "heatmap"]
    assert len(heatmaps) == 10 and [t.type for t in pooled.data].count("image") == 2
    assert max(float(np.max(t.z)) for t in heatmaps) == pytest.approx(1.0)
    assert np.asarray(traces(pooled, "reference detail_input")[0].z).shape == (56, 56)
    assert "4×4" in pooled.layout.title.text and not pooled.layout.annotations[-1].text.startswith("This stage does not pool")
    widths = [v["domain"][1] - v["domain"][0] for k, v in pooled.layout.to_plotly_json().items() if k.startswith("xaxis")]
    assert len(widths) == 12 and min(widths) > 0.25, "three maps a row, large enough to read (six in a row were ~80 px)"
    flat = figures.dsi_figure(analysis, stage=3, block=0)
    assert "no pooling" in flat.layout.title.text
    assert any(a.text.startswith("This stage does not pool") for a in flat.layout.annotations)
    assert np.array_equal(np.asarray(traces(flat, "query semantic_input")[0].z), np.asarray(traces(flat, "query detail_input")[0].z))
    with pytest.raises(ValueError):
        figures.dsi_figure(analysis, stage=0, block=5)


def test_frequency_profile_shows_details_at_high_frequencies(analysis: PairAnalysis) -> None:
    fig = figures.frequency_profile_figure(analysis, stage=0, block=0)
    assert len(fig.data) == 4 and all("cycles/px" in t.hovertemplate for t in fig.data)
    for side in ("reference", "query"):
        (detail,) = traces(fig, f"{side}: detail input")
        (semantic,) = traces(fig, f"{side}: semantic input")
        high = np.asarray(detail.x) > 0.25
        assert np.asarray(detail.y)[high].sum() > 5 * np.asarray(semantic.y)[high].sum()
    flat = figures.frequency_profile_figure(analysis, stage=3, block=1)
    assert np.allclose(traces(flat, "query: detail input")[0].y, traces(flat, "query: semantic input")[0].y)


def test_attribution_overlay_and_distance_bar(model: DetailSemNet, analysis: PairAnalysis) -> None:
    gradcam = attribute(model, analysis, "layer_gradcam", side="query")
    fig = figures.attribution_figure(gradcam, analysis.query.image, opacity=0.3)
    (overlay,) = traces(fig, "attribution")
    assert overlay.opacity == 0.3 and overlay.zmin == -overlay.zmax and "raises distance" in overlay.colorbar.title.text
    assert np.asarray(overlay.z).shape == (224, 224) and fig.data[0].type == "image"
    saliency = attribute(model, analysis, "saliency", side="reference")
    assert traces(figures.attribution_figure(saliency, analysis.reference.image), "attribution")[0].zmin == 0.0

    bars = figures.distance_bar_figure(analysis)
    summary = analysis.summary()
    assert sum(t.x[0] for t in bars.data) == pytest.approx(summary["distance"], abs=1e-5)
    assert bars.layout.shapes[0].x0 == summary["threshold"]
    assert summary["verdict"] in bars.layout.title.text


def test_a_dsi_map_that_barely_varies_says_so_in_its_title(analysis: PairAnalysis) -> None:
    """A flat panel reads as broken unless its title says it is flat (and by how much it varies)."""
    from dsn.inspect.analysis import channel_energy, find_maps
    from dsn.inspect.figures import dsi_figure

    for stage in range(4):
        titles = [a.text for a in dsi_figure(analysis, stage, 0).layout.annotations]
        for side, title in zip(("reference", "query"), (titles[5], titles[11])):
            values = channel_energy(find_maps(analysis, side, stage, 0).semantics_attend)
            flat = float(values.max() - values.min()) / float(values.max()) < 0.1
            assert title.startswith("SemanticsAttend") and ("flat" in title) == flat, (stage, side, title)
