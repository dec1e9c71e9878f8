"""The verdict view: genuine or forged at an adjustable threshold, and why, in numbers.

Moving the threshold re-decides from the stored analysis: the distance does
not depend on the threshold, so the model never runs again for it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
import numpy as np

from dsn.evaluation.metrics import share_at_most
from dsn.inference import PairAnalysis
from dsn.inspect.figures import distance_bar_figure
from dsn.loading import ModelInfo
from dsn.ui.guide import how_to_read

WAITING_HTML = (
    "<div class='dsn-verdict dsn-waiting'><span>Click an example under the <b>Verify</b> button, or give two signatures "
    "and press <b>Verify</b>.</span></div>"
)


PENDING_HTML = "<div class='dsn-verdict dsn-waiting' id='verdict-pending'><span>Verifying this pair…</span></div>"
REFUSED_HTML = (
    "<div class='dsn-verdict dsn-refused' id='verdict-refused'><span class='word'>No verdict</span>"
    "<span class='facts'>{reason}</span></div>"
)


def refused_html(reason: str = "this pair was refused; the message says why. Fix the input and press <b>Verify</b> again.") -> str:
    """The banner after a refused pair: no earlier verdict may stay on screen beside the error."""
    return REFUSED_HTML.format(reason=reason)


@dataclass
class VerdictView:
    threshold: gr.Slider
    bar: gr.Plot
    reference_view: gr.Image
    query_view: gr.Image
    summary: gr.JSON
    spread: dict | None = None  # the checkpoint's val distance percentiles, for the plain reading

    def wire(self, analysis: gr.State, banner: gr.HTML) -> None:
        """The threshold slider re-decides the stored pair without running the model."""
        self.threshold.change(
            lambda pair, value: rethreshold(pair, value, self.spread),
            [analysis, self.threshold],
            [analysis, banner, self.bar, self.summary],
            api_visibility="private",
            trigger_mode="always_last",
        )


def threshold_slider(info: ModelInfo) -> gr.Slider:
    # decisions happen near the checkpoint's threshold: a range of 2.5x it (at least 1) keeps them on the slider
    return gr.Slider(
        0.0,
        round(min(info.max_distance, max(1.0, 2.5 * info.threshold)), 2),
        value=round(info.threshold, 3),
        step=0.001,
        label="Decision threshold (accept as genuine when distance ≤ threshold)",
        info=f"Default {info.threshold:.3f} comes with the checkpoint. Moving it re-decides instantly; the model does not run again.",
        elem_id="threshold",
    )


def build_verdict_tab(info: ModelInfo) -> VerdictView:
    """Body of the "Verdict" tab; call inside a ``gr.Tab``."""
    how_to_read("verdict")
    threshold = threshold_slider(info)
    bar = gr.Plot(label="Distance = global + λ·structural", elem_id="distance-plot")
    gr.Markdown(
        "**What the model sees.** Preprocessing removes the paper, keeps the ink (bright on black), crops to it and "
        "letterboxes it into 224×224. Anything lost here cannot count for or against the pair.",
        elem_classes="dsn-note",
    )
    with gr.Row():
        reference_view = gr.Image(label="Reference, as the model sees it", format="png", height=230, interactive=False)
        query_view = gr.Image(label="Query, as the model sees it", format="png", height=230, interactive=False)
    with gr.Accordion("All numbers (JSON, as returned by the /verify API)", open=False):
        summary = gr.JSON(label="summary", elem_id="verdict-json")
    return VerdictView(threshold, bar, reference_view, query_view, summary, info.distance_spread)


def model_view(image: np.ndarray) -> np.ndarray:
    """Float model input -> uint8 for display, unchanged in look: ink bright on black."""
    return np.clip(np.rint(255.0 * np.asarray(image, np.float32)), 0, 255).astype(np.uint8)


def plain_reading(summary: dict, spread: dict | None = None) -> str:
    """How close the call was, in words, honest about how often the model is wrong at such a distance.

    With the checkpoint's val distance percentiles (``spread``), the distance is placed among
    genuine and forged pairs: an acceptance is as strong as forgeries are rare at that distance,
    a rejection as strong as genuine pairs are rare there. Without them, only the margin is said.
    """
    margin = summary["margin"]
    side = "below" if margin >= 0 else "above"
    decided = "accepted as the reference writer's" if margin >= 0 else "rejected"
    said = f"The distance is {abs(margin):.3f} {side} the threshold: {decided}."
    if not spread:
        return f"{said} This checkpoint carries no validation distances to say how often such a call is wrong."
    distance = summary["distance"]
    if margin >= 0:
        share = share_at_most(spread, "forged", distance)  # forgeries at least this close
        what = f"{100 * share:.0f} % of forgeries came this close"
        strength = (
            "forgeries rarely get this close" if share < 0.02 else "some forgeries get this close" if share < 0.1 else "weak evidence"
        )
    else:
        share = 1.0 - share_at_most(spread, "genuine", distance)  # genuine pairs at least this far apart
        what = f"{100 * share:.0f} % of genuine pairs were this far apart"
        strength = (
            "genuine pairs are rarely this far apart"
            if share < 0.02
            else "some genuine pairs are this far apart"
            if share < 0.1
            else "weak evidence"
        )
    return f"{said} On the validation writers, {what}: {strength}."


def verdict_html(summary: dict, spread: dict | None = None) -> str:
    """The always-visible verdict line above the views."""
    genuine = summary["verdict"] == "genuine"
    relation = "≤" if genuine else ">"
    word = "Genuine" if genuine else "Forged"
    structural = (
        "<abbr title='lambda x structural distance: how much it costs to move the ink patches of one signature onto "
        "the other (optimal transport); lambda is its weight in the total distance'>λ·structural</abbr>"
    )
    patches = (
        f"<abbr title='of the {summary['tokens']} patches of the grid the model sees, those that hold ink in the reference / "
        "in the query; only these are matched'>ink patches</abbr>"
    )
    facts = (
        f"distance <b>{summary['distance']:.3f}</b> {relation} threshold {summary['threshold']:.3f} · "
        f"global {summary['global_distance']:.3f} + {structural} {summary['weighted_structural_distance']:.3f} · "
        f"{summary['ink_tokens_reference']} / {summary['ink_tokens_query']} {patches} · {summary['seconds']:.2f} s"
        f"<br><span class='dsn-reading' id='verdict-reading'>{plain_reading(summary, spread)}</span>"
    )
    warning = " <span style='color:#c0392b;font-weight:700'>(untrained weights: meaningless)</span>" if summary["untrained"] else ""
    doubts = [f"{side}: {text}" for side, texts in summary.get("input_warnings", {}).items() for text in texts]
    doubt = (
        "<div class='dsn-input-warning' id='input-warning'>⚠ This may not be a handwritten signature, so the verdict may mean "
        f"nothing. {html.escape('; '.join(doubts))}.</div>"
        if doubts
        else ""
    )
    css = "dsn-genuine" if genuine else "dsn-forged"
    return (
        f"<div class='dsn-verdict {css}' id='verdict-banner'><span class='word'>{word}</span>"
        f"<span class='facts'>{facts}{warning}</span>{doubt}</div>"
    )


def verdict_outputs(analysis: PairAnalysis, spread: dict | None = None) -> tuple:
    """(banner html, distance bar, reference model view, query model view, summary) for one analysis."""
    summary = analysis.summary()
    return (
        verdict_html(summary, spread),
        distance_bar_figure(analysis),
        model_view(analysis.reference.image),
        model_view(analysis.query.image),
        summary,
    )


def rethreshold(analysis: PairAnalysis | None, threshold: float, spread: dict | None = None) -> tuple:
    """Re-decide the stored pair at ``threshold``: (analysis, banner, bar, summary); no model call."""
    if analysis is None:
        return None, WAITING_HTML, None, None
    judged = analysis.with_threshold(threshold)
    summary = judged.summary()
    return judged, verdict_html(summary, spread), distance_bar_figure(judged), summary
