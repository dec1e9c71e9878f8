"""Metrics cross-checked against scikit-learn and against plain counting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import brentq
from sklearn.metrics import roc_auc_score, roc_curve

from dsn.evaluation.metrics import (
    best_accuracy,
    equal_error_rate,
    rates_at,
    roc_auc,
    roc_points,
    summarize,
)


def random_scores(seed: int, n_pos: int = 300, n_neg: int = 500, rounded: bool = False):
    """Overlapping genuine/forged distance clouds; `rounded` forces many ties."""
    rng = np.random.default_rng(seed)
    d = np.r_[rng.normal(0.4, 0.15, n_pos), rng.normal(0.7, 0.2, n_neg)]
    if rounded:
        d = np.round(d, 1)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    perm = rng.permutation(d.size)
    return d[perm], y[perm]


def reference_eer(d: np.ndarray, y: np.ndarray) -> float:
    """EER the common way: root of 1 - x - TPR(x) on sklearn's ROC polyline."""
    fpr, tpr, _ = roc_curve(y, -d, drop_intermediate=False)
    return brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0, xtol=1e-13)


def count_rates(d, y, threshold):
    """Direct, loop-based counting with no shared code."""
    tp = fp = tn = fn = 0
    for distance, label in zip(d, y):
        accepted = distance <= threshold
        if label == 1:
            tp, fn = tp + accepted, fn + (not accepted)
        else:
            fp, tn = fp + accepted, tn + (not accepted)
    return tp, fp, tn, fn


CASES = [random_scores(seed) for seed in range(4)] + [random_scores(seed, rounded=True) for seed in range(10, 13)]


@pytest.mark.parametrize("d, y", CASES)
def test_roc_points_match_sklearn(d, y):
    far, frr, thresholds = roc_points(d, y)
    fpr, tpr, sk_thresholds = roc_curve(y, -d, drop_intermediate=False)
    np.testing.assert_allclose(far, fpr, atol=1e-15)
    np.testing.assert_allclose(1.0 - frr, tpr, atol=1e-15)
    np.testing.assert_array_equal(thresholds[1:], -sk_thresholds[1:])
    assert thresholds[0] < d.min()
    assert np.all(np.diff(thresholds) > 0)


@pytest.mark.parametrize("d, y", CASES)
def test_auc_matches_sklearn(d, y):
    assert roc_auc(d, y) == pytest.approx(roc_auc_score(y, -d), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("d, y", CASES)
def test_eer_matches_independent_interpolation(d, y):
    eer, threshold = equal_error_rate(d, y)
    assert eer == pytest.approx(reference_eer(d, y), abs=1e-6)
    rates = rates_at(d, y, threshold)
    # At the returned threshold the EER lies between the actual FAR and FRR.
    assert min(rates["far"], rates["frr"]) - 1e-12 <= eer <= max(rates["far"], rates["frr"]) + 1e-12


@pytest.mark.parametrize("d, y", CASES)
def test_rates_at_match_direct_counting(d, y):
    for threshold in (d.min() - 1, 0.3, 0.5, float(np.median(d)), 0.7, d.max()):
        rates = rates_at(d, y, threshold)
        tp, fp, tn, fn = count_rates(d, y, threshold)
        assert (rates["tp"], rates["fp"], rates["tn"], rates["fn"]) == (tp, fp, tn, fn)
        assert rates["far"] == pytest.approx(fp / (fp + tn))
        assert rates["frr"] == pytest.approx(fn / (fn + tp))
        assert rates["accuracy"] == pytest.approx((tp + tn) / len(d))


@pytest.mark.parametrize("d, y", CASES)
def test_best_accuracy_is_the_brute_force_maximum(d, y):
    accuracy, threshold = best_accuracy(d, y)
    candidates = np.r_[d.min() - 1, np.unique(d)]
    brute = max((tp + tn) / len(d) for tp, _, tn, _ in (count_rates(d, y, t) for t in candidates))
    assert accuracy == pytest.approx(brute, abs=1e-15)
    assert rates_at(d, y, threshold)["accuracy"] == pytest.approx(accuracy, abs=1e-15)


def test_perfect_separation_has_zero_eer_and_mid_gap_thresholds():
    d, y = [0.1, 0.2, 0.3, 0.4], [1, 1, 0, 0]
    assert equal_error_rate(d, y) == pytest.approx((0.0, 0.25))
    assert roc_auc(d, y) == 1.0
    assert best_accuracy(d, y) == pytest.approx((1.0, 0.25))


def test_hand_made_crossing_and_auc():
    # genuine at 1, 2, 4; forged at 3, 5, 6: FAR = FRR = 1/3 for thresholds in [3, 4).
    d, y = [1, 2, 3, 4, 5, 6], [1, 1, 0, 1, 0, 0]
    eer, threshold = equal_error_rate(d, y)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(3.5)
    assert roc_auc(d, y) == pytest.approx(8 / 9)
    assert best_accuracy(d, y) == pytest.approx((5 / 6, 2.5))


def test_inverted_scores_give_eer_one_and_auc_zero():
    d, y = [3, 4, 1, 2], [1, 1, 0, 0]
    assert equal_error_rate(d, y)[0] == pytest.approx(1.0)
    assert roc_auc(d, y) == 0.0


def test_all_tied_distances_are_chance():
    d, y = [0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]
    eer, threshold = equal_error_rate(d, y)
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.5)
    assert roc_auc(d, y) == 0.5
    assert roc_auc_score(y, -np.asarray(d)) == 0.5


