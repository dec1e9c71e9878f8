"""Preprocessing: paper, pen, position, scale and file format must not change the model input.

Every image here is drawn by the test itself (a cursive-like curve with cv2);
the real-data test reads CEDAR from ../shared/datasets and skips without it.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import dsn.data.preprocess as preprocess_module
from dsn.data.preprocess import (
    Preprocessed,
    PreprocessError,
    ink_strength,
    preprocess,
    read_image,
)
from dsn.model.ink import token_ink_mask

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# Tolerances for "the same signature gives nearly the same model input". Measured
# over VARIANTS and the file formats below: worst mean |difference| 0.0027
# (sub-pixel shift) and worst ink IoU 0.89 (sub-pixel shift, 0.6x rescale):
# strokes are only 1-2 model px wide, so a sub-pixel change of the ink box
# costs IoU. Paper, pen and JPEG/WebP stay under 0.001 / above 0.98. For
# scale: a blank input differs from the reference by 0.020 mean (ink is ~3% of
# the pixels) with IoU 0, and the same signature with one more loop by 0.029
# mean with IoU 0.22.
MAX_MEAN_ABS_DIFF = 0.005
MIN_INK_IOU = 0.8
INK_LEVEL = 0.3  # model-input level at which ink is binarised for the IoU


def cursive_points(origin: tuple[float, float] = (120, 120), loops: float = 3.5) -> np.ndarray:
    """A signature-like stroke: loops drifting right (a prolate cycloid) with a wavy baseline."""
    t = np.linspace(0, 2 * loops * np.pi, 600)
    x = 22 * 3.5 / loops * t + 34 * np.cos(t) * np.linspace(1.0, 0.6, t.size)
    y = -38 * np.sin(t) + 12 * np.sin(t / 3.5)
    points = np.stack([x, y + 70], axis=1) + np.array(origin)
    return np.rint(points * 16).astype(np.int32)  # 4 fractional bits for cv2's sub-pixel drawing


def signature_canvas(
    paper: tuple[int, int, int] = (255, 255, 255),
    ink: tuple[int, int, int] = (60, 60, 60),
    shape: tuple[int, int] = (400, 720),
    origin: tuple[float, float] = (120, 120),
    loops: float = 3.5,
) -> np.ndarray:
    """RGB uint8 page with the test signature: the stroke, an i-dot and an underline."""
    canvas = np.full((*shape, 3), paper, np.uint8)
    cv2.polylines(canvas, [cursive_points(origin, loops)], False, ink, 3, cv2.LINE_AA, shift=4)
    ox, oy = origin
    cv2.circle(canvas, (int(ox + 250), int(oy + 5)), 3, ink, -1, cv2.LINE_AA)
    cv2.line(canvas, (int(ox - 10), int(oy + 140)), (int(ox + 420), int(oy + 125)), ink, 2, cv2.LINE_AA)
    return canvas


def unevenly_lit(rgb: np.ndarray) -> np.ndarray:
    """A phone-photo look: light falling off left to right, plus a vignette."""
    height, width = rgb.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = 1.0 - 0.4 * xx / width
    radius2 = ((xx - width / 2) / width) ** 2 + ((yy - height / 2) / height) ** 2
    light = gradient * (1.0 - 0.5 * radius2)
    return np.clip(rgb * light[..., None], 0, 255).astype(np.uint8)


def rescaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=interpolation)


def encode(rgb: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def mean_abs_diff(a: Preprocessed, b: Preprocessed) -> float:
    return float(np.abs(a.image - b.image).mean())


def ink_iou(a: Preprocessed, b: Preprocessed) -> float:
    ink_a, ink_b = a.image > INK_LEVEL, b.image > INK_LEVEL
    return float((ink_a & ink_b).sum() / (ink_a | ink_b).sum())


def assert_same_input(a: Preprocessed, b: Preprocessed) -> None:
    assert mean_abs_diff(a, b) < MAX_MEAN_ABS_DIFF
    assert ink_iou(a, b) > MIN_INK_IOU


@pytest.fixture(scope="module")
def reference() -> Preprocessed:
    return preprocess(signature_canvas())


VARIANTS = {
    "grey paper": lambda: signature_canvas(paper=(170, 170, 170), ink=(40, 40, 40)),
    "yellowish paper": lambda: signature_canvas(paper=(242, 226, 170), ink=(70, 60, 40)),
    "unevenly lit": lambda: unevenly_lit(signature_canvas()),
    "noisy photo": lambda: np.clip(
        unevenly_lit(signature_canvas(paper=(235, 230, 220))) + np.random.default_rng(0).normal(0, 4, (400, 720, 3)), 0, 255
    ).astype(np.uint8),
    "pale pen": lambda: signature_canvas(ink=(140, 140, 150)),
    "blue pen": lambda: signature_canvas(ink=(30, 50, 160)),
    "shifted": lambda: signature_canvas(shape=(500, 800), origin=(301.3, 43.7)),
    "rescaled 0.6x": lambda: rescaled(signature_canvas(), 0.6),
    "rescaled 1.5x": lambda: rescaled(signature_canvas(), 1.5),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_paper_pen_position_and_scale_do_not_change_the_input(reference: Preprocessed, variant: str) -> None:
    assert_same_input(reference, preprocess(VARIANTS[variant]()))


def test_a_different_signature_is_told_apart_by_the_same_tolerances(reference: Preprocessed) -> None:
    """Guards the tolerances themselves: each alone must reject another signature and a blank input."""
    different = preprocess(signature_canvas(loops=4.5))  # same layout and pen, one more loop
    assert mean_abs_diff(reference, different) >= MAX_MEAN_ABS_DIFF and ink_iou(reference, different) <= MIN_INK_IOU
    blank = Preprocessed(np.zeros_like(reference.image), reference.original, reference.crop_box, 1.0, (0.0, 0.0))
    assert mean_abs_diff(reference, blank) >= MAX_MEAN_ABS_DIFF and ink_iou(reference, blank) <= MIN_INK_IOU


def test_model_input_is_ink_bright_on_black_and_centred(reference: Preprocessed) -> None:
    image = reference.image
    assert image.shape == (224, 224) and image.dtype == np.float32
    assert image.min() == 0.0 and image.max() > 0.95
    assert (image[:5] == 0).all() and (image[-5:] == 0).all()  # wide signature: letterboxed rows stay black
    ys, xs = np.nonzero(image > 0.1)
    assert (xs.min() + xs.max() + 1) / 2 == pytest.approx(112, abs=1)
    assert (ys.min() + ys.max() + 1) / 2 == pytest.approx(112, abs=1)
    assert xs.min() == pytest.approx(224 * 0.05 / 1.1, abs=1)  # the margin, on the long side
    tensor = reference.tensor()
    assert tensor.shape == (1, 1, 224, 224) and tensor.dtype == torch.float32
    assert torch.equal(tensor[0, 0], torch.from_numpy(image))


def test_paper_is_exactly_zero_and_dust_does_not_move_the_crop(reference: Preprocessed) -> None:
    page = unevenly_lit(signature_canvas(paper=(230, 225, 210)))
    strength = ink_strength(page)
    assert strength.dtype == np.float32 and strength.shape == page.shape[:2]
    assert (strength[:100, :100] == 0).all() and strength.max() == pytest.approx(1.0)
    dusty = signature_canvas()
    for x, y in [(10, 10), (700, 15), (15, 380), (705, 390), (400, 350)]:
        dusty[y : y + 2, x : x + 2] = 90
    result = preprocess(dusty)
    assert result.crop_box == reference.crop_box
    assert_same_input(reference, result)


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "options", "lossless"),
    [
        ("PNG", {}, True),
        ("TIFF", {}, True),
        ("BMP", {}, True),
        ("WEBP", {"lossless": True}, True),
        ("JPEG", {"quality": 85}, False),
        ("WEBP", {"quality": 85}, False),
    ],
)
def test_formats_decode_to_the_same_image(reference: Preprocessed, fmt: str, options: dict, lossless: bool) -> None:
    canvas = signature_canvas()
    data = encode(canvas, fmt, **options)
    decoded = read_image(data)
    assert decoded.shape == canvas.shape and decoded.dtype == np.uint8
    if lossless:
        assert np.array_equal(decoded, canvas)
    else:
        assert np.abs(decoded.astype(int) - canvas).mean() < 2
    assert_same_input(reference, preprocess(data))


def test_path_and_pil_and_grayscale_sources(tmp_path: Path, reference: Preprocessed) -> None:
    canvas = signature_canvas()
    path = tmp_path / "signature.png"
    path.write_bytes(encode(canvas, "PNG"))
    assert np.array_equal(read_image(path), canvas)
    assert np.array_equal(read_image(str(path)), canvas)
    assert np.array_equal(read_image(Image.fromarray(canvas)), canvas)
    gray = canvas[..., 0]
    assert np.array_equal(read_image(gray), canvas)
    assert np.array_equal(read_image(encode(gray, "PNG")), canvas)
    assert np.array_equal(read_image(gray.astype(np.float32) / 255), canvas)
    assert np.array_equal(preprocess(path).image, reference.image)


def test_transparent_background_is_composited_on_white(reference: Preprocessed) -> None:
    coverage = 255 - signature_canvas()[..., 0]  # alpha = ink; RGB black everywhere, as many exports do
    rgba = np.zeros((*coverage.shape, 4), np.uint8)
    rgba[..., 3] = coverage
    decoded = read_image(encode(rgba, "PNG"))
    assert (decoded[:50, :50] == 255).all()
    assert np.abs(decoded.astype(int) - signature_canvas()).max() <= 1
    assert_same_input(reference, preprocess(encode(rgba, "PNG")))
    la = Image.fromarray(np.stack([np.zeros_like(coverage), coverage], axis=2), mode="LA")
    assert np.array_equal(read_image(la), decoded)


def test_16_bit_png_is_scaled_to_8_bit(reference: Preprocessed) -> None:
    gray = signature_canvas()[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(gray.astype(np.uint16) * 257).save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as check:
        assert check.mode.startswith("I")  # really stored as 16-bit
    decoded = read_image(buffer.getvalue())
    assert np.array_equal(decoded, np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(read_image(gray.astype(np.uint16) * 257), decoded)
    assert_same_input(reference, preprocess(buffer.getvalue()))


def test_exif_orientation_is_applied() -> None:
    upright = signature_canvas()
    stored = np.ascontiguousarray(np.rot90(upright))  # what a phone held sideways writes
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    tagged = encode(stored, "JPEG", quality=95, exif=exif)
    plain = encode(stored, "JPEG", quality=95)
    decoded = read_image(tagged)
    assert decoded.shape == upright.shape
    assert np.array_equal(decoded, np.rot90(read_image(plain), k=-1))
    assert_same_input(preprocess(upright), preprocess(tagged))


# ----------------------------------------------------------------------------- bad inputs


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_unreadable_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PreprocessError, match="not an image we can read"):
        preprocess(np.random.default_rng(0).bytes(5000))
    notes = tmp_path / "notes.txt"
    notes.write_text("This is not a signature.\n" * 20)
    with pytest.raises(PreprocessError, match="'notes.txt' is not an image we can read"):
        preprocess(notes)
    truncated = encode(signature_canvas(), "PNG")
    with pytest.raises(PreprocessError, match="not an image we can read"):
        preprocess(truncated[: len(truncated) // 2])
    with pytest.raises(PreprocessError, match="'missing.png' was not found"):
        preprocess(tmp_path / "missing.png")
    with pytest.raises(PreprocessError, match="is a folder, not an image file"):
        preprocess(tmp_path)
    if Path("/dev/zero").exists():
        with pytest.raises(PreprocessError, match="'zero' is not a regular file"):
            preprocess("/dev/zero")
    with pytest.raises(PreprocessError, match="not an image we can read"):
        preprocess(np.zeros((40, 40, 2), np.uint8))


@pytest.mark.parametrize(
    "page",
    [
        np.full((400, 600, 3), 255, np.uint8),
        np.full((400, 600, 3), 128, np.uint8),
        np.zeros((400, 600, 3), np.uint8),
        unevenly_lit(np.full((400, 600, 3), 240, np.uint8)),
    ],
    ids=["white", "grey", "black", "unevenly lit blank"],
)
def test_blank_pages_have_no_ink(page: np.ndarray) -> None:
    assert not ink_strength(page).any()
    with pytest.raises(PreprocessError, match="No ink found"):
        preprocess(encode(page, "PNG"))


def test_oversized_images_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PreprocessError, match="7000x7000 pixels, more than the 40 megapixels"):
        read_image(png_header_only(7000, 7000))  # only our header check stands in the way
    with pytest.raises(PreprocessError, match="megapixels"):
        read_image(png_header_only(20000, 20000))  # Pillow's own bomb guard fires first
    monkeypatch.setattr(preprocess_module, "MAX_PIXELS", 100_000)
    with pytest.raises(PreprocessError, match="megapixels"):
        preprocess(encode(signature_canvas(), "PNG"))
    with pytest.raises(PreprocessError, match="megapixels"):
        preprocess(signature_canvas())


def test_absurd_shapes_are_refused() -> None:
    with pytest.raises(PreprocessError, match="aspect ratio beyond 25:1"):
        preprocess(encode(np.full((20, 2000, 3), 255, np.uint8), "PNG"))
    with pytest.raises(PreprocessError, match="only 5x5 pixels"):
        preprocess(encode(np.full((5, 5, 3), 255, np.uint8), "PNG"))
    ruled = np.full((400, 720, 3), 255, np.uint8)
    cv2.line(ruled, (40, 200), (680, 203), (50, 50, 50), 3)
    with pytest.raises(PreprocessError, match="beyond 25:1 - a line"):
        preprocess(ruled)
    speck = np.full((400, 720, 3), 255, np.uint8)
    cv2.circle(speck, (300, 200), 2, (30, 30, 30), -1)
    with pytest.raises(PreprocessError, match="speck of ink"):
        preprocess(speck)


# ----------------------------------------------------------------------------- geometry


def ink_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.max() + 1]], np.float64)


@pytest.mark.parametrize("variant", ["shifted", "rescaled 0.6x", "rescaled 1.5x"])
def test_model_and_original_coordinates_are_inverse_and_match_the_ink(variant: str) -> None:
    page = VARIANTS[variant]()
    result = preprocess(page)
    points = np.random.default_rng(1).uniform(-50, 900, (100, 2))
    on_canvas = (points - np.array(result.crop_box[:2])) * result.scale + np.array(result.offset)
    assert np.allclose(result.to_original(on_canvas), points)

    x0, y0, x1, y1 = result.crop_box
    original_box = ink_box(ink_strength(page) > 0)
    assert 0 <= x0 <= original_box[0, 0] and 0 <= y0 <= original_box[0, 1]
    assert original_box[1, 0] <= x1 <= page.shape[1] and original_box[1, 1] <= y1 <= page.shape[0]
    mapped = result.to_original(ink_box(result.image > 0.1))  # 0.1: above the anti-aliasing fringe
    assert np.abs(mapped - original_box).max() <= 1 / result.scale  # within one model pixel


# ----------------------------------------------------------------------------- tokens


def test_token_ink_mask_marks_the_cells_with_ink() -> None:
    images = torch.zeros(3, 1, 224, 224)
    images[0, 0, 64:80, 160:176] = 1.0  # 25% of cell (row 2, col 5)
    images[1, 0, 0:3, 0:5] = 1.0  # 1.5% of cell (0, 0): under min_fraction, but the most ink
    images[1, 0, 100:104, 100:104] = 0.05  # under ink_level: not ink
    mask = token_ink_mask(images, (7, 7))
    assert mask.shape == (3, 49) and mask.dtype == torch.bool
    assert mask[0].nonzero().flatten().tolist() == [2 * 7 + 5]
    assert mask[1].nonzero().flatten().tolist() == [0]
    assert mask.sum(dim=1).tolist() == [1, 1, 1]  # a blank image still gets exactly one token


def test_token_ink_mask_batch_equals_per_image(reference: Preprocessed) -> None:
    rng = torch.Generator().manual_seed(0)
    images = (torch.rand(5, 1, 64, 96, generator=rng) > 0.985).float()
    images[2] = 0
    batch = token_ink_mask(images, (4, 6))
    assert batch.shape == (5, 24)
    singles = torch.cat([token_ink_mask(image[None], (4, 6)) for image in images])
    assert torch.equal(batch, singles)
    assert batch.any(dim=1).all() and 1 < batch[0].sum() < 24
    assert token_ink_mask(preprocess(signature_canvas(), size=256).tensor(), (8, 8)).shape == (1, 64)
    with pytest.raises(ValueError, match="expects"):
        token_ink_mask(torch.zeros(2, 3, 32, 32), (2, 2))


# ----------------------------------------------------------------------------- real data


def cedar_test_images() -> list[Path]:
    if not (DATASETS / "splits.json").is_file():
        pytest.skip(f"real datasets not found at {DATASETS}")
    writers = json.loads((DATASETS / "splits.json").read_text())["cedar"]["test"]
    return [p for w in writers for kind in ("genuine", "forged") for p in sorted((DATASETS / "cedar" / f"{w:03d}" / kind).glob("*.png"))]


def test_every_cedar_test_image_preprocesses_with_ink() -> None:
    paths = cedar_test_images()
    assert len(paths) == 240
    for path in paths:
        result = preprocess(path)
        assert result.image.max() > 0.5, path
        assert token_ink_mask(result.tensor(), (7, 7)).sum() >= 4, path
