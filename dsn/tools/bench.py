r"""``python -m dsn.tools.bench``: size, compute, CPU latency and memory of each DetailSemNet size.

Methods (printed with the table):

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on ``model.embed`` of one
  224 px image; FLOPs = 2 x multiply-accumulates of convolutions, matmuls and
  attention (CPU attention is added with torch's own SDPA formula, which the
  counter does not map on CPU); element-wise ops are not counted.
- Latency: median wall time of ``model(ref, query)`` on one preprocessed
  drawn pair (batch 1), after warm-up, ``torch.set_num_threads(threads)``.
- Embedding: images/s of ``model.embed`` on a batch of ``--batch`` drawn
  images (what dataset evaluation runs), and the GFLOP/s that achieves,
  against the machine's peak measured in the same run (median of fp32
  2048 x 2048 matmuls at the same thread count).
- Sinkhorn: median time of the 49 x 49 transport alone at the eval epsilon and
  iteration count of the config.
- Memory: growth of the process's peak RSS (``resource.getrusage``) from after
  imports to after all runs, each size in a fresh subprocess so sizes do not
  mask each other; it includes weights and activations.
- Official code (``--official-code DIR``): the authors' own ``ViT_for_OSV_DSNet``
  forward on the same pair (stretched, as it expects), same threads and runs,
  in a subprocess started in DIR. DIR is a scratch copy of github
  ``nycu-acm/DetailSemNet_OSV`` made to run on CPU, outside this repository::

      git -C OFFICIAL_CLONE archive HEAD | tar -x -C /tmp/official-cpu
      grep -rl '.cuda()' /tmp/official-cpu --include=*.py | xargs sed -i 's/\.cuda()//g'
      sed -i 's/timm.models.layers.helpers import/timm.layers import/' /tmp/official-cpu/models/dsnet/transformer.py
      pip install einops
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from dsn.data.preprocess import preprocess
from dsn.model.config import BACKBONES
from dsn.model.detailsemnet import DetailSemNet, DetailSemNetConfig
from dsn.model.matching import cosine_cost, sinkhorn

SIZES = BACKBONES

# Runs in the official code's folder: its forward on a stretched pair, timed like ours.
_OFFICIAL_TIMER = """
import argparse, json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(int(sys.argv[1]))
runs = int(sys.argv[2])
from model_v3 import ViT_for_OSV_DSNet
opt = argparse.Namespace(emd=True, dis_type="cos", mar_type="uniform", gol_dis="l2", temp=1.0)
model = ViT_for_OSV_DSNet(opt).eval()
pair = torch.load(sys.argv[3])
label = torch.ones(1, 1)
times = []
with torch.inference_mode():
    for i in range(runs + 2):
        start = time.perf_counter()
        model(pair, label)
        if i >= 2:
            times.append(time.perf_counter() - start)
print(json.dumps({"pair_ms": 1000 * statistics.median(times), "params": sum(p.numel() for p in model.parameters())}))
"""


def scribble(seed: int) -> np.ndarray:
    """A cursive-like ink curve on white paper: realistic ink masks, no dependency on other generators."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 400)
    x = 40 + 420 * t + 18 * np.sin(2 * np.pi * (9 + rng.uniform(-1, 1)) * t)
    y = 100 + 45 * np.sin(2 * np.pi * (4 + rng.uniform(-1, 1)) * t + rng.uniform(0, 6)) * np.cos(2 * np.pi * 1.5 * t)
    image = np.full((200, 500, 3), 255, np.uint8)
    cv2.polylines(image, [np.stack([x, y], 1).astype(np.int32)], False, (20, 20, 60), 3, cv2.LINE_AA)
    return image


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(model: DetailSemNet, image: torch.Tensor) -> int:
    """FLOPs (2 x MACs) of one embedding pass."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model.embed(image)
    return int(counter.get_total_flops())


def median_seconds(fn: Callable[[], object], runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def matmul_peak_gflops(threads: int, runs: int = 5, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """Achievable GFLOP/s here in ``dtype``: a large matmul, the best case for the CPU's vector (or AMX) units."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, runs, warmup=1) / 1e9


