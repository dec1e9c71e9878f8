"""Where and how a run executes: device, precision, processes, compilation.

Multi-process runs use plain ``torch.distributed`` with DDP, launched by ``torchrun`` or
``accelerate launch`` (both set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR). Accelerate's
``Accelerator`` would add a wrapper around a step that is not a plain ``model(x) -> loss``
(embed once, score every pair of the batch), and the offline GPU boxes we target need nothing
beyond torch; ``accelerate launch`` still works because it sets the same environment.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dsn.model.detailsemnet import DetailSemNet
from dsn.precision import resolve_device, resolve_precision


@dataclass(frozen=True)
class Runtime:
    """This process's place in the run."""

    device: torch.device
    precision: str  # "bf16" or "fp32", resolved
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 validates, writes checkpoints and prints."""
        return self.rank == 0

    def describe(self) -> str:
        backend = f", {dist.get_backend()} x{self.world}" if self.world > 1 else ""
        return f"{self.device.type}, {self.precision}{backend}"


def start(device: str = "auto", precision: str = "auto") -> Runtime:
    """Resolve device and precision; join the process group when launched with several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Runtime(resolved, resolve_precision(precision, resolved), rank, world, local_rank)


def finish(runtime: Runtime) -> None:
    if runtime.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(runtime: Runtime) -> None:
    if runtime.world > 1:
        dist.barrier()


def any_rank(flag: bool, runtime: Runtime) -> bool:
    """True on every process when ``flag`` is true on one of them (e.g. a time budget spent on rank 0)."""
    if runtime.world == 1:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=runtime.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def distribute(step: torch.nn.Module, runtime: Runtime, unused_parameters: bool = False) -> torch.nn.Module:
    """DDP around the step module when there are several processes: gradients are averaged at backward."""
    if runtime.world == 1:
        return step
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=unused_parameters)


def compile_backbone(model: DetailSemNet, backend: str | Callable = "inductor") -> None:
    """Compile the backbone pass (the method the model calls) in place: weights and their names do not change."""
    backbone = model.backbone
    backbone.forward_tokens = torch.compile(backbone.forward_tokens, backend=backend)


def drop_compiled(model: DetailSemNet) -> None:
    """Back to the eager backbone."""
    vars(model.backbone).pop("forward_tokens", None)


@contextlib.contextmanager
def eager(model: DetailSemNet) -> Iterator[None]:
    """Validation and saving run the eager backbone: no recompilation for inference mode or other batch sizes."""
    compiled = vars(model.backbone).pop("forward_tokens", None)
    try:
        yield
    finally:
        if compiled is not None:
            model.backbone.forward_tokens = compiled


def first_step_compiled(run_step: Callable[[], dict], model: DetailSemNet) -> tuple[dict, float]:
    """Run the first step with the compiled backbone; on any compiler failure say so and run it eagerly.

    Returns the step's output and the seconds compilation took (including that first step).
    """
    started = time.perf_counter()
    try:
        return run_step(), time.perf_counter() - started
    except Exception as error:  # Inductor fails in many ways (no C++ compiler, unsupported op): eager still trains
        drop_compiled(model)
        torch._dynamo.reset()
        reason = " ".join(str(error).split())[:200]
        print(f"--compile: compilation failed ({type(error).__name__}: {reason}); training eagerly instead")
        return run_step(), 0.0
