"""Uniform strokes: the input mode that drops ink tone, stroke width and binarisation keeps where the pen went."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dsn.data.augment import skeletonize, stroke_width_px
from dsn.data.dataset import ImageCache, SignatureImage, split_images
from dsn.data.preprocess import preprocess
from dsn.data.strokes import uniform_strokes
from dsn.model.detailsemnet import DetailSemNet
from dsn.training.config import TrainConfig
from dsn.training.sampling import BatchStream, WriterIndex
from dsn.training.train import as_model_input

BENGALI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "bhsig-bengali"


def written(thickness: int, tone: int, size: int = 224) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.putText(canvas, "Ab", (16, 150), cv2.FONT_HERSHEY_SIMPLEX, 4.5, tone, thickness)
    return canvas.astype(np.float32) / 255


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Share of ``a``'s ink within 2 px of ``b``'s ink."""
    near = cv2.dilate((b > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    return float(((a > 0.5) & near).sum() / max(1, (a > 0.5).sum()))


def test_tone_width_and_binarisation_give_the_same_strokes_at_one_width_and_full_tone() -> None:
    reference = uniform_strokes(written(9, 230))
    assert set(np.unique(reference)) == {0.0, 1.0}, "full-tone ink on black, nothing in between"
    assert stroke_width_px(reference) == pytest.approx(2, abs=0.7), "2 px at 224"
    variants = {
        "faint thin ink": written(5, 110),
        "binarised": (written(9, 230) > 0.5).astype(np.float32),
        "blurred grey": cv2.GaussianBlur(written(13, 160), (5, 5), 1.0),
    }
    for name, image in variants.items():
        strokes = uniform_strokes(image)
        assert stroke_width_px(strokes) == pytest.approx(2, abs=0.7), name
        assert min(overlap(strokes, reference), overlap(reference, strokes)) > 0.9, f"{name}: the centre lines stay"
    raw_gap = np.abs(variants["faint thin ink"] - written(9, 230)).mean()
    assert np.abs(uniform_strokes(variants["faint thin ink"]) - reference).mean() < 0.5 * raw_gap
    assert not uniform_strokes(np.zeros((64, 64), np.float32)).any()


def test_the_strokes_mode_is_the_letterboxed_canvas_redrawn(tmp_path) -> None:
    path = tmp_path / "signature.png"
    cv2.imwrite(str(path), 255 - (written(9, 200, 300) * 255).astype(np.uint8))  # dark ink on white paper
    letterbox, strokes = preprocess(path, 224).image, preprocess(path, 224, mode="strokes").image
    np.testing.assert_array_equal(strokes, uniform_strokes(letterbox))
    ink = letterbox > 0.3
    assert skeletonize(ink).sum() > 100 and overlap(strokes, letterbox) > 0.95


def test_training_on_strokes_draws_them_after_augmentation_and_ships_the_mode() -> None:
    images = [SignatureImage(path=f"w{w}-{k}.png", writer=w, genuine=True, index=k) for w in range(3) for k in range(3)]
    pixels = np.stack([(written(5 + 2 * (i % 3), 150 + 10 * i, 96) * 255).astype(np.uint8) for i in range(len(images))])
    cfg = TrainConfig(data=[], out="", img_size=96, writers_per_batch=2, genuine_per_writer=2, forged_per_writer=0)
    index = WriterIndex.of(images, {}, {})
    writers, genuine = torch.tensor([im.writer for im in images]), torch.ones(len(images), dtype=torch.bool)
    cache = ImageCache.from_pixels(images, pixels)
    plain = BatchStream(cache, writers, genuine, index, cfg, 0, 1).batch(0)["images"]
    cfg.preprocessing = "strokes"
    strokes = BatchStream(cache, writers, genuine, index, cfg, 0, 1).batch(0)["images"]
    assert len(torch.unique(plain)) > 2 and set(torch.unique(strokes).tolist()) == {0.0, 1.0}
    model = DetailSemNet(backbone="dsnet_tiny", img_size=96, preprocessing="strokes")
    assert model.config.preprocessing == "strokes"


@pytest.mark.skipif(not BENGALI.is_dir(), reason=f"BHSig-Bengali not found at {BENGALI}")
def test_training_validates_on_exactly_the_pixels_the_shipped_model_will_see() -> None:
    """Validation draws strokes from the uint8 letterbox cache; inference drew them from the unquantised canvas,
    and a few pixels in most images came out different."""
    images = split_images(BENGALI, "val")[:12]
    letterbox = ImageCache(images, 224, progress=False)
    cfg = TrainConfig(data=[], out="", preprocessing="strokes")
    np.testing.assert_array_equal(as_model_input(letterbox, cfg).pixels, ImageCache(images, 224, progress=False, mode="strokes").pixels)


def test_a_misspelt_training_choice_is_refused() -> None:
    for field, value in (("preprocessing", "stroke"), ("preprocessing", "stretch"), ("pair_mean", "Active")):
        with pytest.raises(ValueError, match=field):
            TrainConfig(data=[], out="", **{field: value})
