"""Dataset listing, splits, protocol pairs, pair CSVs, augmentation and the image cache."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_pairs_csv

from dsn.data.augment import Augment
from dsn.data.dataset import (
    ImageCache,
    Pair,
    list_images,
    load_splits,
    protocol_pairs,
    read_pairs_csv,
    split_images,
    split_images_of,
)

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
needs_datasets = pytest.mark.skipif(not (DATASETS / "cedar").is_dir(), reason=f"real datasets not found at {DATASETS}")

# writer -> (number of genuine, number of forged): deliberately uneven.
TINY_LAYOUT = {1: (3, 2), 2: (4, 0), 7: (1, 3), 12: (11, 1)}


def scribble(seed: int, size: int = 224) -> np.ndarray:
    """An ink-bright float image of a random pen trace, like a preprocessed signature."""
    rng = np.random.default_rng(seed)
    canvas = np.zeros((size, size), np.uint8)
    points = np.cumsum(rng.normal(0, 12, (30, 2)), axis=0)
    points = (points - points.mean(0)) / np.abs(points - points.mean(0)).max() * size * 0.36
    cv2.polylines(canvas, [(points + size / 2).astype(np.int32)], False, 255, 2, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A dataset folder in the real layout: dark ink on white PNGs, plus clutter to ignore."""
    root = tmp_path / "tiny"
    for writer, (n_genuine, n_forged) in TINY_LAYOUT.items():
        for class_name, count in (("genuine", n_genuine), ("forged", n_forged)):
            folder = root / f"{writer:03d}" / class_name
            folder.mkdir(parents=True)
            for index in range(1, count + 1):
                ink = scribble(writer * 100 + index + (50 if class_name == "forged" else 0), 96)
                cv2.imwrite(str(folder / f"{index:02d}.png"), (255 - ink * 200).astype(np.uint8))
    (root / "README.txt").write_text("not a writer")
    (root / "notes").mkdir()
    (root / "001" / "genuine" / "thumbs.db").write_text("ignored")
    splits = {"tiny": {"train": [1, 12], "val": [2], "test": [7]}}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    return root


def test_list_images_order_and_fields(tiny_dataset: Path):
    images = list_images(tiny_dataset)
    assert len(images) == sum(g + f for g, f in TINY_LAYOUT.values())
    keys = [(im.writer, not im.genuine, im.index) for im in images]
    assert keys == sorted(keys)
    writer_12_genuine = [im.index for im in images if im.writer == 12 and im.genuine]
    assert writer_12_genuine == list(range(1, 12))  # numeric order: 10 and 11 after 9
    assert all(im.path.is_file() and im.path.suffix == ".png" for im in images)
    assert all(im.genuine == (im.path.parent.name == "genuine") for im in images)


def test_list_images_filters_writers_and_rejects_bad_input(tiny_dataset: Path, tmp_path: Path):
    assert {im.writer for im in list_images(tiny_dataset, writers=[7, 2])} == {2, 7}
    with pytest.raises(ValueError, match="writers \\[5\\]"):
        list_images(tiny_dataset, writers=[1, 5])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="genuine,forged"):
        list_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nowhere")


def test_protocol_counts_on_uneven_writers(tiny_dataset: Path):
    images = list_images(tiny_dataset)
    pairs = protocol_pairs(images)
    for writer, (n_genuine, n_forged) in TINY_LAYOUT.items():
        mine = [p for p in pairs if images[p.a].writer == writer]
        assert sum(p.genuine for p in mine) == n_genuine * (n_genuine - 1) // 2
        assert sum(not p.genuine for p in mine) == n_genuine * n_forged
    for pair in pairs:
        first, second = images[pair.a], images[pair.b]
        assert first.writer == second.writer and first.genuine
        assert second.genuine == pair.genuine
        assert pair.a != pair.b
    positives = {frozenset((p.a, p.b)) for p in pairs if p.genuine}
    assert len(positives) == sum(p.genuine for p in pairs)  # unordered, no duplicates


def test_splits_and_split_images(tiny_dataset: Path):
    assert load_splits(tiny_dataset) == {"train": [1, 12], "val": [2], "test": [7]}
    assert {im.writer for im in split_images(tiny_dataset, "train")} == {1, 12}
    assert len(split_images(tiny_dataset, "all")) == len(list_images(tiny_dataset))
    with pytest.raises(ValueError, match="split must be"):
        split_images(tiny_dataset, "holdout")


