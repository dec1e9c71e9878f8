"""Calibration: the shipped threshold is the val EER threshold of the checkpoint exactly as it ships."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import torch
from safetensors.torch import load_file

from dsn.cli import main
from dsn.data.dataset import split_images_of
from dsn.data.synth import SyntheticWriter
from dsn.evaluation.calibrate import calibrate
from dsn.evaluation.evaluate import evaluate
from dsn.evaluation.metrics import equal_error_rate
from dsn.evaluation.multi_reference import reference_trials, writer_distances
from dsn.model.detailsemnet import DetailSemNet

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_dataset(root: Path, name: str, first_seed: int) -> Path:
    """Two val writers (4 genuine, 3 forged each) and one train writer, in the real layout."""
    dataset = root / name
    for writer in (1, 2, 3):
        specimen = SyntheticWriter(first_seed + writer)
        for class_name, count in (("genuine", 4), ("forged", 3)):
            folder = dataset / f"{writer:03d}" / class_name
            folder.mkdir(parents=True)
            for index in range(count):
                draw = specimen.genuine if class_name == "genuine" else specimen.forgery
                cv2.imwrite(str(folder / f"{index + 1:02d}.png"), draw(index)[..., ::-1])
    splits_file = root / "splits.json"
    splits = json.loads(splits_file.read_text()) if splits_file.is_file() else {}
    splits[name] = {"train": [3], "val": [1, 2], "test": []}
    splits_file.write_text(json.dumps(splits))
    return dataset


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    folder = DetailSemNet().eval().save(tmp_path / "checkpoint")
    (folder / "metrics.json").write_text(json.dumps({"test": {"eer": 0.5}, "val": {"eer": 0.9}}))
    return folder


def test_threshold_is_the_val_eer_threshold_at_the_shipped_setting(tmp_path: Path, checkpoint: Path) -> None:
    first = synthetic_dataset(tmp_path, "first", 100)
    second = synthetic_dataset(tmp_path, "second", 200)
    weights_before = load_file(str(checkpoint / "model.safetensors"))

    weights_stat = (checkpoint / "model.safetensors").stat()
    val = calibrate(checkpoint, [first, second], sinkhorn_iterations=40, progress=False, command="python -m dsn calibrate ...")
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == weights_stat.st_mtime_ns, "weights stay byte for byte"

    model = DetailSemNet.load(checkpoint)
    assert model.config.sinkhorn_iterations == 40 and model.config.threshold == pytest.approx(val["threshold"])
    for name, value in load_file(str(checkpoint / "model.safetensors")).items():
        torch.testing.assert_close(value, weights_before[name], rtol=0, atol=0)
    # an independent evaluation of the reloaded checkpoint on the pooled val writers agrees
    again = evaluate(model, split_images_of([first, second], "val"), progress=False)
    assert len(again.pairs) == 4 * (6 + 12), "two datasets x two val writers, each 6 genuine + 12 forged pairs"
    assert again.metrics["eer_threshold"] == pytest.approx(val["threshold"], abs=1e-6)
    assert again.metrics["far"] == pytest.approx(val["far"]) and again.metrics["frr"] == pytest.approx(val["frr"])
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    assert metrics["test"] == {"eer": 0.5}, "calibration must not touch test numbers"
    assert metrics["val"]["eer"] == pytest.approx(val["eer"]) and metrics["val_info"]["n_pairs"] == 72
    assert metrics["val_info"]["data"] == [str(first), str(second)] and metrics["val_info"]["sinkhorn_iterations"] == 40


def test_cli_calibrates_and_refuses_bad_input(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    data = synthetic_dataset(tmp_path, "only", 300)
    assert main(["calibrate", "--weights", str(checkpoint), "--data", str(data), "--no-progress"]) == 0
    out = capsys.readouterr().out
    threshold = DetailSemNet.load(checkpoint).config.threshold
    assert "val EER" in out and f"threshold {threshold:.4f}" in out
    command = json.loads((checkpoint / "metrics.json").read_text())["val_info"]["command"]
    assert command.startswith("python -m dsn calibrate --weights")

    assert main(["calibrate", "--weights", str(checkpoint), "--data", str(data), "--sinkhorn-iterations", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["calibrate", "--weights", str(tmp_path / "nothing"), "--data", str(data)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert DetailSemNet.load(checkpoint).config.threshold == threshold, "a refused call must not change the checkpoint"


def test_reference_set_rules_get_thresholds_from_the_same_val_distances(tmp_path: Path, checkpoint: Path) -> None:
    data = synthetic_dataset(tmp_path, "only", 400)
    calibrate(checkpoint, [data], sinkhorn_iterations=40, progress=False)
    model = DetailSemNet.load(checkpoint)
    again = evaluate(model, split_images_of([data], "val"), progress=False)
    matrices = writer_distances(again.images, again.pairs, again.scores.distance)
    for k in (2, 3):  # 4 genuine signatures a writer: a genuine query has at most 3 other references
        for rule in ("mean", "min"):
            threshold = equal_error_rate(*reference_trials(matrices, k, rule))[1]
            assert model.config.reference_threshold(rule, k) == pytest.approx(threshold, abs=1e-6)
    assert sorted(model.config.reference_thresholds["min"]) == ["2", "3"]
    assert model.config.reference_threshold("min", 9) == model.config.reference_threshold("min", 3), "beyond: the largest K"
    rows = json.loads((checkpoint / "metrics.json").read_text())["val_references"]
    eers = {(r["references"], r["rule"]): r["eer"] for r in rows}
    better = "min" if eers[(2, "min")] + eers[(3, "min")] < eers[(2, "mean")] + eers[(3, "mean")] else "mean"
    assert model.config.reference_rule == better
