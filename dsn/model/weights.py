"""Saving and loading DetailSemNet weights: local folders or the Hugging Face Hub, safetensors only.

A weights source is either a folder holding ``config.json`` + ``model.safetensors``
or ``hf://owner/repo[@revision]``. Pickle files are refused: a checkpoint from
the internet must not be able to run code on a visitor's machine.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from dsn.model.config import ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CHECKSUM_NAME = "model.safetensors.sha256"  # written beside the weights; checked at every load when present
COMMIT_PATTERN = re.compile(r"[0-9a-f]{40}")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
DEFAULT_CHECKPOINT = "dsnet-tiny-joint4"

# any module with a ``config`` dataclass and ``from_config``-style construction (DetailSemNet): typed without
# importing the model file, so weights I/O stays below the model, as timm keeps it out of model files
ModelT = TypeVar("ModelT", bound=torch.nn.Module)


class WeightsError(RuntimeError):
    """A weights source could not be used; the message says why and what to do."""


def default_weights() -> str | None:
    """The embedded default checkpoint (overridable with DSN_WEIGHTS), or None when there is none."""
    env = os.environ.get("DSN_WEIGHTS")
    if env:
        return env
    folder = CHECKPOINTS_DIR / DEFAULT_CHECKPOINT
    return str(folder) if (folder / WEIGHTS_NAME).is_file() else None


SHA256_KEY = "weights_sha256"  # in config.json: the weights file's sha256, so a deleted sidecar cannot skip the check


def save_folder(model: torch.nn.Module, folder: str | Path) -> Path:
    """Weights first, then config.json naming their sha256, then the sidecar."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "library": "dsn"})
    return save_config(model, folder)


