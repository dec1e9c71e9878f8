"""What the app says about its model and where the model runs: ``ModelInfo.of``, device, ZeroGPU.

The model itself comes from ``dsn.load``, like everywhere else; this module describes it
for the header and keeps the UI code from having to know whether it runs on a laptop CPU,
a CUDA box or a Hugging Face ZeroGPU Space.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from dsn.model.detailsemnet import DetailSemNet

F = TypeVar("F", bound=Callable)


@dataclass
class ModelInfo:
    """What the header tells visitors about the model they are talking to."""

    source: str | None  # local folder or hf:// source; None = random initialisation
    device: str
    backbone: str
    parameters: int
    threshold: float
    metrics: dict = field(default_factory=dict)  # flattened numbers from the checkpoint's metrics.json
    test_data: str = ""  # dataset folder name the "test" metrics were measured on
    structural_weight: float = 1.0
    distance_spread: dict | None = None  # percentiles of val genuine / forged distances (metrics.json "val_distances")

    @classmethod
    def of(cls, model: DetailSemNet) -> ModelInfo:
        """The one description of a loaded model (from ``dsn.load``): where it came from, where it runs, what it measured."""
        source = getattr(model, "source", None)
        measured = read_checkpoint_metrics(str(source) if source is not None else None)
        return cls(
            source=str(source) if source is not None else None,
            device=str(next(model.parameters()).device),
            backbone=model.config.backbone,
            parameters=sum(p.numel() for p in model.parameters()),
            threshold=float(model.config.threshold),
            metrics=_flatten_numbers(measured),
            test_data=Path(str((measured.get("test_info") or {}).get("data") or "")).name,
            structural_weight=float(model.config.structural_weight),
            distance_spread=spread_of(measured),
        )

    @property
    def max_distance(self) -> float:
        """Global distance of unit vectors <= 2, cosine cost <= 2: the total never exceeds this."""
        return 2.0 * (1.0 + self.structural_weight)

    @property
    def untrained(self) -> bool:
        return self.source is None


def pick_device() -> torch.device:
    """CUDA when present (analysis then runs the backbone in bf16), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _flatten_numbers(data: object, prefix: str = "") -> dict[str, float]:
    if isinstance(data, bool):
        return {}
    if isinstance(data, (int, float)):
        return {prefix: float(data)}
    if isinstance(data, dict):
        out: dict[str, float] = {}
        for key, value in data.items():
            out.update(_flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {}


def read_checkpoint_metrics(source: str | None) -> dict:
    """``metrics.json`` next to the weights, so the UI can quote it honestly; {} if absent or unreadable."""
    if source is None:
        return {}
    from dsn.model.weights import WeightsError, resolve

    try:
        folder = resolve(source)  # a Hub source is already in the local cache after loading
    except WeightsError:
        return {}
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return {}
    return content if isinstance(content, dict) else {}


def spread_of(measured: dict) -> dict | None:
    """The checkpoint's val distance percentiles when metrics.json has a usable set, else None."""
    spread = measured.get("val_distances")
    try:
        keys = ("percent", "genuine", "forged")
        if isinstance(spread, dict) and len({len(spread[k]) for k in keys}) == 1 and len(spread["percent"]) > 1:
            return {k: [float(v) for v in spread[k]] for k in keys}
    except (KeyError, TypeError, ValueError):
        pass
    return None


def gpu(fn: F) -> F:
    """Wrap GPU work in ``spaces.GPU`` when running on a ZeroGPU Space; a no-op everywhere else."""
    if os.environ.get("DSN_NO_SPACES"):
        return fn
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return fn
    return spaces.GPU(fn)  # type: ignore[no-any-return]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(library, "malloc_trim", None)


def release_memory() -> None:
    """Give memory freed by a model run back to the OS.

    glibc keeps freed heap in per-thread arenas, and Gradio runs each request in
    whichever worker thread is free, so under load the server's RSS grew by
    gigabytes and stayed there when idle although nothing held the memory.
    Trimming after each run costs well under a millisecond.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
