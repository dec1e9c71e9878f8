"""Command-line interface: ``python -m dsn {verify,train,evaluate,push} ...``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from .train import TrainConfig


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train on a dataset folder (resumable)")
    p.add_argument("--data", required=True, help="dataset folder, e.g. ../shared/datasets/cedar")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/cedar-tiny")
    p.add_argument("--size", dest="backbone", default="dsnet_tiny", choices=["dsnet_tiny", "dsnet_small", "dsnet_base"])
    p.add_argument("--resume", action="store_true", help="continue from <out>/last")
    defaults = TrainConfig(data="", out="")
    for f in fields(TrainConfig):
        if f.name in {"data", "out", "backbone", "notes"}:
            continue
        value = getattr(defaults, f.name)
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value)


def run_train(args: argparse.Namespace) -> int:
    from .train import run

    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    state = run(cfg, resume=args.resume)
    print(json.dumps({"best_val_eer": state["best_eer"], "epochs": state["epoch"], "steps": state["step"]}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dsn", description="DetailSemNet signature verification")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": run_train}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
