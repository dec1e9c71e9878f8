"""DetailSemNet Explorer: ``python app.py`` serves the Gradio app on http://127.0.0.1:7860.

Options: ``--host``/``--port`` (or DSN_HOST / DSN_PORT / GRADIO_SERVER_PORT),
``--weights FOLDER | hf://OWNER/REPO[@rev]`` (or DSN_WEIGHTS; default: the
embedded checkpoint, else an untrained model the UI warns about),
``--data-root`` (repeatable: the folders the dataset explorer may read, or DSN_DATA_ROOT).
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(description="DetailSemNet Explorer: signature verification you can look inside")
    parser.add_argument("--host", default=env.get("DSN_HOST", env.get("GRADIO_SERVER_NAME", "127.0.0.1")))
    parser.add_argument("--port", type=int, default=int(env.get("DSN_PORT", env.get("GRADIO_SERVER_PORT", "7860"))))
    parser.add_argument(
        "--weights", default=None, help="checkpoint folder or hf://OWNER/REPO[@rev] (default: DSN_WEIGHTS, then the embedded one)"
    )
    parser.add_argument(
        "--data-root",
        action="append",
        default=None,
        help="allowed datasets folder, repeatable (e.g. ../shared/datasets); the dataset explorer reads only below these "
        "(default: DSN_DATA_ROOT, several joined with the path separator)",
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--threads",
        type=int,
        default=int(env.get("DSN_THREADS", "0")),
        help="torch CPU threads (default: torch's choice); on a busy shared CPU, 1 avoids thread-barrier stalls",
    )
    parser.add_argument(
        "--precision",
        default=env.get("DSN_PRECISION", "auto"),
        choices=["auto", "fp32", "bf16"],
        help="backbone precision (default auto: bf16 on CUDA and for dataset embedding on CPUs with AMX, else fp32)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    roots = args.data_root or [p for p in os.environ.get("DSN_DATA_ROOT", "").split(os.pathsep) if p]
    import dsn
    from dsn.model.weights import WeightsError

    dsn.set_precision(args.precision)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)

    try:
        from dsn.loading import ModelInfo
        from dsn.ui.runtime import pick_device

        model = dsn.load(args.weights, device=pick_device())
        info = ModelInfo.of(model)
    except WeightsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if info.untrained:
        print("WARNING: no trained checkpoint found; serving a randomly initialised model (verdicts are meaningless).", file=sys.stderr)
    from dsn.ui import build_app, launch_options, prepare

    try:
        demo = prepare(build_app(model, info, data_roots=roots))
    except ValueError as error:  # a --data-root that does not exist
        print(f"error: {error}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
