"""The handwriting check warns about inputs that are no signature, and not about real signatures."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from dsn.cli import main
from dsn.data.handwriting import handwriting_warnings
from dsn.data.preprocess import preprocess
from dsn.data.synth import SyntheticWriter
from dsn.inference import analyze_pair
from dsn.model.detailsemnet import DetailSemNet

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def noise() -> np.ndarray:
    return (np.random.default_rng(0).random((300, 600, 3)) * 255).astype(np.uint8)


def photo_like_gradient() -> np.ndarray:
    """Light falling off across the frame, with sensor noise: what a photo without a signature gives."""
    rng = np.random.default_rng(1)
    light = np.tile(np.linspace(40, 255, 600)[None, :, None], (300, 1, 3))
    return np.clip(light + rng.normal(0, 25, light.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dataset", ["cedar", "bhsig-bengali", "bhsig-hindi"])
def test_real_signatures_pass(dataset: str) -> None:
    if not (DATASETS / dataset).is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    files = sorted((DATASETS / dataset).glob("*/*/*.png"))
    for path in random.Random(7).sample(files, 40):
        assert handwriting_warnings(preprocess(path).image) == [], path


def test_synthetic_examples_pass() -> None:
    person = SyntheticWriter(11)
    for image in (person.genuine(0), person.genuine(1), person.forgery(0)):
        assert handwriting_warnings(preprocess(image).image) == []


@pytest.mark.parametrize(("make", "expected"), [(noise, "ink covers"), (photo_like_gradient, "separate pieces")])
def test_noise_and_a_photo_like_gradient_warn(make, expected: str) -> None:
    warnings = handwriting_warnings(preprocess(make()).image)
    assert any(expected in w for w in warnings), warnings


def test_the_verdict_carries_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    model = DetailSemNet().eval()
    signature = SyntheticWriter(3).genuine(0)
    summary = analyze_pair(model, signature, noise(), with_maps=False).summary()
    assert summary["input_warnings"]["reference"] == [] and summary["input_warnings"]["query"], "warned, not refused"
    ref, query = tmp_path / "ref.png", tmp_path / "noise.png"
    cv2.imwrite(str(ref), signature[..., ::-1])
    cv2.imwrite(str(query), noise())
    weights = model.save(tmp_path / "w")
    assert main(["verify", str(ref), str(query), "--weights", str(weights)]) == 0
    assert "Warning:    the query may not be a handwritten signature" in capsys.readouterr().out
    assert main(["verify", str(ref), str(query), "--weights", str(weights), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_warnings"]["query"]


def test_the_check_runs_once_per_pair_not_on_every_rethreshold(monkeypatch: pytest.MonkeyPatch) -> None:
    import dsn.inference as inference

    calls = []
    real = inference.handwriting_warnings
    monkeypatch.setattr(inference, "handwriting_warnings", lambda image: calls.append(1) or real(image))
    analysis = analyze_pair(DetailSemNet().eval(), SyntheticWriter(3).genuine(0), noise(), with_maps=False)
    assert len(calls) == 2  # reference and query
    for threshold in (0.1, 0.2, 0.3):
        assert analysis.with_threshold(threshold).summary()["input_warnings"]["query"]
    assert len(calls) == 2, "re-deciding at another threshold must not re-check the images"


def test_the_stroke_width_warning_says_strokes_are_too_wide() -> None:
    image = np.zeros((224, 224), np.float32)
    image[60:160, 40:180] = 1.0  # a filled block: strokes far wider than a pen's
    warned = [w for w in handwriting_warnings(image) if "px wide" in w]
    assert warned and "thinner lines" in warned[0] and "look thinner" not in warned[0]


def test_evaluating_a_pairs_csv_warns_about_a_noise_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    model = DetailSemNet().eval()
    cv2.imwrite(str(tmp_path / "ref.png"), SyntheticWriter(3).genuine(0)[..., ::-1])
    cv2.imwrite(str(tmp_path / "also.png"), SyntheticWriter(3).genuine(1)[..., ::-1])
    cv2.imwrite(str(tmp_path / "noise.png"), noise())
    (tmp_path / "pairs.csv").write_text("reference,query,label\nref.png,also.png,1\nref.png,noise.png,0\n")
    weights = model.save(tmp_path / "w")
    assert main(["evaluate", "--pairs", str(tmp_path / "pairs.csv"), "--weights", str(weights), "--no-progress", "--no-cache"]) == 0
    err = capsys.readouterr().err
    assert "warning: noise.png:" in err and "ref.png" not in err and "also.png" not in err
