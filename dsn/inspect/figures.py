"""Plotly figures that explain one verified pair: pure functions of a ``PairAnalysis``.

Every figure states what it shows in its title and colour-bar labels, keeps image axes free of ticks,
and says so when the weights are untrained, so a screenshot cannot be mistaken for evidence. Images are
embedded as PNG data URIs (small JSON), data overlays as float32 arrays (plotly sends them binary).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from dsn.inference import SIDES, PairAnalysis
from dsn.inspect.analysis import channel_energy, find_maps, ink_token_centres, radial_power_profile, structural_shares
from dsn.inspect.attribution import LABELS, Attribution
from dsn.inspect.panels import ImagePanel, paper_view, png_source

SIDE_COLOURS = {"reference": "#1f77b4", "query": "#d62728"}
COST_COLORSCALE = "Viridis"  # similar patches (low cost) dark, dissimilar bright
GAP = 24.0  # figure units between the two images of a pair
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)
_ARC_POINTS = np.linspace(0.0, 1.0, 9)


def _image_axes(fig: go.Figure) -> None:
    fig.update_xaxes(visible=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(visible=False, showgrid=False, zeroline=False, autorange="reversed", constrain="domain")


def _finish(fig: go.Figure, analysis: PairAnalysis | None, title: str, height: int, top: int = 80, bottom: int = 20) -> go.Figure:
    if analysis is not None and analysis.untrained:
        title += "<br><span style='color:#c0392b;font-size:12px'>UNTRAINED WEIGHTS: illustrative only, not a verdict</span>"
        top += 12
    layout = dict(font=FONT, height=height, plot_bgcolor="white", paper_bgcolor="white", hoverlabel=dict(font_size=12))
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), margin=dict(l=20, r=20, t=top, b=bottom), **layout)
    return fig


def _colorbar(text: str, **extra: object) -> dict:
    return dict(title=dict(text=text, side="top"), thickness=12, **extra)


# ----------------------------------------------------------------------------- correspondence


def _plan_entries(share: np.ndarray, top_k: int, highlight: int | None, min_mass: float) -> tuple[list, set]:
    """(i, j) plan entries to draw, strongest first, and the entries that belong to ``highlight``."""
    order = np.argsort(share, axis=None)[::-1][: max(0, top_k)]
    keep = [divmod(int(k), share.shape[1]) for k in order if share.flat[k] > max(min_mass, 0.0)]
    bold: set = set()
    if highlight is not None:
        row = share[highlight]
        bold = {(highlight, int(j)) for j in np.argsort(row)[::-1][: max(1, top_k)] if row[j] > max(min_mass, 0.02 * row.sum())}
        keep = [e for e in keep if e not in bold] + sorted(bold, key=lambda e: -share[e])
    return keep, bold


def _arc(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A quadratic Bezier bowing upwards, so matches between the same rows do not hide each other."""
    control = (start + end) / 2 - np.array([0.0, 0.12 * abs(end[0] - start[0]) + 8.0])
    t = _ARC_POINTS[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    return points[:, 0], points[:, 1]


def correspondence_figure(
    analysis: PairAnalysis, top_k: int = 30, highlight: int | None = None, min_mass: float = 0.0, background: str = "model"
) -> go.Figure:
    """The two signatures side by side with a line between matched ink patches per plan entry.

    The ``top_k`` heaviest entries above ``min_mass`` (a fraction of the total
    mass) are drawn; width and opacity grow with the mass moved, colour is the
    cosine cost. Patch markers (traces named '<side> patches') carry their
    token index as ``customdata`` so a click can select one; ``highlight`` (a
    reference token index) draws its matches boldly and fades the rest.
    """
    if background not in ("model", "original"):
        raise ValueError(f"background must be 'model' or 'original', got {background!r}")
    n = analysis.plan.shape[0]
    if highlight is not None and not 0 <= highlight < n:
        raise ValueError(f"highlight must be a reference token index in [0, {n}), got {highlight}")
    ref = ImagePanel(analysis.reference, 0.0, background)
    gap = GAP if background == "model" else 3 * GAP  # originals fill their panel edge to edge: keep the grids apart
    panels = {"reference": ref, "query": ImagePanel(analysis.query, ref.width + gap, background)}
    centres = {side: panels[side].place(ink_token_centres(analysis, side)) for side in SIDES}
    cost = analysis.cost
    share = analysis.plan / max(float(analysis.plan.sum()), 1e-12)
    entries, bold = _plan_entries(share, top_k, highlight, min_mass)
    cost_max = max([1.0] + [float(cost[e]) for e in entries])  # fixed 0..1 unless costs exceed it: comparable across pairs
    strongest = max([float(share[e]) for e in entries] + [1e-12])

    fig = go.Figure([panels[s].trace(f"{s} image") for s in SIDES] + [panels[s].grid_trace(analysis.grid) for s in SIDES])
    for i, j in entries:
        strength, selected = float(share[i, j]) / strongest, (i, j) in bold
        colour = sample_colorscale(COST_COLORSCALE, [min(float(cost[i, j]) / cost_max, 1.0)])[0]
        opacity = (
            1.0 if selected else 0.08 if highlight is not None else 0.32 + 0.63 * strength
        )  # weak matches fade: thin ink stays visible
        x, y = _arc(centres["reference"][i], centres["query"][j])
        text = f"reference patch {analysis.token_label(i)} → query patch {analysis.token_label(j)}<br>"
        text += f"mass: {100 * share[i, j]:.2f}% of total<br>cost (1 − cos): {cost[i, j]:.3f}<extra></extra>"
        line = dict(color=colour, width=(1.0 + 4.0 * strength) * (1.6 if selected else 1.0))
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="match", line=line, opacity=opacity, hovertemplate=text, showlegend=False))
    for side, patch_share in zip(SIDES, structural_shares(analysis)):
        ink = np.flatnonzero(analysis.ink(side))
        marked = ({highlight} if side == "reference" else {j for _, j in bold}) if highlight is not None else set(ink)
        sizes = [15.0 if t in marked and highlight is not None else 9.0 if t in marked else 7.0 for t in ink]
        hover = [
            f"{side} patch {analysis.token_label(t)} (token {t})<br>{100 / len(ink):.1f}% of the mass, "
            f"{100 * patch_share[t]:.1f}% of the structural distance<br>click to select"
            for t in ink
        ]
        marker = dict(size=sizes, color=SIDE_COLOURS[side], opacity=0.85, line=dict(color="white", width=1))
        x, y = centres[side][ink].T
        fig.add_trace(
            go.Scatter(x=x, y=y, mode="markers", name=f"{side} patches", customdata=ink, marker=marker, hovertext=hover, showlegend=False)
        )
        fig.data[-1].hovertemplate = "%{hovertext}<extra></extra>"
        panel = panels[side]
        label = f"<b>{side}</b> ({len(ink)} ink patches)"
        fig.add_annotation(
            x=panel.x0 + panel.width / 2, y=0, yshift=4, yanchor="bottom", showarrow=False, text=label, font_color=SIDE_COLOURS[side]
        )
    scale = dict(
        colorscale=COST_COLORSCALE, cmin=0.0, cmax=cost_max, color=[0.0], showscale=True, colorbar=_colorbar("cost<br>1 − cos", len=0.8)
    )
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="cost colour bar", hoverinfo="skip", showlegend=False, marker=scale))
    _image_axes(fig)
    fig.update_xaxes(range=[-2, panels["query"].x0 + panels["query"].width + 2])
    fig.update_yaxes(range=[ref.height + 2, -40], autorange=False, scaleanchor="x")
    title = f"Patch correspondence<br><sup>{len(entries) - len(bold)} strongest matches"
    title += f" + {len(bold)} of reference patch {analysis.token_label(highlight)}" if highlight is not None else ""
    title += f", {100 * sum(float(share[e]) for e in entries):.0f}% of the transported mass</sup>"
    return _finish(fig, analysis, title, 440)


