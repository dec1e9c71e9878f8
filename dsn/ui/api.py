"""JSON endpoints for scripts: ``/verify``, ``/references``, ``/correspondences``, ``/attribute``, ``/dsi``, and the
explanation checks ``/sanity``, ``/faithfulness``, ``/plan_check`` and ``/frequency``.

They take image files (``gradio_client.handle_file``) and return plain
JSON, so a script never has to parse Plotly figures. They are hidden
components rather than ``gr.api`` functions because Gradio then validates
that uploaded paths really are uploads. Each call re-analyses the pair unless
it is one of the last few pairs (``AnalysisCache``): a script asking several
endpoints about one pair pays for the backbone once.
"""

from __future__ import annotations

import base64
import math

import cv2
import gradio as gr
import numpy as np

from dsn.checks.faithfulness import faithfulness
from dsn.checks.frequency import band_effects
from dsn.checks.plan_check import plan_check
from dsn.checks.sanity import sanity_check
from dsn.inference import PairAnalysis, check_side
from dsn.inspect.analysis import dsi_stats, match_list
from dsn.inspect.attribution import LABELS, MAX_STEPS, METHODS, TARGETS, Attribution
from dsn.model.detailsemnet import DetailSemNet
from dsn.ui.compute import AnalysisCache, compare_set, explain, require_file, user_errors
from dsn.ui.context import BUDGET_S, FAST_LANE, SLOW_LANE
from dsn.ui.jobs import Job, run_job


def attribution_stats(values: np.ndarray) -> dict:
    """Summary numbers of a signed attribution map (positive = raises the distance)."""
    values = np.asarray(values, np.float64)
    total = float(np.abs(values).sum())
    peak_y, peak_x = np.unravel_index(int(np.argmax(np.abs(values))), values.shape)
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "sum": float(values.sum()),
        "abs_sum": total,
        "positive_share": float(np.clip(values, 0, None).sum() / total) if total > 0 else 0.0,
        "peak": {"x": int(peak_x), "y": int(peak_y)},
        "shape": list(values.shape),
    }


