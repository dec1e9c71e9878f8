"""The "Reference set" tab: one query against several genuine references of one writer.

Shows each reference's distance, the combined decision by the mean and by the
minimum distance, and the patch correspondences with any chosen reference.
The result lives in a ``gr.State``: the threshold slider and the reference
choice re-render without running the model again.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from dsn.inspect.figures import correspondence_figure
from dsn.inspect.reference_set import MAX_REFERENCES, RULES, ReferenceSetResult
from dsn.ui.compute import compare_set, require_file, user_errors
from dsn.ui.context import BUDGET_S, SLOW_LANE, STATE_SECONDS, AppContext
from dsn.ui.guide import how_to_read
from dsn.ui.inputs import dataset_threshold_slider
from dsn.ui.jobs import Job, run_job
from dsn.ui.upload import SignatureUpload

TAB_ID = "references"
TABLE_COLUMNS = ["#", "reference", "distance", "global", "structural", "accepted"]


@dataclass
class ReferenceState:
    """The result plus the files it came from, so a pair can be opened in the pair views."""

    result: ReferenceSetResult
    reference_paths: list[str]
    query_path: str


def decision_html(result: ReferenceSetResult) -> str:
    """Both combined decisions, the deciding rule first, each with the arithmetic and the threshold it is judged at."""
    explanations = {
        "mean": "average over all references: one odd reference cannot decide",
        "min": f"closest reference ({html.escape(result.names[result.closest])}) decides: lenient",
    }
    boxes = []
    for rule in sorted(RULES, key=lambda r: r != result.rule):
        accepted = result.accepted(rule)
        css, word, relation = ("dsn-genuine", "Genuine", "≤") if accepted else ("dsn-forged", "Forged", ">")
        role = "decides" if rule == result.rule else "for comparison"
        boxes.append(
            f"<div class='dsn-verdict {css}' id='refset-{rule}'><span class='word'>{word}</span><span class='facts'>"
            f"<b>{rule}</b> rule ({role}): distance <b>{result.rule_distance(rule):.3f}</b> {relation} "
            f"threshold {result.rule_threshold(rule):.3f}<br>{explanations[rule]}</span></div>"
        )
    warning = ""
    if result.untrained:
        warning = "<div class='dsn-untrained'>⚠ UNTRAINED WEIGHTS: these decisions are meaningless.</div>"
    facts = (
        f"<p class='dsn-note'>{len(result.references)} references, each image embedded once, {result.seconds:.2f} s. "
        f"Rule thresholds: {html.escape(result.threshold_source())}; the slider sets the pair threshold "
        f"({result.threshold:.3f}, each reference's own accepted/rejected) and moves the rules' thresholds with it.</p>"
    )
    return warning + "<div style='display:grid;gap:8px'>" + "".join(boxes) + "</div>" + facts


def table_rows(result: ReferenceSetResult) -> list[list]:
    return [
        [
            i + 1,
            row["reference"],
            round(row["distance"], 4),
            round(row["global_distance"], 4),
            round(row["structural_distance"], 4),
            row["accepted"],
        ]
        for i, row in enumerate(result.rows())
    ]


def reference_choices(result: ReferenceSetResult) -> list[tuple[str, int]]:
    return [(f"{i + 1}. {name} (distance {d:.3f})", i) for i, (name, d) in enumerate(zip(result.names, result.distances))]


def thumbnails(result: ReferenceSetResult, reference_paths: list[str], query_path: str) -> list[tuple[str, str]]:
    """Gallery items: the query first, then each reference captioned with its distance and decision."""
    items = [(query_path, "query")]
    for row, path in zip(result.rows(), reference_paths, strict=True):
        mark = "accepted" if row["accepted"] else "rejected"
        items.append((path, f"{row['reference']} · {row['distance']:.3f} · {mark}"))
    return items


PENDING_HTML = "<div class='dsn-verdict dsn-waiting' id='refset-pending'><span>Comparing…</span></div>"
REFUSED_HTML = (
    "<div class='dsn-verdict dsn-refused' id='refset-refused'><span class='word'>No result</span>"
    "<span class='facts'>the comparison was refused; the message says why.</span></div>"
)


def build_reference_tab(context: AppContext) -> None:
    """A ``TabBuilder`` for ``build_app``."""
    with gr.Tab("Reference set", id=TAB_ID):
        ReferenceSetView(context).wire()


def rethreshold(current: ReferenceState | None, value: float) -> tuple:
    """(state, decision, gallery, table) re-decided at ``value`` from the stored distances."""
    if current is None:
        return None, "", [], []
    judged = ReferenceState(current.result.with_threshold(value), current.reference_paths, current.query_path)
    return (
        judged,
        decision_html(judged.result),
        thumbnails(judged.result, judged.reference_paths, judged.query_path),
        table_rows(judged.result),
    )


def show(current: ReferenceState | None, index: int | None) -> object:
    """The correspondences of the query with one reference."""
    if current is None or index is None:
        return None
    return correspondence_figure(current.result.pair(int(index)))


def chosen_pair(current: ReferenceState | None, index: int | None) -> tuple[str, str]:
    """(reference, query) files of the chosen reference (else the closest), for the pair views."""
    if current is None:
        raise gr.Error("Compare a query with references first.")
    reference = current.reference_paths[int(index) if index is not None else current.result.closest]
    return reference, current.query_path


def clear() -> tuple:
    """Nothing of the previous comparison stays beside a new one, or beside a refusal."""
    return None, PENDING_HTML, [], [], gr.Dropdown(choices=[]), None


def keep_new_upload(value: list | None, before: list) -> tuple:
    """A new upload replaces the set (Gradio appends it to the files already there): references are one writer's."""
    paths = [str(getattr(f, "name", f)) for f in (value or [])]
    new = [p for p in paths if p not in before] or paths
    return new, new


