"""Model cards and publishing: the dry run refuses unsafe or broken checkpoints; uploads send exactly the checked files."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard

from dsn.cli import main
from dsn.hub.modelcard import REQUIRED_SECTIONS, check_model_card, train_command, write_model_card
from dsn.hub.publish import MAX_CHECKPOINT_BYTES, PublishError, check_checkpoint, push_checkpoint
from dsn.model.detailsemnet import DetailSemNet
from dsn.training.config import TrainConfig

VAL = {
    "eer": 0.081,
    "auc": 0.97,
    "threshold": 0.52,
    "accuracy": 0.91,
    "far": 0.08,
    "frr": 0.09,
    "n_genuine_pairs": 1380,
    "n_forged_pairs": 2880,
}
TEST = {**VAL, "eer": 0.1234, "best_accuracy": 0.9, "eer_global_only": 0.15, "eer_structural_only": 0.2}
TRAIN_CONFIG = asdict(TrainConfig(data="../shared/datasets/cedar", out="runs/cedar-tiny", epochs=3))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return DetailSemNet(threshold=0.52).save(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def checkpoint(saved_model: Path, tmp_path: Path) -> Path:
    """A valid checkpoint: config, safetensors weights, metrics and a complete card."""
    folder = Path(shutil.copytree(saved_model, tmp_path / "dsnet-tiny-test"))
    (folder / "metrics.json").write_text(json.dumps({"val": VAL, "test": TEST}))
    write_model_card(folder, {"val": VAL, "test": TEST}, TRAIN_CONFIG, train_command(TRAIN_CONFIG), repo_id="someone/dsnet-tiny")
    return folder


def dry_run(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["push", "--weights", str(folder), "--repo-id", "someone/dsnet-tiny", "--dry-run"])
    return code, capsys.readouterr().out


# ------------------------------------------------------------------ model card
def test_model_card_has_front_matter_sections_and_measured_numbers(checkpoint: Path) -> None:
    text = (checkpoint / "README.md").read_text()
    assert check_model_card(text) == []
    card = ModelCard.load(checkpoint / "README.md")
    assert card.data.library_name == "dsn"
    assert "cedar" in card.data.datasets and "signature-verification" in card.data.tags
    assert "| EER | 8.10% | 12.34% |" in text
    assert "python -m dsn train --data ../shared/datasets/cedar --out runs/cedar-tiny --size dsnet_tiny" in text
    assert "--epochs 3" in text
    assert 'dsn.load("hf://someone/dsnet-tiny")' in text
    assert "University at Buffalo" in text and "No images are redistributed" in text


def test_check_model_card_names_what_is_missing(checkpoint: Path) -> None:
    text = (checkpoint / "README.md").read_text()
    assert check_model_card(text.replace("## Limitations\n", "")) == ["README.md lacks the section '## Limitations'"]
    assert any("front matter" in p for p in check_model_card(text.split("\n---\n", 1)[1]))
    assert len(check_model_card("# just a title\n")) == 1 + len(REQUIRED_SECTIONS)


def test_card_command_merges_test_metrics(saved_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = Path(shutil.copytree(saved_model, tmp_path / "ckpt"))
    (folder / "metrics.json").write_text(json.dumps({"val": VAL, "epoch": 3, "step": 120}))
    eval_json, config_json = tmp_path / "eval.json", tmp_path / "train_config.json"
    command = "python -m dsn evaluate --weights ckpt --data ../shared/datasets/cedar --split test --json"
    eval_json.write_text(json.dumps({"metrics": TEST, "n_pairs": 4260, "n_images": 240, "split": "test", "command": command}))
    config_json.write_text(json.dumps(TRAIN_CONFIG))
    (tmp_path / "last").mkdir()
    (tmp_path / "last" / "train_state.json").write_text(json.dumps({"epoch": 3, "seconds": 4320.0}))
    assert main(["card", "--weights", str(folder), "--eval-json", str(eval_json), "--train-config", str(config_json)]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["val"] == VAL and metrics["test"] == TEST and metrics["epoch"] == 3
    assert metrics["test_info"]["n_pairs"] == 4260
    text = (folder / "README.md").read_text()
    assert command in text and check_model_card(text) == []
    assert "Trained on CPU for 1.2 hours" in text
    assert "Not measured on other datasets yet." in text and "5 test writers of CEDAR" in text


def test_card_command_reports_cross_dataset_evaluations(saved_model: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved_model, tmp_path / "ckpt"))
    calibrated = "python -m dsn calibrate --weights ckpt --data ../d/cedar --data ../d/bhsig-bengali"
    val_info = {"data": ["../d/cedar", "../d/bhsig-bengali"], "n_pairs": 6903, "command": calibrated}
    (folder / "metrics.json").write_text(json.dumps({"val": VAL, "val_info": val_info}))
    eval_json, cross_json, config_json = tmp_path / "eval.json", tmp_path / "cross.json", tmp_path / "train_config.json"
    eval_json.write_text(json.dumps({"metrics": TEST, "n_pairs": 4260, "data": "../shared/datasets/cedar", "command": "eval cedar"}))
    cross_command = "python -m dsn evaluate --weights ckpt --data ../shared/datasets/bhsig-bengali --split test --json"
    cross = {**TEST, "eer": 0.2598, "auc": 0.8165}
    cross_json.write_text(
        json.dumps({"metrics": cross, "n_pairs": 35925, "data": "../shared/datasets/bhsig-bengali", "command": cross_command})
    )
    config_json.write_text(json.dumps(TRAIN_CONFIG))
    args = ["card", "--weights", str(folder), "--eval-json", str(eval_json), "--train-config", str(config_json)]
    assert (
        main([*args, "--cross-eval-json", str(cross_json), "--training-hours", "2.5", "--dataset", "cedar", "--dataset", "bhsig-bengali"])
        == 0
    )
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["cross_dataset"]["bhsig-bengali"]["metrics"] == cross
    assert metrics["cross_dataset"]["bhsig-bengali"]["n_pairs"] == 35925
    text = (folder / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| BHSig-Bengali test"))
    assert "| yes | 35925 | 25.98% | 0.8165 |" in row and cross_command in row, "Bengali train writers were in training"
    assert f"6903 validation pairs of CEDAR + BHSig-Bengali (pooled: one threshold for all of them): `{calibrated}`" in text
    assert "Trained on CPU for 2.5 hours" in text and check_model_card(text) == []
    # the limitations name every tested dataset, not only the first trained one
    assert "Measured on 5 test writers of CEDAR, 50 test writers of BHSig-Bengali;" in text
    assert "**CEDAR** signature database" in text and "**BHSig260 (Bengali)**" in text  # both datasets credited
    assert main([*args, "--cross-eval-json", str(cross_json), "--dataset", "cedar"]) == 0
    row = next(line for line in (folder / "README.md").read_text().splitlines() if line.startswith("| BHSig-Bengali test"))
    assert "| no (cross-dataset) | 35925 |" in row
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metrics": cross}))  # no "data": which dataset was it?
    assert main([*args, "--cross-eval-json", str(bad)]) == 2


def test_card_shows_multi_reference_eers_of_every_tested_dataset(saved_model: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(saved_model, tmp_path / "ckpt"))
    (folder / "metrics.json").write_text(json.dumps({"val": VAL}))

    def rows(single: float, five_mean: float) -> list[dict]:
        return [
            {"references": 1, "rule": "single", "eer": single},
            {"references": 5, "rule": "mean", "eer": five_mean},
            {"references": 5, "rule": "min", "eer": five_mean + 0.01},
        ]

    eval_json, cross_json, config_json = tmp_path / "eval.json", tmp_path / "cross.json", tmp_path / "train_config.json"
    eval_json.write_text(json.dumps({"metrics": TEST, "data": "../d/cedar", "multi_reference": rows(0.1, 0.04)}))
    cross_json.write_text(json.dumps({"metrics": TEST, "data": "../d/bhsig-hindi", "multi_reference": rows(0.2, 0.09)}))
    config_json.write_text(json.dumps(TRAIN_CONFIG))
    args = ["card", "--weights", str(folder), "--eval-json", str(eval_json), "--train-config", str(config_json)]
    assert main([*args, "--cross-eval-json", str(cross_json)]) == 0
    text = (folder / "README.md").read_text()
    assert "| test writers of | 1 ref. | 5 refs, mean | 5 refs, min |" in text
    assert "| CEDAR | 10.00% | 4.00% | 5.00% |" in text and "| BHSig-Hindi | 20.00% | 9.00% | 10.00% |" in text
    assert json.loads((folder / "metrics.json").read_text())["cross_dataset"]["bhsig-hindi"]["multi_reference"] == rows(0.2, 0.09)


# --------------------------------------------------------------------- dry run
def test_dry_run_accepts_a_good_checkpoint_and_lists_sizes(checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = dry_run(checkpoint, capsys)
    assert code == 0, out
    weights_mb = (checkpoint / "model.safetensors").stat().st_size / 1e6
    assert f"{weights_mb:9.3f} MB  model.safetensors" in out
    assert "config.json" in out and "README.md" in out and "OK" in out


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("pickle_pt", "extra.pt is (or may contain) a pickle"),
        ("pickle_disguised", "notes.dat is (or may contain) a pickle"),
        ("no_card", "no README.md model card"),
        ("oversized", "over the 25 MB limit"),
        ("config_not_json", "config.json is not valid JSON"),
        ("config_unknown_key", "config.json is not a DetailSemNet config"),
        ("config_wrong_architecture", "does not load into the architecture"),
        ("no_weights", "no model.safetensors"),
    ],
)
def test_dry_run_catches_problems(checkpoint: Path, breakage: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    if breakage == "pickle_pt":
        torch.save({"w": torch.zeros(2)}, checkpoint / "extra.pt")
    elif breakage == "pickle_disguised":
        (checkpoint / "notes.dat").write_bytes(pickle.dumps({"harmless": "looking"}, protocol=4))
    elif breakage == "no_card":
        (checkpoint / "README.md").unlink()
    elif breakage == "oversized":
        with (checkpoint / "extra.safetensors").open("wb") as handle:
            handle.truncate(MAX_CHECKPOINT_BYTES + 1)  # sparse: costs no disk
    elif breakage == "config_not_json":
        (checkpoint / "config.json").write_text("{backbone: dsnet_tiny")
    elif breakage == "config_unknown_key":
        (checkpoint / "config.json").write_text(json.dumps({**config, "layers": 12}))
    elif breakage == "config_wrong_architecture":
        (checkpoint / "config.json").write_text(json.dumps({**config, "match_dim": 64}))
    elif breakage == "no_weights":
        (checkpoint / "model.safetensors").unlink()
    code, out = dry_run(checkpoint, capsys)
    assert code == 1
    assert expected in out


def test_hidden_files_are_neither_checked_nor_uploaded(checkpoint: Path) -> None:
    (checkpoint / ".cache").mkdir()
    (checkpoint / ".cache" / "lock").write_text("x")
    report = check_checkpoint(checkpoint)
    assert report.ok, report.problems
    assert sorted(name for name, _ in report.files) == [
        "README.md",
        "config.json",
        "metrics.json",
        "model.safetensors",
        "model.safetensors.sha256",
    ]


# ---------------------------------------------------------------------- upload
@pytest.fixture
def hub_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Record HfApi's network calls instead of making them (the Hub is a third-party boundary)."""
    calls: list[tuple[str, dict]] = []

    def recorder(name: str, result: object = None):
        def method(self: HfApi, *args: object, **kwargs: object) -> object:
            calls.append((name, {"args": args, **kwargs}))
            return result

        return method

    class Commit:
        commit_url = "https://huggingface.co/someone/dsnet-tiny/commit/abc123"

    monkeypatch.setattr(HfApi, "create_repo", recorder("create_repo"))
    monkeypatch.setattr(HfApi, "create_branch", recorder("create_branch"))
    monkeypatch.setattr(HfApi, "upload_folder", recorder("upload_folder", Commit()))
    return calls