def signed_png(values: np.ndarray) -> str:
    """Attribution map as a base64 grey PNG: 128 = 0, 255 = +limit, 0 = −limit (limit: 99.5th percentile of |map|)."""
    values = np.asarray(values, np.float32)
    limit = float(np.percentile(np.abs(values), 99.5)) or float(np.abs(values).max()) or 1.0
    pixels = np.clip(np.rint(127.5 + 127.5 * values / limit), 0, 255).astype(np.uint8)
    ok, buffer = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def whole(value: float | None, name: str, low: int, high: int, default: int) -> int:
    """A numeric API input as an integer in [low, high]; anything else is the caller's error, said plainly."""
    if value is None:
        return default
    number = float(value)
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def method_list(value: str | None) -> list[str]:
    """A comma-separated subset of the attribution methods; empty means all of them."""
    names = [m.strip() for m in (value or "").split(",") if m.strip()] or list(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be a comma-separated subset of {list(METHODS)}, got {unknown}")
    return names


class JsonApi:
    """The endpoints of one model: each method is one endpoint, ``wire`` adds them to the current Blocks."""

    def __init__(self, model: DetailSemNet) -> None:
        self.model = model
        self.cache = AnalysisCache()

    def pair(self, reference: object, query: object) -> PairAnalysis:
        return self.cache.get(self.model, require_file(reference, "reference"), require_file(query, "query"))

    def verify(self, reference: str, query: str, threshold: float | None) -> dict:
        """Verdict and distances for one pair (threshold defaults to the checkpoint's)."""
        with user_errors():
            return self.pair(reference, query).with_threshold(threshold).summary()

    async def references(self, query: str, references: list[str] | None, threshold: float | None, request: gr.Request) -> dict:
        """One query against several genuine references of one writer: each distance, and the mean and minimum rules
        judged at their own val-chosen thresholds (``decided_by`` names the rule that decides; threshold: the pair's)."""
        with user_errors():
            query_file = str(require_file(query, "query"))
            paths = [str(getattr(f, "name", f)) for f in (references or [])]

        def work(job: Job) -> dict:
            with user_errors():
                return compare_set(self.model, query_file, paths, threshold).summary()

        return await run_job("The comparison", BUDGET_S["reference set"], request, work)

    def correspondences(self, reference: str, query: str, top_k: float, reference_patch: float | None) -> dict:
        """The heaviest transport-plan entries: [{reference_patch, query_patch, mass, cost}], heaviest first.

        reference_patch >= 0 lists only that reference token's matches (-1: all).
        """
        with user_errors():
            analysis = self.pair(reference, query)
            tokens = analysis.plan.shape[0]
            patch = whole(reference_patch, "reference_patch", -1, tokens - 1, -1)
            return {
                "grid": list(analysis.grid),
                "summary": analysis.summary(),
                "matches": match_list(analysis, whole(top_k, "top_k", 1, tokens * tokens, 30), None if patch < 0 else patch),
            }

    async def attribute(self, reference: str, query: str, method: str, target: str, side: str, steps: float, request: gr.Request) -> dict:
        """An attribution map of the distance w.r.t. one image: stats, and the map as a signed grey PNG."""
        with user_errors():
            if method not in METHODS:
                raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
            if target not in TARGETS:
                raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
            check_side(side)
            count = whole(steps, "steps", 1, MAX_STEPS, 32)

        def work(job: Job) -> Attribution:
            with user_errors():
                return explain(self.model, self.pair(reference, query), method, target, side, count, job.progress())

        result = await run_job(LABELS.get(method, method), BUDGET_S["attribution"], request, work)
        return {
            "method": result.method,
            "target": result.target,
            "side": result.side,
            "steps": result.steps,
            "seconds": float(result.seconds),
            "convergence_delta": None if result.delta is None else float(result.delta),
            "stats": attribution_stats(result.map),
            "map_png_base64": signed_png(result.map),
        }

    def dsi(self, reference: str, query: str, stage: float, block: float) -> dict:
        """Energy of each DSI part and the frequency profiles, for one block (stage and block are 0-based)."""
        with user_errors():
            stages = self.model.backbone.stages
            blocks = max(len(s.blocks) for s in stages)
            chosen = whole(stage, "stage", 0, len(stages) - 1, 0), whole(block, "block", 0, blocks - 1, 0)
            return dsi_stats(self.pair(reference, query), *chosen)

    async def sanity(self, reference: str, query: str, side: str, methods: str, steps: float, request: gr.Request) -> dict:
        """Cascading randomisation: per method, the similarity to the trained map after each randomised block."""
        with user_errors():
            check_side(side)
            chosen, count = method_list(methods), whole(steps, "steps", 1, 64, 16)

        def work(job: Job) -> dict:
            with user_errors():
                result = sanity_check(self.model, self.pair(reference, query), side, "total", chosen, count, job.progress())
            return {**result.to_dict(), "verdicts": result.verdicts()}

        return await run_job("The sanity check", BUDGET_S["sanity check"], request, work)

    async def faithfulness(self, reference: str, query: str, side: str, methods: str, steps: float, request: gr.Request) -> dict:
        """Deletion and insertion curves of each method's map, with the random-order baseline and the gains."""
        with user_errors():
            check_side(side)
            chosen, count = method_list(methods), whole(steps, "steps", 1, MAX_STEPS, 32)

        def work(job: Job) -> dict:
            with user_errors():
                analysis = self.pair(reference, query)
                maps = {m: explain(self.model, analysis, m, "total", side, count, job.progress()).map for m in chosen}
                return faithfulness(self.model, analysis, maps, side, "total", progress=job.progress()).to_dict()

        return await run_job("The faithfulness check", BUDGET_S["attribution"], request, work)

    async def plan_check(self, reference: str, query: str, request: gr.Request) -> dict:
        """Each reference ink patch erased and the pair verified again: measured change against the plan's share."""

        def work(job: Job) -> dict:
            with user_errors():
                return plan_check(self.model, self.pair(reference, query), job.progress()).to_dict()

        return await run_job("The plan check", BUDGET_S["attribution"], request, work)

    def frequency(self, reference: str, query: str) -> dict:
        """The pair under the LF / LMF / LHF filters: distance, verdict and the DSI's detail share per stage."""
        with user_errors():
            return {"bands": band_effects(self.model, self.pair(reference, query))}

    def wire(self) -> None:
        """Hidden inputs, one JSON output and one event per endpoint, named as the endpoint."""
        with gr.Column(visible=False):
            reference = gr.File(label="reference", type="filepath")
            query = gr.File(label="query", type="filepath")
            references = gr.File(label="references", type="filepath", file_count="multiple")
            threshold = gr.Number(float(self.model.config.threshold), label="threshold")
            top_k = gr.Number(30, label="top_k", precision=0)
            reference_patch = gr.Number(-1, label="reference_patch", precision=0)
            method = gr.Textbox("integrated_gradients", label="method")
            target = gr.Textbox("total", label="target")
            side = gr.Textbox("query", label="side")
            steps = gr.Number(32, label="steps", precision=0)
            sanity_steps = gr.Number(16, label="steps", precision=0)
            methods = gr.Textbox("", label="methods")
            stage = gr.Number(0, label="stage", precision=0)
            block = gr.Number(0, label="block", precision=0)
            result = gr.JSON(label="result")
            trigger = gr.Button("api")
        pair = [reference, query]
        endpoints = [
            (self.verify, [*pair, threshold], FAST_LANE),
            (self.references, [query, references, threshold], SLOW_LANE),
            (self.correspondences, [*pair, top_k, reference_patch], FAST_LANE),
            (self.attribute, [*pair, method, target, side, steps], SLOW_LANE),
            (self.dsi, [*pair, stage, block], FAST_LANE),
            (self.frequency, pair, FAST_LANE),
            (self.plan_check, pair, SLOW_LANE),
            (self.faithfulness, [*pair, side, methods, steps], SLOW_LANE),
            (self.sanity, [*pair, side, methods, sanity_steps], SLOW_LANE),
        ]
        for endpoint, inputs, lane in endpoints:
            trigger.click(endpoint, inputs, result, api_name=endpoint.__name__, **lane)


def build_api(model: DetailSemNet) -> None:
    """Add the hidden endpoint components and events to the current Blocks."""
    JsonApi(model).wire()
