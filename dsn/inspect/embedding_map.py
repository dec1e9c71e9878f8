"""A 2-D map of a split's global embeddings: do a writer's signatures cluster, and where do the forgeries fall?

PCA (scikit-learn) is the default: linear, deterministic and fast, so
distances along its axes mean something. t-SNE (also scikit-learn) shows
neighbourhoods better but distorts global distances. UMAP is not offered:
umap-learn pulls in numba and llvmlite, a large compiled dependency for one
optional view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from dsn.data.dataset import SignatureImage
from dsn.inspect.figures import _finish

METHODS = ("pca", "tsne")
SEED = 0


def project(features: np.ndarray, method: str = "pca") -> np.ndarray:
    """(N, D) features -> (N, 2) coordinates (seeded: the same map every time)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    features = np.asarray(features, np.float64)
    if len(features) < 3:
        raise ValueError("the map needs at least 3 images")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=SEED).fit_transform(features)
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=SEED).fit_transform(features)


def embedding_map_figure(coords: np.ndarray, images: Sequence[SignatureImage], method: str, picked: Sequence[int] = ()) -> go.Figure:
    """One trace per writer (colour) and label (circle: genuine, x: forged); ``customdata`` is the image index."""
    palette = qualitative.Dark24 + qualitative.Light24
    writers = sorted({image.writer for image in images})
    traces = []
    for k, writer in enumerate(writers):
        for genuine in (True, False):
            index = [i for i, image in enumerate(images) if image.writer == writer and image.genuine == genuine]
            if not index:
                continue
            traces.append(
                go.Scatter(
                    x=coords[index, 0],
                    y=coords[index, 1],
                    mode="markers",
                    name=f"writer {writer} {'genuine' if genuine else 'forged'}",
                    legendgroup=str(writer),
                    customdata=index,
                    text=[f"writer {writer}, {'genuine' if genuine else 'forged'} {images[i].index:02d}" for i in index],
                    hovertemplate="%{text}<extra></extra>",
                    marker=dict(
                        color=palette[k % len(palette)], symbol="circle" if genuine else "x", size=8 if genuine else 7, opacity=0.85
                    ),
                )
            )
    if picked:
        traces.append(
            go.Scatter(
                x=coords[list(picked), 0],
                y=coords[list(picked), 1],
                mode="markers",
                name="picked",
                hoverinfo="skip",
                marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
            )
        )
    fig = go.Figure(traces)
    fig.update_layout(legend=dict(font=dict(size=10)), showlegend=len(writers) <= 12)
    fig.update_xaxes(title_text=f"{method.upper()} 1", zeroline=False)
    fig.update_yaxes(title_text=f"{method.upper()} 2", zeroline=False)
    title = (
        f"Global embeddings of {len(images)} signatures ({len(writers)} writers), {method.upper()}"
        "<br><sup>colour: writer · circle: genuine · x: forged · click two points to open that pair in the pair views</sup>"
    )
    return _finish(fig, None, title, 560, top=80)
