"""One compact file of preprocessed training and validation images, for machines without the datasets.

Cluster nodes often have neither network nor the folders where the datasets live. ``pack_datasets``
preprocesses the train and val writers of some datasets once and stores every image as a PNG inside
one safetensors file (no pickle): the images are mostly blank paper, so PNG shrinks them ~15x, and
quantising the ink to 8 grey levels halves that again (binarised datasets lose nothing; the
training augmentation changes ink tone far more). ``read_pack`` gives back the same image lists and
caches that training builds from the folders.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dsn.data.dataset import ImageCache, SignatureImage, split_images_of

FORMAT = "dsn-pack-1"
PACK_SPLITS = ("train", "val")


class PackError(ValueError):
    """A pack cannot be written or read; the message says why."""


def quantize(pixels: np.ndarray, levels: int) -> np.ndarray:
    """uint8 pixels rounded to ``levels`` evenly spaced grey levels (256: unchanged)."""
    if levels >= 256:
        return pixels
    step = 255 / (levels - 1)
    return (np.round(np.round(pixels / step) * step)).astype(np.uint8)


def pack_datasets(
    roots: Sequence[str | Path],
    out: str | Path,
    size: int = 224,
    levels: int = 8,
    max_bytes: int | None = None,
    progress: bool = True,
    groups: dict[int, int] | None = None,
    weights: dict[int, float] | None = None,
) -> dict:
    """Write the train and val images of ``roots`` to ``out``; returns counts and the file size.

    Writer ids are namespaced as in training (dataset k adds k x 1000); ``groups`` (writer -> name group)
    and ``weights`` (writer -> draw weight) travel with the images. Raises ``PackError`` before
    writing anything when the encoded images exceed ``max_bytes``.
    """
    if not 2 <= levels <= 256:
        raise PackError(f"levels must be between 2 and 256, got {levels}")
    roots = [Path(r) for r in roots]
    blobs: list[bytes] = []
    columns: dict[str, list[int]] = {"writer": [], "genuine": [], "index": [], "split": []}
    paths: list[str] = []
    for split_id, split in enumerate(PACK_SPLITS):
        images = split_images_of(roots, split)
        cache = ImageCache(images, size, progress=progress)
        for image, pixels in zip(images, cache.pixels):
            ok, encoded = cv2.imencode(".png", quantize(pixels, levels), [cv2.IMWRITE_PNG_COMPRESSION, 9])
            if not ok:
                raise PackError(f"could not encode {image.path}")
            blobs.append(encoded.tobytes())
            columns["writer"].append(image.writer)
            columns["genuine"].append(int(image.genuine))
            columns["index"].append(image.index)
            columns["split"].append(split_id)
            dataset = image.path.parents[2]
            paths.append(str(PurePosixPath(dataset.name, image.path.relative_to(dataset).as_posix())))
    total = sum(len(b) for b in blobs)
    if max_bytes is not None and total > max_bytes:
        raise PackError(
            f"the encoded images take {total / 2**20:.1f} MiB, over the limit of {max_bytes / 2**20:.1f} MiB: "
            "pack fewer datasets, or fewer grey levels (--levels)"
        )
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    groups, weights = groups or {}, weights or {}
    tensors = {
        "png": torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8) if total else torch.zeros(0, dtype=torch.uint8),
        "offsets": torch.from_numpy(offsets),
        **{key: torch.tensor(values, dtype=torch.int64) for key, values in columns.items()},
        "group_writers": torch.tensor(sorted(groups), dtype=torch.int64),
        "group_ids": torch.tensor([groups[w] for w in sorted(groups)], dtype=torch.int64),
        "weight_writers": torch.tensor(sorted(weights), dtype=torch.int64),
        "weight_values": torch.tensor([weights[w] for w in sorted(weights)], dtype=torch.float64),
    }
    metadata = {
        "format": FORMAT,
        "size": str(size),
        "levels": str(levels),
        "mode": "letterbox",
        "datasets": json.dumps([r.name for r in roots]),
        "paths": json.dumps(paths),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(out)
    return {"images": len(blobs), "train": columns["split"].count(0), "val": columns["split"].count(1), "bytes": out.stat().st_size}


@dataclass
class Pack:
    """A pack read back: the images of each split, their pixels, and the name groups."""

    file: Path
    size: int
    datasets: list[str]
    images: dict[str, list[SignatureImage]]
    pixels: dict[str, np.ndarray]
    groups: dict[int, int]
    weights: dict[int, float]

    def cache(self, split: str, size: int | None = None) -> ImageCache:
        """The split as an ``ImageCache``; another ``size`` resizes the stored pixels (area interpolation)."""
        pixels = self.pixels[split]
        if size is not None and size != self.size:
            pixels = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA) for p in pixels]) if len(pixels) else pixels
        return ImageCache.from_pixels(self.images[split], pixels)


def read_pack(file: str | Path) -> Pack:
    """Decode a file written by ``pack_datasets``; refuse anything else with a message."""
    file = Path(file)
    if not file.is_file():
        raise PackError(f"{file.name}: no such pack file")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise PackError(f"{file.name} is not a dataset pack of this project (format {metadata.get('format')!r})")
            data = {key: handle.get_tensor(key) for key in handle.keys()}
    except PackError:
        raise
    except Exception as error:  # safetensors raises its own error types for truncated or foreign files
        raise PackError(f"{file.name} cannot be read as a dataset pack ({type(error).__name__})") from error
    size = int(metadata["size"])
    paths = json.loads(metadata["paths"])
    blob = data["png"].numpy()
    offsets = data["offsets"].numpy()
    images: dict[str, list[SignatureImage]] = {s: [] for s in PACK_SPLITS}
    pixels: dict[str, list[np.ndarray]] = {s: [] for s in PACK_SPLITS}
    for i, path in enumerate(paths):
        split = PACK_SPLITS[int(data["split"][i])]
        decoded = cv2.imdecode(blob[offsets[i] : offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
        if decoded is None or decoded.shape != (size, size):
            raise PackError(f"{file.name}: image {i} ({path}) is damaged")
        images[split].append(SignatureImage(Path("pack:", path), int(data["writer"][i]), bool(data["genuine"][i]), int(data["index"][i])))
        pixels[split].append(decoded)
    groups = dict(zip(data["group_writers"].tolist(), data["group_ids"].tolist()))
    weights = dict(zip(data["weight_writers"].tolist(), data["weight_values"].tolist()))
    stacked = {s: np.stack(p) if p else np.zeros((0, size, size), np.uint8) for s, p in pixels.items()}
    return Pack(file, size, json.loads(metadata["datasets"]), images, stacked, groups, weights)
