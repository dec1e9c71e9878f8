"""Verification against K references: trial counts, the mean/min rule, K=1 = the standard protocol, the CLI."""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from conftest import SYNTH_FORGED, SYNTH_GENUINE

from dsn.cli import main
from dsn.data.dataset import SignatureImage, protocol_pairs
from dsn.evaluation.metrics import equal_error_rate, roc_auc
from dsn.evaluation.multi_reference import (
    WriterDistances,
    multi_reference_metrics,
    reference_sets,
    reference_trials,
    rule_thresholds,
    writer_distances,
)
from dsn.model.config import DetailSemNetConfig


def writers_images(genuine: int, forged: int, writers: int = 3) -> list[SignatureImage]:
    return [
        SignatureImage(Path(f"w{w}/{'g' if g else 'f'}{i}.png"), w, g, i)
        for w in range(1, writers + 1)
        for g, n in ((True, genuine), (False, forged))
        for i in range(n)
    ]


def scored(genuine: int, forged: int, seed: int = 0) -> tuple[list, list, np.ndarray]:
    images = writers_images(genuine, forged)
    pairs = protocol_pairs(images)
    rng = np.random.default_rng(seed)
    # forgeries a little farther on average, with overlap so the EER is not trivially 0
    distances = np.array([rng.normal(0.4 if p.genuine else 0.6, 0.15) for p in pairs])
    return images, pairs, distances


def test_trials_take_the_mean_and_min_of_every_reference_subset() -> None:
    images, pairs, distances = scored(genuine=4, forged=2)
    lookup = {frozenset((p.a, p.b)): d for p, d in zip(pairs, distances, strict=True)}
    matrices = writer_distances(images, pairs, distances)
    for rule, combine in (("mean", np.mean), ("min", np.min)):
        got, genuine = reference_trials(matrices, k=2, rule=rule)
        expected, labels = [], []
        for w in (1, 2, 3):
            g = [i for i, im in enumerate(images) if im.writer == w and im.genuine]
            f = [i for i, im in enumerate(images) if im.writer == w and not im.genuine]
            for q in g:
                for refs in combinations([r for r in g if r != q], 2):
                    expected.append(combine([lookup[frozenset((r, q))] for r in refs]))
                    labels.append(True)
            for q in f:
                for refs in combinations(g, 2):
                    expected.append(combine([lookup[frozenset((r, q))] for r in refs]))
                    labels.append(False)
        # per writer: 4 genuine queries x C(3,2) sets, 2 forgeries x C(4,2) sets
        assert int(genuine.sum()) == 3 * 4 * 3 and int((~genuine).sum()) == 3 * 2 * 6
        np.testing.assert_allclose(got, expected)
        assert genuine.tolist() == labels


def test_one_reference_is_the_standard_protocol() -> None:
    images, pairs, distances = scored(genuine=6, forged=5, seed=3)
    labels = np.array([p.genuine for p in pairs])
    (row,) = multi_reference_metrics(images, pairs, distances, ks=[1])
    assert row["rule"] == "single"
    assert row["eer"] == pytest.approx(equal_error_rate(distances, labels)[0], abs=1e-12)
    assert row["auc"] == pytest.approx(roc_auc(distances, labels), abs=1e-12)
    # each genuine pair once per orientation, each (genuine, forged) pair once
    assert row["n_genuine_trials"] == 2 * int(labels.sum())
    assert row["n_forged_trials"] == int((~labels).sum())


def test_more_references_than_max_sets_are_sampled_distinct_and_reproducibly() -> None:
    sets = reference_sets(23, 5, 50, np.random.default_rng(7))
    assert sets.shape == (50, 5) and len({tuple(s) for s in sets}) == 50
    assert all(len(set(s)) == 5 and max(s) < 23 for s in sets)
    np.testing.assert_array_equal(sets, reference_sets(23, 5, 50, np.random.default_rng(7)))
    assert len(reference_sets(6, 2, 50, np.random.default_rng(0))) == math.comb(6, 2)


def test_writers_with_too_few_genuine_signatures_are_skipped_and_bad_k_refused() -> None:
    images, pairs, distances = scored(genuine=3, forged=1)
    matrices = writer_distances(images, pairs, distances)
    with pytest.raises(ValueError, match="more than 3 genuine"):
        reference_trials(matrices, k=3)
    with pytest.raises(ValueError, match="at least 1"):
        reference_trials(matrices, k=0)
    with pytest.raises(ValueError, match="rule"):
        reference_trials(matrices, k=1, rule="median")


def test_a_missing_pair_is_named() -> None:
    images, pairs, distances = scored(genuine=3, forged=1)
    with pytest.raises(ValueError, match="was not scored"):
        writer_distances(images, pairs[1:], distances[1:])


