r"""``python -m dsn.tools.bench_train``: images/s of one training step per precision and compilation, and where it goes.

A step is what ``dsn.training`` runs: one backbone pass over a batch of
``writers x (genuine + forged)`` images, every scoreable pair of the batch matched by
Sinkhorn (the training iteration count), the losses, backward, clip, AdamW. The batch
is drawn by ``dsn.data.synth`` and preprocessed once, so only the step is timed.

Variants of each model are timed side by side in one process, alternating, each the
median over ``--steps`` steps after warm-up (the compiled variant's first step, which
compiles, is reported separately as ``compile_s``):

- ``fp32``: eager float32 with channels-last weights (the step before bf16 existed);
- ``bf16``: the backbone under ``torch.autocast`` bf16, matching and losses in float32;
- ``bf16-nchw``: the same with the plain weight layout (what channels-last buys under bf16);
- ``bf16+compile``: bf16 with the backbone compiled by ``torch.compile`` (Inductor).

``default`` names the variant ``python -m dsn train`` uses on this machine. The fp32 and bf16
matmul peaks measured in the same run are printed beside them. ``--profile`` prints the
operators that take the most self CPU time in one step of the default variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from dsn.data.preprocess import preprocess
from dsn.data.synth import SyntheticWriter
from dsn.model.detailsemnet import DetailSemNet
from dsn.precision import resolve_precision
from dsn.tools.bench import matmul_peak_gflops
from dsn.training import engine
from dsn.training.config import TrainConfig
from dsn.training.step import train_step

VARIANTS = ("fp32", "bf16", "bf16-nchw", "bf16+compile")
MODELS = ("dsnet_tiny", "dsnet_official_tiny", "dsnet_official")


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


def default_variant(cfg: TrainConfig) -> str:
    """The variant ``python -m dsn train`` runs here with ``cfg``'s precision and compile settings."""
    precision = resolve_precision(cfg.precision, torch.device("cpu"))
    return f"{precision}+compile" if cfg.compile else precision


def make_step(variant: str, backbone: str, size: int, batch: tuple, cfg: TrainConfig) -> Callable[[], None]:
    """A closure running one full training step of a fresh, identically initialised model."""
    torch.manual_seed(0)
    model = DetailSemNet(backbone=backbone, img_size=size, drop_path_rate=0.05)
    if variant.endswith("nchw"):
        model.to(memory_format=torch.contiguous_format)
    if variant.endswith("compile"):
        engine.compile_backbone(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    precision = variant.split("-")[0].split("+")[0]

    def step() -> None:
        out = train_step(model, *batch, cfg, precision=precision)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def bench_model(backbone: str, variants: list[str], steps: int, size: int, batch: tuple, cfg: TrainConfig) -> dict:
    n = len(batch[0])
    runners = {v: make_step(v, backbone, size, batch, cfg) for v in variants}
    first: dict[str, float] = {}
    for variant, step in runners.items():  # warm-up; for the compiled variant this compiles
        started = time.perf_counter()
        step()
        first[variant] = time.perf_counter() - started
        step()
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(steps):
        for variant, step in runners.items():
            started = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - started)
    seconds = {v: statistics.median(t) for v, t in times.items()}
    result = {"images_per_s": {v: n / s for v, s in seconds.items()}, "seconds_per_step": seconds}
    for variant in variants:
        if variant.endswith("compile"):
            eager = variant.replace("+compile", "")
            compile_s = first[variant] - seconds[variant]
            result["compile_s"] = compile_s
            gain = seconds.get(eager, float("nan")) - seconds[variant]
            result["compile_pays_back_after_steps"] = compile_s / gain if gain > 0 else None
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.bench_train", description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true", help="one JSON object: {model: {variant: images/s}, peak_gflops: {...}}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(data=[], out="", writers_per_batch=6, genuine_per_writer=6, forged_per_writer=2)
    batch = synthetic_batch(cfg, args.img_size)
    peaks = {"fp32": matmul_peak_gflops(args.threads), "bf16": matmul_peak_gflops(args.threads, dtype=torch.bfloat16)}
    details = {m: bench_model(m, args.variants, args.steps, args.img_size, batch, cfg) for m in args.models}
    default = default_variant(TrainConfig(data=[], out=""))
    result: dict = {m: dict(d["images_per_s"]) for m, d in details.items()}
    result["peak_gflops"] = peaks
    result["default_variant"] = default
    result["images_per_step"] = len(batch[0])
    result["threads"] = args.threads
    result["compile_s"] = {m: d.get("compile_s") for m, d in details.items()}
    result["compile_pays_back_after_steps"] = {m: d.get("compile_pays_back_after_steps") for m, d in details.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s ({args.threads} thread(s))")
        for model, rates in ((m, result[m]) for m in args.models):
            base = rates.get("fp32")
            cells = "  ".join(f"{v} {r:6.1f}" + (f" ({r / base:.2f}x)" if base else "") for v, r in rates.items())
            print(f"{model:>20}: {cells}  images/s")
            if details[model].get("compile_s") is not None:
                pays = details[model]["compile_pays_back_after_steps"]
                print(
                    f"{'':>20}  compile {details[model]['compile_s']:.0f} s, "
                    + (f"pays back after {pays:.0f} steps" if pays else "never pays back")
                )
        print(f"python -m dsn train uses: {default}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        step = make_step(default, args.models[0], args.img_size, batch, cfg)
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
