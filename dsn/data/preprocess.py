"""Signature preprocessing: any upload -> ink-bright-on-black model input.

The model must see pen strokes only, never the paper: real uploads come on
white, grey, yellowish or photographed paper, and any of that left in the
input would be a signal the model could learn instead of the shape. So we
estimate the paper, keep only what is clearly darker than it, normalise the
ink tone, crop to the ink and letterbox it (aspect kept, centred) into a
square. Every user-caused failure is a ``PreprocessError`` with a message
the UI can show as is.

Coordinates are continuous with pixel ``i`` spanning ``[i, i + 1)``, in both
the original image and the model input; ``Preprocessed.to_original`` maps
model positions back to the original.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dsn.data.strokes import uniform_strokes
from dsn.model.config import PREPROCESSING_MODES

MAX_PIXELS: int = 40_000_000
MIN_SIDE = 16
MAX_ASPECT = 25.0
MIN_INK_EXTENT = 8  # px of the ink box's long side; less is a dot, not a signature
SUPPORTED = "PNG, JPEG, TIFF, BMP or WebP"

_BACKGROUND_SIDE = 256  # paper is estimated at this resolution: lighting varies slowly
_BACKGROUND_KERNEL = 15  # closing kernel there (~6% of the long side): wider than pen strokes, small enough to follow a vignette
_MIN_PAPER = 16  # grey level below which a region cannot be lit paper
_MIN_INK_DARKNESS = 0.1  # ink must be >= 10% darker than its local paper (paper noise is not)
_MAX_INK_THRESHOLD = 0.4  # never let Otsu discard light strokes of a two-tone signature
_INK_TONE_PERCENTILE = 90  # ink this dark or darker maps to 1, so pen darkness barely matters


class PreprocessError(ValueError):
    """User-facing message; never a crash."""


# ----------------------------------------------------------------------------- reading


def _describe(source: object) -> str:
    if isinstance(source, (str, Path)):
        name = Path(source).name
        return f"'{name[:57]}...'" if len(name) > 60 else f"'{name}'" if name else "The file"
    return "The uploaded file" if isinstance(source, (bytes, bytearray)) else "The image"


def _check_dimensions(width: int, height: int, name: str) -> None:
    """Reject from the size alone, before any pixels are decoded."""
    if width * height > MAX_PIXELS:
        raise PreprocessError(
            f"{name} is {width}x{height} pixels, more than the {MAX_PIXELS / 1e6:.0f} megapixels we accept; "
            "please upload a smaller scan or photo of the signature."
        )
    if min(width, height) < MIN_SIDE:
        raise PreprocessError(f"{name} is only {width}x{height} pixels; a signature image needs at least {MIN_SIDE} pixels per side.")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise PreprocessError(
            f"{name} is {width}x{height} pixels, an aspect ratio beyond {MAX_ASPECT:.0f}:1; please crop it around the signature."
        )


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Transparent pixels are paper: PNG exports often keep black RGB under alpha 0."""
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.rint(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return np.rint(values / 257.0).astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        finite = np.nan_to_num(values.astype(np.float32))
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        wide = values.astype(np.int64)
        if wide.size and wide.max() > 255:  # 16-bit data in a wider integer
            wide = np.rint(wide / 257.0).astype(np.int64)
        return np.clip(wide, 0, 255).astype(np.uint8)
    raise PreprocessError(f"Pixels of type {values.dtype} are not an image we can read.")


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return np.repeat(_to_uint8(array)[..., None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        pixels = _to_uint8(array)
        if pixels.shape[2] == 4:
            return _composite_on_white(pixels[..., :3], pixels[..., 3])
        return np.ascontiguousarray(pixels)
    raise PreprocessError(f"An array of shape {array.shape} is not an image we can read (expected HxW, HxWx3 or HxWx4).")


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)  # phone photos store rotation as a tag
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _array_to_rgb(np.asarray(image))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        return _composite_on_white(rgba[..., :3], rgba[..., 3])
    return np.ascontiguousarray(np.asarray(image.convert("RGB")))


def read_image(source: str | Path | bytes | np.ndarray | Image.Image) -> np.ndarray:
    """Decode any supported upload to RGB uint8 (H, W, 3), upright and on white.

    The pixel count is checked from the header before decoding, so a small
    file claiming a huge size (a decompression bomb) never allocates memory.
    A multi-page TIFF or an animated GIF gives its first page (``read_image_frames`` says how many there were).
    """
    return read_image_frames(source)[0]


def _check_path(path: Path, name: str) -> None:
    try:
        if path.is_file():
            return
        kind = "a folder" if path.is_dir() else "not a regular file (a device, pipe or socket)" if path.exists() else None
    except OSError:  # e.g. a name too long for the filesystem
        kind = None
    raise PreprocessError(f"{name} was not found." if kind is None else f"{name} is {kind}, not an image file.")


@contextmanager
def _opened(stream: io.BytesIO | Path, name: str) -> Iterator[Image.Image]:
    """``Image.open`` with its size checked from the header and every decoder failure said in our words."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            with Image.open(stream) as image:
                _check_dimensions(*image.size, name)
                yield image
    except PreprocessError:
        raise
    except Image.DecompressionBombError as error:
        raise PreprocessError(f"{name} claims more than {MAX_PIXELS / 1e6:.0f} megapixels; please upload a smaller image.") from error
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        raise PreprocessError(f"{name} is not an image we can read (is it a {SUPPORTED} file, and complete?).") from error


def probe_image(path: str | Path) -> None:
    """Raise the ``read_image`` message for a file that is not a readable image, reading only its header.

    Cheap enough for a form validator: a text file renamed ``.png`` is refused before any model run.
    """
    name = _describe(path)
    _check_path(Path(path), name)
    with _opened(Path(path), name):
        pass


def read_image_frames(source: str | Path | bytes | np.ndarray | Image.Image) -> tuple[np.ndarray, int]:
    """``read_image`` and the number of pages or frames the file holds (1 for most images)."""
    name = _describe(source)
    if isinstance(source, np.ndarray):
        if source.ndim < 2:
            raise PreprocessError(f"An array of shape {source.shape} is not an image we can read.")
        _check_dimensions(source.shape[1], source.shape[0], name)
        return _array_to_rgb(source), 1
    if isinstance(source, Image.Image):
        _check_dimensions(*source.size, name)
        return _pil_to_rgb(source), int(getattr(source, "n_frames", 1))
    if isinstance(source, (bytes, bytearray)):
        stream: io.BytesIO | Path = io.BytesIO(bytes(source))
    elif isinstance(source, (str, Path)):
        stream = Path(source)
        _check_path(stream, name)
    else:
        raise PreprocessError(f"A value of type {type(source).__name__} is not an image we can read; upload a {SUPPORTED} file.")
    with _opened(stream, name) as image:
        frames = int(getattr(image, "n_frames", 1))
        image.seek(0)
        image.load()
        return _pil_to_rgb(image), frames


# ----------------------------------------------------------------------------- ink


def _paper_brightness(gray: np.ndarray) -> np.ndarray:
    """Local paper brightness: a closing removes the (thin, dark) ink and keeps the lighting.

    Done at low resolution because lighting varies slowly and closing is the
    costly step. Known limit: where a photo shows the paper's edge against a
    dark table, the low-resolution edge spills a few pixels onto the table,
    which then reads as a thin line of ink (the crop grows to the paper).
    """
    height, width = gray.shape
    factor = min(1.0, _BACKGROUND_SIDE / max(height, width))
    small = cv2.resize(gray, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (_BACKGROUND_KERNEL, _BACKGROUND_KERNEL))
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    if factor < 1.0:
        paper = cv2.resize(paper, (width, height), interpolation=cv2.INTER_LINEAR)
    return paper


def _drop_specks(ink: np.ndarray) -> np.ndarray:
    """Remove connected components smaller than half a pen dot, so dust cannot stretch the crop.

    The pen width is estimated as 2 * area / boundary (a stroke of width w and
    length L has area wL and about 2L boundary pixels), which keeps the rule
    independent of resolution.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    if count <= 1:
        return ink
    area = stats[1:, cv2.CC_STAT_AREA]
    boundary = np.count_nonzero(ink & ~cv2.erode(ink.astype(np.uint8), None).astype(bool))
    pen_width = 2.0 * area.sum() / max(boundary, 1)
    keep = np.concatenate([[False], area >= max(3.0, 0.5 * pen_width**2)])
    return keep[labels]


def ink_strength(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel ink in [0, 1] (float32 HxW): 0 = paper, 1 = full ink, whatever paper and pen.

    Darkness is measured relative to the local paper (so tint and uneven light
    cancel), thresholded with Otsu for an exactly-zero background, and divided
    by a high percentile of the ink so a pale pen and a dark pen look alike.
    """
    gray = cv2.cvtColor(_array_to_rgb(rgb), cv2.COLOR_RGB2GRAY)  # accepts any array read_image would
    paper = cv2.max(_paper_brightness(gray), gray)  # paper is never darker than the pixel on it
    # 8-bit all the way to the threshold: cv2's saturating uint8 ops are several times faster than float.
    darkness = 255 - cv2.divide(gray, paper, scale=255)
    darkness[paper < _MIN_PAPER] = 0  # too dark to be paper (a black page, a table): nothing to compare
    otsu, _ = cv2.threshold(darkness, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = min(max(otsu, 255 * _MIN_INK_DARKNESS), 255 * _MAX_INK_THRESHOLD)
    ink = _drop_specks(darkness > threshold)
    strength = np.zeros(gray.shape, np.float32)
    if ink.any():
        ink_darkness = darkness[ink].astype(np.float32)
        tone = float(np.percentile(ink_darkness, _INK_TONE_PERCENTILE))
        strength[ink] = np.minimum(ink_darkness / tone, 1.0)
    return strength


# ----------------------------------------------------------------------------- model input
@dataclass
class Preprocessed:
    """The model input together with the geometry needed to draw results on the original."""

    image: np.ndarray  # (size, size) float32 in [0, 1], ink bright on black
    original: np.ndarray  # RGB uint8 as read (orientation fixed)
    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1 in original pixels (x1, y1 exclusive)
    scale: float | tuple[float, float]  # model px per original px; (x, y) when stretched
    offset: tuple[float, float]  # model position of crop_box's top-left corner
    notes: tuple[str, ...] = ()  # what the reader had to decide, e.g. which page of a multi-page file it used

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) model (x, y) -> original (x, y)."""
        origin = np.array(self.crop_box[:2], np.float64)
        return (np.asarray(xy, np.float64) - np.array(self.offset, np.float64)) / np.asarray(self.scale, np.float64) + origin

    def tensor(self) -> torch.Tensor:
        """(1, 1, size, size) float32, ready for the model."""
        return torch.from_numpy(np.ascontiguousarray(self.image, np.float32))[None, None]


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _resample(region: np.ndarray, scale: float, offset: tuple[float, float], size: int) -> np.ndarray:
    """Place ``region`` scaled by ``scale`` with its top-left corner at ``offset`` (sub-pixel exact).

    Exact sub-pixel placement matters: strokes are only 1-2 model pixels wide,
    so rounding the position to whole pixels made the same signature at two
    resolutions overlap far less. Downscaling is anti-aliased (integer box
    reduction to within 2x, then a Gaussian matched to the rest) so that thin
    strokes neither vanish nor alias.
    """
    reduction = max(1, int(1 / (2 * scale)))
    if reduction > 1:
        bottom, right = -region.shape[0] % reduction, -region.shape[1] % reduction
        region = cv2.copyMakeBorder(region, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=0)
        region = cv2.resize(region, None, fx=1 / reduction, fy=1 / reduction, interpolation=cv2.INTER_AREA)
    step = scale * reduction  # model px per region px, in (0.5, 1] when downscaling
    if step < 1:
        sigma = 0.5 * math.sqrt(1 / step**2 - 1)
        region = cv2.GaussianBlur(region, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    # Edge coordinates (pixel i spans [i, i+1)) -> cv2's centre coordinates: shift by half a pixel.
    matrix = np.array([[step, 0, offset[0] + 0.5 * step - 0.5], [0, step, offset[1] + 0.5 * step - 0.5]], np.float64)
    canvas = cv2.warpAffine(region, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.clip(canvas, 0.0, 1.0, out=canvas)


def stretch_whole_image(original: np.ndarray, size: int) -> np.ndarray:
    """The official input: grey, inverted, the whole image resized to size x size, in [0, 1].

    Exactly the official pipeline (PIL ``convert("L")``, invert, torchvision's
    ``Resize((size, size))``, which on a PIL image is PIL's antialiased
    bilinear resize, then ``ToTensor``): no paper removal, no crop, aspect not kept.
    """
    gray = Image.fromarray(original).convert("L")
    inverted = ImageOps.invert(gray).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(inverted, dtype=np.float32) / np.float32(255)


def preprocess(
    source: str | Path | bytes | np.ndarray | Image.Image, size: int = 224, margin: float = 0.05, mode: str = "letterbox"
) -> Preprocessed:
    """Read, remove the paper, crop to the ink (+ margin) and letterbox into size x size.

    The scale comes from the ink box's long side, so the same signature at
    another resolution or position gives the same input; the ink box centre
    lands on the canvas centre (to within half a model pixel). ``mode="stretch"``
    instead gives the official input (``stretch_whole_image``), for checkpoints
    trained with the authors' code; ``mode="strokes"`` re-draws the letterboxed ink at one width and
    tone (``dsn.data.strokes``); the ink checks run in every mode.
    """
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"mode must be one of {PREPROCESSING_MODES}, got {mode!r}")
    original, frames = read_image_frames(source)
    notes = (f"{_describe(source)} holds {frames} pages or frames; only the first was used.",) if frames > 1 else ()
    strength = ink_strength(original)
    ink = strength > 0
    if not ink.any():
        raise PreprocessError("No ink found: the page looks blank or uniform. Please upload a photo or scan of a signature.")
    if mode == "stretch":
        height, width = ink.shape
        canvas = stretch_whole_image(original, size)
        return Preprocessed(canvas, original, (0, 0, width, height), (size / width, size / height), (0.0, 0.0), notes)
    x0, y0, x1, y1 = _ink_box(ink)
    width, height = x1 - x0, y1 - y0
    longest = max(width, height)
    if longest < MIN_INK_EXTENT:
        raise PreprocessError("Only a speck of ink was found; please upload a larger, sharper signature.")
    if longest / min(width, height) > MAX_ASPECT:
        raise PreprocessError(
            f"The ink found spans {width}x{height} pixels, beyond {MAX_ASPECT:.0f}:1 - a line or a border, not a signature. "
            "Please crop the image around the signature."
        )

    pad = margin * longest
    scale = size / (longest + 2 * pad)
    image_height, image_width = ink.shape
    crop = (
        max(0, math.floor(x0 - pad)),
        max(0, math.floor(y0 - pad)),
        min(image_width, math.ceil(x1 + pad)),
        min(image_height, math.ceil(y1 + pad)),
    )
    offset = (size / 2 + (crop[0] - (x0 + x1) / 2) * scale, size / 2 + (crop[1] - (y0 + y1) / 2) * scale)
    canvas = _resample(strength[crop[1] : crop[3], crop[0] : crop[2]], scale, offset, size)
    # 8-bit levels, like the stretched input: datasets are held as uint8 (``ImageCache``), so a pair
    # embedded alone and the same pair embedded from a dataset see exactly the same pixels.
    canvas = (np.round(canvas * 255) / 255).astype(np.float32)
    if mode == "strokes":  # drawn from the 8-bit canvas, as training draws them from its uint8 caches
        canvas = uniform_strokes(canvas)
    return Preprocessed(canvas, original, crop, float(scale), (float(offset[0]), float(offset[1])), notes)
