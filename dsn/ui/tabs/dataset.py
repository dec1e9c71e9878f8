"""The "Dataset explorer" tab: evaluate a dataset split in the app and look at its errors.

Datasets come only from the dropdown of folders found under the allowed
roots (``--data-root``); ``dsn.evaluation.explorer`` enforces that on the server side,
so a crafted request cannot name another folder. The evaluation's per-pair
distances stay in a ``gr.State``: the threshold slider re-decides metrics,
curves, error list and per-writer table from them without running the model.
Selecting a row of the error list opens that pair in the "Verify a pair" views.
"""

from __future__ import annotations

import functools
import html
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import gradio as gr

from dsn.data.dataset import SPLITS
from dsn.data.preprocess import read_image
from dsn.evaluation.explorer import (
    Exploration,
    allowed_roots,
    error_rows,
    explore,
    export_report,
    figures,
    find_datasets,
    pair_paths,
    smallest_dataset,
    writer_rows,
)
from dsn.evaluation.report import metrics_table_html
from dsn.inspect.panels import png_source
from dsn.ui.compute import user_errors
from dsn.ui.context import BUDGET_S, SLOW_LANE, STATE_SECONDS, AppContext, PairContext, TabBuilder
from dsn.ui.guide import how_to_read
from dsn.ui.inputs import dataset_threshold_slider
from dsn.ui.jobs import Job, run_job
from dsn.ui.tabs.dataset_research import build_research_views

TAB_ID = "dataset"
THUMB_HEIGHT = 40
ERROR_COLUMNS = ["pair", "writer", "reference", "query", "pair images", "distance", "margin (threshold - distance)", "wrong"]
ERROR_TYPES = ["number", "number", "str", "str", "html", "number", "number", "bool"]
ERROR_KINDS = {"false accept": "false-accepts", "false reject": "false-rejects"}  # list -> elem_id suffix
WRITER_COLUMNS = ["writer", "pairs", "genuine", "forged", "EER %", "FAR %", "FRR %", "errors", "accuracy %"]
NO_ROOTS = (
    "No data roots were given, so no dataset can be evaluated here. Start the app with "
    "`python app.py --data-root ../shared/datasets` (repeatable); datasets are picked only from folders under those roots."
)


def dataset_tab(roots: Sequence[str | Path], cache_dir: str | Path | None = None) -> TabBuilder:
    """A tab builder for ``build_app``; bad roots fail here, at startup."""
    checked = allowed_roots(roots)

    def build(context: AppContext) -> None:
        with gr.Tab("Dataset explorer", id=TAB_ID):
            _build(context, checked, cache_dir)

    return build


@functools.lru_cache(maxsize=1024)
def thumbnail(path: str) -> str:
    """A small grey PNG data URI of a signature file, for the error table."""
    gray = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    size = (max(1, round(width * THUMB_HEIGHT / height)), THUMB_HEIGHT)
    return png_source(cv2.resize(gray, size, interpolation=cv2.INTER_AREA))


def _pair_images_html(exploration: Exploration, pair_index: int) -> str:
    images = [
        f"<img src='{thumbnail(str(p))}' alt='{html.escape(p.name)}' style='height:{THUMB_HEIGHT}px;margin-right:4px'>"
        for p in pair_paths(exploration.result, pair_index)
    ]
    return "".join(images)


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def error_table(exploration: Exploration | None, limit: float, kind: str) -> list[list]:
    """Rows of one list ("false accept" or "false reject"), worst first; the first column is the pair index."""
    if exploration is None:
        return []
    return [
        [
            r["pair"],
            r["writer"],
            r["reference"],
            r["query"],
            _pair_images_html(exploration, r["pair"]),
            round(r["distance"], 4),
            round(r["margin"], 4),
            r["error"],
        ]
        for r in error_rows(exploration.result, int(limit))
        if r["kind"] == kind
    ]


def writer_table(exploration: Exploration | None) -> list[list]:
    if exploration is None:
        return []
    return [
        [
            r["writer"],
            r["n_pairs"],
            r["n_genuine_pairs"],
            r["n_forged_pairs"],
            _percent(r["eer"]),
            _percent(r["far"]),
            _percent(r["frr"]),
            r["errors"],
            _percent(r["accuracy"]),
        ]
        for r in writer_rows(exploration.result)
    ]


