"""Which images a training step sees: writer subsets, batches of whole writers, and the
DataLoader that prepares the next batches in worker processes while the current step runs.

A batch is a pure function of (seed, step): every process of a distributed run draws the
same global set of writers and keeps its own share, so ranks never see the same writer in a
step, and a resumed or re-launched run continues exactly where it stopped.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from dsn.data.augment import Augment, MediaAugment
from dsn.data.dataset import WRITER_NAMESPACE, ImageCache, SignatureImage
from dsn.data.strokes import uniform_strokes
from dsn.training.config import TrainConfig


def subset_writers(images: list[SignatureImage], count: int, seed: int) -> list[SignatureImage]:
    """The images of ``count`` writers, each dataset keeping its share of writers (largest remainder).

    Each dataset's writers are shuffled once per seed and the first ones taken, so the subsets of a
    learning curve are nested (the 25 writers are among the 50) and reproducible.
    """
    writers = sorted({im.writer for im in images})
    if count <= 0 or count >= len(writers):
        return images
    by_dataset: dict[int, list[int]] = {}
    for w in writers:
        by_dataset.setdefault(w // WRITER_NAMESPACE, []).append(w)
    quota = {k: count * len(ws) / len(writers) for k, ws in by_dataset.items()}
    take = {k: int(q) for k, q in quota.items()}
    for k in sorted(quota, key=lambda k: take[k] - quota[k])[: count - sum(take.values())]:
        take[k] += 1
    rng = np.random.default_rng(seed)
    chosen = {int(w) for k, ws in sorted(by_dataset.items()) for w in rng.permutation(ws)[: take[k]]}
    return [im for im in images if im.writer in chosen]


def manifest_columns(roots: Sequence[str | Path], column: str) -> dict[int, int]:
    """Writer (namespaced as ``split_images_of`` does) -> the integer in MANIFEST.csv's ``column``, for
    datasets that have it (cross-media: ``name``, the name a class wrote; ``person``, who wrote it)."""
    values: dict[int, int] = {}
    for k, root in enumerate(roots):
        manifest = Path(root) / "MANIFEST.csv"
        if not manifest.is_file():
            continue
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if column not in (reader.fieldnames or []):
                continue
            for row in reader:
                values[int(row["writer"]) + k * WRITER_NAMESPACE] = k * WRITER_NAMESPACE + int(row[column])
    return values


def name_groups(roots: Sequence[str | Path]) -> dict[int, int]:
    """Writer -> name group: two classes of one group are the hardest negatives such data offers
    (same letters, other hand)."""
    return manifest_columns(roots, "name")


def writer_weights(roots: Sequence[str | Path]) -> dict[int, float]:
    """Writer -> draw weight: a class of a person who wrote several classes counts as 1/(their classes),
    so 800 cross-media classes of 80 persons weigh as 80 writers and do not swamp the offline sets."""
    persons = manifest_columns(roots, "person")
    classes: dict[int, int] = {}
    for person in persons.values():
        classes[person] = classes.get(person, 0) + 1
    return {w: 1.0 / classes[p] for w, p in persons.items()}


@dataclass
class WriterIndex:
    """Positions of each writer's genuine and forged images, and the writers of each name group."""

    by_writer: dict[int, tuple[list[int], list[int]]]
    group_of: dict[int, int]
    members: dict[int, list[int]]
    draw: np.ndarray | None = None  # probability of each writer (sorted) when not uniform

    @classmethod
    def of(
        cls, images: Sequence[SignatureImage], groups: dict[int, int] | None = None, weights: dict[int, float] | None = None
    ) -> WriterIndex:
        by_writer: dict[int, tuple[list[int], list[int]]] = {}
        for i, im in enumerate(images):
            by_writer.setdefault(im.writer, ([], []))[0 if im.genuine else 1].append(i)
        group_of = {w: g for w, g in (groups or {}).items() if w in by_writer}
        members: dict[int, list[int]] = {}
        for w in sorted(group_of):
            members.setdefault(group_of[w], []).append(w)
        draw = None
        if weights and any(w in weights for w in by_writer):
            raw = np.array([weights.get(w, 1.0) for w in sorted(by_writer)])
            draw = raw / raw.sum()
        return cls(by_writer, group_of, members, draw)


