"""The model calls behind the UI and the API, in one place, with user errors made readable.

Everything that runs the network goes through here, so that ZeroGPU's
``spaces.GPU`` wraps exactly the GPU work, and so that a bad upload always
turns into a ``gr.Error`` with the preprocessing message (the app keeps
serving) instead of a stack trace.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr
import numpy as np

from dsn.data.preprocess import PreprocessError
from dsn.inference import PairAnalysis, analyze_pair
from dsn.inspect.attribution import Attribution, attribute
from dsn.inspect.reference_set import ReferenceSetResult, verify_against_references
from dsn.model.detailsemnet import DetailSemNet
from dsn.ui.runtime import gpu, release_memory


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn what the visitor caused (bad image, missing input, bad option) into a ``gr.Error``."""
    try:
        yield
    except gr.Error:
        raise
    except (PreprocessError, ValueError, PermissionError) as error:  # PermissionError: files linking out of the data roots
        raise gr.Error(str(error), title="Cannot use this input", print_exception=False) from error


@gpu
def analyze_releasing_memory(model: DetailSemNet, reference: object, query: object, threshold: float | None = None) -> PairAnalysis:
    """Preprocess + one backbone pass over both images (``dsn.inference.analyze_pair``), then frees what the run held."""
    try:
        return analyze_pair(model, reference, query, threshold=threshold)
    finally:
        release_memory()


@gpu
def explain(
    model: DetailSemNet,
    analysis: PairAnalysis,
    method: str,
    target: str,
    side: str,
    steps: int,
    progress: Callable[[float, str], None] | None = None,
) -> Attribution:
    """One attribution map (see ``dsn.inspect.attribution.attribute``)."""
    return attribute(model, analysis, method, target=target, side=side, steps=int(steps), progress=progress)


@gpu
def compare_set(model: DetailSemNet, query: str, references: list[str], threshold: float | None) -> ReferenceSetResult:
    """The query against every reference (``dsn.inspect.reference_set``), each named by its file name."""
    try:
        names = [Path(path).name for path in references]
        return verify_against_references(model, query, references, threshold=threshold, names=names)
    finally:
        release_memory()


def require_file(value: object, name: str) -> str | np.ndarray:
    """A file input of the API: a path (gr.File gives str) or raise the 'missing' message."""
    if value is None or (isinstance(value, str) and not value):
        raise PreprocessError(f"No {name} image was given; both a reference and a query signature are needed.")
    return value if isinstance(value, np.ndarray) else str(value)


class AnalysisCache:
    """The last few API analyses, keyed by the two files' contents, within ``max_bytes``.

    A script that asks /verify, then /correspondences, then /attribute for the
    same pair pays for the backbone once. Thresholds are applied on top. An
    analysis weighs about 11 MB at 224 px plus its two uploaded originals, so
    the bound is in bytes, not entries; the newest analysis is always kept.
    """

    def __init__(self, max_bytes: int = 96 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], PairAnalysis] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(item.nbytes for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _digest(path: str) -> str:
        try:
            return hashlib.sha1(Path(path).read_bytes()).hexdigest()
        except OSError as error:
            raise PreprocessError(f"'{Path(path).name}' could not be read.") from error

    def get(self, model: DetailSemNet, reference: str, query: str) -> PairAnalysis:
        key = (self._digest(reference), self._digest(query))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        result = analyze_releasing_memory(model, reference, query)
        with self._lock:
            self._items[key] = result
            total = sum(item.nbytes for item in self._items.values())
            while len(self._items) > 1 and total > self.max_bytes:
                total -= self._items.popitem(last=False)[1].nbytes
        return result
