"""The dataset explorer's two research views: EER under each frequency filter, and the embedding map.

Both read the selection (dataset, split, writer limit) of the explorer above
them. Clicks on the map reach the server through the click bridge in
``dsn.ui.style``; the second point picked opens the pair in the pair views.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from dsn.checks.figures import band_eer_figure
from dsn.checks.frequency import evaluate_bands
from dsn.data.dataset import SignatureImage
from dsn.evaluation.embedding_cache import EmbeddingCache
from dsn.evaluation.explorer import allowed_roots, resolve_dataset, select_images
from dsn.inspect.embedding_map import embedding_map_figure, project
from dsn.ui.compute import user_errors
from dsn.ui.context import BUDGET_S, SLOW_LANE, STATE_SECONDS, AppContext, PairContext
from dsn.ui.jobs import Job, run_job
from dsn.ui.style import EMBEDDING_BRIDGE_ID, EMBEDDING_PLOT_ID

BAND_COLUMNS = ["filter", "EER (%)", "ROC AUC", "FAR at threshold (%)", "FRR at threshold (%)"]


@dataclass
class EmbeddingMap:
    images: list[SignatureImage]
    coords: np.ndarray
    method: str
    picked: list[int] = field(default_factory=list)


def _selection(name: str, split: str, limit: float | None, roots: Sequence[Path]) -> list[SignatureImage]:
    roots = allowed_roots(roots)
    return select_images(resolve_dataset(name, roots), split, int(limit or 0) or None, roots)[1]


def band_rows(metrics: dict[str, dict]) -> list[list]:
    return [
        [m["label"], round(100 * m["eer"], 2), round(m["auc"], 4), round(100 * m["far"], 2), round(100 * m["frr"], 2)]
        for m in metrics.values()
    ]


def build_research_views(
    context: AppContext, roots: Sequence[Path], dataset: gr.Dropdown, split: gr.Radio, limit: gr.Number, cache_dir: str | Path | None
) -> None:
    """Add both views below the explorer; call inside its tab. Both read the explorer's selection."""
    selection = [dataset, split, limit]
    BandsView(context, roots).wire(selection)
    EmbeddingMapView(context, roots, cache_dir).wire(selection)


def pick(current: EmbeddingMap | None, value: str) -> tuple:
    """A click on the map ("index:nonce"): the first point is remembered, the second opens the pair."""
    if current is None or not value:
        return current, gr.skip(), gr.skip(), gr.skip()
    index = int(value.split(":")[0])
    if not 0 <= index < len(current.images):
        return current, gr.skip(), gr.skip(), gr.skip()
    current.picked = [*current.picked, index][-2:] if len(current.picked) < 2 else [index]
    names = [
        f"writer {current.images[i].writer} {'genuine' if current.images[i].genuine else 'forged'} {current.images[i].index:02d}"
        for i in current.picked
    ]
    figure = embedding_map_figure(current.coords, current.images, current.method, current.picked)
    if len(current.picked) < 2:
        return current, figure, f"Picked **{names[0]}**; click a second point.", gr.skip()
    return current, figure, f"Opening **{names[0]}** (reference) and **{names[1]}** (query) in the pair views.", f"{time.time()}"


def chosen_pair(current: EmbeddingMap | None) -> tuple[str, str, PairContext]:
    """The two picked signatures as the pair views open them, with what is known about them."""
    if current is None or len(current.picked) < 2:
        raise gr.Error("Click two points of the map first.")
    a, b = (current.images[i] for i in current.picked)
    same = a.writer == b.writer
    label = (
        f"{'same writer' if same else 'different writers'}: writer {a.writer} {'genuine' if a.genuine else 'forged'} vs "
        f"writer {b.writer} {'genuine' if b.genuine else 'forged'}"
    )
    return str(a.path), str(b.path), PairContext(label, a.path.name, b.path.name, source="Embedding map")


