"""analyze_pair: one pass over a pair, consistent numbers, and the DSI maps the explorer shows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from PIL import Image

from dsn.data.preprocess import PreprocessError
from dsn.inference import PairAnalysis, analyze_pair
from dsn.inspect.analysis import channel_energy, find_maps, ink_token_centres, radial_power_profile, structural_shares
from dsn.model.backbone import SIZES
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import default_weights


def test_summary_is_json_and_matches_the_verification(analysis: PairAnalysis) -> None:
    summary = json.loads(json.dumps(analysis.summary()))
    v = analysis.verification
    assert summary["distance"] == pytest.approx(float(v.distance[0]))
    assert summary["distance"] == pytest.approx(
        summary["global_distance"] + summary["structural_weight"] * summary["structural_distance"], abs=1e-5
    )
    assert summary["weighted_structural_distance"] == pytest.approx(summary["structural_weight"] * summary["structural_distance"])
    assert summary["verdict"] == ("genuine" if summary["distance"] <= summary["threshold"] else "forged")
    assert summary["margin"] == pytest.approx(summary["threshold"] - summary["distance"])
    assert summary["ink_tokens_reference"] == int(v.mask_ref.sum()) == int(analysis.ink("reference").sum())
    assert summary["ink_tokens_query"] == int(v.mask_query.sum())
    assert summary["tokens"] == 49
    assert summary["marginal_error"] < 1e-3
    assert summary["seconds"] > 0
    assert summary["untrained"] is (default_weights() is None)


def test_analysis_equals_a_direct_model_call(model: DetailSemNet, analysis: PairAnalysis) -> None:
    with torch.inference_mode():
        direct = model(analysis.reference.tensor(), analysis.query.tensor())
    assert float(analysis.verification.distance[0]) == pytest.approx(float(direct.distance[0]), abs=1e-5)
    assert np.allclose(analysis.plan, direct.plan[0].numpy(), atol=1e-6)
    assert analysis.plan.shape == analysis.cost.shape == (49, 49)
    assert analysis.plan.sum() == pytest.approx(1.0, abs=1e-4)
    off_ink = ~analysis.ink("reference")[:, None] | ~analysis.ink("query")[None, :]
    assert np.all(analysis.plan[off_ink] == 0)


def test_every_block_reports_its_dsi_parts(analysis: PairAnalysis) -> None:
    depths = SIZES["dsnet_tiny"]["depths"]
    assert len(analysis.maps_ref) == len(analysis.maps_query) == sum(depths)
    assert [(m.stage, m.block) for m in analysis.maps_ref] == [(s, b) for s, d in enumerate(depths) for b in range(d)]
    stage0, last = find_maps(analysis, "query", 0, 1), find_maps(analysis, "query", 3, 0)
    assert stage0.pool_size == 4 and stage0.detail_input.shape == (1, 32, 56, 56)
    assert last.pool_size == 1 and torch.equal(last.semantic_input, last.detail_input)
    # the detail part is the features minus their pooled mean: it averages to ~0 over each pooling cell
    cell_means = torch.nn.functional.avg_pool2d(stage0.detail_input, 4)
    assert cell_means.abs().max() < 1e-4 * stage0.detail_input.abs().max() + 1e-6
    # the two sides are different images, not the same batch item twice
    assert not torch.equal(analysis.maps_ref[0].detail_input, analysis.maps_query[0].detail_input)
    with pytest.raises(ValueError, match="available"):
        find_maps(analysis, "query", 7, 0)


def test_sources_of_every_kind_give_the_same_result(model: DetailSemNet, analysis: PairAnalysis) -> None:
    path = EXAMPLES / "writer1_forged.png"
    pil = Image.open(path).convert("RGB")
    for source in (path.read_bytes(), np.asarray(pil), pil, str(path)):
        other = analyze_pair(model, analysis.reference, source, with_maps=False)
        assert float(other.verification.distance[0]) == pytest.approx(float(analysis.verification.distance[0]), abs=1e-5)
        assert other.maps_ref == [] and other.maps_query == []


def test_threshold_and_untrained_flag(model: DetailSemNet, analysis: PairAnalysis, tmp_path: Path) -> None:
    distance = float(analysis.verification.distance[0])
    above = analyze_pair(model, analysis.reference, analysis.query, threshold=distance + 0.01, with_maps=False)
    below = analyze_pair(model, analysis.reference, analysis.query, threshold=distance - 0.01, with_maps=False)
    assert above.summary()["verdict"] == "genuine" and below.summary()["verdict"] == "forged"
    assert analyze_pair(DetailSemNet(), analysis.reference, analysis.query, with_maps=False).untrained
    assert not analyze_pair(
        DetailSemNet.load(model.save(tmp_path / "saved")), analysis.reference, analysis.query, with_maps=False
    ).untrained


def test_unreadable_or_blank_uploads_raise_the_user_facing_error(model: DetailSemNet) -> None:
    blank = io.BytesIO()
    Image.new("RGB", (300, 120), "white").save(blank, format="PNG")
    with pytest.raises(PreprocessError, match="^Reference image: No ink"):
        analyze_pair(model, blank.getvalue(), EXAMPLES / "writer1_forged.png")
    with pytest.raises(PreprocessError, match="^Query image: No ink"):
        analyze_pair(model, EXAMPLES / "writer1_forged.png", blank.getvalue())


def test_a_multi_page_file_is_read_from_its_first_page_and_the_result_says_so(model: DetailSemNet, tmp_path) -> None:
    first = Image.open(EXAMPLES / "writer1_genuine.png").convert("L")
    path = tmp_path / "scan.tif"
    first.save(path, save_all=True, append_images=[Image.new("L", first.size, 255)] * 2)
    analysis = analyze_pair(model, EXAMPLES / "writer1_reference.png", path)
    alone = analyze_pair(model, EXAMPLES / "writer1_reference.png", first)
    assert analysis.verification.distance.item() == alone.verification.distance.item()  # the first page, not a blank one
    assert analysis.input_warnings["query"][0] == "'scan.tif' holds 3 pages or frames; only the first was used."
    assert not any("pages" in w for w in analysis.summary()["input_warnings"]["reference"])


def test_token_centres_are_row_major_cell_centres(analysis: PairAnalysis) -> None:
    centres = ink_token_centres(analysis, "query")
    assert centres.shape == (49, 2)
    assert tuple(centres[0]) == (16.0, 16.0) and tuple(centres[1]) == (48.0, 16.0) and tuple(centres[7]) == (16.0, 48.0)
    assert tuple(centres[48]) == (208.0, 208.0)
    with pytest.raises(ValueError, match="side"):
        ink_token_centres(analysis, "left")


def test_structural_shares_split_the_structural_distance(analysis: PairAnalysis) -> None:
    ref_share, query_share = structural_shares(analysis)
    assert ref_share.sum() == pytest.approx(1.0, abs=1e-5) and query_share.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(ref_share[~analysis.ink("reference")] == 0) and np.all(query_share[~analysis.ink("query")] == 0)
    assert (analysis.plan * analysis.cost).sum() == pytest.approx(float(analysis.verification.structural_distance[0]), rel=1e-4)


def test_radial_profile_and_channel_energy_on_known_signals() -> None:
    checker = torch.from_numpy(np.indices((16, 16)).sum(0) % 2 * 2.0 - 1.0).float()[None, None].repeat(1, 3, 1, 1)
    freq, power = radial_power_profile(checker)
    assert freq[0] < freq[-1] <= 0.5
    assert power.argmax() == len(power) - 1  # alternating pixels: all power at the top frequency
    freq, power = radial_power_profile(torch.ones(1, 3, 16, 16))
    assert power.argmax() == 0 and power[1:].max() < 1e-9  # constant: all power at zero frequency
    energy = channel_energy(torch.stack([torch.full((4, 4), 3.0), torch.full((4, 4), 4.0)])[None])
    assert energy.shape == (4, 4) and np.allclose(energy, np.sqrt((9 + 16) / 2))


def test_the_checkpoint_threshold_as_the_app_shows_it_is_still_the_checkpoints(model: DetailSemNet) -> None:
    """The app's slider starts at the threshold rounded to 3 decimals; reports must say "checkpoint", as /verify does."""
    reference, query = EXAMPLES / "writer1_reference.png", EXAMPLES / "writer1_genuine.png"
    shown = round(float(model.config.threshold), 3) + 0.0004  # what a rounded slider can send back
    assert (
        analyze_pair(model, reference, query, threshold=round(float(model.config.threshold), 3), with_maps=False).threshold_source
        == "checkpoint"
    )
    assert analyze_pair(model, reference, query, threshold=shown + 0.01, with_maps=False).threshold_source == "given"
