"""The paper's frequency experiment: verify inputs that keep only some spatial frequencies.

DetailSemNet's authors filter the inputs into low (LF), low + middle (LMF) and
low + high (LHF) frequency versions to show that the DSI relies on
high-frequency detail. Here the filters are ideal (brick-wall) masks on the
2-D FFT of the 224 x 224 model input, by radial frequency f in cycles per
pixel (Nyquist is 0.5):

- LF keeps f <= 1/14 (periods of 14 px and more: the signature's layout),
- LMF keeps f <= 3/14 (down to periods of about 4.7 px: stroke shapes),
- LHF keeps f <= 1/14 and f > 3/14 (layout plus the finest detail, without the middle band).

The filtered image is not clipped to [0, 1]: clipping would put back the
frequencies the filter removed. Both images of a pair get the same filter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch

from dsn.data.dataset import ImageCache, SignatureImage
from dsn.evaluation.evaluate import evaluate
from dsn.inference import SIDES, PairAnalysis, analyze_pair, embed
from dsn.inspect.analysis import channel_energy
from dsn.model.detailsemnet import DetailSemNet, Embedding

Progress = Callable[[float, str], None]
LOW_CUTOFF = 1 / 14  # cycles per pixel
MIDDLE_CUTOFF = 3 / 14
BANDS = ("original", "LF", "LMF", "LHF")
BAND_LABELS = {
    "original": "original (all frequencies)",
    "LF": f"LF: f <= {LOW_CUTOFF:.3f} cycles/px",
    "LMF": f"LMF: f <= {MIDDLE_CUTOFF:.3f} cycles/px",
    "LHF": f"LHF: f <= {LOW_CUTOFF:.3f} or f > {MIDDLE_CUTOFF:.3f} cycles/px",
}


def radial_frequency(shape: tuple[int, int]) -> np.ndarray:
    """|f| in cycles per pixel for every entry of ``np.fft.fft2`` of an image of ``shape``."""
    fy, fx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij")
    return np.hypot(fy, fx)


def band_mask(shape: tuple[int, int], band: str) -> np.ndarray:
    """Which FFT entries ``band`` keeps (in ``np.fft.fft2`` layout)."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    f = radial_frequency(shape)
    if band == "original":
        return np.ones(shape, bool)
    if band == "LF":
        return f <= LOW_CUTOFF
    if band == "LMF":
        return f <= MIDDLE_CUTOFF
    return (f <= LOW_CUTOFF) | (f > MIDDLE_CUTOFF)


def filter_image(image: np.ndarray, band: str) -> np.ndarray:
    """``image`` with only the frequencies of ``band`` (float32, not clipped)."""
    if band == "original":
        return np.asarray(image, np.float32)
    spectrum = np.fft.fft2(np.asarray(image, np.float64))
    return np.real(np.fft.ifft2(spectrum * band_mask(image.shape, band))).astype(np.float32)


def filtered_pair(model: DetailSemNet, analysis: PairAnalysis, band: str) -> PairAnalysis:
    """The pair verified again with both inputs filtered to ``band``."""
    if band == "original":
        return analysis
    ref, query = (dataclasses.replace(analysis.preprocessed(s), image=filter_image(analysis.preprocessed(s).image, band)) for s in SIDES)
    return analyze_pair(model, ref, query, threshold=analysis.threshold)


def detail_share(analysis: PairAnalysis, side: str = "query") -> dict[int, float]:
    """Per stage with a frequency split: the detail part's share of detail + semantic energy (mean over blocks)."""
    maps = analysis.maps_query if side == "query" else analysis.maps_ref
    shares: dict[int, list[float]] = {}
    for m in maps:
        if m.pool_size > 1:
            detail, semantic = float(np.mean(channel_energy(m.detail_input))), float(np.mean(channel_energy(m.semantic_input)))
            shares.setdefault(m.stage, []).append(detail / (detail + semantic) if detail + semantic > 0 else 0.0)
    return {stage: float(np.mean(values)) for stage, values in sorted(shares.items())}


def band_effects(model: DetailSemNet, analysis: PairAnalysis, bands: Sequence[str] = BANDS, progress: Progress | None = None) -> list[dict]:
    """Distance, verdict and DSI detail shares of the pair under each band."""
    rows = []
    for k, band in enumerate(bands):
        if progress is not None:
            progress(k / len(bands), f"verifying the {band} versions")
        result = filtered_pair(model, analysis, band)
        summary = result.summary()
        rows.append(
            {
                "band": band,
                "label": BAND_LABELS[band],
                "distance": summary["distance"],
                "global_distance": summary["global_distance"],
                "structural_distance": summary["structural_distance"],
                "verdict": summary["verdict"],
                "detail_share": {f"stage {s + 1}": v for s, v in detail_share(result).items()},
            }
        )
    return rows


def evaluate_bands(
    model: DetailSemNet,
    images: Sequence[SignatureImage],
    bands: Sequence[str] = BANDS,
    threshold: float | None = None,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> dict[str, dict]:
    """The standard protocol of ``images`` under each band: band -> metrics (EER, AUC, FAR/FRR at ``threshold``).

    Each image is preprocessed once; every band then costs one backbone pass per image.
    """
    report = progress or (lambda fraction, text: None)
    cache = ImageCache(images, size=model.config.img_size, progress=False, mode=model.config.preprocessing)
    out = {}
    for k, band in enumerate(bands):
        parts = []
        for start in range(0, len(cache), batch_size):
            report((k + start / len(cache)) / len(bands), f"{band}: embedding image {start + 1} of {len(cache)}")
            pixels = cache.pixels[start : start + batch_size].astype(np.float32) / 255.0
            filtered = np.stack([filter_image(p, band) for p in pixels])
            parts.append(embed(model, torch.from_numpy(filtered)[:, None]))
        result = evaluate(model, images, threshold=threshold, progress=False, embedding=Embedding.cat(parts))
        out[band] = {"label": BAND_LABELS[band], **result.metrics}
    report(1.0, "frequency evaluation done")
    return out
