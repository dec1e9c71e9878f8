"""Verifying one query against several genuine references of the same writer.

One genuine reference shows only one of the ways a person signs; checking a
query against a handful of them is how a bank or a forensic examiner works.
Each image is embedded once (one backbone pass over query + references), then
every reference is compared with the query, and two combined decisions are
reported: by the *mean* distance (robust: one odd reference cannot carry the
decision) and by the *minimum* distance (lenient: the closest specimen decides,
so more references can only make acceptance easier).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsn.data.handwriting import handwriting_warnings
from dsn.data.preprocess import Preprocessed
from dsn.inference import PairAnalysis, compare, embed_many
from dsn.loading import is_untrained
from dsn.model.detailsemnet import DetailSemNet, Verification, accepts
from dsn.model.tensors import map_tensors

MAX_REFERENCES = 32  # bounds memory and time of one request
RULES = ("mean", "min")


@dataclass
class ReferenceSetResult:
    """Distances of one query to each reference; ``verification`` is batched over references."""

    query: Preprocessed
    references: list[Preprocessed]
    names: list[str]
    verification: Verification  # item i compares references[i] (as reference) with the query; CPU float32
    threshold: float
    untrained: bool
    seconds: float

    @property
    def distances(self) -> np.ndarray:
        return self.verification.distance.numpy().astype(np.float64)

    @property
    def mean_distance(self) -> float:
        return float(self.distances.mean())

    @property
    def min_distance(self) -> float:
        return float(self.distances.min())

    @property
    def closest(self) -> int:
        """Index of the reference nearest to the query."""
        return int(np.argmin(self.distances))

    def accepted(self, rule: str) -> bool:
        """Combined decision: accept as genuine iff the rule's distance <= threshold."""
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        return bool(accepts(self.mean_distance if rule == "mean" else self.min_distance, self.threshold))

    def with_threshold(self, threshold: float) -> ReferenceSetResult:
        """The same distances decided at another threshold (no model run)."""
        return dataclasses.replace(self, threshold=float(threshold))

    def rows(self) -> list[dict]:
        """One row per reference, for tables and JSON."""
        v = self.verification
        return [
            {
                "reference": self.names[i],
                "distance": float(v.distance[i]),
                "global_distance": float(v.global_distance[i]),
                "structural_distance": float(v.structural_distance[i]),
                "accepted": bool(accepts(v.distance[i], self.threshold)),
            }
            for i in range(len(self.references))
        ]

    def summary(self) -> dict:
        return {
            "threshold": self.threshold,
            "n_references": len(self.references),
            "mean_distance": self.mean_distance,
            "min_distance": self.min_distance,
            "closest_reference": self.names[self.closest],
            "accepted_by_mean": self.accepted("mean"),
            "accepted_by_min": self.accepted("min"),
            "untrained": self.untrained,
            "references": self.rows(),
            "input_warnings": {
                "query": handwriting_warnings(self.query.image),
                "references": {name: handwriting_warnings(r.image) for name, r in zip(self.names, self.references, strict=True)},
            },
        }

    def pair(self, index: int) -> PairAnalysis:
        """Reference ``index`` and the query as a ``PairAnalysis`` (no DSI maps), for the pair figures."""
        if not 0 <= index < len(self.references):
            raise ValueError(f"reference index must be in [0, {len(self.references)}), got {index}")
        return PairAnalysis(
            reference=self.references[index],
            query=self.query,
            verification=self.verification[index],
            threshold=self.threshold,
            maps_ref=[],
            maps_query=[],
            seconds=self.seconds,
            untrained=self.untrained,
        )


def _name(source: object, fallback: str) -> str:
    return Path(source).name if isinstance(source, (str, Path)) else fallback


def verify_against_references(
    model: DetailSemNet,
    query: object,
    references: Sequence[object],
    threshold: float | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> ReferenceSetResult:
    """Compare ``query`` with every reference; each image goes through the backbone once.

    Sources are anything ``preprocess`` accepts (path, bytes, array) or a
    ``Preprocessed`` image; ``PreprocessError`` names the file that failed.
    Embedding and scoring go through ``dsn.inference``, so a reference's distance here
    equals the one the pair view shows, at every precision.
    """
    references = list(references)
    if not references:
        raise ValueError("Give at least one genuine reference signature.")
    if len(references) > MAX_REFERENCES:
        raise ValueError(f"{len(references)} references given; at most {MAX_REFERENCES} are compared at once.")
    names = list(names) if names is not None else [_name(r, f"reference {i + 1}") for i, r in enumerate(references)]
    if len(names) != len(references):
        raise ValueError("names and references differ in length")
    start = time.perf_counter()
    labels = ["Query image", *(f"Reference {i + 1} of {len(references)}" for i in range(len(references)))]
    inputs, embedded = embed_many(model, [query, *references], batch_size=batch_size, labels=labels)
    n = len(references)
    q = embedded[0]
    query_rows = map_tensors(q, lambda t: t.expand(n, *t.shape[1:]))
    verification = compare(model, embedded[1:], query_rows)
    return ReferenceSetResult(
        query=inputs[0],
        references=inputs[1:],
        names=names,
        verification=verification,
        threshold=float(model.config.threshold if threshold is None else threshold),
        untrained=is_untrained(model),
        seconds=time.perf_counter() - start,
    )
