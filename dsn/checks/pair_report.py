"""One pair, written down: an offline HTML file with every computed figure, and a JSON file with the numbers.

The HTML embeds plotly.js once, so the file opens without a network (in a
classroom, or years later), and it states the model and threshold used so a
figure can never be separated from what produced it.
"""

from __future__ import annotations

import datetime
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from dsn.inference import PairAnalysis
from dsn.loading import ModelInfo
from dsn.model.detailsemnet import DetailSemNet


@dataclass
class PairReport:
    """What was computed for one pair; the app fills it as views are opened, the CLI all at once."""

    analysis: PairAnalysis
    model: dict  # weights, backbone, threshold source: what produced the numbers
    names: dict[str, str] = field(default_factory=dict)  # side -> file name
    figures: dict[str, go.Figure] = field(default_factory=dict)  # section title -> figure
    numbers: dict[str, object] = field(default_factory=dict)  # section key -> JSON-ready numbers
    notes: dict[str, str] = field(default_factory=dict)  # section title -> text shown above its figure

    def add(
        self, title: str, figure: go.Figure | None = None, numbers: object | None = None, key: str | None = None, note: str = ""
    ) -> None:
        if figure is not None:
            self.figures[title] = figure
        if numbers is not None:
            self.numbers[key or title] = numbers
        if note:
            self.notes[title] = note

    def record(self) -> dict:
        return {
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "model": self.model,
            "inputs": self.names,
            "verification": self.analysis.summary(),
            **self.numbers,
        }


def _json_default(value: object) -> object:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_pair_report(report: PairReport, folder: str | Path, stem: str = "pair-report") -> dict[str, Path]:
    """Write ``stem.html`` and ``stem.json`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = report.record()
    summary = record["verification"]
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=2, default=_json_default, allow_nan=False))
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in {
            "verdict": f"{summary['verdict']} (distance {summary['distance']:.4f}, threshold {summary['threshold']:.4f}, {summary['threshold_source']})",
            "global + λ × structural": f"{summary['global_distance']:.4f} + {summary['structural_weight']:g} × {summary['structural_distance']:.4f}",
            **{f"{side} image": name for side, name in report.names.items()},
            **{k: v for k, v in report.model.items()},
            "input warnings": "; ".join(f"{s}: {w}" for s, ws in summary.get("input_warnings", {}).items() for w in ws) or "none",
        }.items()
    )
    sections = []
    for index, (title, figure) in enumerate(report.figures.items()):
        body = pio.to_html(figure, full_html=False, include_plotlyjs="inline" if index == 0 else False, config={"displaylogo": False})
        note = f"<p>{html.escape(report.notes[title])}</p>" if title in report.notes else ""
        sections.append(f"<section><h2>{html.escape(title)}</h2>{note}{body}</section>")
    untrained = "<p class='warn'>UNTRAINED WEIGHTS: illustrative only, not a verdict.</p>" if summary.get("untrained") else ""
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>DetailSemNet pair report</title>"
        "<style>body{font-family:Inter,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse}th,td{text-align:left;padding:4px 10px;border-bottom:1px solid #ddd}"
        ".warn{color:#c0392b;font-weight:bold}section{margin-top:2em}</style></head><body>"
        f"<h1>DetailSemNet pair report</h1>{untrained}<table>{rows}</table>"
        f"{''.join(sections)}<p><small>Numbers: {html.escape(json_path.name)} · written {html.escape(record['created'])}</small></p>"
        "</body></html>"
    )
    html_path = folder / f"{stem}.html"
    html_path.write_text(page)
    return {"html": html_path, "json": json_path}


def model_description(model: DetailSemNet, analysis: PairAnalysis) -> dict[str, str]:
    """The model as the report states it, with the threshold the pair was judged at (the slider's, if moved)."""
    return ModelInfo.of(model).description(analysis.threshold, analysis.threshold_source)
