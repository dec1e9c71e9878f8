"""Attributions: which pixels of one image drive the distance (Captum, via ``dsn.inspect.attribution``).

Heavy methods announce their expected time before they run and report
progress. The estimate never runs the model: before any attribution it is
scaled from the verify time of the pair, afterwards from the measured cost of
the last attribution. The
last map is kept in a ``gr.State`` so the opacity slider only re-draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr
import plotly.graph_objects as go
import torch
from gradio.events import Dependency

from dsn.inference import PairAnalysis
from dsn.inspect.attribution import HEAVY, LABELS, METHODS, OCCLUSION_STRIDE, OCCLUSION_WINDOW, TARGETS, Attribution
from dsn.inspect.figures import attribution_figure
from dsn.model.detailsemnet import DetailSemNet
from dsn.ui.compute import explain, user_errors
from dsn.ui.context import BUDGET_S, SLOW_LANE
from dsn.ui.guide import how_to_read
from dsn.ui.jobs import Job, run_job

BATCH = 16  # dsn.inspect.attribution's CPU batch: the unit of the time estimate
_seconds_per_batch: dict[int, float] = {}  # id(model) -> measured seconds of one forward + backward over BATCH images
BACKWARD_FACTOR = 3.0  # forward + backward costs about three forwards


@dataclass
class AttributionView:
    method: gr.Dropdown
    target: gr.Radio
    side: gr.Radio
    steps: gr.Slider
    opacity: gr.Slider
    info: gr.Markdown
    run: gr.Button
    figure: gr.Plot
    stats: gr.Markdown
    result: gr.State  # the last Attribution
    model: DetailSemNet | None = None  # set by ``wire``; used for the time estimate

    @property
    def outputs(self) -> list:
        """What a new pair resets: (result, figure, stats, info)."""
        return [self.result, self.figure, self.stats, self.info]

    def on_new_pair(self, analysis: PairAnalysis | None, method: str, steps: float) -> tuple:
        return None, None, "Press **Compute attribution** to explain this pair.", describe(analysis, method, steps, self.model)

    def follow(self, verified: Dependency, analysis: gr.State) -> None:
        """After a pair is verified: the previous pair's map is cleared and the estimate redone."""
        verified.success(self.on_new_pair, [analysis, self.method, self.steps], self.outputs, api_visibility="private")

    def wire(self, model: DetailSemNet, analysis: gr.State) -> None:
        """Connect the controls; ``analysis`` is the app's current pair."""
        self.model = model

        async def run(
            pair: PairAnalysis | None,
            method: str,
            target: str,
            side: str,
            steps: float,
            opacity: float,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio injects progress through this default)
        ) -> tuple:
            if pair is None:
                raise gr.Error("Verify a pair first; attributions explain the pair on screen.")
            progress(0.0, desc=f"{LABELS.get(method, method)}: starting")

            def work(job: Job) -> Attribution:
                with user_errors():
                    return explain(model, pair, method, target, side, int(steps), job.progress(progress))

            result = await run_job(LABELS.get(method, method), BUDGET_S["attribution"], request, work)
            record_cost(model, pair, method, int(steps), result.seconds)
            figure = attribution_figure(result, pair.preprocessed(side).image, float(opacity))
            return result, figure, stats_markdown(result, pair)

        self.run.click(
            run,
            [analysis, self.method, self.target, self.side, self.steps, self.opacity],
            [self.result, self.figure, self.stats],
            api_name="attribute_ui",
            api_visibility="undocumented",
            **SLOW_LANE,
        )
        self.opacity.change(
            redraw, [analysis, self.result, self.opacity], self.figure, api_visibility="private", trigger_mode="always_last"
        )
        estimate = lambda pair, method, steps: describe(pair, method, steps, model)  # noqa: E731
        for control in (self.method, self.steps):
            control.change(estimate, [analysis, self.method, self.steps], self.info, api_visibility="private")  # runs no model


