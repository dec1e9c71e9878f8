"""Shared fixtures: the model the explanation tests look inside, and an analysed example pair."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsn.analysis import PairAnalysis, analyze_pair
from dsn.model import DetailSemNet
from dsn.preprocess import preprocess
from dsn.weights import default_weights

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"  # drawn by dsn.synth, shipped with the app


def explorer_model() -> DetailSemNet:
    """The embedded checkpoint when there is one, else a seeded random model with real BatchNorm statistics.

    A fresh DSNet (BatchNorm mean 0 / variance 1, LayerScale 1e-5, bias-free
    convs) is almost positively homogeneous, so its distance barely depends on
    ink contrast and gradients say little; statistics from the example images
    make it respond to its input as a trained network does.
    """
    weights = default_weights()
    if weights:
        return DetailSemNet.load(weights)
    torch.manual_seed(0)
    model = DetailSemNet()
    images = torch.cat([preprocess(path).tensor() for path in sorted(EXAMPLES.glob("*.png"))])
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model.embed(images)
    return model.eval()


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on a shared CPU: extra threads only add contention (use with pytest.mark.usefixtures)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> DetailSemNet:
    return explorer_model()


@pytest.fixture(scope="module")
def analysis(model: DetailSemNet) -> PairAnalysis:
    return analyze_pair(model, EXAMPLES / "writer1_reference.png", EXAMPLES / "writer1_forged.png")
