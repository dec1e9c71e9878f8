"""Detail vs semantics: what each DSI block split the features into, for both images.

The DSI separates a stage's features into a pooled (low-frequency, semantic)
part and the residual (high-frequency, detail) part. Only stages that pool
have that split: in our ``dsnet_*`` stages 1-3 pool, in the official network
stages 1-2; the tab reads which from the model it shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
from gradio.events import Dependency

from dsn.inference import PairAnalysis
from dsn.inspect.figures import dsi_figure, frequency_profile_figure
from dsn.model.backbone import POOL_SIZES
from dsn.ui.guide import how_to_read


def frequency_note(pool_sizes: tuple[int, ...] = POOL_SIZES) -> str:
    pooling = ", ".join(f"stage {i + 1} pools {p}×{p}" for i, p in enumerate(pool_sizes) if p > 1)
    flat = [str(i + 1) for i, p in enumerate(pool_sizes) if p == 1]
    rest = f"; stage {' and '.join(flat)} {'does' if len(flat) == 1 else 'do'} not pool, so there the semantic and detail inputs are the same features"
    return f"The frequency split exists only in the stages that pool: {pooling}{rest if flat else ''}."


@dataclass
class DetailView:
    stage: gr.Dropdown  # 0-based stage index
    block: gr.Dropdown  # 0-based block index within the stage
    dsi: gr.Plot
    frequency: gr.Plot

    def wire(self, analysis: gr.State) -> None:
        """A new stage lists its blocks and draws the first; a block choice re-draws."""
        self.stage.change(on_stage, [analysis, self.stage], [self.block, self.dsi, self.frequency], api_visibility="private")
        self.block.input(render, [analysis, self.stage, self.block], [self.dsi, self.frequency], api_visibility="private")

    def follow(self, verified: Dependency, analysis: gr.State) -> None:
        """After a pair is verified: its DSI maps at the chosen stage and block."""
        outputs = [self.block, self.dsi, self.frequency]
        verified.success(on_new_pair, [analysis, self.stage, self.block], outputs, api_visibility="private")


def stage_choices(pool_sizes: tuple[int, ...] = POOL_SIZES) -> list[tuple[str, int]]:
    return [(f"stage {i + 1}" + (f" (pools {p}×{p})" if p > 1 else " (no pooling)"), i) for i, p in enumerate(pool_sizes)]


def block_choices(analysis: PairAnalysis | None, stage: int) -> list[tuple[str, int]]:
    if analysis is None:
        return [("block 1", 0)]
    blocks = sorted(m.block for m in analysis.maps_ref if m.stage == int(stage))
    return [(f"block {b + 1}", b) for b in blocks] or [("block 1", 0)]


def build_detail_tab(pool_sizes: tuple[int, ...] = POOL_SIZES) -> DetailView:
    """Body of the "Detail vs semantics" tab; call inside a ``gr.Tab``; ``pool_sizes``: the shown model's, per stage."""
    how_to_read("detail")
    gr.Markdown(
        "Each DSI block splits its input into a **semantic** part (pooled: the overall shape) and a **detail** part "
        "(what pooling removes: stroke edges, pen texture), processes them separately (DetailConv, SalientConv, "
        f"SemanticsAttend) and merges them again. {frequency_note(pool_sizes)}",
        elem_classes="dsn-note",
    )
    with gr.Row():
        stage = gr.Dropdown(stage_choices(pool_sizes), value=0, label="Stage", elem_id="dsi-stage")
        block = gr.Dropdown(block_choices(None, 0), value=0, label="Block", elem_id="dsi-block")
    dsi = gr.Plot(label="DSI parts (channel energy)", elem_id="dsi-plot")
    frequency = gr.Plot(label="Frequency profile", elem_id="frequency-plot")
    return DetailView(stage, block, dsi, frequency)


def render(analysis: PairAnalysis | None, stage: int, block: int) -> tuple:
    """(DSI figure, frequency profile figure) for one block."""
    if analysis is None:
        return None, None
    try:
        return dsi_figure(analysis, int(stage), int(block)), frequency_profile_figure(analysis, int(stage), int(block))
    except ValueError as error:  # a block that this backbone does not have
        raise gr.Error(str(error)) from error


def on_stage(analysis: PairAnalysis | None, stage: int) -> tuple:
    """A new stage resets the block to the first one: (block dropdown, dsi, frequency)."""
    dropdown = gr.Dropdown(choices=block_choices(analysis, stage), value=0)
    return (dropdown, *render(analysis, stage, 0))


def on_new_pair(analysis: PairAnalysis, stage: int, block: int) -> tuple:
    """Keep the chosen stage and block for a new pair (they exist in every pair of this model)."""
    choices = block_choices(analysis, stage)
    block = int(block) if any(value == int(block) for _, value in choices) else 0
    return (gr.Dropdown(choices=choices, value=block), *render(analysis, stage, block))
