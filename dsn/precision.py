"""Which device and which number format a run uses: one policy for training and inference.

bf16 pays where the hardware multiplies bf16 natively: CUDA GPUs, and CPUs with AMX or
AVX512-BF16 (on this project's Xeon a bf16 matmul runs at ~7x the fp32 rate). Elsewhere
bf16 autocast would only add conversions, so ``auto`` falls back to fp32.
"""

from __future__ import annotations

import contextlib
import functools
import os
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


# ----------------------------------------------------------------------------- the inference policy
# One setting for every inference path (CLI, app, evaluation, explorer); training passes its own.
_inference_precision = os.environ.get("DSN_PRECISION", "auto")


def set_precision(value: str) -> None:
    """Backbone precision of every inference path: ``auto`` (bf16 on CUDA and for datasets on bf16 CPUs), ``fp32`` or ``bf16``."""
    global _inference_precision
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
    _inference_precision = value


def precision_for(device: torch.device, bulk: bool = False) -> str:
    """``fp32`` or ``bf16``: what the backbone runs in on ``device`` under the current inference policy.

    ``bulk``: embedding a dataset. On this project's AMX CPU bf16 embedded 1.0-1.8x faster for
    ``dsnet_tiny`` and 2.3-2.9x for ``dsnet_official``, and moved the default's test EERs by
    0.004-0.02 points on the offline sets and 0.11 on cross-media (README, "Python API"). A single
    pair and attributions stay float32, where bf16 does not pay.
    """
    if _inference_precision not in PRECISIONS:
        raise ValueError(f"DSN_PRECISION must be one of {PRECISIONS}, got {_inference_precision!r}")
    if _inference_precision == "auto":
        if device.type == "cuda":
            return "bf16"
        return "bf16" if bulk and cpu_has_bf16() else "fp32"
    return _inference_precision


def inference_autocast(device: torch.device, bulk: bool = False) -> contextlib.AbstractContextManager:
    """The backbone's autocast under the inference policy (see ``precision_for``)."""
    return autocast(device, precision_for(device, bulk))
