"""A run folder holds one run: a new run does not overwrite it, and a resumed run keeps its recipe unless told."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from test_train import needs_cedar, small_config, tiny_cedar

from dsn.hub.modelcard import train_command
from dsn.training.config import TrainConfig, recipe_changes
from dsn.training.run_folder import RunFolderError
from dsn.training.train import run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_only_recipe_fields_count_as_a_change_and_a_field_newer_than_the_run_takes_its_default() -> None:
    saved = {"data": ["/data/cedar", "/data/bhsig-hindi"], "out": "/runs/a", "lr": 0.001, "threads": 1, "precision": "bf16"}
    same = TrainConfig(data=["../other/cedar", "../other/bhsig-hindi"], out="/runs/b", lr=0.001, threads=2, precision="fp32")
    assert recipe_changes(saved, same) == {}, "threads, precision, paths of the same datasets and the folder may change"
    assert recipe_changes(saved, replace(same, lr=0.002, ema_decay=0.99)) == {"lr": (0.001, 0.002), "ema_decay": (0.0, 0.99)}
    assert recipe_changes(saved, replace(same, data=["/data/cedar"])) == {"data": (["cedar", "bhsig-hindi"], ["cedar"])}
    assert recipe_changes(saved, replace(same, data=[], packed="datasets.pack")) == {}, "a packed run names no folders"


@needs_cedar
def test_a_run_folder_is_neither_overwritten_nor_resumed_with_another_recipe_unasked(tmp_path: Path) -> None:
    dataset = tiny_cedar(tmp_path)
    out = tmp_path / "run"
    cfg = small_config(dataset, out, epochs=3)
    cfg.img_size, cfg.steps_per_epoch, cfg.workers = 48, 2, 0
    run(cfg, stop_after=1)
    weights = (out / "last" / "model.safetensors").read_bytes()
    saved = (out / "train_config.json").read_text()

    with pytest.raises(RunFolderError, match=r"already holds a training run \(last checkpoint: epoch 1\).*--resume"):
        run(cfg)
    with pytest.raises(RunFolderError, match=r"another recipe.*--lr 0.003 -> 0.001.*--allow-recipe-change"):
        run(replace(cfg, lr=1e-3), resume=True)
    assert (out / "last" / "model.safetensors").read_bytes() == weights and (out / "train_config.json").read_text() == saved

    assert run(replace(cfg, threads=2, workers=1), resume=True, stop_after=2)["step"] == 4, "execution settings may change"
    state = run(replace(cfg, lr=1e-3), resume=True, allow_recipe_change=True)
    assert state["step"] == 6
    written = json.loads((out / "train_config.json").read_text())
    assert written["lr"] == 1e-3
    assert written["notes"]["recipe_changes"] == [{"epoch": 2, "changes": {"lr": {"from": 0.003, "to": 0.001}}}]
    assert "resumed after epoch 2 with a changed recipe (--lr 0.003 -> 0.001)" in train_command(written)
    assert "resumed after epoch 2" in (out / "last" / "README.md").read_text(), "the model card repeats the change"
