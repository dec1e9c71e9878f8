"""Which device and which number format a run uses: one policy for training and inference.

bf16 pays where the hardware multiplies bf16 natively: CUDA GPUs, and CPUs with AMX or
AVX512-BF16 (on this project's Xeon a bf16 matmul runs at ~7x the fp32 rate). Elsewhere
bf16 autocast would only add conversions, so ``auto`` falls back to fp32.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 matmuls natively (AMX-BF16 or AVX512-BF16)."""
    probes = [getattr(torch._C._cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(probe is not None and probe() for probe in probes):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: trust torch's probes alone
        return False
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's CUDA GPU when there is one, else the CPU."""
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU (is this a CPU build of torch?)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def resolve_precision(requested: str, device: torch.device) -> str:
    """``bf16`` or ``fp32``; ``auto`` is bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