class ReferenceSetView:
    """The references, the query, the combined decisions and the per-reference views: laid out on
    construction, connected by ``wire``."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        how_to_read("references")
        gr.Markdown(
            "Check one query against several **genuine** signatures of the same writer. Each reference is compared "
            "with the query; the decision is combined by the **mean** distance (robust) and by the **minimum** "
            "(lenient: the closest reference decides), each judged at its own threshold chosen on validation "
            f"writers for that many references; the rule with the lower validation error decides. Up to {MAX_REFERENCES} references.",
            elem_classes="dsn-note",
        )
        self.state = gr.State(None, time_to_live=STATE_SECONDS)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=300):
                self.references = gr.File(
                    file_count="multiple", file_types=["image"], label="Genuine references (one writer)", elem_id="refset-references"
                )
                self.query = SignatureUpload(
                    type="filepath", sources=["upload", "clipboard"], label="Query signature", height=210, elem_id="refset-query"
                )
                self.threshold = dataset_threshold_slider(
                    float(context.model.config.threshold),
                    0.005,
                    "Pair threshold (each reference; the rules' thresholds move with it)",
                    "refset-threshold",
                )
                self.compare = gr.Button("Compare with every reference", variant="primary", elem_id="refset-compare")
            with gr.Column(scale=3, min_width=300):
                self.decision = gr.HTML(elem_id="refset-decision")
                self.gallery = gr.Gallery(
                    label="The query and each reference (distance, accepted?)",
                    columns=4,
                    height="auto",
                    object_fit="contain",  # whole signatures: "cover" cut them
                    elem_id="refset-gallery",
                )
                self.table = gr.Dataframe(
                    headers=TABLE_COLUMNS,
                    datatype=["number", "str", "number", "number", "number", "bool"],
                    interactive=False,
                    type="array",
                    wrap=True,  # long headers wrap, so the table fits a phone
                    elem_id="refset-table",
                )
                self.chosen = gr.Dropdown(choices=[], label="Patch correspondences with reference", elem_id="refset-chosen")
                self.figure = gr.Plot(label="Patch correspondences", elem_id="refset-correspondence")
                self.open_pair = gr.Button("Open this reference and the query in the pair views", elem_id="refset-open")

    async def run(self, query_path: str | None, reference_files: list | None, value: float, request: gr.Request) -> tuple:
        """Compare the query with every reference (a slow job) and fill every view."""
        with user_errors():
            query_file = str(require_file(query_path, "query"))
        paths = [str(getattr(f, "name", f)) for f in (reference_files or [])]

        def work(job: Job) -> ReferenceSetResult:
            with user_errors():
                return compare_set(self.context.model, query_file, paths, float(value))

        result = await run_job("The comparison", BUDGET_S["reference set"], request, work)
        closest = result.closest
        return (
            ReferenceState(result, paths, query_file),
            decision_html(result),
            thumbnails(result, paths, query_file),
            table_rows(result),
            gr.Dropdown(choices=reference_choices(result), value=closest),
            correspondence_figure(result.pair(closest)),
        )

    def wire(self) -> None:
        private = {"api_visibility": "private"}
        outputs = [self.state, self.decision, self.gallery, self.table, self.chosen, self.figure]
        step = self.compare.click(clear, None, outputs, queue=False, **private).then(
            self.run, [self.query, self.references, self.threshold], outputs, show_progress_on=[self.decision], **private, **SLOW_LANE
        )
        step.failure(lambda: REFUSED_HTML, None, self.decision, queue=False, **private)  # one message, not "Error" on every output
        decided = [self.state, self.decision, self.gallery, self.table]
        self.threshold.input(rethreshold, [self.state, self.threshold], decided, trigger_mode="always_last", **private)
        self.chosen.input(show, [self.state, self.chosen], self.figure, **private)
        uploaded_before = gr.State([])
        self.references.upload(
            keep_new_upload, [self.references, uploaded_before], [self.references, uploaded_before], queue=False, **private
        )
        self.references.clear(lambda: [], None, uploaded_before, queue=False, **private)
        self.context.pair.open_pair_on(self.open_pair.click, chosen_pair, [self.state, self.chosen])