def test_ties_across_classes_count_half_in_auc():
    d, y = [0.1, 0.2, 0.2, 0.3], [1, 1, 0, 0]
    assert roc_auc(d, y) == pytest.approx(roc_auc_score(y, -np.asarray(d)))
    assert roc_auc(d, y) == pytest.approx(0.875)


def test_summarize_is_json_friendly_and_consistent():
    d, y = random_scores(5)
    summary = summarize(d, y, threshold=0.55)
    json.loads(json.dumps(summary, allow_nan=False))
    assert summary["eer"] == pytest.approx(equal_error_rate(d, y)[0])
    assert summary["auc"] == pytest.approx(roc_auc_score(y, -d))
    assert summary["far"] == rates_at(d, y, 0.55)["far"]
    assert summary["n_genuine_pairs"] == 300 and summary["n_forged_pairs"] == 500


@pytest.mark.parametrize(
    "d, y",
    [
        ([0.1, 0.2], [1, 1]),
        ([0.1, 0.2], [0, 0]),
        ([0.1, float("nan")], [1, 0]),
        ([0.1, 0.2], [1, 2]),
        ([0.1], [1, 0]),
    ],
)
def test_invalid_input_is_rejected(d, y):
    with pytest.raises(ValueError):
        equal_error_rate(d, y)


def test_the_distance_spread_reads_back_the_shares_it_was_made_from() -> None:
    from dsn.evaluation.metrics import distance_spread, share_at_most

    rng = np.random.default_rng(0)
    genuine, forged = rng.normal(0.3, 0.05, 4000), rng.normal(0.6, 0.1, 4000)
    spread = distance_spread(np.concatenate([genuine, forged]), np.r_[np.ones(4000), np.zeros(4000)])
    assert spread["percent"][0] == 0.0 and spread["percent"][-1] == 100.0 and len(spread["genuine"]) == 21
    for value in (0.25, 0.3, 0.45, 0.55):
        assert share_at_most(spread, "genuine", value) == pytest.approx(np.mean(genuine <= value), abs=0.02)
        assert share_at_most(spread, "forged", value) == pytest.approx(np.mean(forged <= value), abs=0.02)
    assert share_at_most(spread, "forged", -1.0) == 0.0 and share_at_most(spread, "forged", 9.0) == 1.0
