"""``python -m dsn.tools.check_study``: what the explanation checks say about each method, over real pairs.

For the first ``--writers`` writers of a split it takes two pairs each (genuine 01
vs genuine 02, genuine 01 vs forged 01) and runs the sanity cascade, the
deletion/insertion curves and the plan check on the query side. Prints, per
method, the mean over the pairs of: the rank correlation with the trained map
once every weight is random (signed and of |map|), the SSIM then, and the
deletion and insertion gains over random order; and the plan check's Spearman.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dsn.checks.faithfulness import faithfulness
from dsn.checks.plan_check import plan_check
from dsn.checks.sanity import sanity_check
from dsn.data.dataset import load_splits
from dsn.inference import analyze_pair
from dsn.inspect.attribution import METHODS, attribute
from dsn.loading import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.check_study", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder, e.g. ../shared/datasets/cedar")
    parser.add_argument("--split", default="test")
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16, help="IG steps / SHAP samples per map")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every pair's numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load(args.weights)
    writers = sorted(load_splits(args.data)[args.split])[: args.writers]
    pairs = []
    for writer in writers:
        folder = args.data / f"{writer:03d}"
        pairs += [
            (folder / "genuine" / "01.png", folder / "genuine" / "02.png"),
            (folder / "genuine" / "01.png", folder / "forged" / "01.png"),
        ]
    rows = []
    started = time.perf_counter()
    for reference, query in pairs:
        analysis = analyze_pair(model, reference, query)
        sanity = sanity_check(model, analysis, steps=args.steps)
        maps = {m: attribute(model, analysis, m, steps=args.steps).map for m in METHODS}
        faith = faithfulness(model, analysis, maps).summary()
        plan = plan_check(model, analysis)
        rows.append(
            {
                "pair": [str(reference.relative_to(args.data)), str(query.relative_to(args.data))],
                "distance": float(analysis.verification.distance[0]),
                "sanity": {
                    m: {"spearman": sanity.spearman[m][-1], "spearman_abs": sanity.spearman_abs[m][-1], "ssim": sanity.ssim[m][-1]}
                    for m in METHODS
                },
                "faithfulness": {m: faith[m] for m in METHODS},
                "plan_spearman": plan.spearman,
            }
        )
        print(f"{rows[-1]['pair'][0]} vs {rows[-1]['pair'][1]}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    print(f"\n{len(pairs)} pairs of {args.data.name} {args.split}, means over pairs (query side, total distance)")
    print(f"{'method':22s} {'rho random':>10s} {'|rho| random':>12s} {'SSIM random':>11s} {'deletion gain':>13s} {'insertion gain':>14s}")
    for m in METHODS:

        def mean(part: str, key: str, method: str = m) -> float:
            return float(np.mean([r[part][method][key] for r in rows]))

        print(
            f"{m:22s} {mean('sanity', 'spearman'):10.2f} {mean('sanity', 'spearman_abs'):12.2f} {mean('sanity', 'ssim'):11.2f} "
            f"{mean('faithfulness', 'deletion_gain'):13.3f} {mean('faithfulness', 'insertion_gain'):14.3f}"
        )
    rhos = [r["plan_spearman"] for r in rows]
    print(f"plan check Spearman: mean {np.mean(rhos):+.2f}, per pair {', '.join(f'{x:+.2f}' for x in rhos)}")
    print(f"{time.perf_counter() - started:.0f} s in total")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
