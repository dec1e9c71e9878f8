"""``python -m dsn verify``: the verdict with its parts, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dsn.cli import main
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import default_weights
from dsn.tools.bench import scribble

REPO = Path(__file__).resolve().parents[1]
CEDAR = REPO.parent / "shared" / "datasets" / "cedar"
FIELDS = {
    "verdict",
    "accepted",
    "margin",
    "reference",
    "query",
    "distance",
    "global_distance",
    "structural_distance",
    "structural_weight",
    "threshold",
    "threshold_source",
    "seconds",
    "weights",
    "untrained",
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = DetailSemNet(match_dim=16)
    model.config.threshold = 0.123
    return model.save(tmp_path_factory.mktemp("weights") / "ckpt")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pair")
    paths = folder / "ref.png", folder / "query.png"
    for seed, path in enumerate(paths, start=1):
        cv2.imwrite(str(path), scribble(seed))
    return paths


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """A real ``python -m dsn`` process (one torch thread: the CPU is shared, and one image needs no more)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dsn", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def check_result(result: dict) -> None:
    assert FIELDS <= result.keys()
    assert result["verdict"] == ("genuine" if result["accepted"] else "forged")
    assert result["accepted"] == (result["distance"] <= result["threshold"])
    assert result["margin"] == pytest.approx(result["threshold"] - result["distance"], abs=1e-9)
    parts = result["global_distance"] + result["structural_weight"] * result["structural_distance"]
    assert result["distance"] == pytest.approx(parts, abs=1e-5)
    assert result["seconds"] > 0


def test_verify_cedar_pair_as_json() -> None:
    if not CEDAR.is_dir():
        pytest.skip(f"CEDAR dataset not found at {CEDAR}")
    ref, query = CEDAR / "001" / "genuine" / "01.png", CEDAR / "001" / "forged" / "01.png"
    done = run_cli("verify", str(ref), str(query), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    check_result(result)
    assert result["untrained"] == (default_weights() is None)
    assert result["threshold_source"] == "checkpoint"


def test_verify_synthetic_pair_with_given_weights_and_threshold(weights: Path, pair: tuple[Path, Path]) -> None:
    done = run_cli("verify", str(pair[0]), str(pair[1]), "--weights", str(weights), "--threshold", "5", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    check_result(result)
    assert result["verdict"] == "genuine", "any distance is <= 5 (at most 2 + lambda * 2)"
    assert result["threshold"] == 5 and result["threshold_source"] == "given"
    assert result["weights"] == Path(weights).name and result["untrained"] is False
    assert "WARNING" not in done.stderr


def test_checkpoint_threshold_is_the_default(weights: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(pair[0]), str(pair[1]), "--weights", str(weights), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    check_result(result)
    assert result["threshold"] == pytest.approx(0.123) and result["threshold_source"] == "checkpoint"


def test_text_output_names_every_part(weights: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(pair[0]), str(pair[0]), "--weights", str(weights), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "Verdict:    GENUINE" in out, "an image against itself is at distance ~0"
    for word in ("global", "lambda", "structural", "Threshold:  0.5000 (given)", "Time:", f"Weights:    {Path(weights).name}"):
        assert word in out


def test_default_weights_or_a_loud_warning(pair: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(pair[0]), str(pair[1]), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    if default_weights() is None:
        assert result["untrained"] is True
        assert "RANDOMLY INITIALISED" in captured.err and "MEANINGLESS" in captured.err
    else:
        assert result["untrained"] is False and result["weights"] == Path(default_weights()).name
        assert "WARNING" not in captured.err


def _text_file(path: Path) -> Path:
    path.write_text("not an image")
    return path


def _blank_page(path: Path) -> Path:
    cv2.imwrite(str(path), np.full((120, 300, 3), 250, np.uint8))
    return path


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda d: d / "missing.png", "was not found"),
        (lambda d: _text_file(d / "notes.png"), "not an image we can read"),
        (lambda d: _blank_page(d / "blank.png"), "No ink found"),
    ],
    ids=["missing", "not-an-image", "blank-page"],
)
def test_bad_query_exits_2_with_one_line(weights: Path, pair: tuple[Path, Path], tmp_path: Path, capsys, make_bad, message: str) -> None:
    bad = make_bad(tmp_path)
    assert main(["verify", str(pair[0]), str(bad), "--weights", str(weights), "--json"]) == 2  # an exception would fail here
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], captured.err

    assert main(["verify", str(bad), str(pair[1]), "--weights", str(weights)]) == 2, "the reference is checked too"
    assert message in capsys.readouterr().err


def test_a_non_finite_threshold_is_refused(weights: Path, pair: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(pair[0]), str(pair[1]), "--weights", str(weights), "--threshold", "nan", "--json"]) == 2
    assert "finite" in capsys.readouterr().err


def test_bad_weights_exit_2(pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(pair[0]), str(pair[1]), "--weights", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and len(err.splitlines()) == 1
