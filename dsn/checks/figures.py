"""Figures of the explanation checks: the method grid, sanity cascade, faithfulness curves, plan check, frequency bands."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from dsn.checks.explanation_grid import ExplanationGrid
from dsn.checks.faithfulness import Faithfulness
from dsn.checks.frequency import BAND_LABELS
from dsn.checks.plan_check import PlanCheck
from dsn.checks.sanity import SanityCheck
from dsn.inference import SIDES, PairAnalysis
from dsn.inspect.attribution import LABELS
from dsn.inspect.figures import FONT, _finish, _image_axes
from dsn.inspect.panels import png_source

SHORT_LABELS = {"integrated_gradients": "IG", "gradient_shap": "SHAP", "layer_gradcam": "Grad-CAM"}
METHOD_COLOURS = {
    "integrated_gradients": "#1f77b4",
    "saliency": "#ff7f0e",
    "gradient_shap": "#2ca02c",
    "occlusion": "#9467bd",
    "layer_gradcam": "#8c564b",
    "random": "#7f7f7f",
}


def _overlay(scaled: np.ndarray, image: np.ndarray) -> np.ndarray:
    """RGB: values in [-1, 1] in red/blue (RdBu) over the ink drawn in grey on white paper."""
    colours = sample_colorscale("RdBu_r", list((scaled.ravel() + 1.0) / 2.0), colortype="tuple")
    rgb = np.asarray(colours, np.float32).reshape(*scaled.shape, 3)
    strength = np.abs(scaled)[..., None] ** 0.6  # faint values fade into the paper instead of vanishing
    paper = (1.0 - 0.55 * np.clip(image, 0, 1))[..., None]  # ink shows as grey under the colours
    out = strength * rgb + (1.0 - strength) * paper
    return np.clip(out * 255, 0, 255).astype(np.uint8)


def ink_rows(*images: np.ndarray, margin: int = 8) -> slice:
    """The rows that hold ink in any of ``images`` (plus a margin): the letterboxed canvas is mostly blank."""
    rows = np.flatnonzero(np.any(np.stack([np.asarray(i) > 0 for i in images]), axis=(0, 2)))
    if rows.size == 0:
        return slice(None)
    return slice(max(0, int(rows[0]) - margin), min(images[0].shape[0], int(rows[-1]) + 1 + margin))


def grid_figure(grid: ExplanationGrid, analysis: PairAnalysis) -> go.Figure:
    """Methods (rows) x {reference, query} (columns), one symmetric colour scale for all maps."""
    methods = grid.methods
    titles = [f"{SHORT_LABELS.get(m, LABELS[m])} · {side}" for m in methods for side in SIDES]  # short: two columns fit a phone
    fig = make_subplots(len(methods), 2, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.05)
    rows = ink_rows(*(analysis.preprocessed(side).image for side in SIDES))
    for row, method in enumerate(methods, start=1):
        for col, side in enumerate(SIDES, start=1):
            image = analysis.preprocessed(side).image
            pixels = _overlay(grid.scaled(method, side)[rows], image[rows])
            fig.add_trace(go.Image(source=png_source(pixels), name=f"{method} {side}", hoverinfo="skip"), row, col)
    fig.add_trace(  # an invisible heatmap carries the shared colour bar
        go.Heatmap(
            z=[[-1.0, 1.0]],
            colorscale="RdBu_r",
            zmid=0,
            showscale=True,
            opacity=0,
            hoverinfo="skip",
            colorbar=dict(
                title=dict(text="attribution / the map's 99.5th percentile on ink", side="top"),
                orientation="h",
                thickness=10,
                len=0.8,
                x=0.5,
                xanchor="center",
                y=-0.01,
                yanchor="top",
            ),
        ),
        1,
        1,
    )
    _image_axes(fig)
    for axis in fig.layout:
        if axis.startswith("yaxis"):
            fig.layout[axis].scaleanchor = axis.replace("yaxis", "x")
    title = (
        f"Every method, both images: the {grid.target} distance<br><sup>red raises the distance (towards forged), blue lowers it<br>"
        f"{grid.steps} steps for IG / samples for SHAP · {grid.seconds:.1f} s</sup>"
    )
    fig.update_annotations(font_size=12)
    shown = (rows.stop or 224) - (rows.start or 0)  # image rows per cell; in the app's view column a cell is ~300 px wide
    return _finish(fig, analysis, title, int(170 + len(methods) * (40 + 280 * shown / 224)), top=115, bottom=70)


def _paired_line(fig: go.Figure, col: int, x: object, y: object, name: str, method: str, hover: str, **style: object) -> None:
    """One method's line in column ``col`` of a two-panel figure; the legend lists it once, for both panels."""
    mode, dash = style.get("mode", "lines"), style.get("dash")
    line = dict(color=METHOD_COLOURS.get(method, "#333"), dash=dash)
    trace = go.Scatter(x=x, y=y, mode=mode, name=name, legendgroup=method, showlegend=col == 1, line=line, hovertemplate=hover)
    fig.add_trace(trace, 1, col)


def _two_panel_finish(fig: go.Figure, title: str, note: str, height: int, legend_y: float, top: int) -> go.Figure:
    """Legend under both panels, the title with its reading note in small print."""
    fig.update_layout(legend=dict(orientation="h", y=legend_y), font=FONT)
    return _finish(fig, None, f"{title}<br><sup>{note}</sup>", height, top=top, bottom=40)


