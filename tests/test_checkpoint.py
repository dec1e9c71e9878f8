"""The shipped default checkpoint: loads, is publishable, and does what its metrics.json claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binom

from dsn.data import split_images
from dsn.evaluate import evaluate, load_images_and_pairs
from dsn.model import DetailSemNet
from dsn.modelcard import check_model_card
from dsn.publish import check_checkpoint

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "dsnet-tiny-cedar"
DATASETS = REPO.parent / "shared" / "datasets"
needs_checkpoint = pytest.mark.skipif(not (CHECKPOINT / "model.safetensors").is_file(), reason=f"no default checkpoint at {CHECKPOINT}")
needs_cedar = pytest.mark.skipif(not (DATASETS / "cedar").is_dir(), reason=f"real datasets not found at {DATASETS}")


@pytest.fixture(scope="module")
def model() -> DetailSemNet:
    return DetailSemNet.load(CHECKPOINT)


@pytest.fixture(scope="module")
def claimed() -> dict:
    return json.loads((CHECKPOINT / "metrics.json").read_text())


@needs_checkpoint
def test_default_checkpoint_loads_and_is_publishable(model: DetailSemNet, claimed: dict) -> None:
    assert model.config.backbone == "dsnet_tiny"
    report = check_checkpoint(CHECKPOINT)
    assert report.ok, report.problems
    assert check_model_card((CHECKPOINT / "README.md").read_text()) == []
    assert {"val", "test"} <= set(claimed)
    # test accuracy/FAR/FRR must have been measured at the threshold the checkpoint ships with
    assert claimed["test"]["threshold"] == pytest.approx(model.config.threshold, abs=1e-6)
    assert claimed["test"]["n_genuine_pairs"] + claimed["test"]["n_forged_pairs"] == 4260
    assert 0.0 <= claimed["test"]["eer"] < 0.5


@needs_checkpoint
@needs_cedar
def test_verdicts_on_real_test_pairs_agree_with_claimed_rates(model: DetailSemNet, claimed: dict) -> None:
    """On 25 real CEDAR test pairs (2 genuine + 2 forged of each test writer), the number of correct
    verdicts must be plausible under the claimed FAR and FRR (one-sided binomial test)."""
    test_images = split_images(DATASETS / "cedar", "test")
    images = []
    for writer in sorted({im.writer for im in test_images}):
        of_writer = [im for im in test_images if im.writer == writer]
        images += [im for im in of_writer if im.genuine][:2] + [im for im in of_writer if not im.genuine][:2]
    result = evaluate(model, images, progress=False)
    n_genuine, n_forged = int(result.scores.genuine.sum()), int((~result.scores.genuine).sum())
    assert (n_genuine, n_forged) == (5, 20)
    test = claimed["test"]
    expected_accuracy = (n_genuine * (1 - test["frr"]) + n_forged * (1 - test["far"])) / (n_genuine + n_forged)
    correct = int(result.correct.sum())
    assert binom.cdf(correct, n_genuine + n_forged, expected_accuracy) > 1e-3, (
        f"{correct}/{n_genuine + n_forged} correct, but the claimed rates predict {expected_accuracy:.1%}"
    )


@pytest.mark.slow
@needs_checkpoint
@needs_cedar
def test_full_test_protocol_reproduces_claimed_eer(model: DetailSemNet, claimed: dict) -> None:
    images, pairs = load_images_and_pairs(DATASETS / "cedar", "test")
    result = evaluate(model, images, pairs, progress=False)
    assert len(result.pairs) == 4260
    assert result.metrics["eer"] == pytest.approx(claimed["test"]["eer"], abs=1e-4)
    # a pair whose distance sits on the threshold may flip with float summation order: allow two
    assert result.metrics["accuracy"] == pytest.approx(claimed["test"]["accuracy"], abs=2 / 4260)