def build_attribution_tab() -> AttributionView:
    """Body of the "Attributions" tab; call inside a ``gr.Tab``."""
    how_to_read("attributions")
    gr.Markdown(
        "Which pixels of one image push the distance up (red: towards *forged*) or down (blue: towards *genuine*), "
        "with the other image held fixed. Integrated Gradients and GradientShap start from blank paper; their "
        "convergence δ says how well the map adds up to the actual change in distance.",
        elem_classes="dsn-note",
    )
    with gr.Row():
        method = gr.Dropdown([(LABELS[m], m) for m in METHODS], value=METHODS[0], label="Method", elem_id="attr-method")
        target = gr.Radio(list(TARGETS), value="total", label="Explain which distance")
        side = gr.Radio(["query", "reference"], value="query", label="With respect to")
    with gr.Row():
        steps = gr.Slider(4, 128, value=32, step=4, label="Steps (IG) / samples (GradientShap)", elem_id="attr-steps")
        opacity = gr.Slider(0.0, 1.0, value=0.6, step=0.05, label="Overlay opacity (re-draws, no recompute)")
    info = gr.Markdown(describe(None, METHODS[0], 32), elem_id="attr-info")
    run = gr.Button("Compute attribution", variant="primary", elem_id="attr-run")
    figure = gr.Plot(label="Attribution", elem_id="attr-plot")
    stats = gr.Markdown("Verify a pair, then press **Compute attribution**.", elem_id="attr-stats")
    return AttributionView(method, target, side, steps, opacity, info, run, figure, stats, gr.State(None, time_to_live=3600))


def seconds_per_batch(model: DetailSemNet, analysis: PairAnalysis) -> tuple[float, bool]:
    """(seconds of one forward + backward over BATCH images, measured?) without running the model.

    Measured once an attribution has run in this process; before that scaled
    from the pair's verify time (one forward of two images, preprocessing included).
    """
    if id(model) in _seconds_per_batch:
        return _seconds_per_batch[id(model)], True
    return BATCH / 2 * analysis.seconds * BACKWARD_FACTOR, False


def record_cost(model: DetailSemNet, analysis: PairAnalysis, method: str, steps: int, seconds: float) -> None:
    """Remember what one batch cost in a real attribution, for the next estimates."""
    if method in HEAVY:
        _seconds_per_batch[id(model)] = seconds / max(model_calls(analysis, method, steps), 1e-9)


def model_calls(analysis: PairAnalysis, method: str, steps: int) -> float:
    """Model calls of BATCH images the method needs (forward-only counts a third)."""
    if method == "integrated_gradients":
        return math.ceil(steps / BATCH) + 1
    if method == "gradient_shap":
        return math.ceil(steps / BATCH)
    if method == "occlusion":  # windows that cover ink, on the inkier side
        windows = 0
        for pre in (analysis.reference, analysis.query):
            ink = torch.from_numpy(pre.image > 0).float()[None, None]
            windows = max(windows, int(torch.nn.functional.max_pool2d(ink, OCCLUSION_WINDOW, OCCLUSION_STRIDE).sum()))
        return (math.ceil(windows / BATCH) + 1) / 3
    return 1 / BATCH


def estimate_seconds(model: DetailSemNet, analysis: PairAnalysis, method: str, steps: int) -> tuple[float, bool]:
    """(seconds one map of ``method`` will take, measured?) without running the model."""
    per_batch, measured = seconds_per_batch(model, analysis)
    return model_calls(analysis, method, steps) * per_batch, measured


def describe(analysis: PairAnalysis | None, method: str, steps: float, model: DetailSemNet | None = None) -> str:
    """The line shown before running: what the method costs, with a measured time estimate when possible."""
    label = LABELS.get(method, method)
    if method not in HEAVY:
        return f"**{label}**: fast (one backward pass)."
    text = f"**{label}** is heavy: {HEAVY[method]}."
    if analysis is not None and model is not None:
        seconds, measured = estimate_seconds(model, analysis, method, int(steps))
        basis = "measured on this machine" if measured else "estimated from the verify time"
        text += f" Expect **~{max(seconds, 0.1):.0f} s** ({basis})."
    return text


def stats_markdown(result: Attribution, analysis: PairAnalysis) -> str:
    parts = [
        f"**{LABELS.get(result.method, result.method)}** of the {result.target} distance w.r.t. the {result.side}",
        f"took **{result.seconds:.2f} s**",
    ]
    if result.steps:
        parts.append(f"{result.steps} {'samples' if result.method == 'gradient_shap' else 'steps'}")
    if result.delta is not None:
        distance = analysis.summary()["distance"]
        parts.append(f"IG convergence δ = **{result.delta:.2g}** ({100 * result.delta / max(distance, 1e-9):.1f}% of the distance)")
    return " · ".join(parts)


def redraw(analysis: PairAnalysis | None, result: Attribution | None, opacity: float) -> go.Figure | None:
    """The stored map at another opacity; nothing is recomputed."""
    if analysis is None or result is None:
        return None
    return attribution_figure(result, analysis.preprocessed(result.side).image, float(opacity))
