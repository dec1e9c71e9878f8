"""Command-line interface: ``python -m dsn {verify,train,evaluate,calibrate,card,push,convert-official} ...``.

The explanation checks (sanity, faithfulness, plan-check, frequency, report) live in ``dsn.explain_cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsn import explain_cli
from dsn.precision import PRECISIONS
from dsn.training.cli import add_pack_parser, add_train_parser, run_pack, run_train

UNTRAINED_WARNING = """\
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: NO TRAINED WEIGHTS. The default checkpoint is missing and     !!
!! --weights was not given, so a RANDOMLY INITIALISED model is used.      !!
!! The verdict and distances below are MEANINGLESS.                       !!
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def add_verify_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="is QUERY a genuine signature of the writer of REF?")
    p.add_argument("ref", help="image of a known genuine signature")
    p.add_argument("query", help="image of the signature to check")
    p.add_argument("--weights", default=None, help="checkpoint folder or hf://owner/repo[@rev] (default: the embedded checkpoint)")
    p.add_argument("--threshold", type=float, default=None, help="accept iff distance <= this (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_verify(args: argparse.Namespace) -> int:
    from dsn.data.preprocess import PreprocessError
    from dsn.inference import verify
    from dsn.loading import ModelInfo, is_untrained, load
    from dsn.model.weights import WeightsError

    try:
        model = load(args.weights)
        result = verify(model, args.ref, args.query, args.threshold)
    except (PreprocessError, WeightsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    untrained = is_untrained(model)
    if untrained:
        print(UNTRAINED_WARNING, file=sys.stderr)
    result["weights"] = ModelInfo.of(model).label
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    lam = result["structural_weight"]
    relation = "<=" if result["accepted"] else ">"
    print(f"Verdict:    {result['verdict'].upper()}  (distance {result['distance']:.4f} {relation} threshold {result['threshold']:.4f})")
    print(
        f"Distance:   {result['distance']:.4f} = global {result['global_distance']:.4f}"
        f" + lambda {lam:g} x structural {result['structural_distance']:.4f}"
    )
    print(f"Threshold:  {result['threshold']:.4f} ({'from the checkpoint' if result['threshold_source'] == 'checkpoint' else 'given'})")
    print(f"Margin:     {result['margin']:+.4f} (threshold - distance; positive = accepted)")
    print(f"Time:       {result['seconds']:.2f} s")
    print(f"Weights:    {result['weights']}{'  <- UNTRAINED, verdict meaningless' if untrained else ''}")
    for side, texts in result["input_warnings"].items():
        for text in texts:
            print(f"Warning:    the {side} may not be a handwritten signature: {text}")
    return 0


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="EER, ROC AUC, accuracy at the checkpoint threshold on a dataset split or a pairs CSV")
    p.add_argument("--weights", default=None, help="checkpoint folder or hf://owner/repo[@rev] (default: the embedded checkpoint)")
    p.add_argument("--allow-untrained", action="store_true", help="evaluate a random model when no weights exist (meaningless numbers)")
    p.add_argument("--data", default=None, help="dataset folder, e.g. ../shared/datasets/cedar (also the root of relative CSV paths)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--pairs", default=None, help="CSV with reference,query,label columns instead of the standard protocol pairs")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="backbone precision (default: DSN_PRECISION, else auto)")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the checkpoint's, chosen on val)")
    p.add_argument(
        "--references",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="also report EER when each query meets K genuine references of its writer (mean and min distance), e.g. 1 3 5",
    )
    p.add_argument("--report", default=None, help="folder for report.html, pairs.csv, roc.csv, metrics.json")
    p.add_argument("--out-csv", default=None, help="write per-pair distances to this CSV")
    p.add_argument("--batch-size", type=int, default=8, help="images per backbone pass (8 is fastest on small CPUs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-cache", action="store_true", help="embed every image afresh instead of using the embedding cache (DSN_CACHE_DIR)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def cached_embedding(model: object, images: list, batch_size: int, progress: bool) -> tuple:
    """Embeddings of ``images`` through the on-disk cache the app's explorer uses (a second run reads them back)."""
    from tqdm import tqdm  # text bars everywhere: tqdm.auto wants ipywidgets in notebooks ("IProgress not found")

    from dsn.evaluation.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(batch_size=batch_size)
    with tqdm(total=2 * len(images), desc="embedding (cached)", disable=not progress, leave=False) as bar:

        def step(done: int, total: int, stage: str) -> None:
            bar.n = done + (total if stage == "embedding" else 0)
            bar.refresh()

        embedding = cache.embed(model, images, progress=step)
    return embedding, cache.last


def run_evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    import shlex

    import torch

    from dsn.evaluation.evaluate import evaluate, format_summary, load_images_and_pairs
    from dsn.evaluation.multi_reference import format_multi_reference, multi_reference_metrics
    from dsn.evaluation.report import write_pair_rows, write_report
    from dsn.loading import is_untrained, load
    from dsn.model.weights import WeightsError
    from dsn.precision import set_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision:
        set_precision(args.precision)
    try:
        model = load(args.weights, allow_untrained=args.allow_untrained)
        trained = not is_untrained(model)
        images, pairs = load_images_and_pairs(args.data, args.split, args.pairs)
        if not trained:
            print(UNTRAINED_WARNING, file=sys.stderr)
        embedding, stats = (
            (None, None) if args.no_cache or not pairs else cached_embedding(model, images, args.batch_size, not args.no_progress)
        )
        result = evaluate(
            model, images, pairs, batch_size=args.batch_size, threshold=args.threshold, progress=not args.no_progress, embedding=embedding
        )
        if stats is not None:  # hashing, preprocessing and backbone of the misses happened in the cache
            result.timings["embedding_s"] = stats.seconds
            result.timings["total_s"] += stats.seconds
            result.info["embedding_cache"] = {"hits": stats.hits, "misses": stats.misses}
        if args.pairs:  # files a user listed: say which do not look like signatures, as verify does
            result.info["input_warnings"] = pair_file_warnings(images)
            for name, reasons in result.info["input_warnings"].items():
                print(f"warning: {name}: {'; '.join(reasons)}", file=sys.stderr)
        if args.references:
            result.info["multi_reference"] = multi_reference_metrics(
                result.images, result.pairs, result.scores.distance, args.references, config=model.config
            )
    except (WeightsError, ValueError, OSError) as err:  # PreprocessError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    data_info = {"data": args.data, "split": None if args.pairs else args.split, "pairs_csv": args.pairs}
    result.info.update(**data_info, untrained=not trained, command=shlex.join(["python", "-m", "dsn", *argv]))
    written = write_report(result, args.report) if args.report else {}
    if args.out_csv:
        written["out_csv"] = write_pair_rows(result, args.out_csv)
    if args.json:
        print(json.dumps({**result.summary(), "files": {k: str(v) for k, v in written.items()}}, indent=2))
    else:
        print(format_summary(result))
        if args.references:
            print(format_multi_reference(result.info["multi_reference"]))
        for path in written.values():
            print(f"wrote {path}")
    return 0


def pair_file_warnings(images: list) -> dict[str, list[str]]:
    """File name -> reasons it may not be a handwritten signature, for the images of a pairs CSV."""
    from dsn.data.handwriting import handwriting_warnings
    from dsn.data.preprocess import preprocess

    found = {}
    for image in images:
        reasons = handwriting_warnings(preprocess(image.path).image)
        if reasons:
            found[image.path.name] = reasons
    return found


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="set a checkpoint's threshold at its EER on the val writers, as it ships")
    p.add_argument("--weights", required=True, help="checkpoint folder to calibrate (config.json and metrics.json are rewritten)")
    p.add_argument("--data", required=True, action="append", help="dataset folder whose val writers set the threshold (repeatable: pooled)")
    p.add_argument("--sinkhorn-iterations", type=int, default=None, help="ship with this many Sinkhorn iterations (default: keep)")
    p.add_argument("--precision", default=None, choices=PRECISIONS, help="backbone precision (default: DSN_PRECISION, else auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run_calibrate(args: argparse.Namespace, argv: list[str]) -> int:
    import shlex

    import torch

    from dsn.evaluation.calibrate import calibrate
    from dsn.model.weights import WeightsError
    from dsn.precision import set_precision

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.precision:
        set_precision(args.precision)
    try:
        command = shlex.join(["python", "-m", "dsn", *argv])
        val = calibrate(args.weights, args.data, args.sinkhorn_iterations, progress=not args.no_progress, command=command)
    except (WeightsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"val EER {100 * val['eer']:.2f}%  AUC {val['auc']:.4f}  -> threshold {val['threshold']:.4f} "
        f"(FAR {100 * val['far']:.2f}%, FRR {100 * val['frr']:.2f}%) written to {args.weights}"
    )
    metrics = json.loads((Path(args.weights) / "metrics.json").read_text())
    rows = metrics.get("val_references", [])
    for rule in ("mean", "min"):
        chosen = [f"K={r['references']} {r['eer_threshold']:.3f} ({100 * r['eer']:.1f}%)" for r in rows if r["rule"] == rule]
        if chosen:
            print(f"reference sets, {rule} rule: " + ", ".join(chosen))
    if rows:
        rule = json.loads((Path(args.weights) / "config.json").read_text())["reference_rule"]
        print(f"with several references the {rule} rule decides (the lower val EER)")
    return 0


def add_push_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="check a checkpoint folder and upload it to the Hugging Face Hub")
    p.add_argument("--weights", required=True, help="checkpoint folder, e.g. checkpoints/dsnet-tiny-cedar")
    p.add_argument("--repo-id", required=True, help="OWNER/NAME on the Hub; it then loads as hf://OWNER/NAME")
    p.add_argument("--dry-run", action="store_true", help="only list the files and check them")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", default=None, help="branch to upload to (created if missing)")


