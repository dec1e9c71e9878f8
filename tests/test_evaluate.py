"""Evaluation: cached distances equal forward passes, protocol counts, reports, CLI end to end, per-writer metrics."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SYNTH_FORGED, SYNTH_GENUINE, write_pairs_csv

from dsn.cli import main
from dsn.data.dataset import Pair, SignatureImage, protocol_pairs, split_images
from dsn.data.preprocess import preprocess
from dsn.evaluation.evaluate import (
    EvaluationResult,
    evaluate,
    format_summary,
    load_images_and_pairs,
    pair_metrics,
    per_writer_metrics,
)
from dsn.evaluation.metrics import equal_error_rate
from dsn.evaluation.report import det_figure, distance_histogram, per_writer_table, roc_figure
from dsn.evaluation.scoring import PairScores
from dsn.loading import is_untrained, load
from dsn.model import weights
from dsn.model.detailsemnet import DetailSemNet
from dsn.precision import set_precision

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_cedar = pytest.mark.skipif(not (DATASETS / "cedar").is_dir(), reason=f"real datasets not found at {DATASETS}")
EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny checkpoint: the trained one may not exist yet."""
    torch.manual_seed(0)
    model = DetailSemNet(threshold=0.45)
    return model.save(tmp_path_factory.mktemp("weights") / "tiny")


# ------------------------------------------------------------------ real data
@needs_cedar
def test_cedar_test_protocol_has_4260_pairs() -> None:
    images, pairs = load_images_and_pairs(DATASETS / "cedar", "test")
    assert len(images) == 240
    assert len(pairs) == 4260
    assert sum(p.genuine for p in pairs) == 5 * 276
    assert sum(not p.genuine for p in pairs) == 5 * 576


@needs_cedar
def test_cached_distances_equal_pairwise_forward_pass(tiny_weights: Path) -> None:
    """One backbone pass per image must give the same distances as model(ref, query) per pair."""
    model = DetailSemNet.load(tiny_weights)
    writer_images = [im for im in split_images(DATASETS / "cedar", "test") if im.writer == 11]
    images = [im for im in writer_images if im.genuine][:2] + [im for im in writer_images if not im.genuine][:2]
    bulk = evaluate(model, images, progress=False)  # "auto": bf16 on a CPU with AMX, else float32
    set_precision("fp32")  # the comparison below is with the float32 forward pass
    try:
        result = evaluate(model, images, progress=False)
    finally:
        set_precision("auto")
    assert len(result.pairs) == 1 + 4 and result.info["precision"] == "fp32"
    np.testing.assert_allclose(bulk.scores.distance, result.scores.distance, atol=0.02, rtol=0)

    fresh = {im.path: preprocess(im.path).tensor() for im in images}
    ref = torch.cat([fresh[images[p.a].path] for p in result.pairs])
    query = torch.cat([fresh[images[p.b].path] for p in result.pairs])
    with torch.inference_mode():
        forward = model.eval()(ref, query)
    # The evaluation cache stores 8-bit pixels, the forward pass gets float pixels: allow that rounding.
    np.testing.assert_allclose(result.scores.distance, forward.distance.numpy(), atol=2e-3, rtol=0)
    np.testing.assert_allclose(result.scores.global_distance, forward.global_distance.numpy(), atol=2e-3, rtol=0)
    np.testing.assert_allclose(result.scores.structural_distance, forward.structural_distance.numpy(), atol=2e-3, rtol=0)
    # The same 8-bit pixels through the forward pass: equal up to float summation order.
    quantised = {path: torch.round(t * 255) / 255 for path, t in fresh.items()}
    with torch.inference_mode():
        same_pixels = model(
            torch.cat([quantised[images[p.a].path] for p in result.pairs]),
            torch.cat([quantised[images[p.b].path] for p in result.pairs]),
        )
    np.testing.assert_allclose(result.scores.distance, same_pixels.distance.numpy(), atol=1e-4, rtol=0)