def test_cli_references_on_a_built_dataset(synth_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "--allow-untrained", "--data", str(synth_dataset), "--split", "test", "--json", "--no-progress"]
    assert main([*argv, "--references", "1", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = {(r["references"], r["rule"]): r for r in summary["multi_reference"]}
    assert set(rows) == {(1, "single"), (2, "mean"), (2, "min"), (2, "ratio")}
    assert rows[(1, "single")]["eer"] == pytest.approx(summary["metrics"]["eer"], abs=1e-12)
    writers = 2  # the test split
    assert rows[(2, "mean")]["n_genuine_trials"] == writers * SYNTH_GENUINE * math.comb(SYNTH_GENUINE - 1, 2)
    assert rows[(2, "min")]["n_forged_trials"] == writers * SYNTH_FORGED * math.comb(SYNTH_GENUINE, 2)

    assert main([*argv[:-1], "--references", "3"]) == 2  # 3 genuine each: no 3 other references
    assert "more than 3 genuine" in capsys.readouterr().err


def test_the_ratio_rule_judges_each_writer_against_the_spread_of_their_references() -> None:
    """A loose writer (everything 4x farther apart) breaks one global threshold, not the ratio rule."""
    rng = np.random.default_rng(0)

    def writer(scale: float) -> WriterDistances:
        g = 6
        gg = np.full((g, g), np.nan)
        for i, j in combinations(range(g), 2):
            gg[i, j] = gg[j, i] = scale * rng.uniform(0.9, 1.1)
        return WriterDistances(gg, scale * rng.uniform(1.6, 2.0, size=(g, 4)))

    matrices = {1: writer(1.0), 2: writer(4.0)}
    mean_d, mean_y = reference_trials(matrices, k=3, rule="mean")
    ratio_d, ratio_y = reference_trials(matrices, k=3, rule="ratio")
    assert np.array_equal(mean_y, ratio_y)
    assert equal_error_rate(mean_d, mean_y)[0] > 0.2, "one threshold cannot serve both writers"
    assert equal_error_rate(ratio_d, ratio_y)[0] == 0.0
    with pytest.raises(ValueError, match="at least 2 references"):
        reference_trials(matrices, k=1, rule="ratio")


def test_each_rule_gets_the_eer_threshold_of_its_own_trials() -> None:
    """The minimum of K distances sits below one pair's distance: its threshold must be chosen on its own trials."""
    images, pairs, distances = scored(genuine=5, forged=3)
    matrices = writer_distances(images, pairs, distances)
    thresholds, rows = rule_thresholds(matrices, ks=(2, 3, 4, 5))
    assert sorted(thresholds["min"]) == ["2", "3", "4"], "K = 5 needs 6 genuine signatures: left out"
    for k in (2, 3, 4):
        for rule in ("mean", "min"):
            eer, threshold = equal_error_rate(*reference_trials(matrices, k, rule))
            assert thresholds[rule][str(k)] == pytest.approx(threshold, abs=1e-12)
            assert {"references": k, "rule": rule, "eer": eer, "eer_threshold": threshold} in rows
    single = equal_error_rate(distances, np.array([p.genuine for p in pairs]))[1]
    assert thresholds["min"]["4"] < thresholds["min"]["2"] < single, "more references, a smaller minimum"


def test_rows_report_the_rates_at_the_checkpoints_own_rule_thresholds() -> None:
    images, pairs, distances = scored(genuine=5, forged=3)
    labels = np.array([p.genuine for p in pairs])
    config = DetailSemNetConfig(threshold=0.5, reference_thresholds={"mean": {"2": 0.45}, "min": {"2": 0.3}})
    rows = {(r["references"], r["rule"]): r for r in multi_reference_metrics(images, pairs, distances, ks=(1, 3), config=config)}
    assert rows[(1, "single")]["shipped_threshold"] == 0.5
    assert rows[(1, "single")]["far"] == pytest.approx(float(np.mean(distances[~labels] <= 0.5)))
    matrices = writer_distances(images, pairs, distances)
    for rule, threshold in (("mean", 0.45), ("min", 0.3)):  # K = 3 uses the largest calibrated K below it
        d, y = reference_trials(matrices, 3, rule)
        assert rows[(3, rule)]["shipped_threshold"] == threshold
        assert rows[(3, rule)]["far"] == pytest.approx(float(np.mean(d[~y] <= threshold)))
        assert rows[(3, rule)]["frr"] == pytest.approx(float(np.mean(d[y] > threshold)))
    assert "far" not in rows[(3, "ratio")]
