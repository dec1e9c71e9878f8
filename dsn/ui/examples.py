"""The example gallery under the Verify button, with each pair's ground truth said before the verdict.

A wrong verdict on an example is then visible as wrong instead of being taught as right.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from dsn.data.examples import read_examples
from dsn.ui.context import PairContext
from dsn.ui.inputs import UPLOAD, SignatureInput

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "assets" / "examples"
_WRONG_IF_ACCEPTED = "if the verdict says Genuine, the model is wrong here: Patch correspondences shows what it matched"
TRUTH_WORDS = {
    "genuine": "genuine pair (the same writer)",
    "forged": f"forgery (a skilled imitation by another hand); {_WRONG_IF_ACCEPTED}",
    "other-hand": f"another person writing the same name (nobody imitated anybody); {_WRONG_IF_ACCEPTED}",
}


def example_pairs(folder: Path = EXAMPLES_DIR) -> tuple[list[list[str]], list[str]]:
    """Gallery rows (reference path, query path) and their captions, from the folder's ``examples.json``."""
    examples = read_examples(folder)
    return [[str(Path(folder) / e.reference), str(Path(folder) / e.query)] for e in examples], [e.label for e in examples]


def example_context(reference_path: str | None, query_path: str | None, folder: Path = EXAMPLES_DIR) -> str:
    """The ground truth of a shipped example (matched by file names: Gradio serves copies), else ""."""
    if not reference_path or not query_path:
        return ""
    names = (Path(reference_path).name, Path(query_path).name)
    for example in read_examples(folder):
        if (example.reference, example.query) == names:
            return PairContext(TRUTH_WORDS[example.truth], *names, source=example.source).html()
    return ""


def build_gallery(reference: SignatureInput, query: SignatureInput, folder: Path = EXAMPLES_DIR) -> gr.Examples | None:
    """The clickable gallery that fills both uploads; None when no example is shipped."""
    rows, labels = example_pairs(folder)
    if not rows:
        return None
    return gr.Examples(
        rows,
        [reference.upload, query.upload],
        label="Examples with a known answer (synthetic, and real paper vs phone pairs): click one to verify it",
        example_labels=labels,
        examples_per_page=12,
        elem_id="examples",
    )


def wire_gallery(
    examples: gr.Examples | None, reference: SignatureInput, query: SignatureInput, pair_context: gr.HTML, verify_on: Callable
) -> None:
    """A click shows the example's ground truth, switches both inputs to upload mode and verifies the pair."""
    if examples is None:
        return
    ready = examples.load_input_event.then(
        lambda reference_path, query_path: (
            example_context(reference_path, query_path),
            UPLOAD,
            UPLOAD,
            gr.Tabs(selected=UPLOAD),
            gr.Tabs(selected=UPLOAD),
        ),
        [reference.upload, query.upload],
        [pair_context, reference.mode, query.mode, reference.tabs, query.tabs],
        queue=False,
        api_visibility="private",
    )
    verify_on(ready.then)
