"""Verification against K genuine references of the writer, from distances already scored.

Users usually hold several genuine signatures of a writer. A *trial* compares one
query (a genuine signature or a forgery of the writer) with a set of K other
genuine signatures of that writer; the trial's distance is the mean or the
minimum of the K pair distances. Every pair distance needed is one of the
standard protocol's pairs, so no backbone pass and no Sinkhorn run is added:
the distances of an :class:`~dsn.evaluation.evaluate.EvaluationResult` are arranged into a
per-writer matrix and read from there.

Reference sets: every K-subset of the candidate references when there are at
most ``max_sets`` of them, else ``max_sets`` distinct subsets drawn with a seed
fixed by (seed, writer, query). With K = 1 every subset is used, so the
trials are exactly the standard protocol's pairs (each genuine pair once per
orientation, which leaves every rate unchanged) and the EER equals it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from dsn.evaluation.metrics import equal_error_rate, rates_at, roc_auc
from dsn.model.config import REFERENCE_RULES, DetailSemNetConfig

RULES = ("mean", "min", "ratio")
# "ratio" is writer-dependent normalisation: the query's mean distance to the K references divided by the
# references' mean distance among themselves. A writer who signs loosely (references far apart) is
# judged against that spread, not against one threshold for every hand. Needs K >= 2.


@dataclass
class WriterDistances:
    """Pair distances of one writer: genuine x genuine (symmetric) and genuine x forged."""

    genuine_genuine: np.ndarray  # (G, G), NaN on the diagonal
    genuine_forged: np.ndarray  # (G, F)


def writer_distances(images: Sequence, pairs: Sequence, distances: np.ndarray) -> dict[int, WriterDistances]:
    """Arrange scored pairs into per-writer matrices; every needed pair must have been scored."""
    by_writer: dict[int, tuple[list[int], list[int]]] = {}
    for position, image in enumerate(images):
        genuine, forged = by_writer.setdefault(image.writer, ([], []))
        (genuine if image.genuine else forged).append(position)
    lookup = {}
    for pair, distance in zip(pairs, distances, strict=True):
        lookup[(pair.a, pair.b)] = lookup[(pair.b, pair.a)] = float(distance)
    result = {}
    for writer, (genuine, forged) in sorted(by_writer.items()):
        gg = np.full((len(genuine), len(genuine)), np.nan)
        gf = np.full((len(genuine), len(forged)), np.nan)
        try:
            for i, j in combinations(range(len(genuine)), 2):
                gg[i, j] = gg[j, i] = lookup[(genuine[i], genuine[j])]
            for i, g in enumerate(genuine):
                for j, f in enumerate(forged):
                    gf[i, j] = lookup[(g, f)]
        except KeyError as missing:
            a, b = missing.args[0]
            raise ValueError(
                f"multi-reference trials need every genuine-genuine and genuine-forged pair of each writer; "
                f"the pair ({images[a].path.name}, {images[b].path.name}) of writer {writer} was not scored "
                "(use the standard protocol, not a pairs CSV)"
            ) from None
        result[writer] = WriterDistances(gg, gf)
    return result


def reference_sets(candidates: int, k: int, max_sets: int, rng: np.random.Generator) -> np.ndarray:
    """(S, k) indices into ``candidates`` references: all k-subsets, or ``max_sets`` distinct random ones."""
    if math.comb(candidates, k) <= max_sets:
        return np.array(list(combinations(range(candidates), k)), dtype=np.int64).reshape(-1, k)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < max_sets:
        chosen.add(tuple(sorted(rng.choice(candidates, size=k, replace=False).tolist())))
    return np.array(sorted(chosen), dtype=np.int64)


def reference_trials(
    matrices: dict[int, WriterDistances], k: int, rule: str = "mean", max_sets: int = 50, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(distances, is_genuine_query) of every trial with ``k`` references, combined by ``rule``."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    if k < 1:
        raise ValueError(f"the number of references must be at least 1, not {k}")
    if rule == "ratio" and k < 2:
        raise ValueError("the ratio rule compares the references among themselves: it needs at least 2 references")
    combine = np.min if rule == "min" else np.mean
    distances: list[np.ndarray] = []

    def spread(m: WriterDistances, sets: np.ndarray) -> np.ndarray:
        """Mean distance among each set's references (the diagonal is NaN)."""
        within = m.genuine_genuine[sets[:, :, None], sets[:, None, :]]
        return np.maximum(np.nanmean(within.reshape(len(sets), -1), axis=1), 1e-6)

    def score(m: WriterDistances, to_query: np.ndarray, sets: np.ndarray) -> np.ndarray:
        combined = combine(to_query, axis=1)
        return combined / spread(m, sets) if rule == "ratio" else combined

    labels: list[np.ndarray] = []
    for writer, m in matrices.items():
        n_genuine = m.genuine_genuine.shape[0]
        if n_genuine - 1 < k:
            continue  # a genuine query needs k *other* references
        for q in range(n_genuine):
            others = np.delete(np.arange(n_genuine), q)
            sets = others[reference_sets(len(others), k, max_sets, np.random.default_rng([seed, writer, 0, q]))]
            distances.append(score(m, m.genuine_genuine[sets, q], sets))
            labels.append(np.ones(len(sets), dtype=bool))
        for f in range(m.genuine_forged.shape[1]):
            sets = reference_sets(n_genuine, k, max_sets, np.random.default_rng([seed, writer, 1, f]))
            distances.append(score(m, m.genuine_forged[sets, f], sets))
            labels.append(np.zeros(len(sets), dtype=bool))
    if not distances:
        raise ValueError(f"no writer has more than {k} genuine signatures")
    return np.concatenate(distances), np.concatenate(labels)