def measure(backbone: str, runs: int, threads: int, batch: int = 32) -> dict:
    """All numbers for one size, in this process."""
    torch.set_num_threads(threads)
    config = (
        DetailSemNetConfig.official(backbone=backbone) if backbone.startswith("dsnet_official") else DetailSemNetConfig(backbone=backbone)
    )
    mode = config.preprocessing
    ref, query = preprocess(scribble(1), mode=mode).tensor(), preprocess(scribble(2), mode=mode).tensor()
    baseline = peak_rss_mib()

    model = DetailSemNet(**vars(config)).eval()
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, ref)
    with torch.inference_mode():
        pair_s = median_seconds(lambda: model(ref, query), runs)
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randn(2, 1, 49, model.config.match_dim, generator=generator)
        cost = cosine_cost(tokens[0], tokens[1])
        cfg = model.config
        sinkhorn_s = median_seconds(lambda: sinkhorn(cost, epsilon=cfg.epsilon_eval, iterations=cfg.sinkhorn_iterations), runs)
        images = torch.cat([preprocess(scribble(10 + i), mode=mode).tensor() for i in range(batch)])
        embed_s = median_seconds(lambda: model.embed(images), max(1, runs // 4), warmup=1)
    return {
        "backbone": backbone,
        "params": params,
        "gflops_per_image": flops / 1e9,
        "pair_ms": 1000 * pair_s,
        "sinkhorn_ms": 1000 * sinkhorn_s,
        "embed_images_per_s": batch / embed_s,
        "embed_gflops_per_s": flops * batch / embed_s / 1e9,
        "batch": batch,
        "sinkhorn_iterations": cfg.sinkhorn_iterations,
        "epsilon_eval": cfg.epsilon_eval,
        "peak_rss_growth_mib": peak_rss_mib() - baseline,
        "runs": runs,
        "threads": threads,
    }


def measure_in_subprocess(backbone: str, runs: int, threads: int, batch: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "dsn.tools.bench",
        "--one",
        backbone,
        "--runs",
        str(runs),
        "--threads",
        str(threads),
        "--batch",
        str(batch),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark of {backbone} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_official_code(folder: str, runs: int, threads: int) -> dict:
    """The authors' forward on the same drawn pair, stretched as their code expects."""
    pair = torch.cat([preprocess(scribble(i), mode="stretch").tensor() for i in (1, 2)], dim=1)  # (1, 2, 224, 224)
    with tempfile.TemporaryDirectory() as scratch:
        pair_path = Path(scratch) / "pair.pt"
        torch.save(pair, pair_path)
        command = [sys.executable, "-c", _OFFICIAL_TIMER, str(threads), str(runs), str(pair_path)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=folder)
    if done.returncode != 0:
        raise RuntimeError(f"the official code in {folder} failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"backbone": "official code (nycu-acm, CPU)", "runs": runs, "threads": threads, **row}


def markdown_table(rows: list[dict], peak_gflops: float) -> str:
    lines = [
        "| model | params (M) | GFLOPs / image @224 | pair latency (ms, median) | embedding (images/s) | "
        "achieved GFLOP/s (% of matmul peak) | Sinkhorn 49x49 (ms) | peak RSS growth (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "gflops_per_image" not in r:  # the official code: latency only
            lines.append(f"| {r['backbone']} | {r['params'] / 1e6:.2f} | | {r['pair_ms']:.1f} | | | its own (eps 5e-8, early stop) | |")
            continue
        share = 100 * r["embed_gflops_per_s"] / peak_gflops
        lines.append(
            f"| {r['backbone']} | {r['params'] / 1e6:.2f} | {r['gflops_per_image']:.2f} | {r['pair_ms']:.1f} | "
            f"{r['embed_images_per_s']:.0f} | {r['embed_gflops_per_s']:.1f} ({share:.0f} %) | "
            f"{r['sinkhorn_ms']:.2f} ({r['sinkhorn_iterations']} it, eps {r['epsilon_eval']:g}) | {r['peak_rss_growth_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per measurement (after 2 warm-up runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=32, help="images per embedding batch")
    parser.add_argument("--smoke", action="store_true", help="a quick run (dsnet_tiny, 2 runs, batch 4): checks the tool, not the machine")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of the table")
    parser.add_argument("--official-code", default=None, help="folder with a CPU copy of the authors' code: time its forward too")
    parser.add_argument("--one", choices=SIZES, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.runs, args.batch = ["dsnet_tiny"], 2, 4
    if args.one:
        print(json.dumps(measure(args.one, args.runs, args.threads, args.batch)))
        return 0
    peak = matmul_peak_gflops(args.threads, runs=3 if args.smoke else 5, n=1024 if args.smoke else 2048)
    rows = [measure_in_subprocess(size, args.runs, args.threads, args.batch) for size in args.sizes]
    if args.official_code:
        rows.append(measure_official_code(args.official_code, args.runs, args.threads))
    if args.json:
        print(json.dumps({"matmul_peak_gflops": peak, "rows": rows}, indent=2))
    else:
        print(markdown_table(rows, peak))
        print(
            f"\nCPU, {args.threads} torch threads, pair latency at batch 1, embedding at batch {args.batch}, {args.runs} timed runs "
            f"after warm-up. Measured fp32 matmul peak: {peak:.0f} GFLOP/s. FLOPs = 2 x MACs (conv, matmul, attention). "
            "Memory = peak-RSS growth (getrusage) in a fresh process per size."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
