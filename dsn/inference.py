"""The one inference path: images -> embeddings -> verification, used by every caller.

The CLI, the app's views and JSON API, reference sets, dataset evaluation and the
explorer all embed through :func:`embed` and score through :func:`compare`, so a pair
gets the same distance wherever it is shown. The backbone's number format follows the one
inference policy of ``dsn.precision`` (``precision_for``: bf16 for datasets on bf16 CPUs and on
CUDA, float32 for a single pair; ``set_precision`` or ``DSN_PRECISION`` force one); the matching
always runs in float32 (Sinkhorn at a small epsilon needs it), and results live on the CPU in
float32, ready for numpy and JSON. Attributions differentiate the model in float32 whatever the policy.

A verification is reported with one schema (:meth:`PairAnalysis.summary`):
``margin = threshold - distance``, so a positive margin means accepted as genuine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dsn.data.handwriting import handwriting_warnings
from dsn.data.preprocess import Preprocessed, PreprocessError, preprocess
from dsn.loading import is_untrained
from dsn.model.detailsemnet import DetailSemNet, Embedding, Verification, accepts
from dsn.model.dsi import DSIMaps, recording_dsi_maps
from dsn.model.tensors import array_bytes, map_tensors, to_cpu_float
from dsn.precision import inference_autocast

SIDES = ("reference", "query")


# ----------------------------------------------------------------------------- embedding and scoring
@torch.inference_mode()
def embed(
    model: DetailSemNet,
    pixels: torch.Tensor,
    batch_size: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    bulk: bool = False,
) -> Embedding:
    """Embed (B, 1, H, W) model inputs in batches; float32 on the CPU. ``bulk``: part of a dataset (see ``precision_for``)."""
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or max(1, len(pixels))
    parts = []
    for first in range(0, len(pixels), batch_size):
        with inference_autocast(device, bulk):
            part = model.embed(pixels[first : first + batch_size].to(device))
        parts.append(map_tensors(part, to_cpu_float))
        if on_batch is not None:
            on_batch(min(first + batch_size, len(pixels)), len(pixels))
    return Embedding.cat(parts)


@torch.inference_mode()
def compare(model: DetailSemNet, reference: Embedding, query: Embedding) -> Verification:
    """Score pairs (reference[i], query[i]) in float32; the result lives on the CPU."""
    model.eval()
    device = next(model.parameters()).device

    v = model.compare(reference.to(device, torch.float32), query.to(device, torch.float32))
    if not torch.isfinite(v.distance).all():
        raise ValueError("the model produced a non-finite distance (NaN or infinity): its weights or the input are broken")
    return v.cpu()


def load_input(model: DetailSemNet, source: object, label: str | None = None) -> Preprocessed:
    """A source (path, bytes, array, PIL image or ``Preprocessed``) as this model's input.

    With a ``label`` (e.g. "Reference image"), a refusal starts with it, so it says which image it is about.
    """
    if isinstance(source, Preprocessed):
        return source
    try:
        return preprocess(source, size=model.config.img_size, mode=model.config.preprocessing)
    except PreprocessError as error:
        if label is None:
            raise
        raise PreprocessError(f"{label}: {error}") from error


# ----------------------------------------------------------------------------- one pair
@dataclass
class PairAnalysis:
    """A verified pair (batch of one) with the DSI maps of both images."""

    reference: Preprocessed
    query: Preprocessed
    verification: Verification  # batch of 1, tensors on the CPU in float32
    threshold: float
    maps_ref: list[DSIMaps]  # one per block, batch item 0 (the reference)
    maps_query: list[DSIMaps]
    seconds: float  # wall time of preprocessing + model
    untrained: bool  # the model has no trained weights: its verdicts mean nothing
    threshold_source: str = "checkpoint"  # or "given": a threshold the caller chose
    input_warnings: dict[str, list[str]] | None = None  # per side, from dsn.data.handwriting; None: not checked yet

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.verification.grid)

    @property
    def cell(self) -> tuple[float, float]:
        """Model pixels per token (x, y): 32 at 224 px."""
        size = self.reference.image.shape
        return size[1] / self.grid[1], size[0] / self.grid[0]

    @property
    def plan(self) -> np.ndarray:
        """(N, N) mass moved from reference token i to query token j; zero on non-ink tokens."""
        return self.verification.plan[0].numpy()

    @property
    def cost(self) -> np.ndarray:
        """(N, N) cosine cost 1 - cos between token features."""
        return self.verification.transport.cost[0].numpy()

    def preprocessed(self, side: str) -> Preprocessed:
        return self.reference if check_side(side) == "reference" else self.query

    @property
    def nbytes(self) -> int:
        """Memory its arrays hold (the uploaded originals and DSI maps dominate), for caches bounded by bytes."""
        return array_bytes(self)

    def ink(self, side: str) -> np.ndarray:
        """(N,) bool: tokens that take part in the matching."""
        mask = self.verification.mask_ref if check_side(side) == "reference" else self.verification.mask_query
        return mask[0].numpy().astype(bool)

    def maps(self, side: str) -> list[DSIMaps]:
        return self.maps_ref if check_side(side) == "reference" else self.maps_query

    def token_label(self, index: int) -> str:
        row, col = divmod(int(index), self.grid[1])
        return f"({row}, {col})"

    def with_threshold(self, threshold: float | None) -> PairAnalysis:
        """The same analysis judged at another threshold (a shallow copy: the tensors are shared)."""
        if threshold is None or checked_threshold(threshold) == self.threshold:
            return self
        return dataclasses.replace(self, threshold=checked_threshold(threshold), threshold_source="given")

    def summary(self) -> dict:
        """The verification schema: every caller (CLI, JSON API, app) reports these keys."""
        record = verification_record(self.verification, 0, self.threshold, self.threshold_source, self.untrained, self.seconds)
        record["input_warnings"] = self.input_warnings if self.input_warnings is not None else input_warnings(self.reference, self.query)
        return record


def verification_record(v: Verification, index: int, threshold: float, threshold_source: str, untrained: bool, seconds: float) -> dict:
    """Pair ``index`` of ``v`` as JSON-ready numbers; ``margin = threshold - distance`` (> 0: accepted)."""
    distance = float(v.distance[index])
    structural = float(v.structural_distance[index])
    return {
        "verdict": "genuine" if accepts(distance, threshold) else "forged",
        "accepted": bool(accepts(distance, threshold)),
        "distance": distance,
        "global_distance": float(v.global_distance[index]),
        "structural_distance": structural,
        "structural_weight": float(v.structural_weight),
        "weighted_structural_distance": float(v.structural_weight) * structural,
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "margin": float(threshold) - distance,
        "ink_tokens_reference": int(v.mask_ref[index].sum()),
        "ink_tokens_query": int(v.mask_query[index].sum()),
        "tokens": int(v.mask_ref.shape[1]),
        "marginal_error": float(v.transport.marginal_error[index]),
        "seconds": float(seconds),
        "untrained": bool(untrained),
    }


def input_warnings(reference: Preprocessed, query: Preprocessed) -> dict[str, list[str]]:
    """Why either input may not be a handwritten signature (checked once per pair, not per re-threshold)."""
    return {side: [*image.notes, *handwriting_warnings(image.image)] for side, image in zip(SIDES, (reference, query), strict=True)}


def checked_threshold(threshold: float) -> float:
    """A decision threshold as a float; NaN or infinite thresholds would decide every pair the same way."""
    value = float(threshold)
    if not math.isfinite(value):
        raise ValueError(f"the threshold must be a finite number, got {threshold!r}")
    return value


def check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


def _split_maps(maps: list[DSIMaps], item: int) -> list[DSIMaps]:
    return [map_tensors(m, lambda t: to_cpu_float(t[item : item + 1])) for m in maps]


def analyze_pair(
    model: DetailSemNet, reference_source: object, query_source: object, threshold: float | None = None, with_maps: bool = True
) -> PairAnalysis:
    """Preprocess both images, embed both in one backbone pass, compare them (DSI maps optional).

    A threshold equal to the checkpoint's at the three decimals the app shows is the checkpoint's
    own: the app's slider starts there, and its reports must not call it a user's choice.
    """
    start = time.perf_counter()
    if threshold is not None and round(float(threshold), 3) == round(float(model.config.threshold), 3):
        threshold = None
    reference, query = load_input(model, reference_source, "Reference image"), load_input(model, query_source, "Query image")
    with recording_dsi_maps(model.backbone) if with_maps else contextlib.nullcontext([]) as maps:
        both = embed(model, torch.cat([reference.tensor(), query.tensor()]))
    verification = compare(model, both[0], both[1])
    return PairAnalysis(
        reference=reference,
        query=query,
        verification=verification,
        threshold=checked_threshold(model.config.threshold if threshold is None else threshold),
        maps_ref=_split_maps(maps, 0) if maps else [],
        maps_query=_split_maps(maps, 1) if maps else [],
        seconds=time.perf_counter() - start,
        untrained=is_untrained(model),
        threshold_source="checkpoint" if threshold is None else "given",
        input_warnings=input_warnings(reference, query),
    )


def verify(model: DetailSemNet, reference: object, query: object, threshold: float | None = None) -> dict:
    """The verdict on one pair as the verification schema, plus the two inputs' names when they are files."""
    analysis = analyze_pair(model, reference, query, threshold, with_maps=False)
    named = {side: str(source) for side, source in zip(SIDES, (reference, query), strict=True) if isinstance(source, str | Path)}
    return {**analysis.summary(), **named}


def embed_many(
    model: DetailSemNet, sources: Sequence[object], batch_size: int = 32, labels: Sequence[str] | None = None
) -> tuple[list[Preprocessed], Embedding]:
    """Preprocess and embed several images (e.g. a reference set), each through the backbone once.

    ``labels`` name the images in refusals (default "Image 2 of 5").
    """
    labels = labels or [f"Image {i + 1} of {len(sources)}" for i in range(len(sources))]
    inputs = [load_input(model, source, label) for source, label in zip(sources, labels, strict=True)]
    return inputs, embed(model, torch.cat([p.tensor() for p in inputs]), batch_size=batch_size)
