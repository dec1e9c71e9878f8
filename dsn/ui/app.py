"""``build_app``: the whole explorer as one ``gr.Blocks``, for ``app.py``, the tests and the benchmark.

Layout: a header that says what the model is (and, loudly, when its weights
are untrained); a "Verify a pair" tab with the two inputs on the left and the
views on the right; any extra tabs (e.g. the dataset explorer);
and hidden JSON endpoints for ``gradio_client`` (``dsn.ui.api``). The
analysis of the current pair lives in a ``gr.State``, so every view and
control after "Verify" works without running the model again.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr
from gradio.events import Dependency

from dsn.hub.dataset_facts import dataset_label
from dsn.loading import ModelInfo, source_label
from dsn.model.detailsemnet import DetailSemNet
from dsn.ui.api import build_api
from dsn.ui.compute import analyze_releasing_memory, user_errors
from dsn.ui.context import FAST_LANE, PAIR_TAB, SESSION_CAPACITY, STATE_SECONDS, AppContext, PairViews, TabBuilder
from dsn.ui.examples import build_gallery, wire_gallery
from dsn.ui.inputs import SignatureInput, chosen_pair, missing_input, pair_sides, signature_input, validate_pair
from dsn.ui.jobs import JOBS, session_of
from dsn.ui.runtime import release_memory
from dsn.ui.style import CLICK_JS, CSS, SHOW_VERDICT_JS, theme
from dsn.ui.tabs.attribution import AttributionView, build_attribution_tab
from dsn.ui.tabs.checks import ChecksView, build_checks_tab
from dsn.ui.tabs.correspondence import CorrespondenceView, build_correspondence_tab
from dsn.ui.tabs.dataset import dataset_tab
from dsn.ui.tabs.detail import DetailView, build_detail_tab
from dsn.ui.tabs.reference import build_reference_tab
from dsn.ui.tabs.verify import PENDING_HTML, WAITING_HTML, VerdictView, build_verdict_tab, refused_html, verdict_outputs

# metrics.json keys quoted in the header: the headline numbers a visitor can check in the model card
CROSS_EER_KEY = re.compile(r"cross_dataset\.(?P<name>[^.]+)\.metrics\.eer")


def header_metrics(metrics: dict[str, float], test_data: str = "") -> str:
    """The checkpoint's headline numbers from its metrics.json, as the header quotes them ("" when none).

    Test EERs are named by dataset (the checkpoint's own test set, then any other dataset it was
    tested on), so a visitor reads which writers each number comes from.
    """
    test = f"{dataset_label(test_data)} test" if test_data else "test"
    parts = []
    if "test.eer" in metrics:
        auc = f" (ROC AUC {metrics['test.auc']:.3f})" if "test.auc" in metrics else ""
        parts.append(f"{test} EER {100 * metrics['test.eer']:.2f} %{auc}")
    for key, value in metrics.items():
        match = CROSS_EER_KEY.fullmatch(key)
        if match:
            parts.append(f"{dataset_label(match['name'])} test EER {100 * value:.2f} %")
    if "val.eer" in metrics:
        parts.append(f"val EER {100 * metrics['val.eer']:.2f} %")
    return " · measured: " + ", ".join(parts) if parts else ""


def _header(info: ModelInfo) -> None:
    size = f"{info.parameters / 1e6:.1f} M parameters"
    weights = "random initialisation" if info.untrained else f"`{source_label(info.source)}`"
    metrics = header_metrics(info.metrics, info.test_data)
    gr.Markdown(
        "# DetailSemNet Explorer\n"
        "Is the **query** signature by the writer of the **reference**? DetailSemNet (Shih et al., ECCV 2024) compares "
        "two offline signatures with a global distance plus an optimal-transport match between ink patches; this app "
        "shows the verdict and *why*: the matched patches, what the model's detail and semantic branches see, and "
        "which strokes drive the distance.",
        elem_id="dsn-title",
    )
    gr.Markdown(
        f"**Model** {info.backbone} ({size}) · weights {weights} · running on {info.device} · default threshold "
        f"{info.threshold:.3f}{metrics}. A research demo: a small model trained on few writers, not forensic evidence.",
        elem_classes="dsn-note",
        elem_id="model-info",
    )
    if info.untrained:
        gr.HTML(
            "<div class='dsn-untrained' id='untrained-banner'>⚠ UNTRAINED WEIGHTS — verdicts are meaningless. No trained "
            "checkpoint was found, so the network is randomly initialised: every view works, but shows noise, not evidence. "
            "Start with <code>--weights hf://OWNER/REPO</code> or a local checkpoint folder.</div>"
        )


def build_app(
    model: DetailSemNet,
    info: ModelInfo | None = None,
    *,
    data_roots: Sequence[str | Path] = (),
    cache_dir: str | Path | None = None,
    extra_tabs: Sequence[TabBuilder] = (),
) -> gr.Blocks:
    """The whole explorer for ``model``, exactly as ``app.py`` serves it.

    ``data_roots``: the folders the dataset explorer may read (checked here: a missing one
    raises ``ValueError``); ``extra_tabs``: more builders, called after the built-in tabs.
    """
    tabs = [dataset_tab(data_roots, cache_dir), build_reference_tab, *extra_tabs]
    info = info or ModelInfo.of(model)
    with gr.Blocks(title="DetailSemNet Explorer", analytics_enabled=False) as demo:
        _header(info)
        build_api(model)  # first, so that the public endpoint names (/verify, ...) are taken before any UI event's
        analysis = gr.State(None, time_to_live=STATE_SECONDS)
        with gr.Tabs(selected=PAIR_TAB, elem_id="main-tabs") as main_tabs:
            with gr.Tab("Verify a pair", id=PAIR_TAB):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=300):
                        gr.Markdown("**Reference**: a signature known to be genuine")
                        reference = signature_input("reference", "Drop, paste or photograph the known genuine signature")
                        gr.Markdown("**Query**: the signature to check")
                        query = signature_input("query", "Drop, paste or photograph the signature to check")
                        verify_button = gr.Button("Verify", variant="primary", size="lg", elem_id="verify-button")
                        examples = build_gallery(reference, query)
                    with gr.Column(scale=3, min_width=300):
                        pair_context = gr.HTML("", elem_id="pair-context-area")
                        banner = gr.HTML(WAITING_HTML, elem_id="verdict-area")
                        with gr.Tabs(elem_id="view-tabs"):
                            with gr.Tab("Verdict", id="verdict"):
                                verdict = build_verdict_tab(info)
                            with gr.Tab("Patch correspondences", id="correspondences"):
                                matches = build_correspondence_tab()
                            with gr.Tab("Detail vs semantics", id="detail"):
                                detail = build_detail_tab(model.backbone.pool_sizes)
                            with gr.Tab("Attributions", id="attributions"):
                                attributions = build_attribution_tab()
                            with gr.Tab("Check the explanations", id="checks"):
                                checks = build_checks_tab()
        verify_on = _wire_pair(model, analysis, reference, query, banner, verdict, matches, detail, attributions, checks)
        verify_on(verify_button.click, api_name="verify_ui")
        verify_button.click(lambda: "", None, pair_context, queue=False, api_visibility="private")  # the user's own pair
        wire_gallery(examples, reference, query, pair_context, verify_on)
        pair = PairViews(
            reference, query, analysis, main_tabs, verdict.threshold, pair_context, lambda dependency: verify_on(dependency.then)
        )
        context = AppContext(model, info, pair, [Path(r) for r in data_roots])
        with main_tabs:
            for add_tab in tabs:
                add_tab(context)

        def leave(request: gr.Request) -> None:
            forget_visitor(demo, request)

        demo.unload(leave)
    return demo


def _wire_pair(
    model: DetailSemNet,
    analysis: gr.State,
    reference: SignatureInput,
    query: SignatureInput,
    banner: gr.HTML,
    verdict: VerdictView,
    matches: CorrespondenceView,
    detail: DetailView,
    attributions: AttributionView,
    checks: ChecksView,
) -> Callable:
    """Connect the controls that need no model run, and return the chain that verifies a pair."""

    def verify_pair_ui(*values: object) -> tuple:
        """(both sides' upload, drawing, mode; threshold) -> the analysis and the verdict view."""
        with user_errors():
            result = analyze_releasing_memory(model, *chosen_pair(values), values[-1])
        return (result, *verdict_outputs(result, verdict.spread))

    verify_inputs = [*reference.components, *query.components, verdict.threshold]
    verify_outputs = [analysis, banner, verdict.bar, verdict.reference_view, verdict.query_view, verdict.summary]

    stale_outputs = [
        *verify_outputs,
        *(matches.figure, matches.matches, matches.plan, matches.shares, detail.dsi, detail.frequency),
        *attributions.outputs,
        *checks.outputs,
    ]

    def clear_stale(*values: object) -> tuple:
        """Before a pair is verified, nothing of the previous pair stays on screen (a refusal must not sit beside an old verdict)."""
        problems = [missing_input(name, *side) for name, side in pair_sides(values)]
        problem = next((p for p in problems if p), None)
        banner_html = refused_html(html.escape(problem)) if problem else PENDING_HTML
        method, attribution_steps, check_steps = values[-3:]
        return (
            *(None, banner_html, None, None, None, None),
            *(None, None, None, None, None, None),
            *attributions.on_new_pair(None, method, attribution_steps),
            *checks.on_new_pair(None, check_steps),
        )

    def verify_on(listener: Callable, api_name: str | None = None) -> Dependency:
        """Run verification on ``listener`` (e.g. ``button.click`` or ``dependency.then``), then refresh every view."""
        visibility = "undocumented" if api_name else "private"
        cleared = listener(
            clear_stale,
            [*reference.components, *query.components, attributions.method, attributions.steps, checks.steps],
            stale_outputs,
            queue=False,
            api_visibility="private",
        )
        step = cleared.then(
            verify_pair_ui,
            verify_inputs,
            verify_outputs,
            api_name=api_name,
            api_visibility=visibility,
            validator=validate_pair,  # a missing image: a message at that input, no error badges over the views
            **FAST_LANE,
        )
        step.failure(refused_html, None, banner, queue=False, api_visibility="private")
        for view in (matches, detail, attributions, checks):
            view.follow(step, analysis)
        step.success(None, js=SHOW_VERDICT_JS, api_visibility="private")  # after an example or an opened pair: the verdict in view
        return step

    verdict.wire(analysis, banner)
    matches.wire(analysis)
    detail.wire(analysis)
    attributions.wire(model, analysis)
    checks.wire(model, analysis, attributions.result, [*reference.components, *query.components])
    return verify_on


def forget_visitor(demo: gr.Blocks, request: gr.Request) -> None:
    """A visitor closed or reloaded the tab: stop their heavy work and free their stored analyses now.

    Gradio itself keeps a closed session's state for another hour.
    """
    session = session_of(request)
    JOBS.stop_session(session)
    holder = getattr(demo, "state_holder", None)
    if holder is not None and session:
        holder.delete_state(session)
    release_memory()


def launch_options() -> dict:
    """Arguments for ``demo.launch``: the look (Gradio 6 takes css/theme/js there, not in Blocks) and memory bounds.

    Gradio keeps per-visitor state for its 10,000 most recent sessions; one visitor's
    analysis alone is over 11 MB, so the server keeps the newest SESSION_CAPACITY.
    """
    return {
        "css": CSS,
        "theme": theme(),
        "js": CLICK_JS,
        "max_file_size": "20mb",
        # Only our own messages (gr.Error) reach visitors: an exception from Gradio's internals
        # (e.g. a refused file reference, whose text holds the server's working directory) shows as "Error".
        "show_error": False,
        "state_session_capacity": SESSION_CAPACITY,
    }


def prepare(demo: gr.Blocks, concurrency: int = 2) -> gr.Blocks:
    """Queue settings that protect memory: model runs one at a time in each lane (FAST_LANE, SLOW_LANE), light re-renders ``concurrency``, bounded line."""
    return demo.queue(default_concurrency_limit=concurrency, max_size=64)
