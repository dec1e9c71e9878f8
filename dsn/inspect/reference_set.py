"""Verifying one query against several genuine references of the same writer.

One genuine reference shows only one of the ways a person signs; checking a
query against a handful of them is how a bank or a forensic examiner works.
Each image is embedded once (one backbone pass over query + references), then
every reference is compared with the query, and two combined decisions are
reported: by the *mean* distance (robust: one odd reference cannot carry the
decision) and by the *minimum* distance (lenient: the closest specimen decides).

Each rule is judged at its own threshold, chosen on validation writers for that
rule and that number of references (``calibrate``): the minimum of five
distances sits well below one pair's distance, and judged at the pair threshold
it accepted about three times the forgeries. A threshold given by the caller
(the app's slider) moves every rule's threshold by the same amount.
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
from dsn.model.config import REFERENCE_RULES, DetailSemNetConfig
from dsn.model.detailsemnet import DetailSemNet, Verification, accepts
from dsn.model.tensors import map_tensors

MAX_REFERENCES = 32  # bounds memory and time of one request
RULES = REFERENCE_RULES


@dataclass
class ReferenceSetResult:
    """Distances of one query to each reference; ``verification`` is batched over references."""

    query: Preprocessed
    references: list[Preprocessed]
    names: list[str]
    verification: Verification  # item i compares references[i] (as reference) with the query; CPU float32
    threshold: float  # the pair threshold: each reference's own accepted/rejected
    untrained: bool
    seconds: float
    # rule -> its val-chosen threshold minus the pair threshold, for this number of references; empty: not calibrated
    offsets: dict[str, float] = dataclasses.field(default_factory=dict)
    rule: str = "mean"  # the rule that decides

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

    @property
    def calibrated(self) -> bool:
        """Whether the rules have thresholds chosen on val writers for this many references."""
        return bool(self.offsets) or len(self.references) == 1

    def rule_distance(self, rule: str) -> float:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        return self.mean_distance if rule == "mean" else self.min_distance

    def rule_threshold(self, rule: str) -> float:
        """The threshold ``rule`` is judged at (the pair threshold where no calibration exists)."""
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        return self.threshold + self.offsets.get(rule, 0.0)

    def accepted(self, rule: str | None = None) -> bool:
        """Combined decision by ``rule`` (default: the deciding rule): its distance <= its threshold."""
        rule = self.rule if rule is None else rule
        return bool(accepts(self.rule_distance(rule), self.rule_threshold(rule)))

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
            "decided_by": self.rule,
            "accepted": self.accepted(),
            "rules": {
                rule: {"distance": self.rule_distance(rule), "threshold": self.rule_threshold(rule), "accepted": self.accepted(rule)}
                for rule in RULES
            },
            "rule_thresholds": self.threshold_source(),
            "untrained": self.untrained,
            "references": self.rows(),
            "input_warnings": {
                "query": handwriting_warnings(self.query.image),
                "references": {name: handwriting_warnings(r.image) for name, r in zip(self.names, self.references, strict=True)},
            },
        }

    def threshold_source(self) -> str:
        """Where the rules' thresholds come from, in words."""
        if len(self.references) == 1:
            return "one reference: the pair threshold"
        if self.calibrated:
            return f"chosen on validation writers for each rule with {len(self.references)} references"
        return "the pair threshold: this checkpoint has no thresholds chosen for several references (python -m dsn calibrate)"

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


def rule_offsets(config: DetailSemNetConfig, references: int) -> dict[str, float]:
    """rule -> (its val-chosen threshold for ``references`` distances) - (the pair threshold); {} if any is missing."""
    chosen = {rule: config.reference_threshold(rule, references) for rule in RULES}
    if references <= 1 or any(value is None for value in chosen.values()):
        return {}
    return {rule: float(value) - config.threshold for rule, value in chosen.items()}


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
    pair_threshold = float(model.config.threshold if threshold is None else threshold)
    return ReferenceSetResult(
        offsets=rule_offsets(model.config, n),
        rule=model.config.reference_rule,
        query=inputs[0],
        references=inputs[1:],
        names=names,
        verification=verification,
        threshold=pair_threshold,
        untrained=is_untrained(model),
        seconds=time.perf_counter() - start,
    )
