"""Uniform strokes: a signature re-drawn along its centre lines at one width and full tone.

The datasets differ in ink tone, binarisation, stroke width and paper, and a model that can see those
can tell datasets apart instead of hands. This input keeps where the pen went and drops how it marked
the page, so those cues are gone by construction; the price is the width and pressure a pen leaves.
It is the preprocessing mode ``"strokes"``: applied to the letterboxed canvas at inference, and after
augmentation in training.
"""

from __future__ import annotations

import cv2
import numpy as np

from dsn.data.augment import skeletonize

INK_LEVEL = 0.35  # share of the image's brightest ink that still counts as stroke


def stroke_width_for(size: int) -> int:
    """Drawn width at this input size: 2 px at 224, as thin as the thinnest dataset's strokes there."""
    return max(1, round(size / 112))


def uniform_strokes(image: np.ndarray, width: int | None = None) -> np.ndarray:
    """(H, W) ink-bright float image -> the same strokes, ``width`` px wide (default: by size), ink at 1.0."""
    image = np.asarray(image, dtype=np.float32)
    width = stroke_width_for(image.shape[0]) if width is None else int(width)
    bright = image[image > 0.05]
    if bright.size == 0:
        return np.zeros_like(image)
    ink = image > INK_LEVEL * float(np.percentile(bright, 99))
    drawn = skeletonize(ink).astype(np.uint8)
    if width > 1:
        drawn = cv2.dilate(drawn, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width)))
    return drawn.astype(np.float32)


def uniform_strokes_uint8(pixels: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 canvases (an image cache) -> uniform strokes, uint8."""
    return np.stack([np.round(uniform_strokes(p / np.float32(255)) * 255).astype(np.uint8) for p in pixels])