class BandsView:
    """EER of the selection under each frequency filter."""

    def __init__(self, context: AppContext, roots: Sequence[Path]) -> None:
        self.model, self.roots = context.model, roots
        gr.Markdown(
            "### The frequency experiment on this split\nEvery image of the selection filtered to LF, LMF and LHF "
            "(cut-offs in the pair view's *Check the explanations* tab), the standard protocol scored under each, "
            "at the checkpoint's threshold. Four backbone passes per image: the Hindi test split takes minutes."
        )
        self.run = gr.Button("EER under each frequency filter", elem_id="bands-run")
        self.table = gr.Dataframe(headers=BAND_COLUMNS, interactive=False, type="array", elem_id="bands-table")
        self.plot = gr.Plot(label="EER per filter", elem_id="bands-eer-plot")

    async def frequency_bands(
        self,
        name: str,
        split_name: str,
        writer_limit: float | None,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio injects progress through this default)
    ) -> tuple:
        """The protocol scored under each filter (a slow job): table and figure."""

        def work(job: Job) -> dict[str, dict]:
            with user_errors():
                images = _selection(name, split_name, writer_limit, self.roots)
                return evaluate_bands(self.model, images, progress=job.progress(progress))

        metrics = await run_job("The frequency evaluation", BUDGET_S["dataset evaluation"], request, work)
        title = f"EER under each frequency filter: {name} {split_name}, threshold {self.model.config.threshold:.3f} for FAR/FRR"
        return band_rows(metrics), band_eer_figure(metrics, title)

    def wire(self, selection: list) -> None:
        self.run.click(self.frequency_bands, selection, [self.table, self.plot], api_visibility="private", **SLOW_LANE)


class EmbeddingMapView:
    """The selection's embeddings projected to 2-D; two clicks open a pair."""

    def __init__(self, context: AppContext, roots: Sequence[Path], cache_dir: str | Path | None) -> None:
        self.context, self.roots, self.cache_dir = context, roots, cache_dir
        gr.Markdown("### Embedding map")
        with gr.Row():
            self.method = gr.Radio([("PCA", "pca"), ("t-SNE", "tsne")], value="pca", label="Projection", elem_id="map-method")
            self.run = gr.Button("Draw the embedding map", elem_id="map-run")
        self.state = gr.State(None, time_to_live=STATE_SECONDS)
        self.bridge = gr.Textbox(visible="hidden", elem_id=EMBEDDING_BRIDGE_ID)
        self.ready = gr.Textbox(visible="hidden", elem_id="embedding-pair-ready")
        self.figure = gr.Plot(label="Embedding map", elem_id=EMBEDDING_PLOT_ID)
        self.picked = gr.Markdown("Click two points to compare those two signatures.", elem_id="map-picked")

    async def draw_map(
        self,
        name: str,
        split_name: str,
        writer_limit: float | None,
        how: str,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio injects progress through this default)
    ) -> tuple:
        """Embed the selection (through the disk cache) and project it (a slow job)."""

        def work(job: Job) -> EmbeddingMap:
            with user_errors():
                images = _selection(name, split_name, writer_limit, self.roots)
                report = job.progress(progress)
                embedding = EmbeddingCache(self.cache_dir).embed(
                    self.context.model, images, progress=lambda done, total, stage: report(0.9 * done / total, f"{stage} {done}/{total}")
                )
                report(0.95, f"{how.upper()} of {len(images)} embeddings")
                return EmbeddingMap(images, project(embedding.global_feature.numpy(), how), how)

        result = await run_job("The embedding map", BUDGET_S["dataset evaluation"], request, work)
        return (
            result,
            embedding_map_figure(result.coords, result.images, result.method),
            "Click two points to compare those two signatures.",
        )

    def wire(self, selection: list) -> None:
        private = {"api_visibility": "private"}
        self.run.click(self.draw_map, [*selection, self.method], [self.state, self.figure, self.picked], **private, **SLOW_LANE)
        self.bridge.change(pick, [self.state, self.bridge], [self.state, self.figure, self.picked, self.ready], **private)
        self.context.pair.open_pair_on(self.ready.change, chosen_pair, [self.state])
