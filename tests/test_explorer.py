"""Dataset explorer backend: allowed roots and path safety, evaluation equal to the CLI, thresholds, exports."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dsn.data.dataset import list_images, protocol_pairs
from dsn.evaluation.evaluate import evaluate
from dsn.evaluation.explorer import (
    allowed_roots,
    error_rows,
    explore,
    export_report,
    find_datasets,
    pair_paths,
    resolve_dataset,
    select_images,
    writer_rows,
)
from dsn.model.detailsemnet import DetailSemNet

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
needs_datasets = pytest.mark.skipif(not (DATASETS / "cedar").is_dir(), reason=f"real datasets not found at {DATASETS}")


def write_layout(root: Path, writers: dict[int, tuple[int, int]]) -> Path:
    """A dataset folder with small dark-on-white PNGs: ``writers`` maps id -> (genuine, forged)."""
    for writer, counts in writers.items():
        for class_name, count in zip(("genuine", "forged"), counts):
            folder = root / f"{writer:03d}" / class_name
            folder.mkdir(parents=True)
            for index in range(1, count + 1):
                canvas = np.full((60, 120), 255, np.uint8)
                cv2.line(canvas, (10, 10 + 3 * index), (110, 50 - 2 * writer), 20, 3)
                cv2.imwrite(str(folder / f"{index:02d}.png"), canvas)
    return root


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    allowed = tmp_path / "allowed"
    write_layout(allowed / "ds", {1: (3, 2), 2: (2, 1)})
    write_layout(allowed / "group" / "inner", {5: (2, 1)})
    (allowed / "not-a-dataset" / "notes").mkdir(parents=True)
    outside = write_layout(tmp_path / "outside" / "secret", {9: (2, 1)})
    return {"allowed": allowed, "outside": outside}


# ----------------------------------------------------------------------------- path safety


def test_datasets_are_found_under_the_roots(roots):
    found = find_datasets([roots["allowed"]])
    assert found == {"ds": roots["allowed"] / "ds", "group/inner": roots["allowed"] / "group" / "inner"}
    assert resolve_dataset("ds", [roots["allowed"]]) == roots["allowed"] / "ds"
    assert resolve_dataset(str(roots["allowed"] / "group" / "inner"), [roots["allowed"]]) == roots["allowed"] / "group" / "inner"
    assert resolve_dataset("group/inner", [roots["allowed"]]) == roots["allowed"] / "group" / "inner"


def test_outside_paths_and_parent_references_are_refused(roots):
    allowed = [roots["allowed"]]
    with pytest.raises(PermissionError, match="outside the allowed data roots"):
        resolve_dataset(str(roots["outside"]), allowed)
    with pytest.raises(PermissionError, match=r"'\.\.' is not allowed"):
        resolve_dataset("../outside/secret", allowed)
    with pytest.raises(PermissionError, match=r"'\.\.' is not allowed"):
        resolve_dataset(str(roots["allowed"] / "ds" / ".." / "ds"), allowed)
    with pytest.raises(PermissionError, match="No data roots"):
        resolve_dataset("ds", [])
    with pytest.raises(ValueError, match="not a dataset folder"):
        resolve_dataset("not-a-dataset", allowed)
    with pytest.raises(ValueError, match="No dataset 'missing'"):
        resolve_dataset("missing", allowed)
    with pytest.raises(ValueError, match="not an existing folder"):
        allowed_roots([roots["allowed"] / "nope"])


def test_symlinks_that_escape_a_root_are_refused(roots):
    allowed = [roots["allowed"]]
    (roots["allowed"] / "link").symlink_to(roots["outside"], target_is_directory=True)
    assert "link" not in find_datasets(allowed)
    with pytest.raises(PermissionError, match="symbolic link"):
        resolve_dataset("link", allowed)
    with pytest.raises(PermissionError, match="symbolic link"):
        resolve_dataset(str(roots["allowed"] / "link"), allowed)
    # an image file that links out of the root, inside an allowed dataset
    leak = roots["allowed"] / "ds" / "001" / "genuine" / "04.png"
    leak.symlink_to(roots["outside"] / "009" / "genuine" / "01.png")
    with pytest.raises(PermissionError, match="link outside the allowed data roots") as refused:
        select_images(roots["allowed"] / "ds", "all", None, allowed_roots(allowed))
    assert "001/genuine/04.png" in str(refused.value) and str(roots["allowed"]) not in str(refused.value), "no server path"


def test_symlinks_inside_the_roots_are_followed(roots):
    (roots["allowed"] / "alias").symlink_to(roots["allowed"] / "group" / "inner", target_is_directory=True)
    assert resolve_dataset("alias", [roots["allowed"]]) == roots["allowed"] / "group" / "inner"


def test_splits_and_writer_limit(roots):
    allowed = allowed_roots([roots["allowed"]])
    dataset = roots["allowed"] / "ds"
    with pytest.raises(ValueError, match="choose the split 'all'"):
        select_images(dataset, "test", None, allowed)
    (roots["allowed"] / "splits.json").write_text(json.dumps({"ds": {"train": [1], "val": [], "test": [2]}}))
    writers, images = select_images(dataset, "test", None, allowed)
    assert writers == [2] and {im.writer for im in images} == {2}
    writers, images = select_images(dataset, "all", 1, allowed)
    assert writers == [1] and len(images) == 5
    with pytest.raises(ValueError, match="no writers"):
        select_images(dataset, "val", None, allowed)


# ----------------------------------------------------------------------------- evaluation


@pytest.fixture
def mini_cedar(tmp_path: Path) -> Path:
    """Two CEDAR test writers, 4 genuine + 3 forged each, copied into tmp_path (never into the repo)."""
    if not (DATASETS / "cedar").is_dir():
        pytest.skip(f"real datasets not found at {DATASETS}")
    root = tmp_path / "data"
    for writer in (11, 16):
        for class_name, count in (("genuine", 4), ("forged", 3)):
            target = root / "mini" / f"{writer:03d}" / class_name
            target.mkdir(parents=True)
            for index in range(1, count + 1):
                shutil.copy(DATASETS / "cedar" / f"{writer:03d}" / class_name / f"{index:02d}.png", target)
    (root / "splits.json").write_text(json.dumps({"mini": {"train": [], "val": [], "test": [11, 16]}}))
    return root


@pytest.fixture
def saved_model(tmp_path: Path) -> tuple[DetailSemNet, Path]:
    torch.manual_seed(0)
    folder = DetailSemNet().save(tmp_path / "weights")
    return DetailSemNet.load(folder), folder


@needs_datasets
def test_exploration_matches_evaluate_exactly_cold_and_cached(mini_cedar, saved_model, tmp_path):
    model, _ = saved_model
    fractions: list[float] = []
    first = explore(model, "mini", [mini_cedar], split="test", cache_dir=tmp_path / "cache", progress=lambda f, _: fractions.append(f))
    assert (first.cache.hits, first.cache.misses) == (0, 14)
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    result = first.result
    assert len(result.pairs) == 2 * (6 + 12)

    direct = evaluate(model, list_images(mini_cedar / "mini"), progress=False)
    assert np.array_equal(result.scores.distance, direct.scores.distance)
    assert result.metrics["eer"] == direct.metrics["eer"] and result.metrics["auc"] == direct.metrics["auc"]

    again = explore(model, "mini", [mini_cedar], split="test", cache_dir=tmp_path / "cache")
    assert (again.cache.hits, again.cache.misses) == (14, 0)
    assert np.array_equal(again.result.scores.distance, result.scores.distance)
    assert again.result.metrics == result.metrics


@needs_datasets
@pytest.mark.slow
def test_exploration_matches_the_cli(mini_cedar, saved_model, tmp_path):
    """`python -m dsn evaluate` in a subprocess, same weights and thread count: identical distances and metrics."""
    model, weights = saved_model
    result = explore(model, "mini", [mini_cedar], split="test", cache_dir=tmp_path / "cache").result
    out_csv = tmp_path / "cli.csv"
    command = [sys.executable, "-m", "dsn", "evaluate", "--weights", str(weights), "--data", str(mini_cedar / "mini")]
    command += ["--split", "test", "--json", "--no-progress", "--out-csv", str(out_csv), "--threads", str(torch.get_num_threads())]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    cli = json.loads(done.stdout)
    with out_csv.open() as handle:
        cli_distances = np.array([float(row["distance"]) for row in csv.DictReader(handle)])
    assert np.array_equal(cli_distances, result.scores.distance.astype(np.float64))
    for key in ("eer", "auc", "far", "frr", "accuracy", "eer_threshold", "best_accuracy"):
        assert cli["metrics"][key] == result.metrics[key], key


@needs_datasets
def test_threshold_changes_decisions_not_distances(mini_cedar, saved_model, tmp_path):
    model, _ = saved_model
    exploration = explore(model, "mini", [mini_cedar], split="test", cache_dir=tmp_path / "cache")
    d = exploration.result.scores.distance
    low, high = exploration.at_threshold(float(d.min()) - 1e-3), exploration.at_threshold(float(d.max()) + 1e-3)
    assert low.result.scores is exploration.result.scores  # the distances are reused, not recomputed
    assert (low.result.metrics["far"], low.result.metrics["frr"]) == (0.0, 1.0)
    assert (high.result.metrics["far"], high.result.metrics["frr"]) == (1.0, 0.0)

    rows = error_rows(high.result, limit=3)
    accepts = [r for r in rows if r["kind"] == "false accept"]
    assert len(accepts) == 3 and all(r["error"] for r in accepts)  # every forgery is accepted at the top threshold
    assert all(r["margin"] == pytest.approx(high.result.threshold - r["distance"]) and r["margin"] > 0 for r in accepts), (
        "margin > 0: accepted"
    )
    assert [r["distance"] for r in accepts] == sorted(r["distance"] for r in accepts)
    rejects = [r for r in rows if r["kind"] == "false reject"]
    assert len(rejects) == 3 and not any(r["error"] for r in rejects)  # and no genuine pair is rejected
    assert [r["distance"] for r in rejects] == sorted((r["distance"] for r in rejects), reverse=True)
    reference, query = pair_paths(high.result, accepts[0]["pair"])
    assert reference.parent.name == "genuine" and query.parent.name == "forged" and reference.is_file()

    per_writer = writer_rows(high.result)
    assert [r["writer"] for r in per_writer] == [11, 16]
    assert sum(r["errors"] for r in per_writer) == high.result.metrics["fp"] + high.result.metrics["fn"]


@needs_datasets
def test_export_writes_csv_json_and_html(mini_cedar, saved_model, tmp_path):
    model, _ = saved_model
    exploration = explore(model, "mini", [mini_cedar], split="test", cache_dir=tmp_path / "cache").at_threshold(0.5)
    paths, note = export_report(exploration, tmp_path / "report", png=False)
    names = {p.name for p in paths}
    assert {"pairs.csv", "metrics.json", "report.html", "figures-html.zip"} <= names and note == ""
    with (tmp_path / "report" / "pairs.csv").open() as handle:
        assert sum(1 for _ in csv.DictReader(handle)) == len(protocol_pairs(exploration.result.images))
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["threshold"] == 0.5 and metrics["dataset"] == "mini" and metrics["embedding_cache"]["misses"] == 14
    # a threshold picked in the explorer is never reported as the checkpoint's validation-chosen one
    assert metrics["metrics"]["threshold_source"] == "given" and "chosen by the user" in metrics["metrics"]["threshold_note"]
    page = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "decision threshold 0.5000: a threshold chosen by the user" in page
    checkpoint = exploration.at_threshold(float(model.config.threshold)).result.metrics
    assert checkpoint["threshold_source"] == "checkpoint" and "chosen on validation writers" in checkpoint["threshold_note"]
    shown = exploration.at_threshold(round(float(model.config.threshold), 3)).result  # what the slider's box sends back
    assert shown.metrics["threshold_source"] == "checkpoint" and shown.threshold == float(model.config.threshold)
    # file names relative to the data root: no server path in any export
    with (tmp_path / "report" / "pairs.csv").open() as handle:
        first = next(csv.DictReader(handle))
    assert first["reference"].startswith("mini/0") and first["query"].startswith("mini/0")
    server_path = str(mini_cedar.resolve())
    for name in ("pairs.csv", "metrics.json", "report.html"):
        assert server_path not in (tmp_path / "report" / name).read_text(encoding="utf-8"), name
    assert (tmp_path / "report" / "figures-html" / "plotly.min.js").is_file()


def test_the_default_dataset_is_the_smallest(tmp_path: Path) -> None:
    from dsn.evaluation.explorer import smallest_dataset

    for name, files in (("big", 5), ("small", 2), ("also-small", 2)):
        folder = tmp_path / name / "001" / "genuine"
        folder.mkdir(parents=True)
        for i in range(files):
            (folder / f"{i:02d}.png").write_bytes(b"")
    datasets = {name: tmp_path / name for name in ("big", "small", "also-small")}
    assert smallest_dataset(datasets) == "also-small"  # fewest files; ties by name
    assert smallest_dataset({}) is None


@needs_datasets
def test_an_opened_error_pair_carries_ground_truth_names_and_the_explorers_threshold(mini_cedar, saved_model, tmp_path):
    from dsn.ui.tabs.dataset import opened_pair

    model, _ = saved_model
    exploration = explore(model, "mini", [mini_cedar], split="test", cache_dir=tmp_path / "cache").at_threshold(0.37)
    accept = next(r for r in error_rows(exploration.result, limit=3) if r["kind"] == "false accept")
    reference, query, context = opened_pair(exploration, accept["pair"])
    assert Path(reference).is_file() and Path(query).is_file()
    assert context.label == f"known forgery (of writer {accept['writer']})" and context.threshold == 0.37
    assert context.reference_name == accept["reference"] and context.query_name == accept["query"]
    html = context.html()
    assert "known forgery" in html and accept["query"] in html and "threshold 0.370" in html and "mini test" in html
    assert str(mini_cedar.resolve()) not in html


def test_examples_say_their_ground_truth_before_the_verdict() -> None:
    from dsn.ui.examples import example_context

    forged = example_context("/x/writer1_reference.png", "/x/writer1_forged.png")
    assert "forgery" in forged and "the model is wrong here" in forged and "writer1_forged.png" in forged
    assert "genuine pair" in example_context("/x/writer1_reference.png", "/x/writer1_genuine.png")
    other = example_context("/x/crossmedia_reference.png", "/x/crossmedia_other.png")
    assert "another person writing the same name" in other and "Luo et al. 2023, MIT" in other
    assert example_context(None, "/x/writer1_genuine.png") == ""
    assert example_context("/x/writer1_reference.png", "/x/my_own_query.png") == ""  # a user's file is no example


def test_a_refused_selection_reaches_the_visitor_as_a_message_not_a_logged_traceback(roots):
    import gradio as gr

    from dsn.ui.compute import user_errors

    allowed = [roots["allowed"]]
    leak = roots["allowed"] / "ds" / "001" / "genuine" / "04.png"
    leak.symlink_to(roots["outside"] / "009" / "genuine" / "01.png")
    with pytest.raises(gr.Error) as shown, user_errors():
        select_images(roots["allowed"] / "ds", "all", None, allowed_roots(allowed))
    assert "link outside the allowed data roots" in shown.value.message and shown.value.print_exception is False
