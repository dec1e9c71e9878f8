"""Verification metrics on pair distances.

Convention everywhere: a *lower* distance means "more likely the same writer",
label 1 marks a genuine-genuine pair (positive) and label 0 a genuine-forged
pair (negative), and a pair is accepted iff ``distance <= threshold``.

Everything is vectorised numpy so that evaluation and the app need no
scikit-learn at runtime (scikit-learn is only used by the tests to cross-check).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dsn.model.detailsemnet import accepts

ArrayLike = Sequence[float] | np.ndarray


def _validate(distances: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return float64 distances and bool labels; reject input where rates are undefined."""
    d = np.asarray(distances, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if d.shape != y.shape:
        raise ValueError(f"distances ({d.size}) and labels ({y.size}) differ in length")
    if not np.all(np.isfinite(d)):
        raise ValueError("distances must be finite (no NaN or inf)")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 1 (genuine pair) or 0 (forged pair)")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("need at least one genuine (1) and one forged (0) pair")
    return d, y


def _accept_nothing_threshold(d: np.ndarray) -> float:
    """A finite threshold just below every distance, so JSON can hold it."""
    return float(np.nextafter(d.min(), -np.inf))


def _sweep(d: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accepted-positive and accepted-negative counts at every distinct threshold.

    Threshold k accepts every pair with distance <= thresholds[k]; index 0 is a
    threshold below all distances (accepts nothing), the last accepts all.
    """
    order = np.argsort(d, kind="mergesort")
    d_sorted, y_sorted = d[order], y[order]
    cum_pos = np.cumsum(y_sorted)
    cum_neg = np.cumsum(~y_sorted)
    # Last position of each run of equal distances: ties are accepted together.
    run_ends = np.flatnonzero(np.r_[d_sorted[1:] != d_sorted[:-1], True])
    thresholds = np.r_[_accept_nothing_threshold(d), d_sorted[run_ends]]
    accepted_pos = np.r_[0, cum_pos[run_ends]]
    accepted_neg = np.r_[0, cum_neg[run_ends]]
    return thresholds, accepted_pos, accepted_neg


def roc_points(distances: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC as ``(far, frr, thresholds)``, one point per distinct threshold, ascending.

    far[k] = share of forged pairs with distance <= thresholds[k] (false accepts);
    frr[k] = share of genuine pairs with distance > thresholds[k] (false rejects).
    The true-positive rate is ``1 - frr``. thresholds[0] lies just below the
    smallest distance (far 0, frr 1); the last is the largest distance (far 1, frr 0).
    """
    d, y = _validate(distances, labels)
    thresholds, accepted_pos, accepted_neg = _sweep(d, y)
    far = accepted_neg / float((~y).sum())
    frr = 1.0 - accepted_pos / float(y.sum())
    return far, frr, thresholds


def _midpoint(low: float, high: float) -> float:
    """A threshold strictly inside [low, high) so the rates at `low` still hold."""
    middle = low + (high - low) / 2.0
    return float(middle if middle < high else low)


def equal_error_rate(distances: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """``(eer, threshold)`` where FAR equals FRR.

    FAR rises and FRR falls with the threshold; the EER is read where the two
    cross, interpolating linearly between the two neighbouring ROC points (the
    usual convention, since the empirical curves are step functions). When
    FAR == FRR holds exactly at a point, the threshold is the middle of the
    distance interval over which that holds, which is the most robust choice.
    """
    d, y = _validate(distances, labels)
    thresholds, accepted_pos, accepted_neg = _sweep(d, y)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    far = accepted_neg / n_neg
    # (FAR - FRR) * n_pos * n_neg in exact integers, so equality is not lost to rounding.
    gap = accepted_neg * n_pos - (n_pos - accepted_pos) * n_neg  # < 0 first, > 0 last
    cross = int(np.argmax(gap >= 0))
    if gap[cross] == 0:
        last_equal = cross + int(np.argmax(gap[cross:] > 0)) - 1
        return float(far[cross]), _midpoint(thresholds[cross], thresholds[last_equal + 1])
    before = cross - 1
    weight = -gap[before] / (gap[cross] - gap[before])
    eer = far[before] + weight * (far[cross] - far[before])
    threshold = thresholds[before] + weight * (thresholds[cross] - thresholds[before])
    return float(eer), float(threshold)


def roc_auc(distances: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC (trapezoids, so ties count one half) = P(d_genuine < d_forged)."""
    far, frr, _ = roc_points(distances, labels)
    return float(np.trapezoid(1.0 - frr, far))


def rates_at(distances: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, float | int]:
    """Counts and rates when accepting iff ``distance <= threshold``."""
    d, y = _validate(distances, labels)
    accepted = accepts(d, threshold)
    tp = int(np.sum(accepted & y))
    fp = int(np.sum(accepted & ~y))
    fn = int(np.sum(~accepted & y))
    tn = int(np.sum(~accepted & ~y))
    return {
        "threshold": float(threshold),
        "far": fp / (fp + tn),
        "frr": fn / (fn + tp),
        "accuracy": (tp + tn) / d.size,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def best_accuracy(distances: ArrayLike, labels: ArrayLike) -> tuple[float, float]:
    """``(accuracy, threshold)`` of the best threshold on these very pairs.

    This is how the papers report accuracy, and it is optimistic: the threshold
    is chosen on the set it is scored on. Label it so; a fair accuracy uses a
    threshold chosen on validation writers. Ties go to the lowest threshold, and
    the threshold is placed mid-gap to the next distance.
    """
    d, y = _validate(distances, labels)
    thresholds, accepted_pos, accepted_neg = _sweep(d, y)
    correct = accepted_pos + ((~y).sum() - accepted_neg)
    best = int(np.argmax(correct))
    if best + 1 < thresholds.size:
        threshold = _midpoint(thresholds[best], thresholds[best + 1])
    else:
        threshold = float(thresholds[best])
    return float(correct[best] / d.size), threshold


def summarize(distances: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, float | int | str]:
    """Every metric above as JSON-friendly numbers, for reports and model cards.

    ``threshold`` should come from validation writers; ``best_accuracy`` is
    labelled as chosen on this same set so nobody mistakes it for a fair score.
    """
    d, y = _validate(distances, labels)
    eer, eer_threshold = equal_error_rate(d, y)
    oracle_accuracy, oracle_threshold = best_accuracy(d, y)
    return {
        **rates_at(d, y, threshold),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "auc": roc_auc(d, y),
        "best_accuracy": oracle_accuracy,
        "best_accuracy_threshold": oracle_threshold,
        "best_accuracy_note": "threshold chosen on this same set (optimistic, as in the papers)",
        "n_genuine_pairs": int(y.sum()),
        "n_forged_pairs": int((~y).sum()),
    }


SPREAD_PERCENTS = tuple(range(0, 101, 5))


def distance_spread(distances: ArrayLike, labels: ArrayLike) -> dict[str, list[float]]:
    """Percentiles (0, 5, ..., 100) of the genuine and of the forged distances: how the two kinds of pair spread.

    Stored with a checkpoint, they let a verdict say how usual its distance is for each kind of pair,
    rather than only how far it lies from the threshold.
    """
    d, y = _validate(distances, labels)
    return {
        "percent": [float(p) for p in SPREAD_PERCENTS],
        "genuine": [float(v) for v in np.percentile(d[y], SPREAD_PERCENTS)],
        "forged": [float(v) for v in np.percentile(d[~y], SPREAD_PERCENTS)],
    }


def share_at_most(spread: dict[str, list[float]], kind: str, distance: float) -> float:
    """Fraction (0-1) of ``kind`` ("genuine" or "forged") pairs with a distance <= ``distance``, read off the percentiles."""
    values, percent = np.asarray(spread[kind], float), np.asarray(spread["percent"], float)
    return float(np.interp(distance, values, percent, left=0.0, right=100.0)) / 100.0
