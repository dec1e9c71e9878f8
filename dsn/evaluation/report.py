"""Figures and a static HTML report of an evaluation.

The figure builders are separate functions because the app's dataset tab shows
the same figures live. The HTML report embeds plotly.js once, inline, so it is
one file that works offline and can be mailed or archived with the checkpoint.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import json
from pathlib import Path
from typing import Protocol

import numpy as np
import plotly.graph_objects as go
from scipy.stats import norm

from dsn.evaluation.evaluate import EvaluationResult, per_writer_metrics
from dsn.evaluation.metrics import equal_error_rate, roc_auc, roc_points

GENUINE_COLOR = "#2a9d8f"
FORGED_COLOR = "#e76f51"
DET_TICKS = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95)


class Scored(Protocol):
    """Anything with per-pair distances and labels, e.g. ``dsn.evaluation.scoring.PairScores``."""

    distance: np.ndarray
    genuine: np.ndarray


def _layout(fig: go.Figure, title: str, **kwargs) -> go.Figure:
    settings = {"template": "plotly_white", "height": 420, "margin": {"l": 60, "r": 20, "t": 60, "b": 50}, **kwargs}
    fig.update_layout(title=title, **settings)
    return fig


def roc_figure(scores: Scored) -> go.Figure:
    """ROC curve (true-accept rate against false-accept rate) with the EER point marked."""
    far, frr, thresholds = roc_points(scores.distance, scores.genuine)
    eer, eer_threshold = equal_error_rate(scores.distance, scores.genuine)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#aaa"}, name="chance", hoverinfo="skip"))
    fig.add_trace(
        go.Scatter(
            x=far,
            y=1 - frr,
            mode="lines",
            line={"shape": "hv", "color": GENUINE_COLOR},
            name="ROC",
            customdata=thresholds,
            hovertemplate="FAR %{x:.2%}<br>TAR %{y:.2%}<br>threshold %{customdata:.4f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[eer],
            y=[1 - eer],
            mode="markers",
            marker={"size": 10, "color": FORGED_COLOR},
            name=f"EER {eer:.2%}",
            hovertemplate=f"EER {eer:.2%} at threshold {eer_threshold:.4f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="false accept rate (forgeries accepted)", range=[0, 1])
    fig.update_yaxes(title="true accept rate (genuine accepted)", range=[0, 1.01])
    return _layout(fig, f"ROC (AUC {roc_auc(scores.distance, scores.genuine):.4f})")


def det_figure(scores: Scored) -> go.Figure:
    """DET curve: FRR against FAR on normal-deviate (probit) axes, which straightens
    Gaussian-like score distributions and spreads out the low-error region.

    Rates of exactly 0 or 1 have no probit value; they are drawn at half a pair
    from the edge (0.5 / number of pairs of that kind), the resolution of the data.
    """
    far, frr, thresholds = roc_points(scores.distance, scores.genuine)
    labels = np.asarray(scores.genuine, dtype=bool)
    far_floor, frr_floor = 0.5 / (~labels).sum(), 0.5 / labels.sum()
    x = norm.ppf(np.clip(far, far_floor, 1 - far_floor))
    y = norm.ppf(np.clip(frr, frr_floor, 1 - frr_floor))
    eer, _ = equal_error_rate(scores.distance, scores.genuine)
    ticks = [t for t in DET_TICKS if min(far_floor, frr_floor) / 2 <= t]
    tick_values = norm.ppf(ticks)
    tick_text = [f"{100 * t:g}%" for t in ticks]
    low = float(norm.ppf(min(far_floor, frr_floor))) - 0.2
    high = float(norm.ppf(0.97))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[low, high], y=[low, high], mode="lines", line={"dash": "dot", "color": "#aaa"}, name="FAR = FRR", hoverinfo="skip")
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=y,
            mode="lines",
            line={"color": GENUINE_COLOR},
            name="DET",
            customdata=np.stack([far, frr, thresholds], axis=1),
            hovertemplate="FAR %{customdata[0]:.2%}<br>FRR %{customdata[1]:.2%}<br>threshold %{customdata[2]:.4f}<extra></extra>",
        )
    )
    eer_point = float(norm.ppf(np.clip(eer, min(far_floor, frr_floor), 1 - min(far_floor, frr_floor))))
    fig.add_trace(
        go.Scatter(x=[eer_point], y=[eer_point], mode="markers", marker={"size": 10, "color": FORGED_COLOR}, name=f"EER {eer:.2%}")
    )
    axis = {"tickvals": tick_values, "ticktext": tick_text, "range": [low, high], "zeroline": False}
    fig.update_xaxes(title="false accept rate (probit scale)", **axis)
    fig.update_yaxes(title="false reject rate (probit scale)", **axis)
    return _layout(fig, "DET curve")


def distance_histogram(scores: Scored, threshold: float, eer_threshold: float | None = None, bins: int = 50) -> go.Figure:
    """Distances of genuine and forged pairs on shared bins, with the decision threshold."""
    d = np.asarray(scores.distance, dtype=float)
    labels = np.asarray(scores.genuine, dtype=bool)
    low, high = float(d.min()), float(d.max())
    size = (high - low) / bins if high > low else 1.0
    xbins = {"start": low, "end": high + size, "size": size}
    fig = go.Figure()
    for chosen, name, color in ((labels, "genuine-genuine pairs", GENUINE_COLOR), (~labels, "genuine-forged pairs", FORGED_COLOR)):
        fig.add_trace(go.Histogram(x=d[chosen], xbins=xbins, name=f"{name} ({int(chosen.sum())})", marker_color=color, opacity=0.6))
    # labels point away from each other so that two nearby lines keep readable labels
    eer_right = eer_threshold is not None and eer_threshold > threshold
    fig.add_vline(
        x=threshold,
        line={"color": "#264653", "width": 2},
        annotation_text=f"threshold {threshold:.3f}",
        annotation_position="top left" if eer_right else "top right",
    )
    if eer_threshold is not None:
        fig.add_vline(
            x=eer_threshold,
            line={"color": "#888", "dash": "dash"},
            annotation_text=f"EER threshold {eer_threshold:.3f}",
            annotation_position="top right" if eer_right else "top left",
        )
    fig.update_xaxes(title="distance (lower = more alike)")
    fig.update_yaxes(title="pairs")
    return _layout(fig, "Distances of genuine and forged pairs", barmode="overlay")


def _cell(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.2f}%"
    return str(value)


def per_writer_table(result: EvaluationResult) -> go.Figure:
    """Table of each writer's pairs, EER, FAR/FRR at the threshold and errors."""
    rows = per_writer_metrics(result)
    columns = ["writer", "n_pairs", "n_genuine_pairs", "n_forged_pairs", "eer", "far", "frr", "errors", "accuracy"]
    headers = ["writer", "pairs", "genuine", "forged", "EER", "FAR", "FRR", "errors", "accuracy"]
    values = [[_cell(row[c]) for row in rows] for c in columns]
    table = go.Table(
        header={"values": headers, "fill_color": "#264653", "font": {"color": "white"}}, cells={"values": values, "align": "right"}
    )
    fig = go.Figure(table)
    return _layout(fig, f"Per writer (threshold {result.threshold:.4f})", height=max(260, 90 + 28 * len(rows)))


