"""The benchmarks run (smoke mode: numbers printed, never asserted) and the fast path computes what the plain one does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsn.data.dataset import ImageCache, list_images
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import default_weights

ROOT = Path(__file__).resolve().parents[1]
CEDAR = ROOT.parent / "shared" / "datasets" / "cedar"


def test_bench_smoke_prints_every_column():
    done = subprocess.run(
        [sys.executable, "-m", "dsn.tools.bench", "--smoke", "--json"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    report = json.loads(done.stdout)
    row = report["rows"][0]
    assert row["backbone"] == "dsnet_tiny" and report["matmul_peak_gflops"] > 0
    for key in ("pair_ms", "embed_images_per_s", "embed_gflops_per_s", "sinkhorn_ms", "gflops_per_image"):
        assert row[key] > 0, key


@pytest.mark.skipif(not CEDAR.is_dir(), reason=f"{CEDAR} is absent")
@pytest.mark.usefixtures("one_thread")
def test_channels_last_weights_give_the_plain_layouts_numbers_on_real_images():
    model = DetailSemNet.load(default_weights())
    assert model.backbone.stem[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = DetailSemNet(**model.config_dict())
    plain.load_state_dict(model.state_dict())
    plain = plain.to(memory_format=torch.contiguous_format).eval()
    assert plain.backbone.stem[0][0].weight.is_contiguous()
    images = ImageCache(list_images(CEDAR, writers=[11, 16])[::8], progress=False).batch(range(12))
    with torch.inference_mode():
        fast, reference = model.embed(images), plain.embed(images)
        pairs = torch.arange(6), torch.arange(6, 12)
        fast_d = model.compare(fast[pairs[0]], fast[pairs[1]]).distance
        reference_d = plain.compare(reference[pairs[0]], reference[pairs[1]]).distance
    for a, b in ((fast.global_feature, reference.global_feature), (fast.tokens, reference.tokens), (fast_d, reference_d)):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-5
    assert torch.equal(fast.ink_mask, reference.ink_mask)


def test_state_dicts_of_the_channels_last_model_save_with_save_file(tmp_path):
    from safetensors.torch import load_file, save_file

    model = DetailSemNet()
    state = model.state_dict()
    save_file(state, str(tmp_path / "w.safetensors"))
    again = load_file(str(tmp_path / "w.safetensors"))
    assert all(torch.equal(again[k], v) for k, v in state.items())


def test_training_step_benchmark_prints_each_variant_and_both_peaks() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsn.tools.bench_train",
            "--img-size",
            "64",
            "--steps",
            "1",
            "--json",
            "--models",
            "dsnet_tiny",
            "--variants",
            "fp32",
            "bf16",
            "bf16-nchw",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    result = json.loads(done.stdout)
    assert result["images_per_step"] == 48 and set(result["dsnet_tiny"]) == {"fp32", "bf16", "bf16-nchw"}
    assert all(rate > 0 for rate in result["dsnet_tiny"].values())
    assert set(result["peak_gflops"]) == {"fp32", "bf16"} and all(v > 0 for v in result["peak_gflops"].values())
    assert result["default_variant"] in {"fp32", "bf16", "fp32+compile", "bf16+compile"}