def sanity_figure(check: SanityCheck) -> go.Figure:
    """Similarity to the trained model's map as the network is randomised from the top down, per method."""
    fig = make_subplots(1, 2, subplot_titles=["Spearman rank correlation (signed map, ink pixels)", "SSIM of |map|"])
    x = ["trained", *check.steps]
    for method, values in check.spearman.items():
        hover = f"{LABELS.get(method, method)}<br>%{{x}} random<br>%{{y:.2f}}<extra></extra>"
        for col, series in ((1, values), (2, check.ssim[method])):
            _paired_line(fig, col, x, [1.0, *series], LABELS.get(method, method), method, hover, mode="lines+markers")
    fig.add_hline(y=0.5, line=dict(color="#c0392b", dash="dot"), annotation_text="0.5", row=1, col=1)
    fig.update_xaxes(tickangle=-45, tickfont=dict(size=10), title_text="randomised down to (cumulative)")
    fig.update_yaxes(range=[-1.05, 1.05], row=1, col=1)
    fig.update_yaxes(range=[-0.05, 1.05], row=1, col=2)
    note = (
        "a method that explains the model falls towards 0 as its weights are destroyed;<br>"
        f"a flat line means the map shows the input, not what the network learned · {check.seconds:.0f} s"
    )
    return _two_panel_finish(fig, f"Sanity check (cascading randomisation), {check.side} image", note, 570, legend_y=-0.45, top=140)


def faithfulness_figure(result: Faithfulness) -> go.Figure:
    """Deletion and insertion curves per method, with the random-order baseline."""
    summary = result.summary()
    fig = make_subplots(1, 2, subplot_titles=["Deletion: remove ink, highest attribution first", "Insertion: add ink to blank paper"])
    curves = {**result.curves, "random": result.random}
    for method, c in curves.items():
        label = "random order (mean of 5)" if method == "random" else LABELS.get(method, method)
        for col, (series, auc) in enumerate(
            ((c.deletion, summary[method]["deletion_auc"]), (c.insertion, summary[method]["insertion_auc"])), 1
        ):
            hover = f"{label}<br>%{{x:.0f}} % of the ink<br>distance %{{y:.3f}}<br>AUC {auc:.3f}<extra></extra>"
            _paired_line(fig, col, 100 * c.fractions, series, label, method, hover, dash="dot" if method == "random" else None)
    fig.update_xaxes(title_text="% of the ink pixels", range=[0, 100])
    fig.update_yaxes(title_text=f"{result.target} distance", row=1, col=1)
    note = f"faithful: deletion below the random line (smaller area), insertion above it (larger area) · {result.seconds:.1f} s"
    return _two_panel_finish(fig, f"Faithfulness of each map, {result.side} image", note, 480, legend_y=-0.25, top=90)


def plan_check_figure(check: PlanCheck) -> go.Figure:
    """Measured change of the structural distance when a reference patch is erased, against the plan's share."""
    labels = [f"patch {int(p)}" for p in check.patches]
    fig = go.Figure(
        go.Scatter(
            x=check.share,
            y=check.change,
            mode="markers+text",
            text=labels,
            textposition="top center",
            textfont=dict(size=9),
            marker=dict(size=10, color="#1f77b4"),
            hovertemplate="%{text}<br>plan share %{x:.3f}<br>distance change %{y:+.4f}<extra></extra>",
        )
    )
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    fig.update_xaxes(title_text="share of the structural distance the plan gives the patch")
    fig.update_yaxes(title_text="structural distance: original - patch erased")
    title = (
        f"Is the correspondence view honest? Spearman {check.spearman:+.2f} over {len(check.patches)} reference ink patches"
        "<br><sup>each point: one reference patch erased and the pair verified again (whole model, converged transport)</sup>"
    )
    return _finish(fig, None, title, 440, top=80, bottom=40)


def band_figure(rows: list[dict], threshold: float) -> go.Figure:
    """Distance of the pair under each frequency band, against the threshold."""
    fig = go.Figure(
        go.Bar(
            x=[BAND_LABELS[r["band"]] for r in rows],
            y=[r["distance"] for r in rows],
            marker_color=["#2ca02c" if r["verdict"] == "genuine" else "#d62728" for r in rows],
            text=[f"{r['distance']:.3f} · {r['verdict']}" for r in rows],
            textposition="outside",
            hovertemplate="%{x}<br>distance %{y:.3f}<extra></extra>",
        )
    )
    fig.add_hline(y=threshold, line=dict(color="#333", dash="dash"), annotation_text=f"threshold {threshold:.3f}")
    fig.update_yaxes(title_text="distance", rangemode="tozero")
    title = "The pair under each frequency filter<br><sup>both images filtered the same way; green: accepted, red: rejected</sup>"
    return _finish(fig, None, title, 420, top=80, bottom=40)


def band_eer_figure(metrics: dict[str, dict], title: str) -> go.Figure:
    """EER of a dataset split under each frequency band."""
    bands = list(metrics)
    fig = go.Figure(
        go.Bar(
            x=[metrics[b]["label"] for b in bands],
            y=[100 * metrics[b]["eer"] for b in bands],
            text=[f"{100 * metrics[b]['eer']:.2f} %" for b in bands],
            textposition="outside",
            marker_color="#1f77b4",
        )
    )
    fig.update_yaxes(title_text="EER (%)", rangemode="tozero")
    return _finish(fig, None, title, 420, top=80, bottom=40)