def test_push_creates_repo_branch_and_uploads_exactly_the_checked_files(checkpoint: Path, hub_calls: list[tuple[str, dict]]) -> None:
    (checkpoint / ".DS_Store").write_bytes(b"\0")
    url = push_checkpoint(checkpoint, "someone/dsnet-tiny", private=True, revision="v1")
    assert url.endswith("/commit/abc123")
    assert [name for name, _ in hub_calls] == ["create_repo", "create_branch", "upload_folder"]
    create, branch, upload = (kwargs for _, kwargs in hub_calls)
    assert create["args"] == ("someone/dsnet-tiny",) and create["private"] is True and create["exist_ok"] is True
    assert branch["args"] == ("someone/dsnet-tiny",) and branch["branch"] == "v1" and branch["exist_ok"] is True
    assert upload["repo_id"] == "someone/dsnet-tiny" and upload["revision"] == "v1" and upload["repo_type"] == "model"
    assert Path(upload["folder_path"]) == checkpoint
    assert sorted(upload["allow_patterns"]) == ["README.md", "config.json", "metrics.json", "model.safetensors", "model.safetensors.sha256"]


def test_push_refuses_before_any_network_call(checkpoint: Path, hub_calls: list[tuple[str, dict]]) -> None:
    (checkpoint / "README.md").unlink()
    with pytest.raises(PublishError, match="README.md"):
        push_checkpoint(checkpoint, "someone/dsnet-tiny")
    with pytest.raises(PublishError, match="owner/name"):
        push_checkpoint(checkpoint, "not-a-repo-id")
    assert hub_calls == []


