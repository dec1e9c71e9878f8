"""Heavy work that stops: a cancel, a visitor who leaves, the time budget, and the bounded caches."""

from __future__ import annotations

import asyncio
import time

import gradio as gr
import pytest
from conftest import EXAMPLES

from dsn.ui.compute import AnalysisCache
from dsn.ui.jobs import JOBS, Job, JobRegistry, JobStopped, run_job


def busy_work(job: Job, steps: int = 10_000) -> int:
    """A loop that reports progress like an attribution does, once per 'model call'."""
    report = job.progress()
    for step in range(steps):
        report(step / steps, "working")
        time.sleep(0.01)
    return steps


def test_a_stopped_job_raises_at_its_next_check() -> None:
    job = Job("visitor", "work", budget_s=60)
    job.check()
    job.stop("cancelled")
    with pytest.raises(JobStopped):
        job.check()
    assert (job.checks, job.reason) == (2, "cancelled")
    job.stop("left")
    assert job.reason == "cancelled"  # the first reason is the one that counts


def test_stop_session_stops_only_that_visitors_jobs() -> None:
    registry = JobRegistry()
    mine, theirs = registry.start("a", "x", 60), registry.start("b", "x", 60)
    assert registry.stop_session("a") == 1
    assert mine.stopped and not theirs.stopped
    registry.finish(mine)
    assert registry.running() == [theirs]


def test_cancelling_the_request_ends_the_work_before_the_lane_is_freed() -> None:
    async def scenario() -> Job:
        task = asyncio.create_task(run_job("Busy", 60, gr.Request(session_hash="s1"), busy_work))
        while not [job for job in JOBS.running() if job.session == "s1" and job.checks > 2]:
            await asyncio.sleep(0.01)
        job = next(job for job in JOBS.running() if job.session == "s1")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert job.finished.is_set(), "the task ended while its work was still running"
        return job

    job = asyncio.run(scenario())
    checks = job.checks
    time.sleep(0.1)
    assert job.checks == checks and job.reason == "cancelled"
    assert job not in JOBS.running()


def test_the_budget_stops_long_work_with_a_message() -> None:
    with pytest.raises(gr.Error, match="limit of 0 s"):
        asyncio.run(run_job("Busy", 0.0, None, busy_work))


def test_finished_work_returns_its_result() -> None:
    assert asyncio.run(run_job("Short", 60, None, lambda job: busy_work(job, steps=3))) == 3


def test_the_api_analysis_cache_is_bounded_by_bytes(model) -> None:
    pairs = [(EXAMPLES / f"writer{k}_reference.png", EXAMPLES / f"writer{k}_genuine.png") for k in (1, 2, 3)]
    one = AnalysisCache().get(model, *map(str, pairs[0])).nbytes
    assert one > 1_000_000  # DSI maps and originals: megabytes, the reason for a byte bound
    cache = AnalysisCache(max_bytes=int(2.5 * one))
    for reference, query in pairs:
        cache.get(model, str(reference), str(query))
    assert len(cache) == 2 and cache.nbytes <= cache.max_bytes
    tiny = AnalysisCache(max_bytes=1)
    tiny.get(model, *map(str, pairs[0]))
    assert len(tiny) == 1  # the newest is always kept, so a caller can use what it just computed


def test_forgetting_a_visitor_frees_their_state_now() -> None:
    from gradio_client import Client

    from dsn.tools.screenshot import free_port
    from dsn.ui.app import forget_visitor

    with gr.Blocks() as demo:
        state = gr.State(None, time_to_live=3600)
        out = gr.Number()
        button = gr.Button()
        button.click(lambda: (list(range(1000)), 1), None, [state, out], api_name="fill")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict(api_name="/fill")
        session = demo.state_holder.session_data[client.session_hash]
        assert session.state_data, "the state was not stored"
        forget_visitor(demo, gr.Request(session_hash=client.session_hash))
        assert not session.state_data
    finally:
        demo.close()
