"""Heavy work a visitor can stop: a cancel, a closed tab, or the server's time budget.

Gradio cancels a request by cancelling its asyncio task, and a closed tab only
marks the request dead; neither can stop a function already running in a
thread, so a cancelled attribution used to keep the CPU busy to its end while
its queue slot went to the next request. Here the work runs in a thread with a
``Job`` whose ``check`` it calls at every progress report (every model call of
an attribution, every batch of a dataset evaluation): the next check after a
stop raises ``JobStopped``, and the request's task waits for that before it
gives its lane back, so a lane never runs two models at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import gradio as gr

from dsn.ui.runtime import release_memory

T = TypeVar("T")
Progress = Callable[[float, str], None]


class JobStopped(Exception):
    """Raised inside stopped work at its next check."""


@dataclass(eq=False)
class Job:
    session: str
    label: str  # what the visitor asked for, e.g. "Integrated Gradients"
    budget_s: float
    started: float = field(default_factory=time.monotonic)
    checks: int = 0  # how many times the work reported progress: grows while it computes
    reason: str | None = None  # why it was stopped: "cancelled", "left" or "budget"
    finished: threading.Event = field(default_factory=threading.Event)  # the work's thread has returned
    _stop: threading.Event = field(default_factory=threading.Event)

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def check(self) -> None:
        """Called by the work between steps: raise if the visitor is gone or the budget is spent."""
        self.checks += 1
        if time.monotonic() - self.started > self.budget_s:
            self.stop("budget")
        if self._stop.is_set():
            raise JobStopped(self.reason)

    def progress(self, report: gr.Progress | None = None) -> Progress:
        """A ``(fraction, text)`` progress callback for the library that checks, then forwards to Gradio."""

        def on_progress(fraction: float, text: str) -> None:
            self.check()
            if report is not None:
                report(fraction, desc=text)

        return on_progress


class JobRegistry:
    """The heavy requests running now, by visitor session."""

    def __init__(self) -> None:
        self._jobs: set[Job] = set()
        self._lock = threading.Lock()

    def start(self, session: str, label: str, budget_s: float) -> Job:
        job = Job(session, label, budget_s)
        with self._lock:
            self._jobs.add(job)
        return job

    def finish(self, job: Job) -> None:
        with self._lock:
            self._jobs.discard(job)

    def running(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs, key=lambda job: job.started)

    def stop_session(self, session: str, reason: str = "left") -> int:
        """Stop every job of a visitor (their tab closed); returns how many."""
        with self._lock:
            jobs = [job for job in self._jobs if job.session == session]
        for job in jobs:
            job.stop(reason)
        return len(jobs)


JOBS = JobRegistry()


def session_of(request: gr.Request | None) -> str:
    return str(getattr(request, "session_hash", None) or "")


async def run_job(label: str, budget_s: float, request: gr.Request | None, work: Callable[[Job], T]) -> T:
    """Run ``work(job)`` in a worker thread so that a cancel, a closed tab or the budget stops it.

    Returns what ``work`` returns. A stop by the budget becomes a ``gr.Error`` that says so;
    a cancel re-raises the task's cancellation once the work has actually ended.
    """
    job = JOBS.start(session_of(request), label, budget_s)

    def in_thread() -> T:
        try:
            return work(job)
        finally:
            job.finished.set()

    future = asyncio.get_running_loop().run_in_executor(None, contextvars.copy_context().run, in_thread)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        job.stop("cancelled")
        await asyncio.wait([future])  # its next check raises; only then is the lane free again
        raise
    except JobStopped as stopped:
        if job.reason == "budget":
            raise gr.Error(
                f"{label} was stopped after the server's limit of {budget_s:.0f} s. Try fewer steps or a smaller selection.",
                title="Took too long",
                print_exception=False,
            ) from stopped
        raise gr.Error(f"{label} was stopped ({job.reason}).", print_exception=False) from stopped
    finally:
        JOBS.finish(job)
        release_memory()