# ----------------------------------------------------------- synthetic, end to end
def test_cli_evaluate_writes_a_parseable_offline_report(
    synth_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DSN_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "CHECKPOINTS_DIR", tmp_path / "no-checkpoints")  # no default checkpoint anywhere
    assert main(["evaluate", "--data", str(synth_dataset), "--split", "test", "--no-progress"]) == 2
    assert "--allow-untrained" in capsys.readouterr().err

    report, out_csv = tmp_path / "report", tmp_path / "pairs_out.csv"
    argv = ["evaluate", "--allow-untrained", "--data", str(synth_dataset), "--split", "test", "--json", "--no-progress"]
    assert main([*argv, "--report", str(report), "--out-csv", str(out_csv)]) == 0
    captured = capsys.readouterr()
    assert "RANDOMLY INITIALISED" in captured.err
    summary = json.loads(captured.out)

    n_writers = 2  # the test split
    expected_pairs = n_writers * (SYNTH_GENUINE * (SYNTH_GENUINE - 1) // 2 + SYNTH_GENUINE * SYNTH_FORGED)
    assert summary["n_images"] == n_writers * (SYNTH_GENUINE + SYNTH_FORGED)
    assert summary["n_pairs"] == expected_pairs
    assert summary["untrained"] is True
    assert [row["writer"] for row in summary["per_writer"]] == [2, 3]

    with (report / "pairs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == expected_pairs
    assert {"reference", "query", "writer", "label", "distance", "global_distance", "structural_distance", "correct"} <= set(rows[0])
    assert out_csv.read_text() == (report / "pairs.csv").read_text()
    distances = np.array([float(r["distance"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])

    metrics = json.loads((report / "metrics.json").read_text())["metrics"]
    for key in ("eer", "eer_threshold", "auc", "accuracy", "far", "frr", "best_accuracy", "eer_global_only", "eer_structural_only"):
        assert np.isfinite(metrics[key]), key
    assert metrics["max_marginal_error"] < 1e-2
    assert metrics["eer"] == pytest.approx(equal_error_rate(distances, labels)[0], abs=1e-6)

    with (report / "roc.csv").open() as handle:
        roc = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(handle)]
    assert roc[0]["far"] == 0 and roc[-1]["far"] == 1 and roc[-1]["frr"] == 0
    assert all(a["far"] <= b["far"] and a["frr"] >= b["frr"] for a, b in itertools.pairwise(roc))

    page = (report / "report.html").read_text(encoding="utf-8")
    assert page.count('class="plotly-graph-div"') == 4  # ROC, DET, histogram, per-writer table
    assert EXTERNAL_SCRIPT.search(page) is None, "report must not load scripts from the network"
    assert page.count("<script") >= 5 and len(page) > 1_000_000  # plotly.js itself is inlined, once
    assert "chosen on this set itself" in page


def test_evaluate_pairs_csv_with_saved_weights(synth_dataset: Path, tiny_weights: Path, tmp_path: Path) -> None:
    all_images, all_pairs = load_images_and_pairs(synth_dataset, "all")
    chosen = [all_pairs[0], all_pairs[3], all_pairs[-1], all_pairs[-2]]
    csv_path = tmp_path / "pairs.csv"
    write_pairs_csv(csv_path, all_images, chosen, root=synth_dataset)
    images, pairs = load_images_and_pairs(synth_dataset, pairs_csv=csv_path)

    model = load(str(tiny_weights), allow_untrained=False)
    assert not is_untrained(model)
    result = evaluate(model, images, pairs, progress=False, batch_size=3)
    assert result.threshold == pytest.approx(0.45)  # the checkpoint's own threshold
    rows = result.to_rows()
    assert [(Path(r["reference"]), Path(r["query"]), r["label"]) for r in rows] == [
        (all_images[p.a].path, all_images[p.b].path, int(p.genuine)) for p in chosen
    ]
    assert [r["correct"] for r in rows] == list((result.scores.distance <= 0.45) == result.scores.genuine)
    text = format_summary(result)
    assert "chosen on the test set itself" in text and "EER" in text and "marginal error" in text
    assert set(result.timings) >= {"preprocessing_s", "embedding_s", "pairs_s", "total_s"}


# --------------------------------------------------------- hand-made scores
def hand_made_result() -> EvaluationResult:
    """Writer 1: genuine 0.1, 0.2; forged 0.5, 0.15. Writer 2: genuine pairs only."""
    images = [SignatureImage(Path(f"{w}_{i}.png"), w, i < 3, i) for w in (1, 2) for i in range(4)]
    pairs = [Pair(0, 1, True), Pair(0, 2, True), Pair(0, 3, False), Pair(1, 3, False), Pair(4, 5, True), Pair(4, 6, True)]
    distance = np.array([0.1, 0.2, 0.5, 0.15, 0.25, 0.4], np.float32)
    genuine = np.array([p.genuine for p in pairs])
    scores = PairScores(distance, distance * 0.5, distance * 0.5, genuine, np.zeros(6, np.float32))
    return EvaluationResult(images, pairs, scores, 0.3, pair_metrics(scores, 0.3), {})


def test_per_writer_metrics_on_known_scores() -> None:
    writer1, writer2 = per_writer_metrics(hand_made_result())
    assert writer1 == {
        "writer": 1,
        "n_pairs": 4,
        "n_genuine_pairs": 2,
        "n_forged_pairs": 2,
        "eer": pytest.approx(equal_error_rate([0.1, 0.2, 0.5, 0.15], [1, 1, 0, 0])[0]),
        "far": 0.5,
        "frr": 0.0,
        "errors": 1,
        "accuracy": 0.75,
    }
    assert writer2["eer"] is None and writer2["far"] is None  # no forged pairs: undefined, not 0
    assert writer2["frr"] == 0.5 and writer2["errors"] == 1


def test_figures_hold_finite_curves() -> None:
    result = hand_made_result()
    roc = roc_figure(result.scores)
    assert roc.data[1].x[0] == 0 and roc.data[1].x[-1] == 1
    det = det_figure(result.scores)
    curve = det.data[1]
    assert np.isfinite(np.asarray(curve.x, float)).all() and np.isfinite(np.asarray(curve.y, float)).all()
    histogram = distance_histogram(result.scores, 0.3)
    assert sorted(len(trace.x) for trace in histogram.data) == [2, 4]
    table = per_writer_table(result)
    assert list(table.data[0].cells.values[0]) == ["1", "2"]


def test_metrics_of_one_class_pairs_say_what_is_undefined() -> None:
    genuine_only = PairScores(np.array([0.1, 0.4]), np.zeros(2), np.zeros(2), np.array([True, True]), np.zeros(2))
    metrics = pair_metrics(genuine_only, 0.3)
    assert metrics["accuracy"] == 0.5 and "eer" not in metrics and "both" in metrics["note"]


def test_protocol_pairs_drive_default_evaluation_pairs(synth_dataset: Path) -> None:
    images, pairs = load_images_and_pairs(synth_dataset, "test")
    assert pairs == protocol_pairs(images)
    with pytest.raises(ValueError, match="--data"):
        load_images_and_pairs(None, "test")


def test_cli_evaluate_reuses_the_embedding_cache_unless_told_not_to(
    synth_dataset: Path, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DSN_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["evaluate", "--weights", str(tiny_weights), "--data", str(synth_dataset), "--split", "test", "--json", "--no-progress"]
    runs = []
    for extra in ([], [], ["--no-cache"]):
        assert main([*argv, *extra]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    n_images = runs[0]["n_images"]
    assert runs[0]["embedding_cache"] == {"hits": 0, "misses": n_images}
    assert runs[1]["embedding_cache"] == {"hits": n_images, "misses": 0}, "the second run reads every embedding back"
    assert "embedding_cache" not in runs[2]
    assert runs[0]["metrics"]["eer"] == runs[1]["metrics"]["eer"] == pytest.approx(runs[2]["metrics"]["eer"], abs=1e-9)
    (tmp_path / "blocked").write_text("a file, not a folder")
    monkeypatch.setenv("DSN_CACHE_DIR", str(tmp_path / "blocked"))
    assert main(argv) == 2
    assert "not a folder" in capsys.readouterr().err


def test_reports_name_the_checkpoint_not_the_server_path(tmp_path: Path) -> None:
    from dsn.loading import source_label
    from dsn.model.detailsemnet import DetailSemNet

    folder = tmp_path / "deep" / "server" / "path" / "my-checkpoint"
    model = DetailSemNet(img_size=64)
    model.save(folder)
    loaded = DetailSemNet.load(folder)
    assert source_label(loaded) == "my-checkpoint" and str(tmp_path) not in source_label(loaded)
    loaded.source = "hf://owner/repo@v1"
    assert source_label(loaded) == "hf://owner/repo@v1"