def metrics_html(exploration: Exploration) -> str:
    """Headline numbers at the current threshold, then the report's full metrics table."""
    result, m = exploration.result, exploration.result.metrics
    warning = ""
    if result.info.get("untrained"):
        warning = "<div class='dsn-untrained'>⚠ UNTRAINED WEIGHTS: these numbers describe a random network.</div>"
    if "eer" not in m:
        return warning + f"<p id='dataset-headline'>{html.escape(m.get('note', ''))}</p>" + metrics_table_html(m)
    headline = (
        f"<p id='dataset-headline'><b>EER {100 * m['eer']:.2f}%</b> · AUC {m['auc']:.4f} · at threshold "
        f"<b>{result.threshold:.3f}</b>: FAR <b>{100 * m['far']:.2f}%</b> ({m['fp']} forgeries accepted), "
        f"FRR <b>{100 * m['frr']:.2f}%</b> ({m['fn']} genuine rejected), accuracy {100 * m['accuracy']:.2f}%</p>"
    )
    return warning + headline + f"<details><summary>All metrics</summary>{metrics_table_html(m)}</details>"


def status_markdown(exploration: Exploration) -> str:
    result, cache = exploration.result, exploration.cache
    return (
        f"**{exploration.dataset}** · split `{exploration.split}` · {len(exploration.writers)} writers · "
        f"{len(result.images)} images · {len(result.pairs)} pairs · embeddings: {cache.hits} from the disk cache, "
        f"{cache.misses} computed · {exploration.seconds:.1f} s"
    )


def _views(exploration: Exploration, limit: float) -> tuple:
    """(metrics, roc, histogram, false accepts, false rejects, writers) at the exploration's threshold."""
    figs = figures(exploration.result)
    errors = [error_table(exploration, limit, kind) for kind in ERROR_KINDS]
    return (metrics_html(exploration), figs.get("roc"), figs.get("histogram"), *errors, writer_table(exploration))


def opened_pair(exploration: Exploration, pair_index: int) -> tuple[str, str, PairContext]:
    """A pair of the error list as the pair views open it: servable copies, ground truth, names, the explorer's threshold."""
    result = exploration.result
    reference, query = pair_paths(result, pair_index)
    pair = result.pairs[pair_index]
    writer = result.images[pair.a].writer
    label = f"genuine pair (writer {writer})" if pair.genuine else f"known forgery (of writer {writer})"
    context = PairContext(
        label,
        result.shown_path(reference),
        result.shown_path(query),
        threshold=float(result.threshold),
        source=f"Dataset explorer, {exploration.dataset} {exploration.split}",
    )
    return str(reference), str(query), context


def _build(context: AppContext, roots: list[Path], cache_dir: str | Path | None) -> None:
    how_to_read("dataset")
    if not roots:
        gr.Markdown(NO_ROOTS, elem_id="dataset-no-roots")
        return
    view = DatasetView(context, roots, cache_dir)
    view.wire()
    build_research_views(context, roots, view.dataset, view.split, view.writer_limit, cache_dir)


def open_selected(exploration: Exploration | None, event: gr.SelectData) -> tuple[str, str, PairContext]:
    """The clicked row of an error list, as the pair views open it."""
    if exploration is None or not event.row_value:
        raise gr.Error("Run an evaluation first, then click a row of the error list.")
    return opened_pair(exploration, int(event.row_value[0]))


def prepare_files(exploration: Exploration | None, with_png: bool) -> tuple[list[str], str]:
    """The report files of the evaluation on screen, in a fresh temporary folder."""
    if exploration is None:
        raise gr.Error("Run an evaluation first.")
    paths, note = export_report(exploration, tempfile.mkdtemp(prefix="dsn-report-"), png=bool(with_png))
    return [str(p) for p in paths], note


