"""``python -m dsn.tools.bench_app``: how long the explorer's actions take, on 2 CPU threads by default.

Times what a visitor waits for: verify (``analyze_pair``), verify plus the
correspondence figure, each attribution method and, with ``--checks``, the explanation checks. Uses the app's model
(the embedded checkpoint, or a random-init tiny model when there is none:
the timings are the same, only the verdicts are meaningless). Prints medians;
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from dsn.checks.explanation_grid import explanation_grid
from dsn.checks.faithfulness import faithfulness
from dsn.checks.frequency import band_effects
from dsn.checks.plan_check import plan_check
from dsn.checks.sanity import sanity_check
from dsn.inference import analyze_pair
from dsn.inspect.attribution import METHODS, attribute
from dsn.inspect.figures import correspondence_figure

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"


def median_seconds(action: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median, min) wall seconds over ``repeats`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.bench_app", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2, like a small Space)")
    parser.add_argument("--weights", default=None, help="checkpoint folder or hf:// source (default: the app's)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of verify")
    parser.add_argument("--attribution-repeats", type=int, default=3, help="timed runs of each attribution method")
    parser.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps / GradientShap samples")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(METHODS), help="attribution methods to leave out")
    parser.add_argument("--checks", action="store_true", help="also time the explanation checks (grid, faithfulness, sanity ...)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    from dsn.loading import ModelInfo, load
    from dsn.ui.runtime import pick_device  # the app's own loading: same weights, device and fallbacks

    model = load(args.weights, device=pick_device())
    info = ModelInfo.of(model)
    reference, query = EXAMPLES / "writer1_reference.png", EXAMPLES / "writer1_genuine.png"
    print(f"model {info.backbone} ({info.parameters / 1e6:.1f} M parameters), weights: {info.source or 'random init (untrained)'}")
    print(f"device {info.device}, torch threads {torch.get_num_threads()}, pair {reference.name} / {query.name}", flush=True)

    width = 48
    print(f"\n{'action':<{width}}  {'median s':>9}  {'min s':>7}  runs")
    print("-" * (width + 27))

    def report(name: str, action: Callable[[], object], repeats: int, warmup: int) -> None:
        median, fastest = median_seconds(action, repeats, warmup)
        print(f"{name:<{width}}  {median:>9.3f}  {fastest:>7.3f}  {repeats:>4}", flush=True)

    verify = lambda: analyze_pair(model, reference, query)  # noqa: E731
    report("verify (analyze_pair)", verify, args.repeats, warmup=1)
    report("verify + correspondence figure", lambda: correspondence_figure(verify()), args.repeats, warmup=1)
    analysis = verify()
    for method in METHODS:
        if method in args.skip:
            continue
        label = f"{method} ({args.steps} steps)" if method in ("integrated_gradients", "gradient_shap") else method
        run = lambda method=method: attribute(model, analysis, method, steps=args.steps)  # noqa: E731
        report(label, run, args.attribution_repeats, warmup=0)  # the network is warm already: verify ran above
    if args.checks:
        report(f"all five methods x both images ({args.steps} steps)", lambda: explanation_grid(model, analysis, steps=args.steps), 1, 0)
        grid = explanation_grid(model, analysis, steps=args.steps)
        maps = {m: grid.maps[(m, "query")].map for m in grid.methods}
        report("faithfulness (5 maps, 20 points)", lambda: faithfulness(model, analysis, maps), 1, 0)
        report("plan check (erase each patch)", lambda: plan_check(model, analysis), 1, 0)
        report("frequency filters (4 bands)", lambda: band_effects(model, analysis), 1, 0)
        report("sanity check (12 blocks x 5 methods, 16 steps)", lambda: sanity_check(model, analysis, steps=16), 1, 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