def save_config(model: torch.nn.Module, folder: str | Path) -> Path:
    """Rewrite config.json (and the sidecar) beside weights already in ``folder``, which stay byte for byte.

    For changes of the decision settings only (``calibrate``): rewriting the weights would give
    other bytes for the same tensors (safetensors orders its metadata at random).
    """
    folder = Path(folder)
    digest = file_sha256(folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(json.dumps({**model.config_dict(), SHA256_KEY: digest}, indent=2, sort_keys=True) + "\n")
    (folder / CHECKSUM_NAME).write_text(f"{digest}  {WEIGHTS_NAME}\n")
    return folder


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per version of the file: a Hub load checks it against the Hub and the sidecar."""
    real = Path(os.path.realpath(path))
    status = real.stat()
    return _sha256_of(real, status.st_ino, status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: Path, inode: int, size: int, mtime_ns: int) -> str:  # a rewritten or replaced file is hashed again
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights_file(folder: Path, source: str | Path, recorded_in_config: str | None = None) -> None:
    """Refuse weights whose bytes differ from the sha256 recorded when they were saved (corruption, tampering).

    The sha256 in config.json is authoritative: with it, a missing sidecar is no way around the check.
    A folder with neither (written before checksums existed) loads, with a warning that says so.
    """
    sidecar = folder / CHECKSUM_NAME
    records = []
    if recorded_in_config is not None:
        if not isinstance(recorded_in_config, str) or not SHA256_PATTERN.fullmatch(recorded_in_config.lower()):
            raise WeightsError(f"{source}: config.json's {SHA256_KEY} is not a sha256 digest")
        records.append(("config.json", recorded_in_config.lower()))
    if sidecar.is_file():
        words = sidecar.read_text().split()
        records.append((CHECKSUM_NAME, words[0].lower() if words else ""))
    if not records:
        warnings.warn(
            f"{source}: no checksum recorded for {WEIGHTS_NAME} (an older checkpoint); its integrity cannot be checked", stacklevel=3
        )
        return
    actual = file_sha256(folder / WEIGHTS_NAME)
    for where, expected in records:
        if actual != expected:
            raise WeightsError(
                f"{source}: {WEIGHTS_NAME} does not match the sha256 recorded in {where} "
                f"(expected {expected[:12]}..., got {actual[:12]}...): the file is corrupted or was changed. Download it again."
            )


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``hf://owner/repo@rev`` -> ("owner/repo", "rev")."""
    rest = source[len("hf://") :]
    repo_id, _, revision = rest.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise WeightsError(f"{source!r} is not a Hub source; expected hf://owner/repo or hf://owner/repo@revision")
    return repo_id, revision or None


def fetch_from_hub(source: str, **hub_kwargs: object) -> Path:
    """Download (or find in the cache) config + weights; return the local snapshot folder.

    `hub_kwargs` (token, cache_dir, force_download, local_files_only) go to ``hf_hub_download``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = parse_hub_source(source)
    try:
        config_path = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, **hub_kwargs)
        # Pin the commit the config came from: a push between two downloads must not mix revisions.
        commit = Path(config_path).parent.name  # the cache keeps files under snapshots/<commit>/
        pinned = commit if COMMIT_PATTERN.fullmatch(commit) else revision
        weights_path = hf_hub_download(repo_id, WEIGHTS_NAME, revision=pinned, **hub_kwargs)
        with contextlib.suppress(EntryNotFoundError):  # older uploads carry no checksum file
            hf_hub_download(repo_id, CHECKSUM_NAME, revision=pinned, **hub_kwargs)
    # LocalEntryNotFoundError subclasses EntryNotFoundError in huggingface_hub >= 1.0: it must be caught first.
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise WeightsError(
            f"Cannot download {source}: offline (HF_HUB_OFFLINE is set or the Hub is unreachable) and it is not in the local cache. "
            "Connect to the internet once, or pass a local folder with --weights."
        ) from err
    except RepositoryNotFoundError as err:
        raise WeightsError(f"Hub repository {repo_id!r} was not found (or is private and no token was given).") from err
    except RevisionNotFoundError as err:
        raise WeightsError(f"Revision {revision!r} does not exist in {repo_id!r}.") from err
    except EntryNotFoundError as err:
        raise WeightsError(f"{repo_id!r} has no {CONFIG_NAME} + {WEIGHTS_NAME}; is it a DetailSemNet checkpoint?") from err
    except HfHubHTTPError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"Cannot download {source}: the Hub answered {first_line}") from err
    check_against_hub(Path(weights_path), source)
    return Path(config_path).parent


def check_against_hub(weights_path: Path, source: str) -> None:
    """Refuse cached weights whose bytes differ from the sha256 the Hub reported for them.

    huggingface_hub stores a large (LFS) file under ``blobs/<sha256 the Hub sent>`` and links the
    snapshot to it, so the check needs no request and works offline. Where the cache holds
    copies instead of links (e.g. Windows without symlinks), there is no recorded hash to compare.
    """
    reported = Path(os.path.realpath(weights_path)).name
    if not SHA256_PATTERN.fullmatch(reported):
        return
    actual = file_sha256(weights_path)
    if actual != reported:
        raise WeightsError(
            f"{source}: the cached {WEIGHTS_NAME} does not match the sha256 the Hub reported "
            f"(expected {reported[:12]}..., got {actual[:12]}...): the download is corrupted or was changed. "
            "Delete it from the Hugging Face cache and download it again."
        )


def resolve(source: str | Path) -> Path:
    if isinstance(source, str) and source.startswith("hf://"):
        return fetch_from_hub(source)
    folder = Path(source).expanduser()
    if not folder.exists():
        raise WeightsError(f"Weights folder {str(folder)!r} does not exist.")
    if folder.is_file():
        folder = folder.parent
    if not (folder / WEIGHTS_NAME).is_file():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in {".pt", ".pth", ".bin", ".ckpt", ".pkl"})
        hint = f" Found {pickles}: pickle checkpoints are refused for safety; convert them to safetensors." if pickles else ""
        raise WeightsError(f"{str(folder)!r} has no {WEIGHTS_NAME}.{hint}")
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(f"{str(folder)!r} has no {CONFIG_NAME}; it is needed to rebuild the architecture.")
    return folder


def load_model(cls: type[ModelT], source: str | Path, map_location: str | torch.device = "cpu", name: str | None = None) -> ModelT:
    """`name` is what the model reports as its source (e.g. the hf:// address of a downloaded folder)."""
    folder = resolve(source)
    source = name or source
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{source}: config.json is not valid JSON: {err}") from err
    except RecursionError as err:  # e.g. 100,000 nested "[": a hostile file, not a config
        raise WeightsError(f"{source}: config.json is nested too deeply to be a config") from err
    if not isinstance(config, dict):
        raise WeightsError(f"{source}: config.json must hold a JSON object.")
    recorded = config.pop(SHA256_KEY, None)
    try:
        model = cls(**config)
    except ConfigError as err:  # checked before anything is allocated: a hostile config cannot exhaust memory
        raise WeightsError(f"{source}: config.json is invalid: {err}.") from err
    except (ValueError, TypeError, RuntimeError) as err:
        raise WeightsError(f"{source}: wrong architecture for DetailSemNet ({err}).") from err
    check_weights_file(folder, source, recorded)
    try:
        state = load_file(str(folder / WEIGHTS_NAME), device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({err}); is it truncated or corrupted?") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{source}: the weights do not fit the architecture in config.json "
            f"(missing {len(missing)} keys, e.g. {missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})."
        )
    wrong = [k for k, v in state.items() if v.shape != expected[k].shape]
    if wrong:
        raise WeightsError(
            f"{source}: wrong architecture, tensor shapes differ for {len(wrong)} keys, e.g. {wrong[0]}: "
            f"{tuple(state[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)}."
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise WeightsError(
            f"{source}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]}); the checkpoint is unusable."
        )
    model.load_state_dict(state, strict=True)
    model.source = str(source)
    return model.eval()