def multi_reference_metrics(
    images: Sequence,
    pairs: Sequence,
    distances: np.ndarray,
    ks: Sequence[int] = (1, 3, 5),
    rules: Sequence[str] = RULES,
    max_sets: int = 50,
    seed: int = 0,
    config: DetailSemNetConfig | None = None,
) -> list[dict]:
    """EER and ROC AUC per (K, rule): one row each, JSON-friendly.

    With the checkpoint's ``config``, each row whose rule has a val-chosen threshold for K references
    also gets FAR and FRR at that threshold: what the Reference set tab decides.
    """
    matrices = writer_distances(images, pairs, distances)
    rows = []
    for k in ks:
        for rule in rules if k > 1 else rules[:1]:  # with one reference, mean and min coincide
            d, y = reference_trials(matrices, k, rule, max_sets, seed)
            eer, threshold = equal_error_rate(d, y)
            rows.append(
                {
                    "references": int(k),
                    "rule": rule if k > 1 else "single",
                    "eer": eer,
                    "eer_threshold": threshold,
                    "auc": roc_auc(d, y),
                    "n_genuine_trials": int(y.sum()),
                    "n_forged_trials": int((~y).sum()),
                }
            )
            chosen = config.reference_threshold(rule, k) if config is not None and rule in REFERENCE_RULES else None
            if chosen is not None:  # with one reference, the pair threshold
                at = rates_at(d, y, chosen)
                rows[-1].update(shipped_threshold=float(chosen), far=float(at["far"]), frr=float(at["frr"]))
    return rows


def rule_thresholds(
    matrices: dict[int, WriterDistances], ks: Sequence[int], rules: Sequence[str] = REFERENCE_RULES, max_sets: int = 50
) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Each rule's EER threshold for every K the writers allow, and the rows (K, rule, EER, threshold).

    Run on validation writers, this is what a reference-set decision is judged at: the minimum of
    K distances is smaller than one pair's distance, so it needs a threshold of its own.
    K values that no writer has enough genuine signatures for are left out.
    """
    thresholds: dict[str, dict[str, float]] = {rule: {} for rule in rules}
    rows = []
    for k in ks:
        for rule in rules:
            try:
                d, y = reference_trials(matrices, k, rule, max_sets)
            except ValueError:
                continue  # no writer holds k + 1 genuine signatures
            if y.all() or not y.any():
                continue
            eer, threshold = equal_error_rate(d, y)
            thresholds[rule][str(k)] = float(threshold)
            rows.append({"references": int(k), "rule": rule, "eer": eer, "eer_threshold": float(threshold)})
    return thresholds, rows


def format_multi_reference(rows: Sequence[dict]) -> str:
    lines = ["references  rule    EER       AUC     trials (genuine / forged)   at the shipped threshold"]
    for r in rows:
        shipped = f"   {r['shipped_threshold']:.3f}: FAR {100 * r['far']:5.2f} %, FRR {100 * r['frr']:5.2f} %" if "far" in r else ""
        lines.append(
            f"{r['references']:>10}  {r['rule']:<6} {100 * r['eer']:6.2f} %  {r['auc']:.4f}  "
            f"{r['n_genuine_trials']:,} / {r['n_forged_trials']:,}{shipped}"
        )
    return "\n".join(lines)
