"""The shipped checkpoints: they load, are publishable, and do what their metrics.json claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import binom

from dsn.data.dataset import split_images
from dsn.evaluation.evaluate import evaluate, load_images_and_pairs
from dsn.evaluation.multi_reference import multi_reference_metrics
from dsn.hub.modelcard import check_model_card
from dsn.hub.publish import check_checkpoint
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import DEFAULT_CHECKPOINT
from dsn.precision import set_precision

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
# checkpoint folder -> (dataset its "test" metrics were measured on, pairs in that test protocol)
SHIPPED = {
    "dsnet-tiny-joint4": ("cedar", 4260),  # + cross-media train classes; Bengali, Hindi and cross-media test in cross_dataset
    "dsnet-tiny-joint3": ("cedar", 4260),  # train writers of all three datasets; Bengali and Hindi test in cross_dataset
    "dsnet-tiny-joint": ("cedar", 4260),  # trained on CEDAR + Bengali train writers; Bengali test is in its cross_dataset entry
    "dsnet-tiny-cedar": ("cedar", 4260),
    "dsnet-tiny-bengali": ("bhsig-bengali", 35925),
}


def checkpoint_params(slow: bool = False) -> list:
    marks = [pytest.mark.slow] if slow else []
    params = []
    for name, (dataset, n_pairs) in SHIPPED.items():
        folder = REPO / "checkpoints" / name
        skips = [
            pytest.mark.skipif(not (folder / "model.safetensors").is_file(), reason=f"no checkpoint at {folder}"),
            pytest.mark.skipif(not (DATASETS / dataset).is_dir(), reason=f"real dataset not found at {DATASETS / dataset}"),
        ]
        params.append(pytest.param(folder, DATASETS / dataset, n_pairs, id=name, marks=[*marks, *skips]))
    return params


def claimed_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_the_default_checkpoint_is_shipped() -> None:
    assert DEFAULT_CHECKPOINT in SHIPPED
    assert (REPO / "checkpoints" / DEFAULT_CHECKPOINT / "model.safetensors").is_file()


@pytest.mark.parametrize(("folder", "dataset", "n_pairs"), checkpoint_params())
def test_checkpoint_loads_and_is_publishable(folder: Path, dataset: Path, n_pairs: int) -> None:
    model = DetailSemNet.load(folder)
    claimed = claimed_metrics(folder)
    assert model.config.backbone == "dsnet_tiny"
    report = check_checkpoint(folder)
    assert report.ok, report.problems
    assert check_model_card((folder / "README.md").read_text()) == []
    assert {"val", "test"} <= set(claimed)
    assert claimed["test_info"]["data"].rstrip("/").endswith(dataset.name)
    # the threshold is the val EER threshold, and test accuracy/FAR/FRR were measured at it
    assert claimed["val"]["eer_threshold"] == pytest.approx(model.config.threshold, abs=1e-6)
    assert claimed["val"]["threshold"] == pytest.approx(model.config.threshold, abs=1e-6)
    assert claimed["test"]["threshold"] == pytest.approx(model.config.threshold, abs=1e-6)
    assert claimed["test"]["n_genuine_pairs"] + claimed["test"]["n_forged_pairs"] == n_pairs
    assert 0.0 <= claimed["test"]["eer"] < 0.5
    if folder.name == DEFAULT_CHECKPOINT:
        # reference-set rules: thresholds chosen on the same val writers, and test rates claimed at them
        for row in claimed["val_references"]:
            assert model.config.reference_threshold(row["rule"], row["references"]) == pytest.approx(row["eer_threshold"], abs=1e-9)
        assert model.config.reference_threshold("min", 5) < model.config.threshold, "the minimum of 5 distances needs a lower bar"
        tested = [claimed["test_multi_reference"], *(entry["multi_reference"] for entry in claimed["cross_dataset"].values())]
        for rows in tested:
            for row in rows:
                if row["rule"] in ("single", "mean", "min"):
                    rule = "mean" if row["rule"] == "single" else row["rule"]
                    assert row["shipped_threshold"] == pytest.approx(model.config.reference_threshold(rule, row["references"]), abs=1e-9)


def claimed_test_sets() -> list:
    """(checkpoint, dataset, claimed test metrics) for every test split a shipped checkpoint's metrics.json reports."""
    params = []
    for name, (dataset, _) in SHIPPED.items():
        folder = REPO / "checkpoints" / name
        if not (folder / "metrics.json").is_file():
            continue
        claimed = claimed_metrics(folder)
        sets = {dataset: claimed["test"], **{other: entry["metrics"] for other, entry in (claimed.get("cross_dataset") or {}).items()}}
        for data, metrics in sets.items():
            skip = pytest.mark.skipif(not (DATASETS / data).is_dir(), reason=f"real dataset not found at {DATASETS / data}")
            params.append(pytest.param(folder, DATASETS / data, metrics, id=f"{name}-on-{data}", marks=[skip]))
    return params


