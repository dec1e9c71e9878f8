"""Publishing a checkpoint folder to the Hugging Face Hub so that ``hf://owner/name`` loads it.

Everything is checked before anything is uploaded: a broken or unsafe checkpoint
on the Hub would break the app for every visitor who loads it, and a pickle file
could run code on their machines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from dsn.hub.modelcard import CARD_NAME, check_model_card
from dsn.model.detailsemnet import DetailSemNet, DetailSemNetConfig
from dsn.model.weights import CONFIG_NAME, SHA256_KEY, WEIGHTS_NAME

MAX_CHECKPOINT_BYTES = 25 * 1000 * 1000  # 25 MB: the app downloads it on first start
PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib"}
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class PublishError(RuntimeError):
    """The checkpoint may not be published; the message lists every problem."""


@dataclass
class CheckReport:
    """What would be uploaded, and why it must not be (if anything)."""

    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)  # (path relative to folder, bytes)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def format(self) -> str:
        lines = [f"{self.folder}:"]
        lines += [f"  {size / 1e6:9.3f} MB  {name}" for name, size in self.files]
        lines.append(f"  {self.total_bytes / 1e6:9.3f} MB  total ({len(self.files)} files)")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {problem}" for problem in self.problems]
        else:
            lines.append("OK: ready to publish")
        return "\n".join(lines)


def _looks_pickled(path: Path) -> bool:
    """Pickle by name or by content: protocol 2+ pickles start with 0x80, torch zips hold data.pkl."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with path.open("rb") as handle:
        head = handle.read(4)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head == b"PK\x03\x04":
        return b".pkl" in path.read_bytes()[:1_000_000]
    return False


def _uploadable_files(folder: Path) -> list[Path]:
    """Every regular file except hidden ones (.git, .cache, editor files)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _check_config(folder: Path) -> list[str]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        return [f"no {CONFIG_NAME}: it is needed to rebuild the architecture"]
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            return [f"{CONFIG_NAME} must hold a JSON object"]
        DetailSemNetConfig.from_dict({k: v for k, v in data.items() if k != SHA256_KEY})
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return [f"{CONFIG_NAME} is not valid JSON: {err}"]
    except RecursionError:
        return [f"{CONFIG_NAME} is nested too deeply to be a config"]
    except (TypeError, ValueError) as err:
        return [f"{CONFIG_NAME} is not a DetailSemNet config: {err}"]
    return []


def check_checkpoint(folder: str | Path, max_bytes: int = MAX_CHECKPOINT_BYTES) -> CheckReport:
    """Validate a checkpoint folder without uploading anything."""
    folder = Path(folder)
    report = CheckReport(folder)
    if not folder.is_dir():
        report.problems.append(f"{folder} is not a folder")
        return report
    files = _uploadable_files(folder)
    report.files = [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in files]
    report.problems += [
        f"{p.relative_to(folder).as_posix()} is (or may contain) a pickle: refused, use safetensors" for p in files if _looks_pickled(p)
    ]
    config_problems = _check_config(folder)
    report.problems += config_problems
    if not (folder / WEIGHTS_NAME).is_file():
        report.problems.append(f"no {WEIGHTS_NAME}")
    elif not config_problems:
        try:
            DetailSemNet.load(folder)
        except Exception as err:  # any failure to load means visitors could not load it either
            report.problems.append(f"{WEIGHTS_NAME} does not load into the architecture of {CONFIG_NAME}: {err}")
    if report.total_bytes > max_bytes:
        biggest = max(report.files, key=lambda item: item[1])
        report.problems.append(
            f"{report.total_bytes / 1e6:.1f} MB in total is over the {max_bytes / 1e6:.0f} MB limit (largest: {biggest[0]}, {biggest[1] / 1e6:.1f} MB)"
        )
    card = folder / CARD_NAME
    if not card.is_file():
        report.problems.append(f"no {CARD_NAME} model card: write one with `python -m dsn card --weights {folder} ...`")
    else:
        report.problems += check_model_card(card.read_text(encoding="utf-8", errors="replace"))
    return report


def push_checkpoint(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    max_bytes: int = MAX_CHECKPOINT_BYTES,
) -> str:
    """Check, then upload exactly the checked files; return the commit URL.

    The repository is created if needed (``exist_ok``) and a non-main
    ``revision`` becomes a branch, so ``hf://repo_id@revision`` loads it.
    """
    from huggingface_hub import HfApi

    if not REPO_ID.match(repo_id):
        raise PublishError(f"repo id {repo_id!r} must look like owner/name")
    report = check_checkpoint(folder, max_bytes)
    if not report.ok:
        raise PublishError("refusing to publish:\n" + "\n".join(f"- {p}" for p in report.problems))
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(Path(folder)),
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"Upload DetailSemNet checkpoint from {Path(folder).name}",
        allow_patterns=[name for name, _ in report.files],
    )
    return str(getattr(info, "commit_url", info))
