"""Training augmentation on preprocessed ink-bright images: geometry and pen (``Augment``), and the
changes between media and datasets (``MediaAugment``: stroke width, binarisation, ink tone, paper).

The datasets differ in ink tone, binarisation and stroke width, and a pen on a screen draws thin,
even strokes where paper gives grey, uneven ones. A model that can tell those apart can fit each
dataset without learning the hand, so training randomises them away.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


class Augment:
    """Training-side augmentation on a preprocessed ink-bright float image (H,W)
    in [0,1], so the model learns shape, not pen or paper.

    Each step fires with its own probability; `strength` scales every
    magnitude (0 returns the image unchanged). One cv2.warpAffine does all the
    geometry so the whole call stays around a millisecond on 224x224.
    """

    def __init__(self, strength: float = 1.0, seed: int | None = None):
        self.strength = float(strength)
        self.rng = np.random.default_rng(seed)
        self.kernel = np.ones((3, 3), np.uint8)

    def _affine(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = self.strength
        height, width = image.shape
        angle = math.radians(rng.uniform(-5, 5) * s)
        scale = 1 + rng.uniform(-0.08, 0.08) * s
        shear = rng.uniform(-0.1, 0.1) * s
        shift = rng.uniform(-4, 4, size=2) * s * min(height, width) / 224
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        linear = np.array([[cos, -sin], [sin, cos]]) @ np.array([[1, shear], [0, 1]])
        center = np.array([(width - 1) / 2, (height - 1) / 2])
        offset = center - linear @ center + shift
        matrix = np.hstack([linear, offset[:, None]]).astype(np.float32)
        return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0.0)

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        rng = self.rng if rng is None else rng
        out = np.asarray(image, dtype=np.float32)
        if out.ndim != 2:
            raise ValueError(f"expected a (H, W) image, got shape {out.shape}")
        if self.strength <= 0:
            return out.copy()
        s = self.strength
        if rng.random() < 0.8:
            out = self._affine(out, rng)
        if rng.random() < 0.3:  # pen width. Strokes are only 1-2 px wide at 224 px,
            # so a full 3x3 erosion would wipe them out: thin by blending it in.
            if rng.random() < 0.5:
                out = cv2.dilate(out, self.kernel)
            else:
                weight = rng.uniform(0.2, 0.5) * s
                out = cv2.addWeighted(out, 1 - weight, cv2.erode(out, self.kernel), weight, 0.0)
        if rng.random() < 0.6:  # ink darkness and tone curve
            gain = 1 - rng.uniform(0, 0.2) * s
            gamma = math.exp(rng.uniform(-0.3, 0.3) * s)
            out = gain * np.power(np.clip(out, 0, 1), gamma)
        if rng.random() < 0.2:
            out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 0.6) * s + 1e-3)
        if rng.random() < 0.2:
            noise = rng.standard_normal(out.shape, dtype=np.float32)
            out = out + noise * np.float32(0.03 * s)
        return np.clip(out, 0.0, 1.0, dtype=np.float32)


def skeletonize(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask to one-pixel centre lines, vectorised in NumPy.

    OpenCV and NumPy only (no scikit-image): training must run on machines that have just torch and OpenCV.
    """
    image = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for first in (True, False):
            p = image
            # neighbours P2..P9, clockwise from north
            n = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:], p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            count = sum(n)
            transitions = sum(((n[k] == 0) & (n[(k + 1) % 8] == 1)).astype(np.uint8) for k in range(8))
            if first:
                side = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                side = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            remove = (p[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & side
            if remove.any():
                image = image.copy()
                image[1:-1, 1:-1][remove] = 0
                changed = True
        if not changed:
            return image[1:-1, 1:-1].astype(bool)


def stroke_width_px(image: np.ndarray) -> float:
    """Mean stroke width in pixels: ink area over skeleton length."""
    ink = image > 0.25
    length = int(skeletonize(ink).sum())
    return float(ink.sum()) / length if length else 0.0


class MediaAugment:
    """Randomises what differs between paper scans, binarised scans and pen-on-screen captures.

    ``probability`` is the chance that each call applies anything; then each change fires on its
    own: stroke re-rendering at another width (the skeleton kept), binarisation at a random
    threshold, a new ink tone, blur, and a faint paper texture.
    """

    def __init__(self, probability: float = 0.5) -> None:
        self.probability = float(probability)

    @staticmethod
    def stroke_width(image: np.ndarray, width: int) -> np.ndarray:
        """The same strokes re-drawn ``width`` px wide along their skeleton, in the image's own ink tone."""
        ink = image > 0.25
        if not ink.any():
            return image.copy()
        tone = float(np.median(image[ink]))
        skeleton = skeletonize(ink).astype(np.uint8)
        if width > 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (width, width))
            skeleton = cv2.dilate(skeleton, kernel)
        drawn = skeleton.astype(np.float32) * tone
        if width <= 2:
            return drawn  # a blur would dim a stroke this thin: the tone must stay the image's own
        return cv2.GaussianBlur(drawn, (3, 3), 0.5)  # anti-aliased edges, as a scan or a renderer gives

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.asarray(image, dtype=np.float32)
        if self.probability <= 0 or rng.random() >= self.probability:
            return out
        if rng.random() < 0.5:  # from 0.4x to 1.8x the current stroke width
            current = stroke_width_px(out)
            out = self.stroke_width(out, max(1, round(current * rng.uniform(0.4, 1.8))))
        if rng.random() < 0.3:  # a binarised scan: ink at full tone, no grey levels
            out = (out > rng.uniform(0.15, 0.6)).astype(np.float32)
        if rng.random() < 0.5:  # another pen or scanner: ink tone
            out = out * np.float32(rng.uniform(0.55, 1.0))
        if rng.random() < 0.2:
            out = cv2.GaussianBlur(out, (5, 5), rng.uniform(0.5, 1.2))
        if rng.random() < 0.2:  # paper texture left after paper removal: faint low-frequency grain
            grain = cv2.resize(rng.random((14, 14), dtype=np.float32), out.shape[::-1], interpolation=cv2.INTER_CUBIC)
            out = out + np.float32(rng.uniform(0.02, 0.08)) * np.clip(grain, 0, 1)
        return np.clip(out, 0.0, 1.0, dtype=np.float32)