def run_push(args: argparse.Namespace) -> int:
    from dsn.hub.publish import PublishError, check_checkpoint, push_checkpoint

    report = check_checkpoint(args.weights)
    print(report.format())
    if not report.ok:
        return 1
    if args.dry_run:
        print(f"dry run: nothing uploaded; would publish to {args.repo_id}" + (f" @ {args.revision}" if args.revision else ""))
        return 0
    try:
        url = push_checkpoint(args.weights, args.repo_id, private=args.private, revision=args.revision)
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"uploaded: {url}\nload it with DetailSemNet.load('hf://{args.repo_id}" + (f"@{args.revision}" if args.revision else "") + "')")
    return 0


def add_card_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("card", help="write README.md (model card) and test metrics into a checkpoint folder")
    p.add_argument("--weights", required=True, help="checkpoint folder (its metrics.json holds the validation metrics)")
    p.add_argument("--eval-json", required=True, help="output of `python -m dsn evaluate --json` on the test split")
    p.add_argument("--train-config", required=True, help="train_config.json of the training run")
    p.add_argument("--train-command", default=None, help="exact training command (default: rebuilt from the config)")
    p.add_argument("--repo-id", default=None, help="OWNER/NAME used in the card's loading example")
    p.add_argument("--cross-eval-json", action="append", default=[], help="`evaluate --json` output on another dataset (repeatable)")
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        help="dataset folder name the weights learned from, repeatable, last-trained first (default: the run's own)",
    )
    p.add_argument("--training-hours", type=float, default=None, help="total training time, when the weights come from several runs")


