"""Signature datasets: image listing, writer-independent splits, evaluation pairs and
an in-memory cache of preprocessed images.

Dataset layout: ``<root>/<writer, 3 digits>/{genuine,forged}/<index>.png`` with
the splits in ``<root>/../splits.json`` keyed by the dataset folder name.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import combinations, product
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm  # text bars everywhere: tqdm.auto wants ipywidgets in notebooks ("IProgress not found")

from dsn.data.preprocess import preprocess

SPLITS = ("train", "val", "test", "all")
CLASS_FOLDERS = {"genuine": True, "forged": False}


@dataclass(frozen=True)
class SignatureImage:
    """One signature file and what the dataset layout says about it."""

    path: Path
    writer: int
    genuine: bool
    index: int


@dataclass(frozen=True)
class Pair:
    """Two positions in an image list; genuine=True is a same-writer genuine pair."""

    a: int
    b: int
    genuine: bool


def _writer_folders(root: Path) -> dict[int, Path]:
    return {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}


def list_images(root: str | Path, writers: Iterable[int] | None = None) -> list[SignatureImage]:
    """All signatures under `root`, sorted by (writer, genuine first, index).

    A fixed order makes pair indices, caches and splits reproducible.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist")
    folders = _writer_folders(root)
    if writers is not None:
        wanted = sorted({int(w) for w in writers})
        missing = [w for w in wanted if w not in folders]
        if missing:
            raise ValueError(f"writers {missing} have no folder in {root}")
        folders = {w: folders[w] for w in wanted}
    images = []
    for writer, folder in folders.items():
        for class_name, genuine in CLASS_FOLDERS.items():
            class_folder = folder / class_name
            if not class_folder.is_dir():
                continue
            for path in class_folder.glob("*.png"):
                if path.stem.isdigit():
                    images.append(SignatureImage(path, writer, genuine, int(path.stem)))
    if not images:
        raise ValueError(f"no images in {root}: expected <writer, 3 digits>/{{genuine,forged}}/<index>.png")
    return sorted(images, key=lambda im: (im.writer, not im.genuine, im.index))


def load_splits(root: str | Path) -> dict[str, list[int]]:
    """Writer ids of train/val/test from splits.json in `root` or its parent.

    A file beside the datasets is keyed by dataset folder name; a file inside
    the dataset folder may hold the splits directly.
    """
    root = Path(root)
    for candidate in (root / "splits.json", root.parent / "splits.json"):
        if not candidate.is_file():
            continue
        content = json.loads(candidate.read_text())
        if "train" not in content:
            if root.name not in content:
                raise ValueError(f"{candidate} has no splits for dataset '{root.name}'")
            content = content[root.name]
        missing = [s for s in ("train", "val", "test") if s not in content]
        if missing:
            raise ValueError(f"{candidate} lacks the {missing} split(s) for '{root.name}'")
        return {s: [int(w) for w in content[s]] for s in ("train", "val", "test")}
    raise ValueError(f"no splits.json in {root} or {root.parent}")


