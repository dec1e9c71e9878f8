"""``python -m dsn sanity | faithfulness | plan-check | frequency | report``: the explanation checks from the command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator

from dsn.inspect.attribution import METHODS, TARGETS

SIDES = ("query", "reference")


def _pair_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="image of a known genuine signature")
    p.add_argument("query", help="image of the signature to check")
    p.add_argument("--weights", default=None, help="checkpoint folder or hf://owner/repo[@rev] (default: the embedded checkpoint)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the checkpoint's)")
    p.add_argument("--report", default=None, metavar="DIR", help="also write DIR/pair-report.html (offline) and .json")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sanity", help="sanity check of every attribution method by cascading randomisation (Adebayo et al. 2018)")
    _pair_arguments(p)
    p.add_argument("--side", choices=SIDES, default="query")
    p.add_argument("--target", choices=TARGETS, default="total")
    p.add_argument("--steps", type=int, default=16, help="Integrated Gradients steps / Gradient SHAP samples per map")
    p = sub.add_parser("faithfulness", help="deletion and insertion curves of every attribution method (Petsiuk et al. 2018)")
    _pair_arguments(p)
    p.add_argument("--side", choices=SIDES, default="query")
    p.add_argument("--target", choices=TARGETS, default="total")
    p.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps / Gradient SHAP samples per map")
    p.add_argument("--curve-steps", type=int, default=20, help="points per curve")
    p = sub.add_parser("plan-check", help="erase each matched reference patch and re-verify: is the correspondence view honest?")
    _pair_arguments(p)
    p = sub.add_parser("frequency", help="the paper's LF / LMF / LHF experiment on a pair, or the EER per filter on a dataset split")
    p.add_argument("ref", nargs="?", help="image of a known genuine signature (or use --data)")
    p.add_argument("query", nargs="?", help="image of the signature to check")
    p.add_argument("--data", help="dataset folder: evaluate its split under each filter instead of one pair")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--weights", default=None)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--report", default=None, metavar="DIR", help="pair: DIR/pair-report.html; dataset: DIR/frequency.json")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p = sub.add_parser("report", help="every view and check of one pair in one offline HTML file (+ JSON)")
    _pair_arguments(p)
    p.add_argument("--steps", type=int, default=16, help="Integrated Gradients steps / Gradient SHAP samples per map")
    p.add_argument("--no-sanity", action="store_true", help="skip the sanity check (the slowest part)")


@contextlib.contextmanager
def _bar(description: str) -> Iterator[Callable[[float, str], None]]:
    from tqdm import tqdm  # text bars everywhere: tqdm.auto wants ipywidgets in notebooks ("IProgress not found")

    with tqdm(total=100, desc=description, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}", file=sys.stderr) as bar:

        def update(fraction: float, text: str) -> None:
            bar.n = round(100 * min(max(fraction, 0.0), 1.0))
            bar.set_postfix_str(text[:60], refresh=True)

        yield update


def _load(args: argparse.Namespace) -> tuple:
    import torch

    from dsn.inference import analyze_pair
    from dsn.loading import load, source_label

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.weights)
    analysis = analyze_pair(model, args.ref, args.query, threshold=args.threshold)
    return model, analysis, source_label(model)


def _new_report(model: object, analysis: object, weights: str, args: argparse.Namespace):
    from pathlib import Path

    from dsn.checks.pair_report import PairReport, model_description

    names = {"reference": Path(args.ref).name, "query": Path(args.query).name}
    return PairReport(analysis, model_description(model, analysis), names)


def run(args: argparse.Namespace) -> int:
    from dsn.data.preprocess import PreprocessError
    from dsn.model.weights import WeightsError

    try:
        if args.command == "frequency" and args.data:
            return _dataset_frequency(args)
        if args.command == "frequency" and not (args.ref and args.query):
            print("error: give REF and QUERY, or --data DIR", file=sys.stderr)
            return 2
        model, analysis, weights = _load(args)
        report = _new_report(model, analysis, weights, args)
        numbers = COMMANDS[args.command](model, analysis, report, args)
    except (PreprocessError, WeightsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.report:
        from dsn.checks.pair_report import write_pair_report

        for path in write_pair_report(report, args.report).values():
            print(f"wrote {path}", file=sys.stderr)
    print(json.dumps(numbers, indent=2, default=lambda v: v.tolist()) if args.json else _describe(args.command, numbers))
    return 0


def _sanity(model, analysis, report, args) -> dict:
    from dsn.checks.figures import sanity_figure
    from dsn.checks.sanity import sanity_check

    with _bar("sanity check") as progress:
        check = sanity_check(model, analysis, args.side, args.target, METHODS, args.steps, progress)
    numbers = {**check.to_dict(), "verdicts": check.verdicts()}
    report.add("Sanity check (cascading randomisation)", sanity_figure(check), numbers, key="sanity_check")
    return numbers


def _faithfulness(model, analysis, report, args) -> dict:
    from dsn.checks.faithfulness import faithfulness
    from dsn.checks.figures import faithfulness_figure
    from dsn.inspect.attribution import attribute

    with _bar("faithfulness") as progress:
        maps = {}
        for k, method in enumerate(METHODS):
            progress(k / (2 * len(METHODS)), f"attribution: {method}")
            maps[method] = attribute(model, analysis, method, target=args.target, side=args.side, steps=args.steps).map
        result = faithfulness(
            model, analysis, maps, args.side, args.target, args.curve_steps, progress=lambda f, t: progress(0.5 + f / 2, t)
        )
    report.add("Faithfulness (deletion and insertion)", faithfulness_figure(result), result.to_dict(), key="faithfulness")
    return result.to_dict()


def _plan(model, analysis, report, args) -> dict:
    from dsn.checks.figures import plan_check_figure
    from dsn.checks.plan_check import plan_check

    check = plan_check(model, analysis)
    report.add("Is the correspondence view honest?", plan_check_figure(check), check.to_dict(), key="plan_check")
    return check.to_dict()


def _pair_frequency(model, analysis, report, args) -> dict:
    from dsn.checks.figures import band_figure
    from dsn.checks.frequency import band_effects

    rows = band_effects(model, analysis)
    report.add("The frequency experiment", band_figure(rows, analysis.threshold), rows, key="frequency")
    return {"bands": rows}


def _everything(model, analysis, report, args) -> dict:
    from dsn.checks.explanation_grid import explanation_grid
    from dsn.checks.figures import grid_figure
    from dsn.inspect.figures import correspondence_figure, distance_bar_figure

    report.add("Verdict", distance_bar_figure(analysis))
    report.add("Patch correspondences", correspondence_figure(analysis))
    with _bar("attribution grid") as progress:
        grid = explanation_grid(model, analysis, steps=args.steps, progress=progress)
    report.add(
        "Every attribution method",
        grid_figure(grid, analysis),
        {f"{m} {s}": a.seconds for (m, s), a in grid.maps.items()},
        key="grid_seconds",
    )
    args.side, args.target, args.curve_steps = "query", "total", 20
    numbers = {"faithfulness": _faithfulness(model, analysis, report, args)["summary"]}
    numbers["plan_check"] = {"spearman": _plan(model, analysis, report, args)["spearman"]}
    numbers["frequency"] = _pair_frequency(model, analysis, report, args)["bands"]
    if not args.no_sanity:
        numbers["sanity_check"] = _sanity(model, analysis, report, args)["verdicts"]
    return numbers


COMMANDS = {"sanity": _sanity, "faithfulness": _faithfulness, "plan-check": _plan, "frequency": _pair_frequency, "report": _everything}


def _dataset_frequency(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from dsn.checks.frequency import evaluate_bands
    from dsn.data.dataset import list_images, load_splits
    from dsn.loading import load

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load(args.weights)
    writers = None if args.split == "all" else sorted(load_splits(args.data)[args.split])
    images = list_images(args.data, writers=writers)
    with _bar(f"frequency bands, {Path(args.data).name} {args.split}") as progress:
        metrics = evaluate_bands(model, images, threshold=args.threshold, progress=progress)
    table = {band: {"label": m["label"], "eer": m["eer"], "auc": m["auc"]} for band, m in metrics.items()}
    if args.report:
        Path(args.report).mkdir(parents=True, exist_ok=True)
        (Path(args.report) / "frequency.json").write_text(json.dumps(metrics, indent=2, default=str))
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        for row in table.values():
            print(f"{row['label']:45s} EER {100 * row['eer']:6.2f} %")
    return 0


def _describe(command: str, numbers: dict) -> str:
    if command == "sanity":
        return "\n".join(f"{method:22s} {text}" for method, text in numbers["verdicts"].items())
    if command == "faithfulness":
        rows = [f"{'method':22s} deletion AUC (gain)   insertion AUC (gain)"]
        for method, s in numbers["summary"].items():
            if method != "random":
                rows.append(
                    f"{method:22s} {s['deletion_auc']:.3f} ({s['deletion_gain']:+.3f})     {s['insertion_auc']:.3f} ({s['insertion_gain']:+.3f})"
                )
        r = numbers["summary"]["random"]
        rows.append(f"{'random order':22s} {r['deletion_auc']:.3f}              {r['insertion_auc']:.3f}")
        return "\n".join(rows)
    if command == "plan-check":
        return f"Spearman rank correlation of the plan's share and the measured change: {numbers['spearman']:+.3f} over {len(numbers['patches'])} ink patches"
    if command == "frequency":
        return "\n".join(f"{r['label']:45s} distance {r['distance']:.4f}  {r['verdict']}" for r in numbers["bands"])
    return json.dumps(numbers, indent=2, default=str)
