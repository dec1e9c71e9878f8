"""Run checkpoints survive a kill at any point of a save: the resumed run equals the uninterrupted one bit for bit."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import needs_cedar, small_config, tiny_cedar

from dsn.hub.modelcard import train_command
from dsn.training.checkpoint import KILL_HOOK, CheckpointError, sibling, usable_checkpoint
from dsn.training.train import run

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("one_thread"), needs_cedar, pytest.mark.slow]


def config(dataset: Path, out: Path):
    cfg = small_config(dataset, out, epochs=3)
    cfg.img_size, cfg.steps_per_epoch, cfg.workers = 48, 2, 0
    return cfg


def same_files(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "optimizer.safetensors"):
        left, right = load_file(str(a / name)), load_file(str(b / name))
        assert left.keys() == right.keys()
        for key in left:
            assert torch.equal(left[key], right[key]), f"{name}:{key} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("straight")
    dataset = tiny_cedar(root)
    run(config(dataset, root / "run"))
    return dataset, root / "run"


@pytest.mark.parametrize("point", ["model-written", "model-half", "before-swap", "mid-swap"])
def test_a_kill_inside_the_save_resumes_to_the_uninterrupted_result(tmp_path: Path, straight: tuple[Path, Path], point: str) -> None:
    dataset, reference = straight
    cfg = config(dataset, tmp_path / "run")
    argv = shlex.split(train_command(asdict(cfg)))[1:]  # ["-m", "dsn", "train", ...]: the same run from the command line
    env = {**os.environ, KILL_HOOK: f"{point}@2", "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-1500:]
    if point == "model-half":
        half = sibling(tmp_path / "run" / "last", "partial") / "model.safetensors"
        assert half.stat().st_size < (reference / "last" / "model.safetensors").stat().st_size
    state = run(cfg, resume=True)
    assert state["step"] == 6 and [h["epoch"] for h in state["history"]] == [1, 2, 3]
    same_files(tmp_path / "run" / "last", reference / "last")


def test_a_corrupted_checkpoint_falls_back_to_the_previous_one_with_a_message(
    tmp_path: Path, straight: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    dataset, _ = straight
    cfg = config(dataset, tmp_path / "run")
    run(cfg, stop_after=2)
    last = tmp_path / "run" / "last"
    data = bytearray((last / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (last / "model.safetensors").write_bytes(bytes(data))
    assert usable_checkpoint(last) == sibling(last, "previous")
    assert "not usable" in capsys.readouterr().out
    state = run(cfg, resume=True)
    assert state["step"] == 6, "epoch 2 is trained again from the epoch-1 checkpoint"
    for folder in (last, sibling(last, "previous")):
        (folder / "manifest.json").unlink()
        (folder / "train_state.json").unlink()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        usable_checkpoint(last)