def split_images(root: str | Path, split: str) -> list[SignatureImage]:
    """Images of the writers in one split; "all" means every writer in `root`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not '{split}'")
    if split == "all":
        return list_images(root)
    return list_images(root, writers=load_splits(root)[split])


WRITER_NAMESPACE = 1000  # dataset writer ids have 3 digits


def split_images_of(roots: Sequence[str | Path], split: str) -> list[SignatureImage]:
    """One split of several datasets as one list, for training on all of them at once.

    The k-th dataset's writer ids are shifted by k * 1000, so that writer 7 of
    CEDAR and writer 7 of Bengali stay two writers (the first keeps its ids). A dataset
    whose split names no writers adds nothing to it.
    """
    images: list[SignatureImage] = []
    for k, root in enumerate(roots):
        if split != "all" and not load_splits(root)[split]:
            continue  # e.g. synthetic writers: all train, no val or test writers to pool
        images += [replace(im, writer=im.writer + k * WRITER_NAMESPACE) for im in split_images(root, split)]
    return images


def protocol_pairs(images: Sequence[SignatureImage]) -> list[Pair]:
    """The standard evaluation pairs, per writer: every unordered genuine-genuine
    pair (positive) and every (genuine, forged) pair (negative)."""
    by_writer: dict[int, tuple[list[int], list[int]]] = {}
    for position, image in enumerate(images):
        genuine, forged = by_writer.setdefault(image.writer, ([], []))
        (genuine if image.genuine else forged).append(position)
    pairs = []
    for genuine, forged in by_writer.values():
        pairs += [Pair(a, b, True) for a, b in combinations(genuine, 2)]
        pairs += [Pair(a, b, False) for a, b in product(genuine, forged)]
    return pairs


def _parse_label(text: str, row: int) -> bool:
    value = text.strip().lower()
    if value in ("1", "genuine", "true"):
        return True
    if value in ("0", "forged", "false"):
        return False
    raise ValueError(f"row {row}: label must be 1/0 or genuine/forged, not '{text}'")


def _layout_of(path: Path) -> tuple[int, bool, int] | None:
    """(writer, genuine, index) when the path follows the dataset layout."""
    parts = path.parts
    in_layout = len(parts) >= 3 and parts[-3].isdigit() and parts[-2] in CLASS_FOLDERS
    if in_layout and path.stem.isdigit():
        return int(parts[-3]), CLASS_FOLDERS[parts[-2]], int(path.stem)
    return None


def read_pairs_csv(path: str | Path, root: str | Path | None = None) -> tuple[list[SignatureImage], list[Pair]]:
    """Pairs from a CSV with columns reference,query,label.

    Relative paths are taken from `root`, else from the CSV's folder. Writer,
    class and index come from the dataset layout when the path follows it;
    otherwise the writer is -1, the index the file's order of appearance, and
    the class follows the label (a reference is genuine, a query is genuine
    iff its label is).
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path.name} is not UTF-8 text (byte {err.start} cannot be decoded): save the pairs CSV as UTF-8") from err
    if rows and not {"reference", "query", "label"} <= set(rows[0]):
        raise ValueError(f"{path.name} needs the columns reference,query,label")
    positions: dict[Path, int] = {}
    images: list[SignatureImage] = []
    pairs = []

    def position_of(text: str, genuine_by_label: bool, row: int) -> int:
        file = Path(os.path.normpath(base / text.strip()))
        layout = _layout_of(file)
        genuine = layout[1] if layout else genuine_by_label
        if file in positions:
            known = images[positions[file]]
            if known.genuine != genuine:
                raise ValueError(f"row {row}: {file} is used both as genuine and as forged")
            return positions[file]
        writer, index = (layout[0], layout[2]) if layout else (-1, len(images))
        positions[file] = len(images)
        images.append(SignatureImage(file, writer, genuine, index))
        return positions[file]

    for row, record in enumerate(rows, start=2):
        empty = [name for name in ("reference", "query", "label") if not (record.get(name) or "").strip()]
        if empty:
            raise ValueError(f"{path.name}, row {row}: no {' / '.join(empty)} (each row needs reference,query,label)")
        label = _parse_label(record["label"], row)
        a = position_of(record["reference"], True, row)
        b = position_of(record["query"], label, row)
        pairs.append(Pair(a, b, label))
    return images, pairs


def preprocess_workers() -> int:
    """Threads for preprocessing: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class ImageCache:
    """Preprocessed images held in memory as uint8 so that training/evaluation
    preprocess each file once (224x224 uint8 = 49 KB an image)."""

    def __init__(
        self,
        images: Sequence[SignatureImage],
        size: int = 224,
        progress: bool = True,
        mode: str = "letterbox",
        on_image: Callable[[int, int], None] | None = None,
    ):
        """``on_image(done, total)`` is called as images finish (for UI progress bars)."""
        self.images = list(images)
        self.size = size
        self.mode = mode
        self.pixels = np.empty((len(self.images), size, size), dtype=np.uint8)

        def load(i: int) -> None:
            array = np.asarray(preprocess(self.images[i].path, size=size, mode=mode).image, dtype=np.float32)
            if array.shape != (size, size):
                raise ValueError(f"preprocess gave {array.shape} for {self.images[i].path}, not {size}x{size}")
            self.pixels[i] = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)

        # Decoding and OpenCV release the GIL: one thread per core preprocesses that many images at once
        # (1,200 BHSig-Hindi test images on 2 cores: 206 -> 300 images/s).
        with ThreadPoolExecutor(max_workers=preprocess_workers()) as pool:
            for done, _ in enumerate(
                tqdm(
                    pool.map(load, range(len(self.images))), total=len(self.images), desc="preprocessing", unit="img", disable=not progress
                ),
                start=1,
            ):
                if on_image is not None:
                    on_image(done, len(self.images))

    @classmethod
    def from_pixels(cls, images: Sequence[SignatureImage], pixels: np.ndarray, mode: str = "letterbox") -> ImageCache:
        """A cache of images preprocessed elsewhere (a dataset pack): (N, size, size) uint8 pixels."""
        if pixels.ndim != 3 or pixels.shape[1] != pixels.shape[2] or len(pixels) != len(images) or pixels.dtype != np.uint8:
            raise ValueError(f"expected ({len(images)}, size, size) uint8 pixels, got {pixels.shape} {pixels.dtype}")
        cache = cls.__new__(cls)
        cache.images, cache.size, cache.mode, cache.pixels = list(images), int(pixels.shape[1]), mode, pixels
        return cache

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> np.ndarray:
        """Float32 (size, size) image in [0, 1]."""
        return self.pixels[i].astype(np.float32) / np.float32(255)

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """(B, 1, size, size) float32 tensor of the given cache positions."""
        chosen = self.pixels[np.asarray(indices, dtype=np.int64)]
        return torch.from_numpy(chosen).unsqueeze(1).float().div_(255)
