"""Patch correspondences: which ink patch of the reference the model matched to which of the query.

The structural distance is an optimal-transport plan between ink patches;
this view draws its strongest entries, lets a click on a patch single out its
matches (through the click bridge in ``style.py``; the dropdown does the same
without JavaScript), and shows the full plan and where the distance comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
from gradio.events import Dependency

from dsn.inference import PairAnalysis
from dsn.inspect.analysis import match_list
from dsn.inspect.figures import correspondence_figure, plan_heatmap, structural_share_figure
from dsn.ui.guide import how_to_read
from dsn.ui.style import CLICK_BRIDGE_ID, CORRESPONDENCE_PLOT_ID

NO_PATCH = -1
MATCH_COLUMNS = ["rank", "reference patch (row, col)", "query patch (row, col)", "mass (% of total)", "cost (1 − cos)"]


@dataclass
class CorrespondenceView:
    top_k: gr.Slider
    background: gr.Radio
    patch: gr.Dropdown  # reference token to highlight, NO_PATCH for none
    click_bridge: gr.Textbox  # written by the browser: "side:token:nonce"
    figure: gr.Plot
    matches: gr.Dataframe
    plan: gr.Plot
    shares: gr.Plot

    @property
    def controls(self) -> list:
        return [self.top_k, self.patch, self.background]

    def wire(self, analysis: gr.State) -> None:
        """Every control re-draws the figure and the match list; a click on a patch in the figure selects it."""
        for control in self.controls:
            control.change(
                render, [analysis, *self.controls], [self.figure, self.matches], api_visibility="private", trigger_mode="always_last"
            )
        self.click_bridge.change(on_click, [analysis, self.click_bridge], self.patch, api_visibility="private")

    def follow(self, verified: Dependency, analysis: gr.State) -> None:
        """After a pair is verified: its correspondences, plan and structural shares."""
        outputs = [self.patch, self.figure, self.matches, self.plan, self.shares]
        verified.success(on_new_pair, [analysis, self.top_k, self.background], outputs, api_visibility="private")


def build_correspondence_tab() -> CorrespondenceView:
    """Body of the "Patch correspondences" tab; call inside a ``gr.Tab``."""
    how_to_read("correspondences")
    gr.Markdown(
        "Each line moves mass from a reference ink patch to a query ink patch; thicker = more mass, colour = how unlike "
        "the two patches are (cost). **Click a patch** (dot) to show only its matches.",
        elem_classes="dsn-note",
    )
    with gr.Row():
        top_k = gr.Slider(1, 150, value=30, step=1, label="Matches drawn (top-k by mass)", scale=3, elem_id="top-k")
        patch = gr.Dropdown(
            choices=[("none", NO_PATCH)], value=NO_PATCH, label="Highlight reference patch", scale=2, elem_id="patch-select"
        )
        background = gr.Radio([("model view", "model"), ("original image", "original")], value="model", label="Draw on", scale=2)
    click_bridge = gr.Textbox(visible="hidden", elem_id=CLICK_BRIDGE_ID)
    figure = gr.Plot(label="Patch correspondence", elem_id=CORRESPONDENCE_PLOT_ID)
    with gr.Accordion("Matches as a table (the /correspondences API returns the same as JSON)", open=False):
        matches = gr.Dataframe(headers=MATCH_COLUMNS, interactive=False, wrap=True)
    shares = gr.Plot(label="Share of the structural distance", elem_id="share-plot")
    plan = gr.Plot(label="Transport plan", elem_id="plan-plot")
    return CorrespondenceView(top_k, background, patch, click_bridge, figure, matches, plan, shares)


def match_rows(matches: list[dict]) -> list[list]:
    label = lambda p: f"({p['row']}, {p['col']})"  # noqa: E731
    return [
        [rank, label(m["reference_patch"]), label(m["query_patch"]), round(100 * m["mass"], 2), round(m["cost"], 3)]
        for rank, m in enumerate(matches, start=1)
    ]


def patch_choices(analysis: PairAnalysis) -> list[tuple[str, int]]:
    tokens = np.flatnonzero(analysis.ink("reference"))
    return [("none", NO_PATCH)] + [(f"patch {analysis.token_label(t)} · token {t}", int(t)) for t in tokens]


def _highlight(analysis: PairAnalysis, patch: int | None) -> int | None:
    if patch is None or int(patch) == NO_PATCH:
        return None
    patch = int(patch)
    if not 0 <= patch < analysis.plan.shape[0]:
        raise gr.Error(f"Patch {patch} does not exist; the grid has {analysis.plan.shape[0]} tokens.")
    return patch


def render(analysis: PairAnalysis | None, top_k: float, patch: int | None, background: str) -> tuple:
    """(correspondence figure, match table) for the current controls."""
    if analysis is None:
        return None, None
    highlight = _highlight(analysis, patch)
    figure = correspondence_figure(analysis, top_k=int(top_k), highlight=highlight, background=background)
    return figure, match_rows(match_list(analysis, int(top_k), highlight))


def on_new_pair(analysis: PairAnalysis, top_k: float, background: str) -> tuple:
    """Everything in this tab for a freshly verified pair: (patch dropdown, figure, table, plan, shares)."""
    figure, rows = render(analysis, top_k, None, background)
    dropdown = gr.Dropdown(choices=patch_choices(analysis), value=NO_PATCH)
    return dropdown, figure, rows, plan_heatmap(analysis), structural_share_figure(analysis)


def on_click(analysis: PairAnalysis | None, message: str) -> int | dict:
    """Browser click "side:token:nonce" -> reference patch to highlight.

    A click on a query patch selects the reference patch that sends it the most mass.
    """
    if analysis is None or not message:
        return gr.skip()
    try:
        side, token, _ = message.split(":", 2)
        token = int(token)
    except ValueError:
        return gr.skip()
    if not 0 <= token < analysis.plan.shape[0]:
        return gr.skip()
    if side == "query":
        column = analysis.plan[:, token]
        if column.max() <= 0:
            return gr.skip()
        token = int(np.argmax(column))
    return token