# ------------------------------------------------------------------ report files
METRIC_LABELS = (
    ("eer", "EER", "%"),
    ("eer_threshold", "threshold at EER", ""),
    ("auc", "ROC AUC", ""),
    ("threshold", "decision threshold", ""),
    ("threshold_note", "where the threshold comes from", ""),
    ("accuracy", "accuracy at the decision threshold", "%"),
    ("far", "FAR at the decision threshold", "%"),
    ("frr", "FRR at the decision threshold", "%"),
    ("best_accuracy", "best accuracy: threshold chosen on this set itself (how papers report it)", "%"),
    ("best_accuracy_threshold", "threshold of best accuracy", ""),
    ("eer_global_only", "EER of the global distance alone", "%"),
    ("eer_structural_only", "EER of the structural distance alone", "%"),
    ("n_genuine_pairs", "genuine-genuine pairs", ""),
    ("n_forged_pairs", "genuine-forged pairs", ""),
    ("max_marginal_error", "max Sinkhorn marginal error", "e"),
)


def _format(value: object, kind: str) -> str:
    if isinstance(value, float):
        return f"{100 * value:.2f} %" if kind == "%" else f"{value:.2e}" if kind == "e" else f"{value:.4f}"
    return html.escape(str(value))


def metrics_table_html(metrics: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{_format(metrics[key], kind)}</td></tr>"
        for key, label, kind in METRIC_LABELS
        if key in metrics
    )
    return f'<table class="metrics">{rows}</table>'


def write_pair_rows(result: EvaluationResult, path: str | Path) -> Path:
    """Per-pair distances and verdicts as CSV (one row per pair, see ``EvaluationResult.to_rows``)."""
    rows = result.to_rows()
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_report(result: EvaluationResult, folder: str | Path, title: str = "DetailSemNet evaluation") -> dict[str, Path]:
    """Write pairs.csv, roc.csv, metrics.json and report.html into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in ("pairs.csv", "roc.csv", "metrics.json", "report.html")}
    write_pair_rows(result, paths["pairs.csv"])
    summary = result.summary()
    paths["metrics.json"].write_text(json.dumps(summary, indent=2) + "\n")
    figures: list[go.Figure] = []
    labels = result.scores.genuine
    if labels.any() and not labels.all():
        far, frr, thresholds = roc_points(result.scores.distance, labels)
        with paths["roc.csv"].open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["threshold", "far", "frr", "tar"])
            writer.writerows(zip(thresholds.tolist(), far.tolist(), frr.tolist(), (1 - frr).tolist()))
        figures += [roc_figure(result.scores), det_figure(result.scores)]
    else:
        paths.pop("roc.csv")
    figures += [distance_histogram(result.scores, result.threshold, result.metrics.get("eer_threshold")), per_writer_table(result)]
    paths["report.html"].write_text(_html_page(result, summary, figures, title), encoding="utf-8")
    return paths


def _html_page(result: EvaluationResult, summary: dict, figures: list[go.Figure], title: str) -> str:
    divs = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}) for i, fig in enumerate(figures)]
    keys = ("weights", "backbone", "untrained", "data", "split", "pairs_csv", "n_images", "n_pairs")
    provenance = {k: v for k, v in summary.items() if k in keys and v not in (None, "", False)}
    timing = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in result.timings.items())
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in provenance.items())
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table.metrics {{ border-collapse: collapse; }} table.metrics th, table.metrics td {{ border-bottom: 1px solid #ddd; padding: 4px 12px; text-align: left; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }} .note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<ul>{facts}</ul>
<p class="note">Generated {generated}; wall time: {html.escape(timing)}. A pair is accepted as genuine iff its distance &le; the threshold.
Accuracy, FAR and FRR use the decision threshold {result.threshold:.4f}: {html.escape(result.metrics.get("threshold_note", ""))}; "best accuracy" picks its threshold on these very pairs and is optimistic.</p>
<h2>Metrics</h2>
{metrics_table_html(result.metrics)}
<h2>Curves</h2>
<div class="grid">{"".join(f"<div>{d}</div>" for d in divs[:-2])}</div>
<h2>Distances</h2>
{divs[-2]}
<h2>Per writer</h2>
{divs[-1]}
</body></html>
"""
