"""Crash-safe run checkpoints: written aside, verified, swapped in by rename.

A checkpoint folder is first written as ``.<name>.partial``, every file fsynced, then a
``manifest.json`` with each file's size and sha256 is written last. Only then is the old
folder renamed to ``.<name>.previous`` and the new one renamed into place. A process killed
at any point therefore leaves either the old complete checkpoint, or the new complete one
(as ``<name>`` or as a finished ``.partial``), and ``load_state`` takes the newest folder
whose manifest verifies, saying when it had to fall back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dsn.model.detailsemnet import DetailSemNet

MANIFEST = "manifest.json"
EMA_NAME = "ema.safetensors"  # the moving average of the weights (AveragedModel state), when the run keeps one
KILL_HOOK = "DSN_KILL_DURING_SAVE"  # tests: "<point>@<epoch>" sends SIGKILL to this process at that point of that save


class CheckpointError(RuntimeError):
    """No usable checkpoint: the message says what was found and why each was refused."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def crash_point(point: str, epoch: int, folder: Path | None = None) -> None:
    """Test hook: die here (SIGKILL, no clean-up) when ``DSN_KILL_DURING_SAVE`` names this point and epoch.

    ``model-half`` first cuts ``model.safetensors`` to half its size: a write interrupted midway.
    """
    wanted = os.environ.get(KILL_HOOK, "")
    if wanted != f"{point}@{epoch}":
        return
    if point == "model-half" and folder is not None:
        weights = folder / "model.safetensors"
        with weights.open("r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def sibling(folder: Path, role: str) -> Path:
    return folder.parent / f".{folder.name}.{role}"


@contextlib.contextmanager
def atomic_folder(folder: str | Path, epoch: int = 0) -> Iterator[Path]:
    """Yield a scratch folder to write a checkpoint into; on success it replaces ``folder`` atomically."""
    folder = Path(folder)
    partial, previous = sibling(folder, "partial"), sibling(folder, "previous")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    files = sorted(p for p in partial.iterdir() if p.is_file())
    for path in files:
        _fsync(path)
    manifest = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2))
    _fsync(partial / MANIFEST)
    _fsync(partial)
    crash_point("before-swap", epoch)
    if folder.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(folder, previous)
    crash_point("mid-swap", epoch)
    os.replace(partial, folder)
    _fsync(folder.parent)


def verify_folder(folder: Path) -> str | None:
    """None when every file of the folder's manifest is there with its size and sha256; else why not."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        return "missing"
    if not manifest_path.is_file():
        return f"no {MANIFEST} (unfinished, or written before checkpoints were verified)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        return f"{MANIFEST} is unreadable ({error})"
    for name, expected in manifest.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}"
        if _sha256(path) != expected["sha256"]:
            return f"{name} does not match its sha256"
    return None


def save_state(
    folder: Path,
    model: DetailSemNet,
    optimizer: torch.optim.Optimizer,
    state: dict,
    writer_head: torch.nn.Module | None = None,
    also: Callable[[Path], None] | None = None,
    ema: torch.nn.Module | None = None,
) -> None:
    """Model + optimizer (+ writer head, + weight average) as safetensors, counters as JSON: resumable without pickle,
    swapped in atomically.

    ``also(scratch)`` writes more files (metrics, model card) into the checkpoint before it is sealed."""
    with atomic_folder(folder, state["epoch"]) as scratch:
        model.save(scratch)
        crash_point("model-written", state["epoch"])
        crash_point("model-half", state["epoch"], scratch)
        if writer_head is not None:
            save_file(writer_head.state_dict(), str(scratch / "writer_head.safetensors"))
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}, str(scratch / EMA_NAME))
        opt = optimizer.state_dict()
        tensors = {f"{pid}.{key}": value for pid, slots in opt["state"].items() for key, value in slots.items() if torch.is_tensor(value)}
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(scratch / "optimizer.safetensors"))
        (scratch / "optimizer.json").write_text(json.dumps(opt["param_groups"]))
        (scratch / "train_state.json").write_text(json.dumps(state, indent=2))
        if also is not None:
            also(scratch)


def usable_checkpoint(folder: Path) -> Path:
    """The newest complete checkpoint among ``folder``, its finished ``.partial`` and its ``.previous``.

    Prints which one is used when it is not ``folder`` itself; raises when none verifies.
    """
    reasons = {}
    for candidate in (folder, sibling(folder, "partial"), sibling(folder, "previous")):
        problem = verify_folder(candidate)
        if problem is None:
            if candidate != folder:
                print(f"{folder.name}/ is not usable ({reasons[folder]}); resuming from {candidate.name}/ instead")
            return candidate
        reasons[candidate] = problem
    legacy = folder / "train_state.json"
    if legacy.is_file() and not sibling(folder, "partial").exists() and not (folder / MANIFEST).exists():
        return folder  # a run saved before manifests existed: its files are checked as they load
    details = "; ".join(f"{path.name}: {why}" for path, why in reasons.items())
    raise CheckpointError(f"no complete checkpoint to resume from in {folder.parent} ({details})")


def load_state(
    folder: Path,
    model: DetailSemNet,
    optimizer: torch.optim.Optimizer,
    writer_head: torch.nn.Module | None = None,
    ema: torch.nn.Module | None = None,
) -> dict:
    """Restore model, optimizer (writer head, weight average) from the newest verified checkpoint at ``folder``;
    return its counters. A run that turns the average on when resumed starts it from the restored weights."""
    folder = usable_checkpoint(Path(folder))
    model.load_state_dict(DetailSemNet.load(folder).state_dict())
    if writer_head is not None:
        writer_head.load_state_dict(load_file(str(folder / "writer_head.safetensors")))
    if ema is not None:
        if (folder / EMA_NAME).is_file():
            ema.load_state_dict(load_file(str(folder / EMA_NAME)))
        else:
            print(f"{folder.name}/ holds no weight average: it starts from the resumed weights")
            ema.load_state_dict({"n_averaged": torch.tensor(1), **{f"module.{k}": v for k, v in model.state_dict().items()}})
    flat = load_file(str(folder / "optimizer.safetensors"))
    slots: dict[int, dict] = {}
    for name, value in flat.items():
        pid, key = name.split(".", 1)
        slots.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": json.loads((folder / "optimizer.json").read_text())})
    return json.loads((folder / "train_state.json").read_text())
