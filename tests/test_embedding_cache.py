"""Disk cache of embeddings: hits, invalidation on new weights, corruption, concurrent writers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dsn.data.dataset import ImageCache, SignatureImage, list_images
from dsn.evaluation.embedding_cache import EmbeddingCache, weights_hash
from dsn.evaluation.scoring import embed_cache
from dsn.model.detailsemnet import DetailSemNet


def scribble_png(path: Path, seed: int) -> None:
    """A dark-on-white random pen trace; content only has to differ per seed."""
    rng = np.random.default_rng(seed)
    canvas = np.full((120, 300), 255, np.uint8)
    points = np.cumsum(rng.normal(0, 14, (25, 2)), axis=0)
    points = (points - points.mean(0)) / np.abs(points - points.mean(0)).max() * (130, 45) + (150, 60)
    cv2.polylines(canvas, [points.astype(np.int32)], False, 30, 3, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), canvas)


@pytest.fixture
def dataset(tmp_path: Path) -> list[SignatureImage]:
    root = tmp_path / "scribbles"
    for writer in (1, 2, 3):
        for index in range(1, 4):
            scribble_png(root / f"{writer:03d}" / "genuine" / f"{index:02d}.png", writer * 10 + index)
        scribble_png(root / f"{writer:03d}" / "forged" / "01.png", writer * 10 + 9)
    return list_images(root)


@pytest.fixture
def model() -> DetailSemNet:
    torch.manual_seed(0)
    return DetailSemNet(img_size=64).eval()  # small inputs keep the test fast; the cache is size-agnostic


def assert_same(a, b) -> None:
    assert torch.equal(a.global_feature, b.global_feature)
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.ink_mask, b.ink_mask)
    assert a.grid == b.grid


def test_second_run_hits_and_matches_direct_embedding(model, dataset, tmp_path):
    direct = embed_cache(model, ImageCache(dataset, size=64, progress=False), progress=False)
    cache = EmbeddingCache(tmp_path / "cache")
    seen: list[tuple[int, int, str]] = []
    first = cache.embed(model, dataset, progress=lambda done, total, stage: seen.append((done, total, stage)))
    assert (cache.last.hits, cache.last.misses) == (0, len(dataset))
    n = len(dataset)
    assert seen[:2] == [(0, n, "preprocessing"), (1, n, "preprocessing")], "progress moves from the first image preprocessed"
    assert (n, n, "preprocessing") in seen and seen[-1] == (n, n, "embedding")
    assert_same(first, direct)

    second = cache.embed(model, dataset)
    assert (cache.last.hits, cache.last.misses) == (len(dataset), 0)
    assert_same(second, direct)
    assert cache.last.shard.suffix == ".safetensors"

    # a subset in another order reads the same rows back
    subset = [dataset[5], dataset[0], dataset[5]]
    fresh = EmbeddingCache(tmp_path / "cache")
    again = fresh.embed(model, subset)
    assert (fresh.last.hits, fresh.last.misses) == (3, 0)
    assert_same(again, direct[torch.tensor([5, 0, 5])])


def test_new_weights_miss(model, dataset, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    before = cache.embed(model, dataset)
    old_hash = weights_hash(model)
    with torch.no_grad():
        model.match_proj.weight.mul_(2.0)  # changed in place: same object, new weights
    assert weights_hash(model) != old_hash
    after = cache.embed(model, dataset)
    assert (cache.last.hits, cache.last.misses) == (0, len(dataset))
    assert not torch.equal(before.tokens, after.tokens)
    direct = embed_cache(model, ImageCache(dataset, size=64, progress=False), progress=False)
    assert_same(after, direct)


def test_edited_image_misses(model, dataset, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    cache.embed(model, dataset)
    scribble_png(dataset[0].path, 999)  # same path, new content
    cache.embed(model, dataset)
    assert (cache.last.hits, cache.last.misses) == (len(dataset) - 1, 1)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage", "swap_keys"])
def test_corrupted_shard_is_detected_and_rebuilt(model, dataset, tmp_path, damage):
    cache = EmbeddingCache(tmp_path / "cache")
    good = cache.embed(model, dataset)
    shard = cache.last.shard
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_byte":
        data[-10] ^= 0xFF  # inside the tensor bytes: the file still parses, the checksum does not match
    elif damage == "garbage":
        data = bytearray(b"not a safetensors file")
    if damage == "swap_keys":  # same rows, same tensor checksum, two keys exchanged: would serve wrong embeddings
        with safe_open(str(shard), framework="pt") as handle:
            meta, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
        keys = json.loads(meta["keys"])
        keys[0], keys[1] = keys[1], keys[0]
        save_file(tensors, str(shard), metadata={**meta, "keys": json.dumps(keys)})
    else:
        shard.write_bytes(bytes(data))

    rebuilt = cache.embed(model, dataset)
    assert cache.last.corrupt_rebuilt == 1
    assert (cache.last.hits, cache.last.misses) == (0, len(dataset))
    assert_same(rebuilt, good)
    cache.embed(model, dataset)
    assert (cache.last.hits, cache.last.corrupt_rebuilt) == (len(dataset), 0)


def test_concurrent_writers_keep_every_row(model, dataset, tmp_path):
    """Threads writing disjoint subsets of one shard at once: every row survives, file stays valid."""
    by_writer = [[im for im in dataset if im.writer == w] for w in (1, 2, 3)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(by_writer))

    def work(images: list[SignatureImage]) -> None:
        try:
            start.wait()
            EmbeddingCache(tmp_path / "cache").embed(model, images)
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(images,)) for images in by_writer]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    cache = EmbeddingCache(tmp_path / "cache")
    everything = cache.embed(model, dataset)
    assert (cache.last.hits, cache.last.misses, cache.last.corrupt_rebuilt) == (len(dataset), 0, 0)
    direct = embed_cache(model, ImageCache(dataset, size=64, progress=False), progress=False)
    assert torch.allclose(everything.tokens, direct.tokens, atol=1e-5)  # other batch sizes: float noise only
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DSN_CACHE_DIR", str(tmp_path / "env-cache"))
    assert EmbeddingCache().cache_dir == tmp_path / "env-cache"


def test_unusable_cache_locations_get_a_clear_error(model, dataset, tmp_path):
    from dsn.evaluation.embedding_cache import CacheLocationError

    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("x")
    with pytest.raises(CacheLocationError, match="not a folder"):
        EmbeddingCache(not_a_folder).embed(model, dataset)
    cache = EmbeddingCache(tmp_path / "cache")
    cache.shard_path(model, dataset).mkdir(parents=True)  # a folder where the shard file belongs
    with pytest.raises(CacheLocationError, match="is a folder, not a file"):
        cache.embed(model, dataset)


@pytest.fixture
def full_disk(tmp_path: Path):
    """A real 2 MB tmpfs filled to the brim (needs root), unmounted afterwards."""
    import shutil
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode
    ):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        (mount / "filler").write_bytes(b"\0" * (2 * 2**20))
    except OSError:
        pass  # the disk is full now
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_costs_the_cache_not_the_result(model, dataset, full_disk, caplog):
    direct = embed_cache(model, ImageCache(dataset, size=64, progress=False), progress=False)
    cache = EmbeddingCache(full_disk / "cache")
    with caplog.at_level("WARNING"):
        first = cache.embed(model, dataset)
        second = cache.embed(model, dataset)
    assert_same(first, direct)
    assert_same(second, direct)
    assert cache.last.not_stored == len(dataset)
    warnings = [r.getMessage() for r in caplog.records if "going on without caching" in r.getMessage()]
    assert len(warnings) == 1, "warned once, not at every call"
    assert "No space left on device" in warnings[0] and str(full_disk) not in warnings[0].split("(")[-1]


def test_stale_temp_files_beside_a_shard_are_cleaned(model, dataset, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    cache.embed(model, dataset[:3])
    shard = cache.last.shard
    stale = shard.with_name(shard.name + ".abc123.tmp")
    stale.write_bytes(b"half a shard from a killed writer")
    cache.embed(model, dataset)  # new rows: the shard is rewritten, and the stale file goes
    assert not stale.exists()