def sample_batch(
    images: Sequence[SignatureImage] | WriterIndex,
    cfg: TrainConfig,
    rng: np.random.Generator,
    rank: int = 0,
    world: int = 1,
) -> list[int]:
    """Positions of this process's batch: ``writers_per_batch`` whole writers, each with genuine and forged images.

    The writers of all ``world`` processes are drawn together and dealt out, so no two processes share one.
    With ``same_name_partners`` > 0, that share of the writers is replaced by a same-name class of
    another drawn writer (when the data has name groups), so a batch holds same-letters-other-hand negatives.
    """
    index = images if isinstance(images, WriterIndex) else WriterIndex.of(images)
    writers_all = sorted(index.by_writer)
    if len(writers_all) < world:
        raise ValueError(f"{len(writers_all)} training writers cannot be shared among {world} processes")
    count = min(cfg.writers_per_batch * world, len(writers_all))
    writers = [int(w) for w in rng.choice(writers_all, size=count, replace=False, p=index.draw)]
    if cfg.same_name_partners > 0 and index.members:
        writers = _with_partners(writers, index, cfg.same_name_partners, rng)
    batches: list[list[int]] = []
    for w in writers:
        genuine, forged = index.by_writer[w]
        chosen = list(rng.choice(genuine, size=min(cfg.genuine_per_writer, len(genuine)), replace=False))
        if forged:
            chosen += list(rng.choice(forged, size=min(cfg.forged_per_writer, len(forged)), replace=False))
        batches.append([int(i) for i in chosen])
    return _deal(batches, rank, world)


def _with_partners(writers: list[int], index: WriterIndex, share: float, rng: np.random.Generator) -> list[int]:
    """Replace ``share`` of the writers by same-name partners of the others; anchors and partners stay adjacent."""
    grouped = [w for w in writers if w in index.group_of and len(index.members[index.group_of[w]]) > 1]
    count = min(round(share * len(writers)), len(writers) // 2, len(grouped))
    if count == 0:
        return writers
    anchors = grouped[:count]
    others = [w for w in writers if w not in anchors][: len(writers) - 2 * count]
    taken = set(anchors) | set(others)
    result: list[int] = []
    for anchor in anchors:
        candidates = [w for w in index.members[index.group_of[anchor]] if w not in taken]
        result.append(anchor)
        if candidates:
            partner = int(rng.choice(candidates))
            taken.add(partner)
            result.append(partner)
    return result + [w for w in others if w not in result][: len(writers) - len(result)]


def _deal(batches: list[list[int]], rank: int, world: int) -> list[int]:
    """This rank's writers: consecutive slices, so adjacent anchor/partner writers go to one rank."""
    per_rank = len(batches) // world
    extra = len(batches) % world
    start = rank * per_rank + min(rank, extra)
    stop = start + per_rank + (1 if rank < extra else 0)
    return [i for part in batches[start:stop] for i in part]


class BatchStream(torch.utils.data.IterableDataset):
    """Augmented batches for steps ``[first, last)`` of one process, in step order.

    With DataLoader workers, worker k prepares steps first+k, first+k+n, ...; the DataLoader
    takes one batch from each worker in turn, so steps still arrive in order. Each step's
    randomness comes from (seed, step) only: the same batches with 0 or 8 workers.
    """

    def __init__(
        self,
        cache: ImageCache,
        writers: torch.Tensor,
        genuine: torch.Tensor,
        index: WriterIndex,
        cfg: TrainConfig,
        first: int,
        last: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.cache, self.writers, self.genuine, self.index = cache, writers, genuine, index
        self.cfg, self.first, self.last, self.rank, self.world = cfg, first, last, rank, world
        self.augment = Augment(cfg.augment)
        self.media = MediaAugment(cfg.media_augment)

    def batch(self, step: int) -> dict[str, torch.Tensor | int]:
        rng = np.random.default_rng([self.cfg.seed, step])
        idx = sample_batch(self.index, self.cfg, rng, self.rank, self.world)
        pictures = []
        for i in idx:
            picture = self.cache[i]
            if self.cfg.media_augment > 0:
                picture = self.media(picture, rng)
            picture = self.augment(picture, rng)
            pictures.append(uniform_strokes(picture) if self.cfg.preprocessing == "strokes" else picture)
        images = torch.from_numpy(np.stack(pictures))[:, None]
        return {"step": step, "images": images, "writers": self.writers[idx], "genuine": self.genuine[idx], "index": torch.tensor(idx)}

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        start, stride = (self.first, 1) if info is None else (self.first + info.id, info.num_workers)
        for step in range(start, self.last, stride):
            yield self.batch(step)


def _quiet_worker(_: int) -> None:
    """Workers augment with OpenCV and NumPy, one thread each, so they do not fight the training step."""
    torch.set_num_threads(1)


def batch_loader(stream: BatchStream, workers: int) -> torch.utils.data.DataLoader:
    """Batches of ``stream`` in step order, ``workers`` processes ahead of the step (0: inline).

    Workers are forked. OpenCV's thread pool does not survive a fork (a child that touches it
    hangs), so the training process gives its pool up first: its own OpenCV work is done by then.
    """
    if workers:
        cv2.setNumThreads(1)
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_quiet_worker if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