class DatasetView:
    """The explorer's controls, metrics, figures, error lists and per-writer table: laid out on
    construction, connected by ``wire``."""

    def __init__(self, context: AppContext, roots: list[Path], cache_dir: str | Path | None) -> None:
        self.context, self.roots, self.cache_dir = context, roots, cache_dir
        self.default_threshold = float(context.model.config.threshold)
        found = find_datasets(roots)
        gr.Markdown(
            "Evaluate the standard protocol (every genuine-genuine pair and every genuine-forged pair of each writer) on a "
            f"dataset under the data root{'s' if len(roots) > 1 else ''} {', '.join(f'`{r.name}`' for r in roots)}. "
            "Embeddings are cached on disk, so a second run is quick.",
            elem_classes="dsn-note",
        )
        self.state = gr.State(None, time_to_live=STATE_SECONDS)
        with gr.Row(equal_height=True):
            self.dataset = gr.Dropdown(list(found), value=smallest_dataset(found), label="Dataset", elem_id="dataset-choice")
            self.split = gr.Radio(list(SPLITS), value="test", label="Split (writer-independent)", elem_id="dataset-split")
            self.writer_limit = gr.Number(0, precision=0, minimum=0, label="Writer limit (0 = all)", elem_id="dataset-writer-limit")
            self.run = gr.Button("Evaluate", variant="primary", elem_id="dataset-evaluate")
        self.status = gr.Markdown(elem_id="dataset-status")
        self.threshold = dataset_threshold_slider(
            self.default_threshold,
            0.001,
            "Decision threshold (accept when distance ≤ threshold); moving it does not rerun the model",
            "dataset-threshold",
        )
        self.metrics = gr.HTML(elem_id="dataset-metrics")
        with gr.Row():
            self.roc = gr.Plot(label="ROC", elem_id="dataset-roc")
            self.det = gr.Plot(label="DET", elem_id="dataset-det")
        self.histogram = gr.Plot(label="Distance histogram", elem_id="dataset-histogram")
        gr.Markdown(
            "### Errors\nForgeries with the smallest distances (false accepts) and genuine pairs with the largest "
            "(false rejects), worst first; `wrong` says whether the threshold gets the pair wrong. Click a row to "
            "open the pair in the verdict, correspondence, detail and attribution views."
        )
        self.error_limit = gr.Slider(5, 100, value=20, step=5, label="Pairs per list", elem_id="dataset-error-limit")
        self.error_tables = {
            kind: gr.Dataframe(
                headers=ERROR_COLUMNS,
                datatype=ERROR_TYPES,
                interactive=False,
                type="array",
                max_height=420,
                label=f"{kind.capitalize()}s (sortable; click a row to open the pair)",
                elem_id=f"dataset-{suffix}",
            )
            for kind, suffix in ERROR_KINDS.items()
        }
        gr.Markdown("### Per writer")
        self.writers = gr.Dataframe(headers=WRITER_COLUMNS, interactive=False, type="array", elem_id="dataset-writers")
        with gr.Accordion("Download: per-pair CSV, metrics JSON, figures (HTML, PNG)", open=False):
            self.png = gr.Checkbox(True, label="Also PNG figures (kaleido drives the local Chromium; ~10 s)")
            self.export = gr.Button("Prepare report files", elem_id="dataset-export")
            self.files = gr.File(file_count="multiple", label="Report files", interactive=False, elem_id="dataset-files")
            self.export_note = gr.Markdown()

    async def evaluate_dataset(
        self,
        name: str,
        split_name: str,
        limit: float | None,
        current: float,
        rows: float,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Evaluate the chosen split (a slow job), then fill every view at the slider's threshold."""

        def work(job: Job) -> Exploration:
            try:
                with user_errors():
                    writers = int(limit or 0) or None
                    return explore(
                        self.context.model,
                        name,
                        self.roots,
                        split_name,
                        writers,
                        float(current),
                        self.cache_dir,
                        progress=job.progress(progress),
                    )
            except PermissionError as error:
                raise gr.Error(str(error), title="Not allowed", print_exception=False) from error

        exploration = await run_job("The evaluation", BUDGET_S["dataset evaluation"], request, work)
        top = float(exploration.result.scores.distance.max())
        slider = gr.Slider(maximum=round(max(2.0, 3.0 * self.default_threshold, 1.05 * top), 2), value=float(current))
        figs = figures(exploration.result)
        return (exploration, status_markdown(exploration), slider, figs.get("det"), *_views(exploration, rows))

    @staticmethod
    def rethreshold(exploration: Exploration | None, value: float, rows: float) -> tuple:
        """Every view re-decided at a new threshold from the stored distances, without the model."""
        if exploration is None:
            return None, "", None, None, [], [], []
        judged = exploration.at_threshold(float(value))
        return (judged, *_views(judged, rows))

    def wire(self) -> None:
        views = [self.metrics, self.roc, self.histogram, *self.error_tables.values(), self.writers]
        self.run.click(
            self.evaluate_dataset,
            [self.dataset, self.split, self.writer_limit, self.threshold, self.error_limit],
            [self.state, self.status, self.threshold, self.det, *views],
            api_visibility="private",
            show_progress_on=[self.status],  # one progress display, not an overlay on every output
            **SLOW_LANE,
        )
        self.threshold.input(
            self.rethreshold,
            [self.state, self.threshold, self.error_limit],
            [self.state, *views],
            api_visibility="private",
            trigger_mode="always_last",
        )
        self.error_limit.input(
            lambda exploration, limit: [error_table(exploration, limit, kind) for kind in ERROR_KINDS],
            [self.state, self.error_limit],
            list(self.error_tables.values()),
            api_visibility="private",
            trigger_mode="always_last",
        )
        for table in self.error_tables.values():
            self.context.pair.open_pair_on(table.select, open_selected, [self.state])
        self.export.click(prepare_files, [self.state, self.png], [self.files, self.export_note], api_visibility="private")