def test_push_command_uploads_to_main(checkpoint: Path, hub_calls: list[tuple[str, dict]], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["push", "--weights", str(checkpoint), "--repo-id", "someone/dsnet-tiny"]) == 0
    assert [name for name, _ in hub_calls] == ["create_repo", "upload_folder"]  # no branch for main
    assert hub_calls[0][1]["private"] is False and hub_calls[1][1]["revision"] is None
    assert "hf://someone/dsnet-tiny" in capsys.readouterr().out


MULTI_REFERENCE_CARD = """
import json, sys
from dsn.hub.modelcard import multi_reference_section
rows = [{"references": k, "rule": rule, "eer": 0.1} for k in (3, 5) for rule in ("ratio", "min", "mean")]
rows[4].update(shipped_threshold=0.33, far=0.05, frr=0.07)  # 5 refs, min
print(multi_reference_section({"test_info": {"data": "x/cedar"}, "test_multi_reference": rows}))
"""


def test_card_columns_keep_one_order_and_show_rates_at_the_rule_thresholds() -> None:
    """Columns came in the order of a set of strings, so a card rewritten by another process could shuffle them."""
    texts = {
        subprocess.run(
            [sys.executable, "-c", MULTI_REFERENCE_CARD],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(4)
    }
    assert len(texts) == 1
    text = texts.pop()
    assert "| test writers of | 3 refs, mean | 3 refs, min | 3 refs, ratio | 5 refs, mean | 5 refs, min | 5 refs, ratio |" in text
    assert "| test writers of | 5 refs, min (threshold 0.330) |" in text and "| CEDAR | 5.00% / 7.00% |" in text


def test_a_card_of_cross_media_weights_says_they_saw_pen_on_screen_signatures(saved_model: Path, tmp_path: Path) -> None:
    """The card called every training set "scanned signatures on white paper", cross-media's tablet strokes too."""
    folder = Path(shutil.copytree(saved_model, tmp_path / "ckpt"))
    (folder / "metrics.json").write_text(json.dumps({"val": VAL}))
    eval_json, config_json = tmp_path / "eval.json", tmp_path / "train_config.json"
    eval_json.write_text(json.dumps({"metrics": TEST, "n_pairs": 4260, "data": "../shared/datasets/cedar", "command": "eval cedar"}))
    config_json.write_text(json.dumps(TRAIN_CONFIG))
    args = ["card", "--weights", str(folder), "--eval-json", str(eval_json), "--train-config", str(config_json)]
    assert main([*args, "--dataset", "crossmedia-chinese", "--dataset", "cedar"]) == 0
    text = (folder / "README.md").read_text()
    assert "white paper" not in text and "pen on a tablet or phone screen" in text
    assert "Measured on 5 test writers of CEDAR;" in text, "the test numbers are CEDAR's, not cross-media's"