def plan_heatmap(analysis: PairAnalysis) -> go.Figure:
    """The whole transport plan between ink tokens: rows are reference patches, columns query patches."""
    ref_ink, query_ink = np.flatnonzero(analysis.ink("reference")), np.flatnonzero(analysis.ink("query"))
    share = 100.0 * analysis.plan[np.ix_(ref_ink, query_ink)] / max(float(analysis.plan.sum()), 1e-12)
    heatmap = go.Heatmap(
        z=share.astype(np.float32),
        x=[analysis.token_label(t) for t in query_ink],
        y=[analysis.token_label(t) for t in ref_ink],
        customdata=analysis.cost[np.ix_(ref_ink, query_ink)].astype(np.float32),
        colorscale="Blues",
        zmin=0.0,
        name="plan",
        colorbar=_colorbar("mass<br>% of total"),
        hovertemplate="reference patch %{y}<br>query patch %{x}<br>mass: %{z:.2f}% of total<br>cost (1 − cos): %{customdata:.3f}<extra></extra>",
    )
    fig = go.Figure(heatmap)
    fig.update_xaxes(title="query ink patch (row, col)", type="category", tickangle=-60, tickfont_size=12)
    fig.update_yaxes(title="reference ink patch (row, col)", type="category", autorange="reversed", tickfont_size=12)
    title = f"Transport plan: {len(ref_ink)} × {len(query_ink)} ink patches (each row sends {100 / max(len(ref_ink), 1):.1f}% of the mass)"
    return _finish(fig, analysis, title, 520)


