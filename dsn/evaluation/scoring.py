"""Scoring many pairs cheaply: one backbone pass per image, then pairs from cached embeddings.

Used by training (validation EER), evaluation and the app's dataset explorer;
embedding and scoring go through ``dsn.inference``, like every other path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm  # text bars everywhere: tqdm.auto wants ipywidgets in notebooks ("IProgress not found")

from dsn import inference
from dsn.data.dataset import ImageCache, Pair
from dsn.model.detailsemnet import DetailSemNet, Embedding

# Images per backbone pass when embedding a dataset on CPU: small batches keep activations in cache
# (dsnet_tiny, 2 cores: 148 images/s at 8, 143 at 16, 110 at 32, 99 at 64).
EMBED_BATCH = 8


@dataclass
class PairScores:
    distance: np.ndarray
    global_distance: np.ndarray
    structural_distance: np.ndarray
    genuine: np.ndarray  # bool labels (True = genuine-genuine pair)
    marginal_error: np.ndarray


def embed_cache(
    model: DetailSemNet,
    cache: ImageCache,
    batch_size: int = EMBED_BATCH,
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> Embedding:
    """Embed every cached image once (through ``dsn.inference``); ``on_batch(done, total)`` reports progress."""
    parts = []
    starts = range(0, len(cache), batch_size)
    for start in tqdm(starts, desc="embedding", disable=not progress, leave=False):
        indices = list(range(start, min(start + batch_size, len(cache))))
        parts.append(inference.embed(model, cache.batch(indices), bulk=True))
        if on_batch is not None:
            on_batch(indices[-1] + 1, len(cache))
    return Embedding.cat(parts)


def score_pairs(model: DetailSemNet, embedding: Embedding, pairs: Sequence[Pair], chunk: int = 2048) -> PairScores:
    """Distances of ``pairs`` (indices into the embedded images), in chunks to bound memory."""
    a = torch.tensor([p.a for p in pairs], dtype=torch.long)
    b = torch.tensor([p.b for p in pairs], dtype=torch.long)
    out: dict[str, list[torch.Tensor]] = {"d": [], "g": [], "s": [], "m": []}
    for start in range(0, len(pairs), chunk):
        sl = slice(start, start + chunk)
        result = inference.compare(model, embedding[a[sl]], embedding[b[sl]])
        out["d"].append(result.distance)
        out["g"].append(result.global_distance)
        out["s"].append(result.structural_distance)
        out["m"].append(result.transport.marginal_error)

    def cat(key: str) -> np.ndarray:
        return torch.cat(out[key]).numpy() if out[key] else np.zeros(0, dtype=np.float32)

    return PairScores(cat("d"), cat("g"), cat("s"), np.array([p.genuine for p in pairs], dtype=bool), cat("m"))
