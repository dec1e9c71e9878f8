"""Shared fixtures: the model the explanation tests look inside, an analysed example pair, a synthetic dataset folder."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import pytest
import torch

from dsn.data.dataset import Pair, SignatureImage
from dsn.data.preprocess import preprocess
from dsn.data.synth import SyntheticWriter
from dsn.inference import PairAnalysis, analyze_pair
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import default_weights

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"  # drawn by dsn.data.synth, shipped with the app
SYNTH_WRITERS = {1: 101, 2: 202, 3: 303}  # writer id -> SyntheticWriter seed
SYNTH_GENUINE, SYNTH_FORGED = 3, 2


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


@pytest.fixture(scope="module")
def synth_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder in the real layout, drawn by dsn.data.synth, with writer-independent splits."""
    base = tmp_path_factory.mktemp("datasets")
    root = base / "synth"
    for writer, seed in SYNTH_WRITERS.items():
        person = SyntheticWriter(seed)
        specimens = {
            "genuine": [person.genuine(i) for i in range(SYNTH_GENUINE)],
            "forged": [person.forgery(i) for i in range(SYNTH_FORGED)],
        }
        for class_name, images in specimens.items():
            folder = root / f"{writer:03d}" / class_name
            folder.mkdir(parents=True)
            for index, rgb in enumerate(images, start=1):
                cv2.imwrite(str(folder / f"{index:02d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (base / "splits.json").write_text(json.dumps({"synth": {"train": [1], "val": [1], "test": [2, 3]}}))
    return root


def write_pairs_csv(
    path: str | Path,
    images: Sequence[SignatureImage],
    pairs: Sequence[Pair],
    root: str | Path | None = None,
) -> None:
    """Write a pairs CSV as ``dsn.data.dataset.read_pairs_csv`` reads it: reference,query,label (1/0), paths
    relative to `root`, else to the CSV's folder."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    base = base.resolve()

    def relative(image: SignatureImage) -> str:
        target = Path(image.path).resolve()
        try:
            return Path(os.path.relpath(target, base)).as_posix()
        except ValueError:  # another drive on Windows
            return target.as_posix()

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["reference", "query", "label"])
        for pair in pairs:
            writer.writerow([relative(images[pair.a]), relative(images[pair.b]), int(pair.genuine)])


@pytest.fixture(autouse=True)
def private_embedding_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or grow the user's embedding cache (~/.cache/dsn/embeddings)."""
    monkeypatch.setenv("DSN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "embedding-cache"))
