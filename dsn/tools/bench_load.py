"""``python -m dsn.tools.bench_load``: /verify latency while other clients keep the server busy with attributions.

Starts ``python app.py --threads T`` from a repository folder (default: this one) on a free
port, measures /verify alone, then again while ``--clients`` clients run Integrated Gradients
(``--steps``) back to back through ``gradio_client`` for ``--seconds``. Verify and attributions
run in separate lanes (``dsn.ui.context``), so verify should barely slow down.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from dsn.tools.screenshot import free_port

REPO = Path(__file__).resolve().parents[2]


def connect(url: str, seconds: float = 120.0):
    from gradio_client import Client

    deadline = time.perf_counter() + seconds
    while True:
        try:
            return Client(url, verbose=False)
        except Exception:  # the server is still starting
            if time.perf_counter() > deadline:
                raise
            time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.bench_load", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="repository whose app.py to serve")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=50.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from gradio_client import handle_file

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "app.py", "--port", str(port), "--threads", str(args.threads)]
    server = subprocess.Popen(command, cwd=args.repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = connect(url)
        examples = args.repo / "assets" / "examples"
        ref, query = handle_file(str(examples / "writer1_reference.png")), handle_file(str(examples / "writer1_forged.png"))

        def verify_seconds() -> float:
            started = time.perf_counter()
            client.predict(ref, query, None, api_name="/verify")
            return time.perf_counter() - started

        verify_seconds()
        idle = [verify_seconds() for _ in range(5)]
        stop = time.perf_counter() + args.seconds

        def attribute_until_stop() -> None:
            busy_client = connect(url)
            while time.perf_counter() < stop:
                busy_client.predict(ref, query, "integrated_gradients", "total", "query", args.steps, api_name="/attribute")

        workers = [threading.Thread(target=attribute_until_stop) for _ in range(args.clients)]
        for worker in workers:
            worker.start()
        time.sleep(3.0)  # let the attributions start
        busy = []
        while time.perf_counter() < stop:
            busy.append(verify_seconds())
            time.sleep(0.5)
        for worker in workers:
            worker.join()
        print(
            f"verify alone: p50 {statistics.median(idle):.2f} s; while {args.clients} clients run Integrated Gradients "
            f"({args.steps} steps): p50 {statistics.median(busy):.2f} s, max {max(busy):.2f} s over {len(busy)} calls"
        )
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
