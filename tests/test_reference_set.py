"""Reference sets: one query against several references, combined by mean and by minimum distance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from dsn.data.synth import SyntheticWriter
from dsn.inference import analyze_pair
from dsn.inspect.figures import correspondence_figure
from dsn.inspect.reference_set import MAX_REFERENCES, verify_against_references
from dsn.model.detailsemnet import DetailSemNet


@pytest.fixture(scope="module")
def model() -> DetailSemNet:
    torch.manual_seed(0)
    return DetailSemNet().eval()  # random init: the arithmetic, not the verdict, is under test


@pytest.fixture(scope="module")
def signatures() -> dict[str, np.ndarray]:
    writer, other = SyntheticWriter(7), SyntheticWriter(31)
    return {
        "query": writer.genuine(10),
        "ref_a": writer.genuine(1),
        "ref_b": writer.genuine(2, paper="yellow"),
        "ref_other": other.genuine(1),
    }


def test_combined_decisions_follow_per_reference_distances(model, signatures):
    references = [signatures["ref_a"], signatures["ref_b"], signatures["ref_other"]]
    result = verify_against_references(model, signatures["query"], references)
    d = result.distances
    assert d.shape == (3,) and np.all(np.isfinite(d))
    assert result.mean_distance == pytest.approx(float(np.mean(d)), abs=1e-12)
    assert result.min_distance == pytest.approx(float(np.min(d)), abs=1e-12)
    assert result.closest == int(np.argmin(d))
    assert result.names == ["reference 1", "reference 2", "reference 3"]
    assert result.threshold == model.config.threshold

    # between min and mean: the lenient rule accepts, the robust one rejects
    between = result.with_threshold((result.min_distance + result.mean_distance) / 2)
    assert between.accepted("min") and not between.accepted("mean")
    assert [row["accepted"] for row in between.rows()] == list(d <= between.threshold)
    assert between.accepted("mean") == (float(np.mean(d)) <= between.threshold)
    below, above = result.with_threshold(result.min_distance - 1e-3), result.with_threshold(d.max() + 1e-3)
    assert not below.accepted("min") and not below.accepted("mean")
    assert above.accepted("min") and above.accepted("mean")
    summary = between.summary()
    assert summary["accepted_by_min"] is True and summary["accepted_by_mean"] is False
    assert [r["distance"] for r in summary["references"]] == pytest.approx(list(d))
    with pytest.raises(ValueError, match="rule"):
        result.accepted("median")


def test_each_distance_matches_the_pair_view(model, signatures):
    references = [signatures["ref_a"], signatures["ref_other"]]
    result = verify_against_references(model, signatures["query"], references)
    for i, reference in enumerate(references):
        single = analyze_pair(model, reference, signatures["query"], with_maps=False)
        assert float(result.distances[i]) == pytest.approx(float(single.verification.distance[0]), abs=1e-4)
        pair = result.pair(i)
        assert float(pair.verification.distance[0]) == pytest.approx(float(result.distances[i]), abs=1e-12)
        assert pair.plan.shape == single.plan.shape
        figure = correspondence_figure(pair, top_k=10)
        assert any(trace.name == "query patches" for trace in figure.data)


def test_each_image_goes_through_the_backbone_once(model, signatures):
    seen: list[int] = []
    hook = model.match_proj.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    try:
        references = [signatures["ref_a"], signatures["ref_b"], signatures["ref_other"], signatures["ref_a"]]
        verify_against_references(model, signatures["query"], references, batch_size=2)
    finally:
        hook.remove()
    assert sum(seen) == 1 + len(references)


def test_file_names_and_input_errors(model, signatures, tmp_path):
    paths = []
    for name in ("ref_a", "ref_b"):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(signatures[name], cv2.COLOR_RGB2BGR))
        paths.append(path)
    result = verify_against_references(model, signatures["query"], paths, threshold=0.5)
    assert result.names == ["ref_a.png", "ref_b.png"] and result.threshold == 0.5
    with pytest.raises(ValueError, match="at least one"):
        verify_against_references(model, signatures["query"], [])
    with pytest.raises(ValueError, match=f"at most {MAX_REFERENCES}"):
        verify_against_references(model, signatures["query"], [signatures["ref_a"]] * (MAX_REFERENCES + 1))
    blank = np.full((100, 200, 3), 255, np.uint8)
    with pytest.raises(ValueError, match="^Reference 2 of 2: No ink"):
        verify_against_references(model, signatures["query"], [signatures["ref_a"], blank])
    with pytest.raises(ValueError, match="^Query image: No ink"):
        verify_against_references(model, blank, [signatures["ref_a"]])
    with pytest.raises(ValueError, match="index"):
        result.pair(2)


def test_the_tab_shows_the_query_and_every_reference_with_its_distance(model, signatures, tmp_path):
    from dsn.ui.tabs.reference import thumbnails

    paths = []
    for name in ("query", "ref_a", "ref_b"):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(signatures[name], cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    result = verify_against_references(model, paths[0], paths[1:], threshold=0.5)
    items = thumbnails(result, paths[1:], paths[0])
    assert [path for path, _ in items] == paths and items[0][1] == "query"
    for (_, caption), distance in zip(items[1:], result.distances, strict=True):
        assert f"{distance:.3f}" in caption and ("accepted" if distance <= 0.5 else "rejected") in caption


def test_each_rule_is_judged_at_its_own_val_chosen_threshold(signatures):
    """The minimum rule judged at the pair threshold accepted about three times the forgeries it should."""
    torch.manual_seed(0)
    calibrated = DetailSemNet().eval()
    references = [signatures["ref_a"], signatures["ref_b"], signatures["ref_other"]]
    plain = verify_against_references(calibrated, signatures["query"], references)
    pair_threshold = (plain.min_distance + plain.mean_distance) / 2
    low = plain.min_distance - 0.01  # the min rule's own threshold sits below the pair threshold
    calibrated.config.threshold = pair_threshold
    calibrated.config.reference_thresholds = {"mean": {"2": pair_threshold + 0.02, "5": 9.0}, "min": {"2": low}}
    calibrated.config.reference_rule = "min"
    result = verify_against_references(calibrated, signatures["query"], references)
    assert result.threshold == pair_threshold and result.calibrated
    assert result.rule_threshold("min") == pytest.approx(low) and result.rule_threshold("mean") == pytest.approx(pair_threshold + 0.02)
    assert not result.accepted("min"), "at the pair threshold the minimum would have been accepted"
    assert result.accepted() == result.accepted("min")
    summary = result.summary()
    assert summary["decided_by"] == "min" and summary["accepted"] is False
    assert summary["rules"]["min"]["threshold"] == pytest.approx(low)
    # the slider moves the pair threshold and every rule's threshold with it
    looser = result.with_threshold(pair_threshold + 0.05)
    assert looser.rule_threshold("min") == pytest.approx(low + 0.05)
    # uncalibrated (or a single reference): every rule at the pair threshold, and said so
    assert not plain.calibrated and plain.rule_threshold("min") == plain.threshold
    assert "no thresholds chosen" in plain.threshold_source()
    one = verify_against_references(calibrated, signatures["query"], references[:1])
    assert one.rule_threshold("min") == one.threshold == pair_threshold