def test_several_datasets_keep_their_writers_apart(tiny_dataset: Path, tmp_path: Path):
    twin = tmp_path / "twin"  # a second dataset whose writer ids collide with the first one's
    twin.mkdir()
    for writer in ("001", "002"):
        (twin / writer).symlink_to(tiny_dataset / writer, target_is_directory=True)
    splits = json.loads((tmp_path / "splits.json").read_text())
    splits["twin"] = {"train": [1], "val": [2], "test": []}
    (tmp_path / "splits.json").write_text(json.dumps(splits))

    assert split_images_of([tiny_dataset], "train") == split_images(tiny_dataset, "train"), "one dataset keeps its ids"
    joint = split_images_of([tiny_dataset, twin], "train")
    assert [im.writer for im in joint] == [1] * 5 + [12] * 12 + [1001] * 5
    assert [im.path for im in joint[-5:]] == [im.path for im in split_images(twin, "train")]
    pairs = protocol_pairs(joint)
    # writer 1 of each dataset is its own writer: 3 + 6 pairs each, never across datasets
    assert len(pairs) == len(protocol_pairs(split_images(tiny_dataset, "train"))) + 3 + 6
    assert all(joint[p.a].writer == joint[p.b].writer for p in pairs)


def test_splits_inside_dataset_folder_and_missing(tmp_path: Path):
    root = tmp_path / "other"
    root.mkdir()
    with pytest.raises(ValueError, match="no splits.json"):
        load_splits(root)
    (tmp_path / "splits.json").write_text(json.dumps({"cedar": {"train": [], "val": [], "test": []}}))
    with pytest.raises(ValueError, match="no splits for dataset 'other'"):
        load_splits(root)
    (root / "splits.json").write_text(json.dumps({"train": [1], "val": [2], "test": [3]}))
    assert load_splits(root) == {"train": [1], "val": [2], "test": [3]}


@needs_datasets
def test_cedar_protocol_counts():
    images = list_images(DATASETS / "cedar")
    pairs = protocol_pairs(images)
    for writer in {im.writer for im in images}:
        mine = [p for p in pairs if images[p.a].writer == writer]
        assert (sum(p.genuine for p in mine), sum(not p.genuine for p in mine)) == (
            276,
            576,
        )
    test_images = split_images(DATASETS / "cedar", "test")
    assert len(test_images) == 240
    test_pairs = protocol_pairs(test_images)
    assert len(test_pairs) == 4260
    assert sum(p.genuine for p in test_pairs) == 5 * 276


