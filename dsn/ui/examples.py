"""The example gallery under the Verify button, with each pair's ground truth said before the verdict.

A wrong verdict on an example is then visible as wrong instead of being taught as right.
"""

from __future__ import annotations

from pathlib import Path

from dsn.data.examples import read_examples
from dsn.ui.context import PairContext

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