def structural_share_figure(analysis: PairAnalysis) -> go.Figure:
    """Each patch's share of the structural distance, on both images: where the pair differs."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=SIDES, horizontal_spacing=0.04)
    rows, cols = analysis.grid
    cell_x, cell_y = analysis.cell
    shares = structural_shares(analysis)
    for col, (side, share) in enumerate(zip(SIDES, shares), start=1):
        panel = ImagePanel(analysis.preprocessed(side))
        ink = analysis.ink(side)
        z = np.where(ink, 100.0 * share, np.nan).reshape(rows, cols).astype(np.float32)
        labels = np.array(
            [
                f"{analysis.token_label(t)}<br>share of structural distance: {100 * share[t]:.1f}%"
                if ink[t]
                else f"{analysis.token_label(t)}<br>no ink: not matched"
                for t in range(rows * cols)
            ]
        ).reshape(rows, cols)
        hover = f"{side} patch %{{text}}<extra></extra>"
        overlay = go.Heatmap(z=z, x0=cell_x / 2, dx=cell_x, y0=cell_y / 2, dy=cell_y, coloraxis="coloraxis", opacity=0.55, text=labels)
        fig.add_traces(
            [panel.trace(f"{side} image"), overlay.update(name=f"{side} share", hovertemplate=hover), panel.grid_trace(analysis.grid)],
            rows=1,
            cols=col,
        )
    top = max(100.0 * max(float(s.max()) for s in shares), 1e-9)
    fig.update_layout(coloraxis=dict(colorscale="OrRd", cmin=0.0, cmax=top, colorbar=_colorbar("share of<br>structural<br>distance (%)")))
    _image_axes(fig)
    fig.update_yaxes(scaleanchor="x", row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    weighted = analysis.summary()["weighted_structural_distance"]
    return _finish(fig, analysis, f"Where the pair differs: each ink patch's share of λ·structural = {weighted:.3f}", 400, top=90)


# ----------------------------------------------------------------------------- DSI

_DSI_PARTS = (
    ("semantic_input", "semantic (pooled)"),
    ("detail_input", "detail (x − pooled)"),
    ("detail_conv", "DetailConv"),
    ("salient_conv", "SalientConv"),
    ("semantics_attend", "SemanticsAttend"),
)


def dsi_figure(analysis: PairAnalysis, stage: int, block: int) -> go.Figure:
    """Channel energy (RMS over channels) of what one DSI saw and produced, for both images.

    Each part is divided by its maximum over both images, so reference and
    query are directly comparable while columns of very different magnitude
    stay readable; hover gives the column maximum for absolute values.
    """
    maps = {side: find_maps(analysis, side, stage, block) for side in SIDES}

    # three panels a row, two rows per image: each map is drawn large enough to read (six in a row were ~80 px)
    def cell(side: int, part: int) -> tuple[int, int]:
        return 2 * side + part // 3 + 1, part % 3 + 1

    energy_of = {field: [channel_energy(getattr(maps[side], field)) for side in SIDES] for field, _ in _DSI_PARTS}

    def label(side: int, part: int) -> str:
        if part == 0:
            return "model input"
        field, name = _DSI_PARTS[part - 1]
        values = energy_of[field][side]
        spread = float(values.max() - values.min()) / max(float(values.max()), 1e-30)
        # a map that barely varies shows as one colour: say so, or it reads as a broken panel
        return f"{name} (flat: varies {100 * spread:.0f} %)" if spread < 0.1 else name

    titles = [(f"<b>{SIDES[r // 2]}</b>: " if c == 0 else "") + label(r // 2, 3 * (r % 2) + c) for r in range(4) for c in range(3)]
    fig = make_subplots(rows=4, cols=3, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.06)
    size = analysis.reference.image.shape[0]
    for part, (field, _) in enumerate(_DSI_PARTS, start=1):
        energies = energy_of[field]
        scale = max(max(float(e.max()) for e in energies), 1e-30)
        for index, (side, energy) in enumerate(zip(SIDES, energies)):
            step = size / energy.shape[1]  # model pixels per feature-map cell, so maps line up with the input
            name = dict(_DSI_PARTS)[field]
            hover = f"{side}: {name}<br>RMS %{{z:.0%}} of the column max ({scale:.3g})<extra></extra>"
            heat = go.Heatmap(z=(energy / scale).astype(np.float32), x0=step / 2, dx=step, y0=step / 2, dy=step, coloraxis="coloraxis")
            row, col = cell(index, part)
            fig.add_trace(heat.update(name=f"{side} {field}", hovertemplate=hover), row=row, col=col)
    for index, side in enumerate(SIDES):
        row, col = cell(index, 0)
        fig.add_trace(ImagePanel(analysis.preprocessed(side)).trace(f"{side} image"), row=row, col=col)
    fig.update_layout(coloraxis=dict(colorscale="Magma", cmin=0.0, cmax=1.0, colorbar=_colorbar("RMS over<br>channels<br>(÷ column max)")))
    _image_axes(fig)
    for k in range(2, 13):
        fig.update_yaxes(scaleanchor=f"x{k}", selector=dict(anchor=f"x{k}"))
    fig.update_yaxes(scaleanchor="x", selector=dict(anchor="x"))
    pool, grid = maps["reference"].pool_size, maps["reference"].detail_input.shape[-1]
    title = f"DSI stage {stage + 1}, block {block + 1} ({grid}×{grid} grid): "
    if pool > 1:
        return _finish(fig, analysis, title + f"semantic branch = {pool}×{pool} average pool, detail = the rest", 980, top=110)
    note = "This stage does not pool: there is no frequency split, the semantic and detail inputs are the same features."
    fig.add_annotation(text=note, xref="paper", yref="paper", x=0.5, y=-0.03, yanchor="top", showarrow=False, font_color="#8a5a00")
    return _finish(fig, analysis, title + "no pooling, no frequency split", 1000, top=110, bottom=45)


def frequency_profile_figure(analysis: PairAnalysis, stage: int, block: int) -> go.Figure:
    """Radial FFT power of the DSI's detail vs semantic input: the detail part should hold the high frequencies.

    Each curve is that map's share of its own power per frequency band, so
    the two parts can be compared by where their power lies, not by size.
    """
    fig, pool, peak = go.Figure(), 1, 0.0
    for side in SIDES:
        maps = find_maps(analysis, side, stage, block)
        pool = maps.pool_size
        for field, dash, label in (("detail_input", "solid", "detail input"), ("semantic_input", "dot", "semantic input")):
            freq, power = radial_power_profile(getattr(maps, field))
            percent = 100.0 * power / max(float(power.sum()), 1e-30)
            peak = max(peak, float(percent.max()))
            hover = f"{side}: {label}<br>frequency %{{x:.3f}} cycles/px<br>%{{y:.3g}}% of its power<extra></extra>"
            line = dict(color=SIDE_COLOURS[side], dash=dash, width=2.5 if side == "reference" else 1.5)
            fig.add_trace(
                go.Scatter(x=freq, y=percent, mode="lines+markers", name=f"{side}: {label}", line=line, marker_size=4, hovertemplate=hover)
            )
    if 1.0 / pool < 0.5:
        fig.add_vline(
            x=1.0 / pool, line=dict(color="grey", dash="dash"), annotation_text=f"1/{pool}: pooling window", annotation_position="top right"
        )
    if pool == 1:
        note = "No pooling at this stage: detail and semantic inputs are identical (the curves overlap)."
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0.5, y=1.0, yanchor="bottom", showarrow=False, font_color="#8a5a00")
    fig.update_xaxes(title="spatial frequency (cycles per feature-map pixel)", range=[0, 0.5], showgrid=True, gridcolor="#eee")
    low = np.log10(max(peak, 1e-30)) - 5  # five decades: lower values (e.g. the detail part's ~0 mean) drop off the axis
    fig.update_yaxes(title="share of the map's power (%)", type="log", range=[low, low + 5.3], showgrid=True, gridcolor="#eee")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _finish(fig, analysis, f"Frequency content of the DSI inputs, stage {stage + 1}, block {block + 1}", 440)


# ----------------------------------------------------------------------------- attributions and scores


def attribution_figure(attribution: Attribution, image: np.ndarray, opacity: float = 0.6) -> go.Figure:
    """Attribution over the model-view image; red raises the distance (towards 'forged'), blue lowers it.

    The colour range is clipped at the 99.5th percentile of |attribution| so a
    few extreme pixels do not wash out the rest, and values under 2% of that
    are transparent so the strokes stay visible. The overlay is the trace
    named 'attribution': the app can change its ``opacity`` without rebuilding.
    """
    values = np.asarray(attribution.map, np.float32)
    limit = float(np.percentile(np.abs(values), 99.5)) if values.size else 0.0
    limit = limit if limit > 0 else max(float(np.abs(values).max(initial=0.0)), 1e-12)
    shown = np.where(np.abs(values) < 0.02 * limit, np.nan, values).astype(np.float32)
    step = values.shape[1] / image.shape[1]
    base = go.Image(source=png_source(paper_view(image)), x0=step / 2, y0=step / 2, dx=step, dy=step, name="image", hoverinfo="skip")
    if attribution.signed:
        colours = dict(
            colorscale="RdBu_r",
            zmid=0.0,
            zmin=-limit,
            zmax=limit,
            colorbar=_colorbar("attribution<br>(+ raises distance)", exponentformat="e"),
        )
    else:
        colours = dict(colorscale="Reds", zmin=0.0, zmax=limit, colorbar=_colorbar("|gradient|<br>(sensitivity)", exponentformat="e"))
    hover = "x %{x}, y %{y}<br>attribution %{z:.3g}<extra></extra>"
    overlay = go.Heatmap(z=shown, x0=0.5, y0=0.5, opacity=opacity, name="attribution", hovertemplate=hover, **colours)
    fig = go.Figure([base, overlay])
    _image_axes(fig)
    fig.update_yaxes(scaleanchor="x")
    details = [f"{attribution.seconds:.1f} s"] + ([f"{attribution.steps} steps"] if attribution.steps else [])
    if attribution.delta is not None:
        details.append(f"convergence δ = {attribution.delta:.2g}")
    details.append(f"colour clipped at {'±' if attribution.signed else ''}{limit:.2g}")
    title = f"{LABELS.get(attribution.method, attribution.method)}: {attribution.target} distance w.r.t. the {attribution.side} image"
    return _finish(fig, None, f"{title}<br><sup>{', '.join(details)}</sup>", 460, top=70)


def distance_bar_figure(analysis: PairAnalysis) -> go.Figure:
    """The verdict's arithmetic: global + λ·structural, against the decision threshold."""
    s = analysis.summary()
    parts = (
        ("global", s["global_distance"], "#4c78a8"),
        (f"λ·structural (λ = {s['structural_weight']:g})", s["weighted_structural_distance"], "#f58518"),
    )
    bars = [
        go.Bar(
            y=["distance"],
            x=[v],
            orientation="h",
            name=n,
            marker_color=c,
            text=[f"{v:.3f}"],
            textposition="inside",
            hovertemplate=f"{n}: %{{x:.4f}}<extra></extra>",
        )
        for n, v, c in parts
    ]
    fig = go.Figure(bars)
    fig.add_vline(
        x=s["threshold"],
        line=dict(color="black", dash="dash", width=2),
        annotation_text=f"threshold {s['threshold']:.3f}",
        annotation_position="top",
    )
    fig.add_annotation(x=s["distance"], y=0, xanchor="left", xshift=6, showarrow=False, text=f"<b>{s['distance']:.3f}</b>")
    fig.update_layout(barmode="stack", legend=dict(orientation="h", y=-0.45, traceorder="normal"), bargap=0.35)
    fig.update_xaxes(
        title="distance (lower = more alike)", range=[0, 1.2 * max(s["distance"], s["threshold"], 1e-6)], showgrid=True, gridcolor="#eee"
    )
    fig.update_yaxes(showticklabels=False)
    relation = "≤" if s["verdict"] == "genuine" else ">"
    return _finish(
        fig, analysis, f"Verdict: <b>{s['verdict']}</b> (distance {s['distance']:.3f} {relation} threshold {s['threshold']:.3f})", 280
    )
