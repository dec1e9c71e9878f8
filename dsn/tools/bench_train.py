r"""``python -m dsn.tools.bench_train``: images/s of one training step of the default recipe, and where it goes.

A step is what ``dsn.training.train`` runs: one backbone pass over a batch of
``writers x (genuine + forged)`` images, every scoreable pair of the batch matched by
Sinkhorn (the training iteration count), the losses, backward, clip, AdamW. The batch
is drawn by ``dsn.data.synth`` and preprocessed once, so only the step is timed.

Variants are timed side by side in one process, alternating, each the median over
``--steps`` steps after one warm-up step:

- ``channels_last``: the weights' layout the model uses (``DetailSemNet.__init__``);
- ``contiguous``: the plain layout it replaced.

The ceiling printed beside them is the step's FLOPs (forward counted by
``torch.utils.flop_counter``, backward taken as twice the forward) at the fp32 matmul
peak measured in the same run. ``--profile`` prints the operators that take the most
self CPU time in one step (``torch.profiler``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from dsn.data.preprocess import preprocess
from dsn.data.synth import SyntheticWriter
from dsn.model.detailsemnet import DetailSemNet
from dsn.tools.bench import count_flops, matmul_peak_gflops
from dsn.training.train import TrainConfig, train_step


def synthetic_batch(cfg: TrainConfig, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, writers, genuine) shaped like a training batch: each writer's genuine, then forged signatures."""
    images, writers, genuine = [], [], []
    for writer in range(cfg.writers_per_batch):
        person = SyntheticWriter(100 + writer)
        for k in range(cfg.genuine_per_writer + cfg.forged_per_writer):
            real = k < cfg.genuine_per_writer
            drawn = person.genuine(k) if real else person.forgery(k)
            images.append(preprocess(drawn, size=size).image)
            writers.append(writer)
            genuine.append(real)
    return torch.from_numpy(np.stack(images))[:, None], torch.tensor(writers), torch.tensor(genuine)


def make_model(layout: str, size: int, backbone: str) -> tuple[DetailSemNet, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = DetailSemNet(backbone=backbone, img_size=size, drop_path_rate=0.05)
    if layout == "contiguous":
        model.to(memory_format=torch.contiguous_format)
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)


def one_step(model: DetailSemNet, optimizer: torch.optim.Optimizer, batch: tuple, cfg: TrainConfig) -> None:
    out = train_step(model, *batch, cfg)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.bench_train", description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--size", default="dsnet_tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=[], out="", writers_per_batch=6, genuine_per_writer=6, forged_per_writer=3)
    batch = synthetic_batch(cfg, args.img_size)
    n = len(batch[0])
    variants = {layout: make_model(layout, args.img_size, args.size) for layout in ("channels_last", "contiguous")}
    times: dict[str, list[float]] = {layout: [] for layout in variants}
    for model, optimizer in variants.values():
        one_step(model, optimizer, batch, cfg)  # warm-up
    for _ in range(args.steps):
        for layout, (model, optimizer) in variants.items():
            started = time.perf_counter()
            one_step(model, optimizer, batch, cfg)
            times[layout].append(time.perf_counter() - started)
    model = variants["channels_last"][0]
    forward_gflop = count_flops(model.eval(), batch[0][:1]) * n / 1e9
    model.train()
    peak = matmul_peak_gflops(args.threads)
    ceiling = peak / (3 * forward_gflop) * n  # images/s if the whole step ran at the matmul peak
    result = {
        "images_per_step": n,
        "img_size": args.img_size,
        "threads": args.threads,
        "backbone": args.size,
        "images_per_s": {layout: n / statistics.median(t) for layout, t in times.items()},
        "seconds_per_step": {layout: statistics.median(t) for layout, t in times.items()},
        "step_gflop": 3 * forward_gflop,
        "matmul_peak_gflops": peak,
        "ceiling_images_per_s": ceiling,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for layout, rate in result["images_per_s"].items():
            print(f"{layout:>14}: {rate:6.1f} images/s ({result['seconds_per_step'][layout]:.2f} s per step of {n} images)")
        print(f"ceiling: {ceiling:.1f} images/s ({3 * forward_gflop:.1f} GFLOP per step at the measured {peak:.0f} GFLOP/s matmul peak)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        optimizer = variants["channels_last"][1]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            one_step(model, optimizer, batch, cfg)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
