"""What the app's tabs share: the pair views, the model, the queue settings.

Tabs receive an ``AppContext`` from ``build_app`` instead of importing the module
that composes them, so ``dsn.ui.tabs`` sits below ``dsn.ui.app``.
"""

from __future__ import annotations

import functools
import hashlib
import html
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from gradio.events import Dependency

from dsn.loading import ModelInfo
from dsn.model.detailsemnet import DetailSemNet
from dsn.ui.inputs import UPLOAD, SignatureInput

OPENED_DIR = Path(tempfile.gettempdir()) / "dsn-opened-pairs"  # Gradio serves files from the temp dir only


def servable_copy(path: str | Path) -> str:
    """A copy of a dataset file in the temp dir, so Gradio may serve it wherever the data root is; the root never shows."""
    path = Path(path)
    data = path.read_bytes()
    OPENED_DIR.mkdir(parents=True, exist_ok=True)
    target = OPENED_DIR / f"{'-'.join(path.parts[-3:-1])}-{hashlib.sha1(data).hexdigest()[:10]}{path.suffix}"
    if not target.exists():
        target.write_bytes(data)
    return str(target)


PAIR_TAB = "pair"
STATE_SECONDS = 3600  # a visitor's analysis is dropped after an hour of inactivity
SESSION_CAPACITY = 64  # visitors whose state the server keeps (the oldest is dropped first): about 1 GB at most
# Two lanes of model work, one run at a time in each: verify and the views computed from it never wait behind
# an attribution or a dataset evaluation, and memory stays bounded (at most two model runs at once).
FAST_LANE = {"concurrency_id": "fast-model-lane", "concurrency_limit": 1}  # verify, correspondences, DSI maps
SLOW_LANE = {"concurrency_id": "slow-model-lane", "concurrency_limit": 1}  # attributions, reference sets, dataset evaluation
# Longest a slow-lane request may compute before it is stopped (dsn.ui.jobs): a generous multiple of what the
# heaviest allowed request takes on a 2-core CPU, so only a stuck or abusive request ever reaches it.
BUDGET_S = {"attribution": 240.0, "sanity check": 600.0, "reference set": 120.0, "dataset evaluation": 900.0}


@dataclass
class PairContext:
    """What the tab that opens a pair knows about it: shown above the verdict, and its threshold used."""

    label: str  # ground truth in words, e.g. "known forgery (writer 11)"
    reference_name: str
    query_name: str
    threshold: float | None = None  # judge at this threshold (e.g. the explorer's), else the slider's
    source: str = ""  # where the pair comes from, e.g. "Dataset explorer, CEDAR test, false accept"

    def html(self) -> str:
        threshold = (
            f" · judged at the {self.source.split(',')[0] or 'caller'}'s threshold {self.threshold:.3f}"
            if self.threshold is not None
            else ""
        )
        return (
            "<div class='dsn-pair-context' id='pair-context'>"
            f"<b>{html.escape(self.source)}</b>{' · ' if self.source else ''}ground truth: <b>{html.escape(self.label)}</b> · "
            f"reference <code>{html.escape(self.reference_name)}</code> · query <code>{html.escape(self.query_name)}</code>{threshold}</div>"
        )


@dataclass
class PairViews:
    """The pair views, as other tabs see them.

    ``open_pair_on`` is how another tab (e.g. the dataset explorer) shows a
    pair here: it fills both inputs, switches to the "Verify a pair" tab and
    runs exactly what the Verify button runs.
    """

    reference: SignatureInput
    query: SignatureInput
    analysis: gr.State  # the current PairAnalysis (None before the first verify)
    main_tabs: gr.Tabs
    threshold: gr.Slider  # the pair views' decision threshold
    context: gr.HTML  # what the opening tab knows about the pair (ground truth, names), above the verdict
    _then_verify: Callable  # (Dependency) -> Dependency: chains verification and every view after it

    def open_pair_on(self, trigger: Callable, fn: Callable, inputs: Sequence | None = None) -> Dependency:
        """Wire ``trigger`` (an event listener such as ``button.click`` or ``gallery.select``) to open a pair.

        ``fn(*inputs)`` returns ``(reference_path, query_path)`` or ``(reference_path, query_path, PairContext)``;
        it may take a ``gr.SelectData`` argument like any Gradio handler. Example::

            pair.open_pair_on(open_button.click, lambda row: (row["a"], row["b"]), [table_state])
        """

        @functools.wraps(fn)
        def opened(*values: object) -> tuple:
            reference, query, *known = fn(*values)
            reference, query = servable_copy(reference), servable_copy(query)  # every way of opening a pair: one way to serve it
            context = known[0] if known else None
            threshold = gr.Slider() if context is None or context.threshold is None else gr.Slider(value=context.threshold)
            return (
                context.html() if context else "",
                threshold,
                reference,
                query,
                UPLOAD,
                UPLOAD,
                gr.Tabs(selected=UPLOAD),
                gr.Tabs(selected=UPLOAD),
                gr.Tabs(selected=PAIR_TAB),
            )

        outputs = [
            self.context,
            self.threshold,
            self.reference.upload,
            self.query.upload,
            self.reference.mode,
            self.query.mode,
            self.reference.tabs,
            self.query.tabs,
            self.main_tabs,
        ]
        return self._then_verify(trigger(opened, inputs, outputs, api_visibility="private"))


@dataclass
class AppContext:
    """What a tab builder gets: the model, where data lives, and the pair views."""

    model: DetailSemNet
    info: ModelInfo
    pair: PairViews
    data_roots: list[Path] = field(default_factory=list)


TabBuilder = Callable[[AppContext], None]  # builds one gr.Tab inside the main tabs