def run_card(args: argparse.Namespace) -> int:
    from dsn.hub.modelcard import card_from_files

    try:
        path = card_from_files(
            args.weights,
            args.eval_json,
            args.train_config,
            command=args.train_command,
            repo_id=args.repo_id,
            cross_eval_jsons=args.cross_eval_json,
            training_hours=args.training_hours,
            datasets=args.dataset,
        )
    except (OSError, ValueError, KeyError) as err:  # missing file, bad JSON, eval JSON without "metrics"
        print(f"error: {err!r}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def add_convert_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-official", help="turn a checkpoint of the authors' DetailSemNet code into a checkpoint folder")
    p.add_argument("checkpoint", help="the official state dict, e.g. best.pt (read with torch.load(weights_only=True))")
    p.add_argument("out_dir", help="folder to write config.json, model.safetensors and a model card to")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default 0.6, not chosen on data: calibrate it)")
    p.add_argument("--structural-weight", type=float, default=1.0, help="the official --temp: weight of the structural distance")


def run_convert(args: argparse.Namespace) -> int:
    from dsn.hub.convert_official import ConversionError, convert_official

    try:
        model = convert_official(args.checkpoint, args.out_dir, threshold=args.threshold, structural_weight=args.structural_weight)
    except (ConversionError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from dsn.loading import ModelInfo

    print(f"wrote {args.out_dir}: {ModelInfo.of(model).summary}, threshold {model.config.threshold:g}")
    print(f"use it with: python -m dsn verify --weights {args.out_dir} REF.png QUERY.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dsn", description="DetailSemNet signature verification")
    sub = parser.add_subparsers(dest="command", required=True)
    add_verify_parser(sub)
    add_train_parser(sub)
    add_pack_parser(sub)
    add_evaluate_parser(sub)
    add_calibrate_parser(sub)
    add_push_parser(sub)
    add_card_parser(sub)
    add_convert_parser(sub)
    explain_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    handlers = {
        "verify": run_verify,
        "train": run_train,
        "pack-data": run_pack,
        "push": run_push,
        "card": run_card,
        "convert-official": run_convert,
    }
    handlers |= {"evaluate": lambda a: run_evaluate(a, argv), "calibrate": lambda a: run_calibrate(a, argv)}
    handlers |= dict.fromkeys(("sanity", "faithfulness", "plan-check", "frequency", "report"), explain_cli.run)
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