@pytest.mark.parametrize(("folder", "dataset", "claimed"), claimed_test_sets())
def test_verdicts_on_real_test_pairs_agree_with_claimed_rates(folder: Path, dataset: Path, claimed: dict) -> None:
    """On real test pairs (2 genuine + 2 forged of five test writers) of every dataset the checkpoint claims
    numbers for, the count of correct verdicts must be plausible under the claimed FAR and FRR (one-sided binomial test)."""
    model = DetailSemNet.load(folder)
    test_images = split_images(dataset, "test")
    images = []
    for writer in sorted({im.writer for im in test_images})[:5]:
        of_writer = [im for im in test_images if im.writer == writer]
        images += [im for im in of_writer if im.genuine][:2] + [im for im in of_writer if not im.genuine][:2]
    result = evaluate(model, images, progress=False)
    n_genuine, n_forged = int(result.scores.genuine.sum()), int((~result.scores.genuine).sum())
    assert (n_genuine, n_forged) == (5, 20)
    assert claimed["threshold"] == pytest.approx(model.config.threshold, abs=1e-6), "claimed at the shipped threshold"
    expected_accuracy = (n_genuine * (1 - claimed["frr"]) + n_forged * (1 - claimed["far"])) / (n_genuine + n_forged)
    correct = int(result.correct.sum())
    assert binom.cdf(correct, n_genuine + n_forged, expected_accuracy) > 1e-3, (
        f"{correct}/{n_genuine + n_forged} correct, but the claimed rates predict {expected_accuracy:.1%}"
    )


@pytest.mark.parametrize(("folder", "dataset", "n_pairs"), checkpoint_params(slow=True))
def test_full_test_protocol_reproduces_claimed_eer(folder: Path, dataset: Path, n_pairs: int) -> None:
    model, test = DetailSemNet.load(folder), claimed_metrics(folder)["test"]
    images, pairs = load_images_and_pairs(dataset, "test")
    claimed_precision = test.get("precision", "fp32")  # claims measured before bf16 dataset embedding were fp32
    set_precision(claimed_precision)
    try:
        result = evaluate(model, images, pairs, progress=False)
    finally:
        set_precision("auto")
    assert len(result.pairs) == n_pairs
    assert result.metrics["eer"] == pytest.approx(test["eer"], abs=1e-4)
    # a pair whose distance sits on the threshold may flip with float summation order: allow two
    assert result.metrics["accuracy"] == pytest.approx(test["accuracy"], abs=2 / n_pairs)
    if folder.name == DEFAULT_CHECKPOINT:
        claimed_rows = claimed_metrics(folder)["test_multi_reference"]
        ks = sorted({row["references"] for row in claimed_rows})
        for row, again in zip(
            claimed_rows, multi_reference_metrics(images, pairs, result.scores.distance, ks, config=model.config), strict=True
        ):
            assert again["eer"] == pytest.approx(row["eer"], abs=1e-4)
            if "far" in row:  # the rates of the reference-set decisions at their shipped thresholds
                assert (again["far"], again["frr"]) == pytest.approx((row["far"], row["frr"]), abs=2e-3)
        # what `python -m dsn evaluate` runs by default (bf16 embedding on a CPU with AMX) moves the EER by at most 0.1 point
        default = evaluate(model, images, pairs, progress=False)
        assert default.metrics["eer"] == pytest.approx(test["eer"], abs=1e-3)
