"""Result plumbing: apply one function to every tensor inside a result, keeping everything else.

The model's results (``Embedding``, ``Verification`` with its ``Transport``, ``DSIMaps``) are
dataclasses of tensors plus plain fields (grid, weights, indices). Moving them to a device,
to float32 on the CPU, or taking one batch item was written field by field in several places;
``map_tensors`` (LightGlue's ``map_tensor`` idea) does it once, so a new field cannot be forgotten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


def map_tensors(value: T, fn: Callable[[torch.Tensor], torch.Tensor]) -> T:
    """A copy of ``value`` (a dataclass, list, tuple or dict, nested) with ``fn`` applied to every tensor in it."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: map_tensors(getattr(value, f.name), fn) for f in dataclasses.fields(value) if f.init})
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(item, fn) for item in value)
    if isinstance(value, dict):
        return {key: map_tensors(item, fn) for key, item in value.items()}
    return value


def array_bytes(value: object) -> int:
    """Bytes held by the tensors and arrays inside ``value`` (dataclasses, lists, tuples, dicts), each counted once."""
    seen: set[int] = set()

    def walk(item: object) -> int:
        if id(item) in seen:
            return 0
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            return item.element_size() * item.nelement()
        if isinstance(item, np.ndarray):
            return item.nbytes
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return sum(walk(getattr(item, f.name)) for f in dataclasses.fields(item))
        if isinstance(item, (list, tuple)):
            return sum(walk(x) for x in item)
        if isinstance(item, dict):
            return sum(walk(x) for x in item.values())
        return 0

    return walk(value)


def to_cpu_float(t: torch.Tensor) -> torch.Tensor:
    """Detached, on the CPU, floating point as float32 (masks and indices keep their type)."""
    return t.detach().to("cpu", torch.float32) if t.is_floating_point() else t.detach().to("cpu")


def batch_item(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Item ``index`` of every tensor's batch dimension, kept as a batch of one (-1 is the last item)."""
    items = slice(index, index + 1 or None)
    return lambda t: t[items]
