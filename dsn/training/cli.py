"""``python -m dsn train`` and ``python -m dsn pack-data``: the options come from ``TrainConfig``'s fields."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

from dsn.model.config import BACKBONES
from dsn.precision import DEVICES, PRECISIONS
from dsn.training.config import PAIR_MEANS, TRAIN_INPUTS, TrainConfig


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train on a dataset folder (resumable)")
    p.add_argument(
        "--data",
        default=[],
        action="append",
        help="dataset folder, e.g. ../shared/datasets/cedar; repeat it to train one model on several datasets",
    )
    p.add_argument("--out", required=True, help="run folder, e.g. runs/cedar-tiny")
    p.add_argument(
        "--size",
        dest="backbone",
        default="dsnet_tiny",
        choices=BACKBONES,
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/last")
    p.add_argument(
        "--allow-recipe-change",
        action="store_true",
        help="resume with other recipe options than the run was started with (recorded in its train_config.json and card)",
    )
    p.add_argument(
        "--stop-after-epoch",
        type=int,
        default=None,
        help="end this call after that epoch (resume later; the schedule still spans --epochs)",
    )
    choices = {"device": DEVICES, "precision": PRECISIONS, "preprocessing": TRAIN_INPUTS, "pair_mean": PAIR_MEANS}
    helps = {
        "device": "auto: this process's CUDA GPU when there is one, else the CPU",
        "precision": "auto: bf16 autocast on CUDA and on CPUs with AMX / AVX512-BF16, else fp32",
        "compile": "torch.compile the backbone (pays back after a few hundred steps; eager if compilation fails)",
        "workers": "DataLoader worker processes that prepare the next batches (0: in the training process)",
        "packed": "train from a file written by `python -m dsn pack-data` instead of the dataset folders",
        "threads": "torch threads per process (with torchrun on a CPU: cores / processes)",
        "preprocessing": "model input: letterbox (the ink as scanned) or strokes (centre lines at one width and tone; shipped with the weights)",
        "pair_mean": "each loss term's mean: over all pairs, or over the pairs still inside their margin (active)",
        "ema_decay": "validate, keep and ship an exponential moving average of the weights with this decay (0: off; e.g. 0.999)",
    }
    defaults = TrainConfig(data=[], out="")
    for f in fields(TrainConfig):
        if f.name in {"data", "out", "backbone", "notes"}:
            continue
        value = getattr(defaults, f.name)
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=helps.get(f.name))
        else:
            p.add_argument(flag, type=type(value), default=value, choices=choices.get(f.name), help=helps.get(f.name))


def add_pack_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack-data", help="preprocessed train + val images of datasets in one file, to train where the folders are not")
    p.add_argument("--data", required=True, action="append", help="dataset folder; repeat for several (same order as for train)")
    p.add_argument("--out", default=".gpu/datasets.pack", help="the pack file (default: .gpu/datasets.pack, an ignored folder)")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--levels", type=int, default=8, help="grey levels kept (256: lossless; 8 makes the four datasets ~28 MB)")
    p.add_argument("--max-mb", type=float, default=36.0, help="refuse to write more than this many MiB of images")


def run_pack(args: argparse.Namespace) -> int:
    from dsn.data.pack import PackError, pack_datasets
    from dsn.training.sampling import name_groups, writer_weights

    try:
        limit = int(args.max_mb * 2**20)
        groups, weights = name_groups(args.data), writer_weights(args.data)
        result = pack_datasets(args.data, args.out, args.img_size, args.levels, limit, groups=groups, weights=weights)
    except (PackError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {result['train']} train + {result['val']} val images, {result['bytes'] / 2**20:.1f} MiB")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from dsn.training.run_folder import RunFolderError
    from dsn.training.train import run

    names = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if cfg.packed and args.data:
        print("error: give either --data folders or --packed FILE, not both", file=sys.stderr)
        return 2
    if not cfg.packed and not args.data:
        print("error: give --data (a dataset folder, repeatable) or --packed FILE", file=sys.stderr)
        return 2
    try:
        state = run(cfg, resume=args.resume, stop_after=args.stop_after_epoch, allow_recipe_change=args.allow_recipe_change)
    except RunFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:  # one summary per run, not one per process
        print(json.dumps({"best_val_eer": state["best_eer"], "epochs": state["epoch"], "steps": state["step"]}))
    return 0
