"""Where the app's model runs: device, ZeroGPU, and memory given back after heavy work.

The model itself comes from ``dsn.load`` and is described by ``dsn.model_info.ModelInfo``, like
everywhere else; this module keeps the UI code from having to know whether it runs on a laptop
CPU, a CUDA box or a Hugging Face ZeroGPU Space.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def pick_device() -> torch.device:
    """CUDA when present (analysis then runs the backbone in bf16), else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
