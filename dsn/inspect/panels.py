"""Images inside Plotly figures: PNG data URIs, the paper view, and where an image sits in a figure.

An ``ImagePanel`` maps model-input coordinates onto the image as drawn (the model input, or
the original upload scaled to the same height), so matches and grids land on the right ink.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np
import plotly.graph_objects as go

from dsn.data.preprocess import Preprocessed

_ORIGINAL_HEIGHT = 224.0  # display height of originals in figure units, as tall as the model view
_MAX_ORIGINAL_PIXELS = 448  # originals are embedded at most this tall: sharp enough, small JSON


def png_source(pixels: np.ndarray) -> str:
    """uint8 gray or RGB array -> PNG data URI for ``go.Image(source=...)``."""
    ok, buffer = cv2.imencode(".png", pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def paper_view(image: np.ndarray) -> np.ndarray:
    """Ink-bright model input -> dark ink on white paper (uint8), the way people look at signatures."""
    return np.clip(255.0 * (1.0 - np.asarray(image, np.float32)), 0, 255).astype(np.uint8)


class ImagePanel:
    """Where one image sits in a figure, and how model pixels map onto it."""

    def __init__(self, pre: Preprocessed, x0: float = 0.0, background: str = "model") -> None:
        self.pre, self.x0, self.model_view = pre, x0, background == "model"
        if self.model_view:
            self.scale, self.pixels = 1.0, paper_view(pre.image)
        else:
            height = pre.original.shape[0]
            self.scale = _ORIGINAL_HEIGHT / height  # figure units per original pixel
            shrink = min(1.0, _MAX_ORIGINAL_PIXELS / height)
            self.pixels = cv2.resize(pre.original, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else pre.original
        self.width = float(pre.image.shape[1] if self.model_view else pre.original.shape[1] * self.scale)
        self.height = float(pre.image.shape[0] if self.model_view else _ORIGINAL_HEIGHT)

    def place(self, model_xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(model_xy, np.float64) if self.model_view else self.pre.to_original(model_xy) * self.scale
        return xy + np.array([self.x0, 0.0])

    def trace(self, name: str) -> go.Image:
        step = self.width / self.pixels.shape[1]  # figure units per embedded pixel; x0/y0 are pixel centres
        return go.Image(source=png_source(self.pixels), x0=self.x0 + step / 2, y0=step / 2, dx=step, dy=step, name=name, hoverinfo="skip")

    def grid_trace(self, grid: tuple[int, int]) -> go.Scatter:
        """Faint token-cell borders, so 'patch (row, col)' can be found on the image."""
        size_y, size_x = self.pre.image.shape
        ends = [[(0.0, k * size_y / grid[0]), (size_x, k * size_y / grid[0])] for k in range(grid[0] + 1)]
        ends += [[(k * size_x / grid[1], 0.0), (k * size_x / grid[1], size_y)] for k in range(grid[1] + 1)]
        xs: list[float | None] = []
        ys: list[float | None] = []
        low, high = np.array([self.x0, 0.0]), np.array([self.x0 + self.width, self.height])
        for a, b in (self.place(np.array(e)) for e in ends):
            if np.all(np.minimum(a, b) <= high) and np.all(np.maximum(a, b) >= low):  # clip to the shown image
                (ax, ay), (bx, by) = np.clip(a, low, high), np.clip(b, low, high)
                xs += [ax, bx, None]
                ys += [ay, by, None]
        line = dict(color="rgba(120,120,120,0.3)", width=1)
        return go.Scatter(x=xs, y=ys, mode="lines", line=line, hoverinfo="skip", showlegend=False, name="token grid")
