"""``python -m dsn.tools.loadtest``: a bounded load test of a running app, loopback only.

Each round, ``--clients`` clients send ``--requests`` /verify calls each while
``--attribute`` clients run Integrated Gradients back to back and, with
``--bad-files``, one client sends broken uploads in between (each must be refused
with a message). Then it checks that an over-long request is refused and that a
cancelled attribution stops (the server's CPU time stops growing). It prints
failures, p50/p95/max per endpoint and the server's resident memory before,
at its peak and after each round, and after ``--idle`` seconds of rest.

Without ``--url`` it starts ``python app.py --threads 1`` on a free port itself.
It never talks to anything but 127.0.0.1 / localhost / ::1, and it stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from dsn.tools.screenshot import free_port

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def server_pid(port: int) -> int | None:
    """The process listening on ``port`` (from /proc, so no extra package is needed)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(fields[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class MemoryWatch:
    """Samples the server's RSS every 0.2 s in the background; ``peak`` is the highest since the last reset."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        if pid is not None:
            self._thread.start()

    def now(self) -> float | None:
        return rss_mb(self.pid) if self.pid is not None else None

    def reset(self) -> None:
        self.peak = self.now() or 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Tally:
    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, endpoint: str, seconds: float) -> None:
        with self.lock:
            self.seconds[endpoint].append(seconds)

    def fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def connect(url: str, seconds: float = 180.0):
    from gradio_client import Client

    deadline = time.perf_counter() + seconds
    while True:
        try:
            return Client(url, verbose=False)
        except Exception:  # the server is still starting
            if time.perf_counter() > deadline:
                raise
            time.sleep(1.0)


def bad_files(folder: Path) -> list[tuple[str, Path]]:
    """Uploads that must be refused with a message: noise, an empty file, text, a blank page, a truncated PNG."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    files = {
        "random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty file": b"",
        "text": b"not an image\n" * 50,
    }
    blank = cv2.imencode(".png", np.full((200, 400), 255, np.uint8))[1].tobytes()
    files["blank page"] = blank
    files["truncated png"] = blank[: len(blank) // 2]
    out = []
    for index, (name, content) in enumerate(files.items()):
        path = folder / f"bad{index}.png"
        path.write_bytes(content)
        out.append((name, path))
    return out


def run_round(url: str, args: argparse.Namespace, ref, query, bad: list, tally: Tally) -> None:
    """One round: verify clients until each sent its requests, attribution and bad-file clients until then."""
    done = threading.Event()

    def verifier() -> None:
        client = connect(url)
        for _ in range(args.requests):
            started = time.perf_counter()
            try:
                client.predict(ref, query, None, api_name="/verify")
                tally.add("/verify", time.perf_counter() - started)
            except Exception as error:  # any failure of a good request counts
                tally.fail(f"/verify: {type(error).__name__}: {str(error)[:120]}")

    def attributor() -> None:
        client = connect(url)
        while not done.is_set():
            started = time.perf_counter()
            try:
                client.predict(ref, query, "integrated_gradients", "total", "query", args.attribute_steps, api_name="/attribute")
                tally.add("/attribute", time.perf_counter() - started)
            except Exception as error:
                tally.fail(f"/attribute: {type(error).__name__}: {str(error)[:120]}")

    def bad_sender() -> None:
        client = connect(url)
        while not done.wait(0.2):
            for name, path in bad:
                started = time.perf_counter()
                try:
                    client.predict(path, query, None, api_name="/verify")
                    tally.fail(f"/verify with {name}: accepted instead of refused")
                except Exception as error:
                    if type(error).__name__ == "AppError" and str(error).strip():  # the server refused it with a message
                        tally.add("/verify (bad file, refused)", time.perf_counter() - started)
                    else:
                        tally.fail(f"/verify with {name}: {type(error).__name__}: {str(error)[:120]}")
                if done.is_set():
                    return

    background = [threading.Thread(target=attributor) for _ in range(args.attribute)]
    if args.bad_files:
        background.append(threading.Thread(target=bad_sender))
    for thread in background:
        thread.start()
    if args.attribute:
        time.sleep(2.0)  # let the attributions start first
    verifiers = [threading.Thread(target=verifier) for _ in range(args.clients)]
    for thread in verifiers:
        thread.start()
    for thread in verifiers:
        thread.join()
    done.set()
    for thread in background:
        thread.join()


def check_refusal(client, ref, query, tally: Tally) -> str:
    try:
        client.predict(ref, query, "integrated_gradients", "total", "query", 20000, api_name="/attribute")
    except Exception as error:
        return f"refused: {str(error)[:160]}"
    tally.fail("/attribute with steps=20000 was accepted")
    return "ACCEPTED (failure)"


def check_cancel(client, ref, query, pid: int | None, tally: Tally) -> str:
    """Start a long attribution, cancel it, and time until the server's CPU use falls to idle."""
    job = client.submit(ref, query, "integrated_gradients", "total", "query", 256, api_name="/attribute")
    time.sleep(4.0)
    if job.done():
        tally.fail("cancel check: the attribution finished before it could be cancelled")
        return "finished too early"
    cancelled = time.perf_counter()
    job.cancel()
    if pid is None:
        return "cancelled (no server pid: CPU not checked)"
    previous = cpu_seconds(pid)
    while time.perf_counter() - cancelled < 30.0:
        time.sleep(0.25)
        current = cpu_seconds(pid)
        if current - previous < 0.25 * 0.2:  # under 20 % of one core over the last 0.25 s
            seconds = time.perf_counter() - cancelled - 0.25
            return f"CPU back to idle {max(seconds, 0.0):.2f} s after the cancel"
        previous = current
    tally.fail("cancel check: the server kept computing for 30 s after the cancel")
    return "still busy 30 s after the cancel"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.tools.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running app on a loopback address (default: start app.py here)")
    parser.add_argument("--pid", type=int, help="the server's process id (default: found from the URL's port)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10, help="/verify calls per client per round")
    parser.add_argument("--attribute", type=int, default=0, help="clients running Integrated Gradients during each round")
    parser.add_argument("--attribute-steps", type=int, default=32)
    parser.add_argument("--bad-files", action="store_true", help="one more client sending broken uploads")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of rest before the last memory reading")
    parser.add_argument("--no-checks", action="store_true", help="skip the over-long-request and cancel checks")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server this tool starts")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    from gradio_client import handle_file

    server = None
    if args.url:
        parsed = urlparse(args.url)
        if parsed.hostname not in LOOPBACK:
            parser.error(f"--url must be a loopback address ({', '.join(sorted(LOOPBACK))}), got {parsed.hostname!r}")
        url, pid = args.url, args.pid or server_pid(parsed.port or 80)
    else:
        port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": str(args.threads)}
        command = [sys.executable, "app.py", "--port", str(port), "--threads", str(args.threads)]
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url, pid = f"http://127.0.0.1:{port}/", server.pid
    memory = MemoryWatch(pid)
    report: dict = {"url": url, "args": {k: str(v) for k, v in vars(args).items()}, "rounds": []}
    try:
        client = connect(url)
        examples = REPO / "assets" / "examples"
        ref, query = handle_file(str(examples / "writer1_reference.png")), handle_file(str(examples / "writer1_forged.png"))
        client.predict(ref, query, None, api_name="/verify")  # warm up
        with tempfile.TemporaryDirectory() as folder:
            bad = [(name, handle_file(str(path))) for name, path in bad_files(Path(folder))]
            for number in range(1, args.rounds + 1):
                tally = Tally()
                before = memory.now()
                memory.reset()
                started = time.perf_counter()
                run_round(url, args, ref, query, bad, tally)
                row = {"round": number, "seconds": time.perf_counter() - started, "failures": tally.failures}
                row["rss_mb"] = {"before": before, "peak": memory.peak, "after": memory.now()}
                row["endpoints"] = {
                    name: {"n": len(v), "p50": statistics.median(v), "p95": percentile(v, 0.95), "max": max(v)}
                    for name, v in tally.seconds.items()
                }
                report["rounds"].append(row)
                print_round(row)
        if args.idle:
            time.sleep(args.idle)
            report["rss_after_idle_mb"] = memory.now()
            print(f"RSS after {args.idle:.0f} s idle: {fmt(report['rss_after_idle_mb'])} MB")
        if not args.no_checks:
            tally = Tally()
            report["steps_20000"] = check_refusal(client, ref, query, tally)
            report["cancel"] = check_cancel(client, ref, query, pid, tally)
            report["check_failures"] = tally.failures
            print(f"steps=20000: {report['steps_20000']}\ncancelled attribution: {report['cancel']}")
            for failure in tally.failures:
                print(f"  FAILURE {failure}")
    finally:
        memory.stop()
        if server is not None:
            server.terminate()
            server.wait()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    failed = sum(len(r["failures"]) for r in report["rounds"]) + len(report.get("check_failures", []))
    return 1 if failed else 0


def fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def print_round(row: dict) -> None:
    rss = row["rss_mb"]
    print(
        f"round {row['round']}: {row['seconds']:.1f} s, {len(row['failures'])} failures, "
        f"RSS before {fmt(rss['before'])} / peak {fmt(rss['peak'])} / after {fmt(rss['after'])} MB"
    )
    for name, s in row["endpoints"].items():
        print(f"  {name:30s} n={s['n']:4d}  p50 {s['p50']:.2f} s  p95 {s['p95']:.2f} s  max {s['max']:.2f} s")
    for failure in row["failures"][:10]:
        print(f"  FAILURE {failure}")


if __name__ == "__main__":
    raise SystemExit(main())
