"""Embeddings of dataset images cached on disk, so re-evaluating a dataset skips the backbone.

Why each part of the key is there:

* weights: a hash of the state dict (names, dtypes, shapes, bytes), so new or
  fine-tuned weights never read embeddings of old ones;
* code: a hash of the modules that turn pixels into embeddings (preprocessing,
  backbone, DSI, model), so an edited pipeline never reads stale entries either;
* image: sha1 of the file bytes plus the preprocessing size, so a renamed file
  still hits and an edited one misses.

Storage is one safetensors file (no pickle) per (weights + code, dataset
folder) shard holding stacked rows plus a checksum of the tensor bytes.
Writers merge under an exclusive ``fcntl.flock`` on a lock file and publish
with write-to-temp + ``os.replace``, so readers never see a half-written
file and concurrent writers never lose each other's rows. A shard that fails
to load or whose checksum does not match is reported as corrupt and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dsn.data import augment, strokes
from dsn.data import preprocess as preprocess_module
from dsn.data.dataset import ImageCache, SignatureImage
from dsn.evaluation.scoring import EMBED_BATCH, embed_cache
from dsn.model import backbone, config, detailsemnet, dsi, ink, official
from dsn.model.detailsemnet import DetailSemNet, Embedding
from dsn.precision import precision_for

try:  # POSIX only; on Windows writes stay atomic but concurrent merges may drop rows
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT_VERSION = "2"  # 2: the checksum covers the key -> row mapping and the grid too
# The modules whose source decides what an embedding is: their code, not their file names, is hashed,
# so moving a module keeps every cache valid and changing one invalidates it.
_PIPELINE_MODULES = (preprocess_module, strokes, augment, backbone, official, dsi, ink, config, detailsemnet)
_TENSOR_NAMES = ("global_feature", "tokens", "ink_mask")

Progress = Callable[[int, int, str], None]  # (images done, total, stage: preprocessing / embedding)


def default_cache_dir() -> Path:
    """``$DSN_CACHE_DIR`` if set, else ``~/.cache/dsn/embeddings``."""
    env = os.environ.get("DSN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dsn" / "embeddings"


def input_key(model: DetailSemNet) -> str:
    """What an image becomes before the model sees it: size, plus the mode unless it is our letterbox.

    Letterboxed keys stay as they were (``<size>``), so existing caches keep their rows;
    stretched (official) inputs never share an entry with them.
    """
    size = model.config.img_size
    mode = model.config.preprocessing
    return str(size) if mode == "letterbox" else f"{size}{mode}"


def weights_hash(model: DetailSemNet) -> str:
    """sha256 of the state dict; ~30 ms for dsnet_tiny, so it is recomputed on every call
    (memoising it would risk serving embeddings of weights changed in place)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}|".encode())
        digest.update(array.reshape(-1).view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def pipeline_hash() -> str:
    """sha256 of the source code that decides what an embedding is."""
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    for module in _PIPELINE_MODULES:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()


def file_sha1(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


@dataclass
class CacheStats:
    """What one ``embed`` call found; ``corrupt_rebuilt`` counts shards thrown away."""

    hits: int = 0
    misses: int = 0
    corrupt_rebuilt: int = 0
    not_stored: int = 0  # rows computed but not written (a full or read-only disk): the result is still returned
    seconds: float = 0.0
    shard: Path | None = None

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class CacheLocationError(ValueError):
    """The cache folder or a shard path is not usable (a file where a folder belongs, or the reverse)."""


class CacheCorrupt(RuntimeError):
    """A shard could not be read back as written (truncated, edited, wrong checksum)."""


def _tensor_checksum(tensors: dict[str, torch.Tensor], keys: list[str], grid: tuple[int, int]) -> str:
    """sha256 over the rows *and* which key each row belongs to: swapped keys must not serve a wrong embedding."""
    digest = hashlib.sha256(json.dumps({"keys": keys, "grid": list(grid)}).encode())
    for name in _TENSOR_NAMES:
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass
class _Shard:
    keys: list[str]
    tensors: dict[str, torch.Tensor]  # stacked rows in the order of keys
    grid: tuple[int, int]

    def index(self) -> dict[str, int]:
        return {key: row for row, key in enumerate(self.keys)}


def _read_shard(path: Path) -> _Shard | None:
    """The shard's rows; None when absent; CacheCorrupt when it cannot be trusted."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        keys = json.loads(meta["keys"])
        grid = tuple(json.loads(meta["grid"]))
        if sorted(tensors) != sorted(_TENSOR_NAMES) or meta.get("format") != FORMAT_VERSION:
            raise CacheCorrupt(f"{path} does not hold this version's tensors")
        if any(tensors[name].shape[0] != len(keys) for name in _TENSOR_NAMES):
            raise CacheCorrupt(f"{path}: row count differs from its key list")
        if _tensor_checksum(tensors, keys, grid) != meta["checksum"]:
            raise CacheCorrupt(f"{path}: checksum mismatch")
    except CacheCorrupt:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CacheCorrupt(f"{path}: {type(err).__name__}: {err}") from err
    tensors["ink_mask"] = tensors["ink_mask"].bool()
    return _Shard(keys, tensors, (int(grid[0]), int(grid[1])))


def _write_shard(path: Path, shard: _Shard, identity: dict[str, str]) -> None:
    """Write to a temp file in the same folder, then atomically replace."""
    tensors = {
        "global_feature": shard.tensors["global_feature"].float().contiguous(),
        "tokens": shard.tensors["tokens"].float().contiguous(),
        "ink_mask": shard.tensors["ink_mask"].to(torch.uint8).contiguous(),
    }
    meta = {
        **identity,
        "format": FORMAT_VERSION,
        "keys": json.dumps(shard.keys),
        "grid": json.dumps(list(shard.grid)),
        "checksum": _tensor_checksum(tensors, shard.keys, tuple(shard.grid)),
    }
    handle, temp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temp, metadata=meta)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _short(err: BaseException) -> str:
    """An OS error without the path it names (cache paths are the server's business)."""
    return err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())[:120]


def _merged(current: _Shard | None, keys: list[str], fresh: Embedding) -> _Shard:
    """``current`` plus the rows of ``fresh`` whose keys it lacks (a shard of another grid is replaced)."""
    new = {"global_feature": fresh.global_feature, "tokens": fresh.tokens, "ink_mask": fresh.ink_mask.bool()}
    if current is None or current.grid != tuple(fresh.grid):  # cannot happen for one weights hash; never mix grids
        return _Shard(list(keys), new, tuple(fresh.grid))
    known = current.index()
    take = [i for i, key in enumerate(keys) if key not in known]
    return _Shard(
        current.keys + [keys[i] for i in take],
        {name: torch.cat([current.tensors[name], new[name][take]]) for name in _TENSOR_NAMES},
        current.grid,
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock across processes (fcntl.flock on ``<shard>.lock``)."""
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


class EmbeddingCache:
    """A cache folder; ``embed`` returns embeddings in the order of ``images``."""

    def __init__(self, cache_dir: str | Path | None = None, batch_size: int = EMBED_BATCH):
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.batch_size = batch_size
        self.last = CacheStats()

    def shard_path(self, model: DetailSemNet, images: Sequence[SignatureImage]) -> Path:
        """``<cache>/<weights+code+precision hash>/<dataset folder>-<size>-<path hash>.safetensors``."""
        precision = precision_for(next(model.parameters()).device, bulk=True)
        suffix = "" if precision == "fp32" else f"|{precision}"  # fp32 keys as before: existing caches stay valid
        model_key = hashlib.sha256(f"{weights_hash(model)}|{pipeline_hash()}{suffix}".encode()).hexdigest()[:24]
        folders = sorted({str(Path(image.path).resolve().parent.parent.parent) for image in images})
        common = Path(os.path.commonpath(folders)) if folders else Path("empty")
        size = model.config.img_size
        dataset_key = hashlib.sha1(f"{common}|{size}|{model.config.preprocessing}".encode()).hexdigest()[:12]
        return self.cache_dir / model_key / f"{common.name or 'root'}-{input_key(model)}-{dataset_key}.safetensors"

    def embed(self, model: DetailSemNet, images: Sequence[SignatureImage], progress: Progress | None = None) -> Embedding:
        """Embeddings of ``images``: rows found on disk are reused, the rest computed and stored.

        ``progress(done, total, stage)`` counts images through preprocessing, then embedding (hits
        count as done in both), so a UI bar moves from the first image on.
        Embeddings come back on the CPU.
        """
        start = time.perf_counter()
        stats = CacheStats()
        images = list(images)
        if not images:
            raise ValueError("no images to embed")
        path = self.shard_path(model, images)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as err:
            raise CacheLocationError(
                f"the embedding cache folder {self.cache_dir} (DSN_CACHE_DIR) is not a folder: {err.strerror.lower()}; point it at a folder"
            ) from err
        except OSError as err:  # full or read-only disk: computed results still come back, uncached
            _warn_once(f"embedding cache: could not create {self.cache_dir} ({_short(err)}); going on without caching")
        if path.exists() and not path.is_file():
            raise CacheLocationError(f"the embedding cache shard {path} is a folder, not a file: remove it")
        keys = [f"{file_sha1(image.path)}-{input_key(model)}" for image in images]
        shard = self._load_or_discard(path, stats)
        index = shard.index() if shard else {}
        # one position per distinct missing key, in list order, so duplicates are embedded once
        first_of: dict[str, int] = {}
        for position, key in enumerate(keys):
            if key not in index:
                first_of.setdefault(key, position)
        missing = sorted(first_of.values())
        stats.hits = len(images) - sum(1 for key in keys if key not in index)
        stats.misses = len(images) - stats.hits
        if progress is not None:
            progress(stats.hits, len(images), "preprocessing")
        if missing:
            fresh = self._compute(model, [images[p] for p in missing], stats.hits, len(images), progress)
            try:
                shard = self._merge(path, [keys[p] for p in missing], fresh, model, stats)
            except (OSError, SafetensorError) as err:  # a full or read-only disk must not cost the computed result
                shard = _merged(shard, [keys[p] for p in missing], fresh)
                stats.not_stored = len(missing)
                _warn_once(f"embedding cache: could not write to {self.cache_dir} ({_short(err)}); going on without caching")
            index = shard.index()
        assert shard is not None
        rows = torch.tensor([index[key] for key in keys], dtype=torch.long)
        embedding = Embedding(
            shard.tensors["global_feature"][rows],
            shard.tensors["tokens"][rows],
            shard.tensors["ink_mask"][rows],
            shard.grid,
        )
        stats.seconds = time.perf_counter() - start
        stats.shard = path
        self.last = stats
        return embedding

    # ---------------------------------------------------------------- internals
    def _load_or_discard(self, path: Path, stats: CacheStats) -> _Shard | None:
        try:
            return _read_shard(path)
        except CacheCorrupt as err:
            log.warning("embedding cache: %s; rebuilding it", err)
            stats.corrupt_rebuilt += 1
            with _locked(path):
                try:  # another process may have rebuilt it meanwhile
                    return _read_shard(path)
                except CacheCorrupt:
                    path.unlink(missing_ok=True)
            return None

    def _compute(self, model: DetailSemNet, images: list[SignatureImage], done: int, total: int, progress: Progress | None) -> Embedding:
        on_image = (lambda n, _: progress(done + n, total, "preprocessing")) if progress is not None else None
        pixels = ImageCache(images, size=model.config.img_size, progress=False, mode=model.config.preprocessing, on_image=on_image)
        on_batch = (lambda n, _: progress(done + n, total, "embedding")) if progress is not None else None
        embedding = embed_cache(model, pixels, batch_size=self.batch_size, progress=False, on_batch=on_batch)
        return Embedding(embedding.global_feature.float().cpu(), embedding.tokens.float().cpu(), embedding.ink_mask.cpu(), embedding.grid)

    def _merge(self, path: Path, keys: list[str], fresh: Embedding, model: DetailSemNet, stats: CacheStats) -> _Shard:
        """Add rows to whatever the shard holds now (another process may have grown it)."""
        with _locked(path):
            for stale in path.parent.glob(path.name + ".*.tmp"):  # left by a killed writer: under the lock nobody else writes
                stale.unlink(missing_ok=True)
            try:
                current = _read_shard(path)
            except CacheCorrupt as err:
                log.warning("embedding cache: %s; rebuilding it", err)
                stats.corrupt_rebuilt += 1
                current = None
            merged = _merged(current, keys, fresh)
            identity = {
                "weights": weights_hash(model),
                "pipeline": pipeline_hash(),
                "img_size": str(model.config.img_size),
                "preprocessing": model.config.preprocessing,
            }
            _write_shard(path, merged, identity)
        return merged
