"""Does a model input look like a handwritten signature? A warning, never a refusal.

Preprocessing already refuses what cannot be verified at all (blank pages, a dot, a
ruled line). What gets through may still be no signature: noise, a photo, a filled
shape. The model will still return a distance for it, so every caller shows these
warnings beside the verdict instead of a confident answer about nothing.

Measured on 150 random signatures of each dataset in ``../shared/datasets`` at 224 px:
ink covers 1.2-10.3 % of the canvas, forms 1-32 connected strokes, and strokes are
2.0-4.0 px wide on average. The limits below leave a wide margin around that.
"""

from __future__ import annotations

import cv2
import numpy as np

INK_LEVEL = 0.1  # model-input value above which a pixel is ink
MAX_INK_FRACTION = 0.25
MAX_STROKE_WIDTH = 6.0  # mean, in pixels of a 224 px input
MAX_COMPONENTS = 80


def handwriting_warnings(image: np.ndarray) -> list[str]:
    """Plain-language reasons why ``image`` (a model input, ink bright on black) may not be handwriting."""
    ink = (np.asarray(image) > INK_LEVEL).astype(np.uint8)
    scale = 224.0 / max(ink.shape)
    warnings = []
    fraction = float(ink.mean())
    if fraction > MAX_INK_FRACTION:
        warnings.append(
            f"ink covers {100 * fraction:.0f} % of the image (signatures: under 11 %): is this a photo, noise or a filled area?"
        )
    if ink.any():
        width = 2.0 * float(cv2.distanceTransform(ink, cv2.DIST_L2, 3)[ink > 0].mean()) * scale
        if width > MAX_STROKE_WIDTH:
            warnings.append(
                f"strokes are {width:.0f} px wide on average (signatures: 2-4 px): a pen draws thinner lines: is this a brush, a marker or a filled shape?"
            )
        components = cv2.connectedComponents(ink, connectivity=8)[0] - 1
        if components > MAX_COMPONENTS:
            warnings.append(f"the ink falls into {components} separate pieces (signatures: at most ~30): it looks like noise or texture")
    return warnings
