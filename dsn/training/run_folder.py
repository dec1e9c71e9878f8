"""One run per folder: a new run never overwrites another's checkpoints, and a resumed run keeps its recipe.

Resuming with other options would silently train a mixture of two recipes under the first one's name
(the model card's command would be wrong). Execution settings (threads, device, precision, workers)
may change; a recipe change needs ``--allow-recipe-change`` and is then recorded in ``train_config.json``
(``notes.recipe_changes``: at which epoch, from what, to what), which the model card repeats.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from dsn.training import checkpoint
from dsn.training.config import TrainConfig, recipe_changes

CONFIG_NAME = "train_config.json"


class RunFolderError(RuntimeError):
    """The run folder holds a run this call must not overwrite or resume as asked; the message says what to do."""


def holds_a_run(out: Path) -> bool:
    """Whether ``out`` has a checkpoint of a run (complete, being written, or the one before it)."""
    last = out / "last"
    return any(p.exists() for p in (last, checkpoint.sibling(last, "partial"), checkpoint.sibling(last, "previous")))


def _saved_epoch(out: Path) -> int | None:
    try:
        folder = checkpoint.usable_checkpoint(out / "last")
        return int(json.loads((folder / "train_state.json").read_text())["epoch"])
    except (checkpoint.CheckpointError, OSError, ValueError, KeyError):
        return None  # resuming will say what is wrong with the checkpoint


def _describe(changes: dict[str, tuple[object, object]]) -> str:
    return "; ".join(f"--{name.replace('_', '-')} {old!r} -> {new!r}" for name, (old, new) in changes.items())


def config_to_write(cfg: TrainConfig, resume: bool, allow_recipe_change: bool = False) -> dict:
    """The ``train_config.json`` this call writes into ``cfg.out``; raises ``RunFolderError`` when the folder
    already holds a run and this call would overwrite it (no ``resume``) or change its recipe unasked."""
    out = Path(cfg.out)
    record = asdict(cfg)
    if not holds_a_run(out):
        return record
    epoch = _saved_epoch(out)
    at = f" (last checkpoint: epoch {epoch})" if epoch is not None else ""
    if not resume:
        raise RunFolderError(f"{out} already holds a training run{at}; pass --resume to continue it, or choose another --out")
    saved_path = out / CONFIG_NAME
    if not saved_path.is_file():
        return record
    saved = json.loads(saved_path.read_text())
    notes = {**(saved.get("notes") or {}), **cfg.notes}
    changes = recipe_changes(saved, cfg)
    if changes and not allow_recipe_change:
        raise RunFolderError(
            f"{out} holds a run started with another recipe{at}: {_describe(changes)}. Resume it with the options it was "
            "started with (its train_config.json), or pass --allow-recipe-change to change it on purpose (recorded)."
        )
    if changes:
        entry = {"epoch": epoch, "changes": {name: {"from": old, "to": new} for name, (old, new) in changes.items()}}
        notes["recipe_changes"] = [*notes.get("recipe_changes", []), entry]
        print(f"recipe changed at epoch {epoch}: {_describe(changes)} (recorded in {saved_path})")
    record["notes"] = notes
    return record
