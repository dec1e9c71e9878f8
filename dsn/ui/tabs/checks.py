"""Check the explanations: all methods side by side, the sanity check, faithfulness, the plan check, frequency filters.

Everything computed for the pair on screen is kept in one ``PairChecks`` per
visitor, so switching back to a result is instant and the pair report can
include whatever has been computed. A new pair starts a new ``PairChecks``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import gradio as gr
from gradio.events import Dependency

from dsn.checks.explanation_grid import ExplanationGrid, explanation_grid
from dsn.checks.faithfulness import Faithfulness, faithfulness
from dsn.checks.figures import band_figure, faithfulness_figure, grid_figure, plan_check_figure, sanity_figure
from dsn.checks.frequency import BAND_LABELS, BANDS, LOW_CUTOFF, MIDDLE_CUTOFF, band_effects
from dsn.checks.pair_report import PairReport, model_description, write_pair_report
from dsn.checks.plan_check import PlanCheck, plan_check
from dsn.checks.sanity import SanityCheck, cascade, sanity_check
from dsn.inference import PairAnalysis
from dsn.inspect.attribution import LABELS, METHODS, Attribution
from dsn.inspect.figures import attribution_figure, correspondence_figure, distance_bar_figure, dsi_figure
from dsn.loading import is_untrained
from dsn.model.detailsemnet import DetailSemNet
from dsn.ui.context import BUDGET_S, FAST_LANE, SLOW_LANE
from dsn.ui.guide import how_to_read
from dsn.ui.inputs import input_names
from dsn.ui.jobs import Job, run_job
from dsn.ui.tabs.attribution import estimate_seconds, record_cost

SANITY_STEPS = 16  # IG steps / SHAP samples per map in the cascade: 12 cascade steps x 5 maps


@dataclass
class PairChecks:
    """What has been computed for the current pair."""

    grids: dict[tuple[str, int], ExplanationGrid] = field(default_factory=dict)  # (target, steps) -> grid
    sanity: dict[str, SanityCheck] = field(default_factory=dict)  # side -> cascade
    faithfulness: dict[str, Faithfulness] = field(default_factory=dict)  # side -> curves
    plan: PlanCheck | None = None
    bands: list[dict] | None = None


@dataclass
class ChecksView:
    store: gr.State
    target: gr.Radio
    steps: gr.Slider
    estimate: gr.Markdown
    grid_run: gr.Button
    grid: gr.Plot
    side: gr.Radio
    sanity_run: gr.Button
    sanity: gr.Plot
    sanity_text: gr.Markdown
    faith_run: gr.Button
    faith: gr.Plot
    faith_text: gr.Markdown
    plan_run: gr.Button
    plan: gr.Plot
    plan_text: gr.Markdown
    band: gr.Radio
    band_text: gr.Markdown
    bands: gr.Plot
    report_run: gr.Button
    report_files: gr.File
    model: DetailSemNet | None = None  # set by ``wire``; the model the checks explain

    @property
    def outputs(self) -> list:
        """What a new pair resets."""
        return [
            *(self.store, self.estimate, self.grid, self.sanity, self.sanity_text, self.faith, self.faith_text),
            *(self.plan, self.plan_text, self.band, self.band_text, self.bands, self.report_files),
        ]

    def on_new_pair(self, analysis: PairAnalysis | None, steps: float) -> tuple:
        prompt = "Choose a filter to verify this pair again with only those frequencies."
        return (
            PairChecks(),
            estimate_text(self.model, analysis, steps),
            None,
            None,
            "",
            None,
            "",
            None,
            "",
            "original",
            prompt,
            None,
            None,
        )

    async def run_grid(
        self,
        pair: PairAnalysis | None,
        store: PairChecks,
        target: str,
        steps: float,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Every method's map for both images (kept per target and steps)."""
        pair, key = _need(pair), (target, int(steps))
        if key not in store.grids:
            store.grids[key] = await run_job(
                "The method grid",
                BUDGET_S["attribution"],
                request,
                lambda job: explanation_grid(self.model, pair, target, int(steps), METHODS, job.progress(progress)),
            )
            ig = store.grids[key].maps[("integrated_gradients", "query")]
            record_cost(self.model, pair, ig.method, int(steps), ig.seconds)  # later estimates here and in Attributions are measured
        return store, grid_figure(store.grids[key], pair), estimate_text(self.model, pair, steps)

    async def run_sanity(
        self,
        pair: PairAnalysis | None,
        store: PairChecks,
        side: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """The cascading-randomisation check of one image's maps."""
        pair = _need(pair)
        if side not in store.sanity:
            store.sanity[side] = await run_job(
                "The sanity check", BUDGET_S["sanity check"], request,
                lambda job: sanity_check(self.model, pair, side, "total", METHODS, SANITY_STEPS, job.progress(progress)),
            )  # fmt: skip
        check = store.sanity[side]
        verdicts = "\n".join(f"- **{LABELS[m]}** {text}" for m, text in check.verdicts().items())
        return store, sanity_figure(check), f"Computed in **{check.seconds:.0f} s** on this server.\n\n{verdicts}"

    async def run_faithfulness(
        self,
        pair: PairAnalysis | None,
        store: PairChecks,
        side: str,
        steps: float,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Deletion and insertion curves of one image's maps (computing the grid first if needed)."""
        pair = _need(pair)
        if side not in store.faithfulness:

            def work(job: Job) -> Faithfulness:
                report = job.progress(progress)
                key = ("total", int(steps))
                if key not in store.grids:
                    store.grids[key] = explanation_grid(self.model, pair, "total", int(steps), METHODS, lambda f, t: report(f / 2, t))
                maps = {m: store.grids[key].maps[(m, side)].map for m in METHODS}
                return faithfulness(self.model, pair, maps, side, "total", progress=lambda f, t: report(0.5 + f / 2, t))

            store.faithfulness[side] = await run_job("The faithfulness check", BUDGET_S["attribution"], request, work)
        result = store.faithfulness[side]
        return store, faithfulness_figure(result), _faith_text(result)

    async def run_plan_check(self, pair: PairAnalysis | None, store: PairChecks, request: gr.Request) -> tuple:
        """Each matched reference patch erased and the pair verified again."""
        pair = _need(pair)
        if store.plan is None:
            store.plan = await run_job(
                "The plan check", BUDGET_S["attribution"], request, lambda job: plan_check(self.model, pair, job.progress())
            )
        check = store.plan
        strongest = int(check.patches[check.change.argmax()]) if len(check.patches) else None
        text = (
            f"Rank correlation of the plan's share and the measured change: **{check.spearman:+.2f}** over {len(check.patches)} ink patches. "
            f"Erasing patch {strongest} changed the structural distance most ({check.change.max():+.4f})."
            if strongest is not None
            else "No ink patches."
        )
        return store, plan_check_figure(check), text

    def show_band(self, pair: PairAnalysis | None, store: PairChecks, band: str) -> tuple:
        """The pair under one frequency filter (all filters are computed once per pair)."""
        if pair is None:
            return store, "Verify a pair first.", None
        if store.bands is None:
            store.bands = band_effects(self.model, pair)
        return store, _band_text(store.bands, band), band_figure(store.bands, pair.threshold)

    def write_report(self, pair: PairAnalysis | None, store: PairChecks, last: Attribution | None, *side_values: object) -> list[str]:
        """HTML + JSON of everything computed for the pair; ``side_values`` name the visitor's files."""
        pair = _need(pair)
        names = input_names(side_values)
        out = PairReport(pair, model_description(self.model, pair), names)
        out.add("Verdict", distance_bar_figure(pair))
        out.add("Patch correspondences", correspondence_figure(pair), None)
        out.add("Detail vs semantics (stage 1, block 1)", dsi_figure(pair, 0, 0))
        if last is not None:
            out.add(f"Attribution: {LABELS[last.method]}", attribution_figure(last, pair.preprocessed(last.side).image))
        for (target, steps), g in store.grids.items():
            out.add(f"Every method ({target} distance, {steps} steps)", grid_figure(g, pair))
        for side, check in store.sanity.items():
            out.add(
                f"Sanity check, {side}", sanity_figure(check), {**check.to_dict(), "verdicts": check.verdicts()}, key=f"sanity_check_{side}"
            )
        for side, result in store.faithfulness.items():
            out.add(f"Faithfulness, {side}", faithfulness_figure(result), result.to_dict(), key=f"faithfulness_{side}")
        if store.plan is not None:
            out.add("Is the correspondence view honest?", plan_check_figure(store.plan), store.plan.to_dict(), key="plan_check")
        if store.bands is not None:
            out.add("The frequency experiment", band_figure(store.bands, pair.threshold), store.bands, key="frequency")
        if is_untrained(self.model):
            out.model["note"] = "untrained weights"
        return [str(p) for p in write_pair_report(out, tempfile.mkdtemp(prefix="dsn-pair-")).values()]

    def follow(self, verified: Dependency, analysis: gr.State) -> None:
        """After a pair is verified: a fresh store, and the estimate for this pair."""
        verified.success(self.on_new_pair, [analysis, self.steps], self.outputs, api_visibility="private")

    def wire(self, model: DetailSemNet, analysis: gr.State, attribution: gr.State, pair_inputs: list) -> None:
        """Connect the buttons; ``attribution`` is the Attributions tab's last map, ``pair_inputs`` the two signature
        inputs' components (the report names the files the visitor gave)."""
        self.model = model
        private = {"api_visibility": "private"}
        self.grid_run.click(
            self.run_grid, [analysis, self.store, self.target, self.steps], [self.store, self.grid, self.estimate], **private, **SLOW_LANE
        )
        self.sanity_run.click(
            self.run_sanity, [analysis, self.store, self.side], [self.store, self.sanity, self.sanity_text], **private, **SLOW_LANE
        )
        self.faith_run.click(
            self.run_faithfulness,
            [analysis, self.store, self.side, self.steps],
            [self.store, self.faith, self.faith_text],
            **private,
            **SLOW_LANE,
        )
        self.plan_run.click(self.run_plan_check, [analysis, self.store], [self.store, self.plan, self.plan_text], **private, **SLOW_LANE)
        self.band.input(self.show_band, [analysis, self.store, self.band], [self.store, self.band_text, self.bands], **private, **FAST_LANE)
        self.report_run.click(
            self.write_report, [analysis, self.store, attribution, *pair_inputs], self.report_files, **private, **SLOW_LANE
        )
        self.steps.change(lambda pair, steps: estimate_text(self.model, pair, steps), [analysis, self.steps], self.estimate, **private)


def estimate_text(model: DetailSemNet | None, analysis: PairAnalysis | None, steps: float) -> str:
    """The grid's cost before it runs, from the same estimate the Attributions tab shows (each map, both images)."""
    if analysis is None or model is None:
        return "Verify a pair first."
    costs = [estimate_seconds(model, analysis, method, int(steps)) for method in METHODS]
    basis = "measured on this machine" if all(measured for _, measured in costs) else "estimated from the verify time"
    sanity_maps = [estimate_seconds(model, analysis, method, SANITY_STEPS)[0] for method in METHODS]
    sanity_s = (1 + len(cascade(model))) * sum(sanity_maps)  # the trained model's maps, then one set per cascade step
    return (
        f"All five methods for both images: about **{2 * sum(s for s, _ in costs):.0f} s**; the sanity check (one image, "
        f"{len(cascade(model))} steps): about **{sanity_s:.0f} s** ({basis}, one map at a time)."
    )


def build_checks_tab() -> ChecksView:
    """Body of the "Check the explanations" tab; call inside a ``gr.Tab``."""
    how_to_read("checks")
    store = gr.State(PairChecks(), time_to_live=3600)
    gr.Markdown("### Every method, side by side")
    with gr.Row():
        target = gr.Radio(["total", "global", "structural"], value="total", label="Explain which distance")
        steps = gr.Slider(4, 64, value=16, step=4, label="Steps (IG) / samples (SHAP)", elem_id="grid-steps")
    estimate = gr.Markdown(estimate_text(None, None, 16), elem_id="grid-estimate")
    grid_run = gr.Button("Compute all five methods for both images", variant="primary", elem_id="grid-run")
    grid = gr.Plot(label="All methods", elem_id="grid-plot")
    gr.Markdown("### Sanity check and faithfulness")
    side = gr.Radio(["query", "reference"], value="query", label="Check the maps of")
    with gr.Row():
        sanity_run = gr.Button("Sanity check: randomise the model block by block", elem_id="sanity-run")
        faith_run = gr.Button("Faithfulness: delete and insert ink", elem_id="faith-run")
    sanity = gr.Plot(label="Sanity check", elem_id="sanity-plot")
    sanity_text = gr.Markdown(elem_id="sanity-text")
    faith = gr.Plot(label="Faithfulness", elem_id="faith-plot")
    faith_text = gr.Markdown(elem_id="faith-text")
    gr.Markdown("### Is the correspondence view honest?")
    plan_run = gr.Button("Erase each matched reference patch and verify again", elem_id="plan-run")
    plan = gr.Plot(label="Plan check", elem_id="plan-plot-check")
    plan_text = gr.Markdown(elem_id="plan-text")
    gr.Markdown(
        "### The paper's frequency experiment\nBoth images are filtered on the 2-D FFT of the model input (f in cycles per pixel): "
        f"**LF** keeps f ≤ {LOW_CUTOFF:.3f} (periods of 14 px and more), **LMF** keeps f ≤ {MIDDLE_CUTOFF:.3f}, "
        f"**LHF** keeps f ≤ {LOW_CUTOFF:.3f} and f > {MIDDLE_CUTOFF:.3f} (no middle band)."
    )
    band = gr.Radio([(BAND_LABELS[b], b) for b in BANDS], value="original", label="Filter both inputs", elem_id="band-choice")
    band_text = gr.Markdown(elem_id="band-text")
    bands = gr.Plot(label="Distance under each filter", elem_id="band-plot")
    gr.Markdown("### Download this pair")
    report_run = gr.Button("Write the pair report (HTML + JSON)", elem_id="report-run")
    report_files = gr.File(label="Pair report", file_count="multiple", elem_id="report-files")
    return ChecksView(
        store, target, steps, estimate, grid_run, grid, side, sanity_run, sanity, sanity_text, faith_run, faith, faith_text,
        plan_run, plan, plan_text, band, band_text, bands, report_run, report_files,
    )  # fmt: skip


def _need(analysis: PairAnalysis | None) -> PairAnalysis:
    if analysis is None:
        raise gr.Error("Verify a pair first; the checks explain the pair on screen.")
    return analysis


def _faith_text(result: Faithfulness) -> str:
    rows = ["| method | deletion AUC (gain vs random) | insertion AUC (gain) |", "|---|---:|---:|"]
    for method, s in result.summary().items():
        if method != "random":
            rows.append(
                f"| {LABELS[method]} | {s['deletion_auc']:.3f} ({s['deletion_gain']:+.3f}) | {s['insertion_auc']:.3f} ({s['insertion_gain']:+.3f}) |"
            )
    r = result.summary()["random"]
    rows.append(
        f"| random order (5 seeds) | {r['deletion_auc']:.3f} ± {r['deletion_auc_std']:.3f} | {r['insertion_auc']:.3f} ± {r['insertion_auc_std']:.3f} |"
    )
    return "\n".join(rows) + "\n\nA positive gain means the map ranks the ink better than chance."


def _band_text(rows: list[dict], band: str) -> str:
    chosen, original = next(r for r in rows if r["band"] == band), rows[0]
    shares = ", ".join(
        f"{stage} {100 * v:.0f} % (original {100 * original['detail_share'][stage]:.0f} %)" for stage, v in chosen["detail_share"].items()
    )
    return (
        f"**{chosen['label']}**: distance **{chosen['distance']:.3f}** (original {original['distance']:.3f}), verdict **{chosen['verdict']}**. "
        f"Detail share of the DSI input energy, query image: {shares}."
    )
