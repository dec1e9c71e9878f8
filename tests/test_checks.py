"""The explanation checks: sanity cascade, deletion/insertion, patch erasure, frequency filters, the grid, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLES

from dsn.checks.explanation_grid import explanation_grid
from dsn.checks.faithfulness import faithfulness, random_orders
from dsn.checks.figures import grid_figure, sanity_figure
from dsn.checks.frequency import BANDS, LOW_CUTOFF, MIDDLE_CUTOFF, filter_image, radial_frequency
from dsn.checks.plan_check import plan_check, structural_after_erasing
from dsn.checks.sanity import cascade, sanity_check
from dsn.inference import PairAnalysis, analyze_pair
from dsn.inspect.attribution import attribute, distance_function
from dsn.model.detailsemnet import DetailSemNet

CEDAR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cedar"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sanity_cascade_destroys_integrated_gradients_on_a_real_pair(model: DetailSemNet) -> None:
    if not (CEDAR / "011").is_dir():
        pytest.skip(f"{CEDAR} is not available")
    pair = analyze_pair(model, CEDAR / "011" / "genuine" / "01.png", CEDAR / "011" / "forged" / "01.png")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check = sanity_check(model, pair, methods=["integrated_gradients"], steps=8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the caller's model was changed"
    assert check.steps == [name for name, _ in cascade(model)] and len(check.steps) == 12
    rho = check.spearman["integrated_gradients"]
    assert len(rho) == len(check.steps) == len(check.ssim["integrated_gradients"])
    assert rho[-1] < 0.5, f"IG still correlates {rho[-1]:.2f} with the trained map after full randomisation"
    figure = sanity_figure(check)
    spearman_trace = next(t for t in figure.data if t.xaxis in (None, "x"))
    assert len(spearman_trace.y) == len(check.steps) + 1  # the trained model, then one point per randomised block


def test_deleting_all_ink_reaches_the_blank_paper_distance(model: DetailSemNet, analysis: PairAnalysis) -> None:
    maps = {"saliency": attribute(model, analysis, "saliency").map}
    result = faithfulness(model, analysis, maps, steps=5)
    function = distance_function(model, analysis, "total", "query")
    with torch.no_grad():
        blank = float(function(torch.zeros(1, 1, *analysis.query.image.shape)))
        full = float(function(analysis.query.tensor()))
    for curves in (result.curves["saliency"], result.random):
        assert curves.deletion[-1] == pytest.approx(blank, abs=1e-5)
        assert curves.insertion[0] == pytest.approx(blank, abs=1e-5)
        assert curves.deletion[0] == pytest.approx(full, abs=1e-5)
        assert curves.insertion[-1] == pytest.approx(full, abs=1e-5)
    assert full == pytest.approx(float(analysis.verification.distance[0]), abs=1e-4)  # the function the app shows


def test_the_random_baseline_is_seeded() -> None:
    ink = np.zeros((20, 20), bool)
    ink[5:15, 3:17] = True
    first, again, other = random_orders(ink), random_orders(ink), random_orders(ink, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert sorted(first[0].tolist()) == np.flatnonzero(ink).tolist()  # a permutation of the ink pixels only


def test_erasing_a_patch_without_ink_changes_nothing(model: DetailSemNet, analysis: PairAnalysis) -> None:
    ink = analysis.ink("reference")
    image = analysis.reference.image
    rows, cols = analysis.grid
    height, width = image.shape

    def cell(token: int) -> np.ndarray:
        r, c = divmod(token, cols)
        return image[r * height // rows : (r + 1) * height // rows, c * width // cols : (c + 1) * width // cols]

    blank = [token for token in range(rows * cols) if not cell(token).any()][:3]
    assert blank, "the example has no blank patch to erase"
    after = structural_after_erasing(model, analysis, np.array(blank))
    assert np.allclose(after, float(analysis.verification.structural_distance[0]), atol=1e-6)
    check = plan_check(model, analysis)
    assert check.patches.tolist() == np.flatnonzero(ink).tolist()  # the correlation is over ink patches only
    assert len(check.share) == len(check.change) == ink.sum() and -1.0 <= check.spearman <= 1.0


def _power_outside(image: np.ndarray, keep: np.ndarray) -> float:
    spectrum = np.abs(np.fft.fft2(image.astype(np.float64))) ** 2
    return float(spectrum[~keep].sum() / spectrum.sum())


def test_frequency_filters_keep_only_their_band(analysis: PairAnalysis) -> None:
    image = analysis.query.image
    f = radial_frequency(image.shape)
    assert _power_outside(image, f <= LOW_CUTOFF) > 0.05  # the original has power everywhere
    assert _power_outside(filter_image(image, "LF"), f <= LOW_CUTOFF) < 1e-9
    assert _power_outside(filter_image(image, "LMF"), f <= MIDDLE_CUTOFF) < 1e-9
    assert _power_outside(filter_image(image, "LHF"), (f <= LOW_CUTOFF) | (f > MIDDLE_CUTOFF)) < 1e-9
    lhf, lf = filter_image(image, "LHF"), filter_image(image, "LF")
    assert _power_outside(lhf, f <= LOW_CUTOFF) > 1e-4  # LHF does hold high frequencies, LF does not
    assert np.array_equal(filter_image(image, "original"), image)
    assert np.allclose(filter_image(image, "LMF") + filter_image(image, "LHF") - lf, image, atol=1e-5)  # the bands add up
    assert BANDS == ("original", "LF", "LMF", "LHF")


def test_the_grid_has_every_method_for_both_images_on_one_scale(model: DetailSemNet, analysis: PairAnalysis) -> None:
    grid = explanation_grid(model, analysis, steps=4)
    assert len(grid.maps) == 10
    for method, side in grid.maps:
        scaled = grid.scaled(method, side)
        assert scaled.min() >= -1 and scaled.max() <= 1
        assert np.isclose(np.percentile(np.abs(scaled[grid.ink[side]]), 99.5), 1.0, atol=0.02)
    images = [t for t in grid_figure(grid, analysis).data if t.type == "image"]
    assert len(images) == 10


def test_cli_report_writes_an_offline_html_and_its_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dsn.cli import main

    pair = [str(EXAMPLES / "writer1_reference.png"), str(EXAMPLES / "writer1_forged.png")]
    code = main(["report", *pair, "--report", str(tmp_path), "--steps", "4", "--no-sanity", "--json", "--threads", "1"])
    assert code == 0
    numbers = json.loads(capsys.readouterr().out)
    assert set(numbers) == {"faithfulness", "plan_check", "frequency"}
    page = (tmp_path / "pair-report.html").read_text()
    assert "<script src=" not in page and page.count("Plotly.newPlot") >= 4  # plotly.js is inline: the file works offline
    for title in ("Verdict", "Patch correspondences", "Every attribution method", "Faithfulness", "frequency experiment"):
        assert title in page
    record = json.loads((tmp_path / "pair-report.json").read_text())
    assert record["verification"]["verdict"] in ("genuine", "forged") and "weights" in record["model"]
    assert {"faithfulness", "plan_check", "frequency"} <= set(record)


def test_the_grid_estimate_is_the_attribution_tabs_and_becomes_measured(model: DetailSemNet, analysis: PairAnalysis) -> None:
    from dsn.ui.tabs.attribution import estimate_seconds, record_cost
    from dsn.ui.tabs.checks import estimate_text

    def seconds(text: str) -> float:
        return float(text.split("about **")[1].split(" s**")[0])

    few, many = estimate_text(model, analysis, 4), estimate_text(model, analysis, 64)
    assert "estimated from the verify time" in few and seconds(many) > seconds(few)
    each = sum(
        estimate_seconds(model, analysis, m, 64)[0]
        for m in ("integrated_gradients", "saliency", "gradient_shap", "occlusion", "layer_gradcam")
    )
    assert seconds(many) == pytest.approx(2 * each, abs=0.5)  # both images
    record_cost(model, analysis, "integrated_gradients", 16, 100.0)
    assert "measured on this machine" in estimate_text(model, analysis, 4)


def test_the_sanity_check_reports_each_step_and_the_app_estimates_it(model: DetailSemNet, analysis: PairAnalysis) -> None:
    """A 90-second check must say step k of n as it goes, and its cost before it starts."""
    from dsn.ui.tabs.checks import estimate_text

    messages: list[tuple[float, str]] = []
    sanity_check(model, analysis, methods=["saliency", "layer_gradcam"], cascade_steps=3, progress=lambda f, t: messages.append((f, t)))
    texts = [text for _, text in messages]
    assert texts[0].startswith("trained model: saliency (1 of 2 maps)")
    for k in (1, 2, 3):
        assert sum(text.startswith(f"step {k} of 3:") for text in texts) == 2, texts
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert "the sanity check (one image," in estimate_text(model, analysis, 8) and "steps): about" in estimate_text(model, analysis, 8)


def test_the_pair_report_states_the_threshold_the_pair_was_judged_at(model: DetailSemNet, analysis: PairAnalysis) -> None:
    """After the slider moved, the report said the checkpoint's threshold labelled "given"."""
    from dsn.checks.pair_report import model_description
    from dsn.loading import ModelInfo

    moved = analysis.with_threshold(0.3)
    assert model_description(model, moved)["threshold"] == "0.3000 (given)"
    assert model_description(model, analysis)["threshold"] == f"{model.config.threshold:.4f} (checkpoint)"
    info = ModelInfo.of(model)
    assert model_description(model, analysis)["weights"] == info.label and info.label in info.summary