@needs_datasets
@pytest.mark.parametrize("dataset", ["cedar", "bhsig-bengali"])
def test_real_splits_are_writer_independent(dataset: str):
    splits = load_splits(DATASETS / dataset)
    train, val, test = (set(splits[s]) for s in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test
    present = {im.writer for im in list_images(DATASETS / dataset)}
    assert train | val | test == present
    if dataset == "cedar":
        assert splits["test"] == [11, 16, 40, 48, 51]


def test_pairs_csv_round_trip(tiny_dataset: Path, tmp_path: Path):
    images = list_images(tiny_dataset)
    pairs = protocol_pairs(images)
    csv_path = tmp_path / "lists" / "pairs.csv"
    csv_path.parent.mkdir()
    write_pairs_csv(csv_path, images, pairs)
    assert "../tiny/001/genuine/01.png" in csv_path.read_text()  # relative to the CSV
    read_images, read_pairs = read_pairs_csv(csv_path)

    def as_rows(imgs, prs):
        return [(imgs[p.a].path.resolve(), imgs[p.b].path.resolve(), p.genuine) for p in prs]

    assert as_rows(read_images, read_pairs) == as_rows(images, pairs)
    original = {im.path.resolve(): im for im in images}
    for image in read_images:
        expected = original[image.path.resolve()]
        assert (image.writer, image.genuine, image.index) == (
            expected.writer,
            expected.genuine,
            expected.index,
        )

    write_pairs_csv(tmp_path / "rooted.csv", images, pairs, root=tiny_dataset)
    assert "\n001/genuine/01.png," in (tmp_path / "rooted.csv").read_text()
    rooted_images, rooted_pairs = read_pairs_csv(tmp_path / "rooted.csv", root=tiny_dataset)
    assert as_rows(rooted_images, rooted_pairs) == as_rows(images, pairs)


def test_pairs_csv_word_labels_and_free_paths(tmp_path: Path):
    (tmp_path / "pairs.csv").write_text("reference,query,label\nref.png,q1.png,genuine\nref.png,q2.png,Forged\nother.png,q1.png,1\n")
    images, pairs = read_pairs_csv(tmp_path / "pairs.csv")
    assert [p.genuine for p in pairs] == [True, False, True]
    assert [im.path.name for im in images] == [
        "ref.png",
        "q1.png",
        "q2.png",
        "other.png",
    ]
    assert [im.genuine for im in images] == [True, True, False, True]
    assert pairs[0] == Pair(0, 1, True) and pairs[2] == Pair(3, 1, True)
    assert all(im.writer == -1 for im in images)

    (tmp_path / "bad.csv").write_text("reference,query,label\na.png,b.png,maybe\n")
    with pytest.raises(ValueError, match="row 2"):
        read_pairs_csv(tmp_path / "bad.csv")
    (tmp_path / "clash.csv").write_text("reference,query,label\na.png,b.png,0\nb.png,c.png,1\n")
    with pytest.raises(ValueError, match="both as genuine and as forged"):
        read_pairs_csv(tmp_path / "clash.csv")


def test_augment_keeps_shape_dtype_range_and_is_seeded():
    image = scribble(0)
    out = Augment(seed=3)(image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(Augment(seed=3)(image), out)
    augment = Augment()
    first = augment(image, np.random.default_rng(11))
    assert np.array_equal(augment(image, np.random.default_rng(11)), first)
    assert np.array_equal(Augment(strength=0.0)(image), image)


def test_augment_changes_the_image_but_keeps_the_ink():
    augment = Augment(seed=0)
    tolerance = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    changed, overlaps, ink_ratios = 0, [], []
    for seed in range(40):
        image = scribble(seed)
        out = augment(image)
        changed += not np.allclose(out, image, atol=1e-3)
        before, after = image > 0.3, out > 0.3
        ink_ratios.append(after.sum() / before.sum())
        # Jitter moves strokes by a few pixels, so compare masks with that tolerance.
        near_before = cv2.dilate(before.astype(np.uint8), tolerance) > 0
        near_after = cv2.dilate(after.astype(np.uint8), tolerance) > 0
        overlaps.append((near_before & near_after).sum() / (near_before | near_after).sum())
    assert changed >= 32
    assert np.mean(overlaps) > 0.7 and min(overlaps) > 0.45
    assert min(ink_ratios) > 0.35 and max(ink_ratios) < 3.0


def test_image_cache_holds_preprocessed_images(tiny_dataset: Path):
    from dsn.data.preprocess import preprocess

    images = list_images(tiny_dataset, writers=[1, 7])
    cache = ImageCache(images, size=64, progress=False)
    assert len(cache) == len(images)
    for i in (0, len(images) - 1):
        item = cache[i]
        assert item.shape == (64, 64) and item.dtype == np.float32
        expected = preprocess(images[i].path, size=64).image
        np.testing.assert_allclose(item, expected, atol=0.5 / 255 + 1e-6)
    batch = cache.batch([2, 0, 2])
    assert batch.shape == (3, 1, 64, 64) and batch.dtype == torch.float32
    assert torch.equal(batch[0, 0], torch.from_numpy(cache[2]))
    assert torch.equal(batch[1, 0], torch.from_numpy(cache[0]))


def test_pairs_csv_with_a_short_row_or_another_encoding_is_refused_by_name(tmp_path: Path) -> None:
    short = tmp_path / "short.csv"
    short.write_text("reference,query,label\nonly-one-column\n")
    with pytest.raises(ValueError, match=r"short\.csv, row 2: no query / label"):
        read_pairs_csv(short)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("reference,query,label\nr\xe9f.png,q.png,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv is not UTF-8 text .* save the pairs CSV as UTF-8"):
        read_pairs_csv(latin)
