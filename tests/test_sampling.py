"""Cross-media data in training: the layout loads, name groups and persons come from the manifest,
batches hold same-name partners, and the media-bridging augmentation changes what it says it changes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dsn.data.augment import MediaAugment, skeletonize, stroke_width_px
from dsn.data.dataset import SignatureImage, protocol_pairs, split_images, split_images_of
from dsn.training.config import TrainConfig
from dsn.training.sampling import WriterIndex, name_groups, sample_batch, writer_weights
from dsn.training.step import batch_pairs

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
CROSSMEDIA = DATASETS / "crossmedia-chinese"
needs_crossmedia = pytest.mark.skipif(not CROSSMEDIA.is_dir(), reason=f"cross-media dataset not found at {CROSSMEDIA}")


@needs_crossmedia
def test_the_cross_media_layout_loads_with_name_groups_and_persons() -> None:
    train = split_images(CROSSMEDIA, "train")
    assert train and all(im.genuine for im in train), "train classes have no forged/ folder"
    assert {im.index for im in train} <= {1, 2, 3, 4}, "paper, iPad, phone in hand, phone on a table"
    val = split_images(CROSSMEDIA, "val")
    pairs = protocol_pairs(val)
    assert any(not p.genuine for p in pairs) and any(p.genuine for p in pairs), "val classes have same-name negatives"
    roots = [DATASETS / "cedar", CROSSMEDIA]
    groups = name_groups(roots)
    assert groups and all(1000 <= w < 2000 for w in groups), "only the cross-media classes (namespaced as dataset 1) have names"
    assert groups[1000 + 305] == groups[1000 + 399] == 1000 + 3 and groups[1000 + 305] != groups[1000 + 405]
    weights = writer_weights(roots)
    assert weights[1000 + 305] == pytest.approx(0.1), "ten classes per person weigh as one writer"
    images = split_images_of(roots, "train")
    index = WriterIndex.of(images, groups, weights)
    cedar = sum(p for w, p in zip(sorted(index.by_writer), index.draw) if w < 1000)
    assert cedar == pytest.approx(45 / (45 + 80)), "45 CEDAR writers against 80 cross-media persons"


def grouped_images() -> tuple[list[SignatureImage], dict[int, int]]:
    images = [SignatureImage(Path(f"{w}_{i}.png"), w, True, i) for w in range(40) for i in range(4)]
    return images, {w: w // 10 for w in range(40)}  # four names, ten persons each


def test_same_name_partners_sit_in_the_batch_and_count_as_skilled_negatives() -> None:
    images, groups = grouped_images()
    cfg = TrainConfig(data=[], out="", writers_per_batch=6, genuine_per_writer=2, forged_per_writer=0, same_name_partners=0.5)
    index = WriterIndex.of(images, groups)
    for step in range(10):
        batch = sample_batch(index, cfg, np.random.default_rng([3, step]))
        writers = [images[i].writer for i in batch]
        chosen = list(dict.fromkeys(writers))
        assert len(chosen) == 6
        pairs_of_names = [groups[a] == groups[b] for a, b in zip(chosen[0:6:2], chosen[1:6:2])]
        assert all(pairs_of_names), "each anchor is followed by a same-name partner"
    assert sample_batch(index, cfg, np.random.default_rng([3, 0])) == sample_batch(index, cfg, np.random.default_rng([3, 0]))
    w = torch.tensor([0, 0, 1, 1, 20, 20])
    group = torch.tensor([groups[int(x)] for x in w])
    a, b, positive, weight = batch_pairs(w, torch.ones(6, dtype=torch.bool), 0.5, group)
    same_name = [(int(i), int(j)) for i, j, p in zip(a, b, positive) if not p and group[i] == group[j]]
    assert same_name
    skilled_total = sum(float(weight[k]) for k in range(len(a)) if not positive[k] and group[a[k]] == group[b[k]])
    assert skilled_total == pytest.approx(1.0), "same-name pairs weigh as the skilled forgeries do"


def written(thickness: int) -> np.ndarray:
    """Ink-bright letters at tone 0.8, ``thickness`` px strokes."""
    canvas = np.zeros((96, 96), np.uint8)
    cv2.putText(canvas, "Ab", (8, 70), cv2.FONT_HERSHEY_SIMPLEX, 2.2, 204, thickness)
    return canvas.astype(np.float32) / 255


def test_media_augment_is_reproducible_from_the_seed() -> None:
    image = written(6)
    augment = MediaAugment(1.0)
    first = [augment(image, np.random.default_rng([5, k])) for k in range(6)]
    again = [augment(image, np.random.default_rng([5, k])) for k in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert any(not np.array_equal(x, image) for x in first)
    assert all(x.shape == image.shape and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1 for x in first)
    assert np.array_equal(MediaAugment(0.0)(image, np.random.default_rng(0)), image)


def test_stroke_width_changes_the_width_and_nothing_else() -> None:
    image = written(7)
    before = stroke_width_px(image)
    ink = image > 0.25
    for width in (1, 3, 9):
        out = MediaAugment.stroke_width(image, width)
        drawn = out > 0.25
        assert stroke_width_px(out) == pytest.approx(width, abs=0.8), "the strokes take the asked width"
        assert np.median(out[drawn]) == pytest.approx(0.8, abs=0.1), "the ink tone stays"
        skeleton = skeletonize(drawn)
        near = cv2.dilate(skeletonize(ink).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert (skeleton & near).sum() >= 0.9 * skeleton.sum(), "the centre lines stay where they were"
        ys, xs = np.nonzero(drawn)
        y0, x0 = np.nonzero(ink)
        assert abs(ys.mean() - y0.mean()) < 2 and abs(xs.mean() - x0.mean()) < 2, "the signature does not move"
    assert before > 4
