"""The Dask task: one attempt of one test, run on the worker's host through its own executor.

Runs in a thread of a `stress.worker` process (Dask runs tasks in the worker's thread pool), so
the executor the worker supervises is found in this module's globals (`configure`), never sent
with the task. The attempt runs exactly as on one host: `stress.run.runner.Runner.run_item`
with the same stall guard, timeouts, judging and output capture, into a scratch report folder.

Outputs come back in the result, zlib-compressed, not through a shared folder: a worker on
another host shares no file system with the harness, and a test's output (a few KiB to tens of
MiB of mostly text) compresses several-fold and travels in Dask's own frames. The harness writes
the files where a local run would have (`outputs/` of the report folder).

The job runs without resume (`RunOptions.resume` False: no `detach_timeout`, so the executor's
default 0, end on disconnect): when this worker dies its WebSocket closes and the executor ends
the job at once. A detached job would make Dask's rerun elsewhere a second live run.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cc_executor import aio
from stress.run.attempt_record import Execution
from stress.run.runner import Planned, Runner, RunOptions

START_TOPIC = "stress-start"
"""Dask event topic: one event per attempt a worker starts (the harness counts reruns by it)."""


@dataclass
class WorkerSetup:
    """What a worker process knows about its own executor and capacity."""

    name: str
    url: str
    token: str | None
    allow: list[str]
    hardware: dict[str, Any]
    capacity: dict[str, Any]
    executor_pid: int | None = None


_SETUP: WorkerSetup | None = None


def configure(setup: WorkerSetup) -> None:
    """Called once by `stress.worker` before it joins the scheduler."""
    global _SETUP
    _SETUP = setup


def worker_report() -> dict[str, Any]:
    """This worker's setup, for the harness's per-worker report (`Client.run`)."""
    if _SETUP is None:
        return {"error": "not a stress.worker (no executor configured)"}
    return {"name": _SETUP.name, "executor": _SETUP.url, "executor_pid": _SETUP.executor_pid,
            "allow": _SETUP.allow, "hardware": _SETUP.hardware, "capacity": _SETUP.capacity}


@dataclass
class AttemptResult:
    """What a task returns: the judged attempt, its output files (compressed), the worker."""

    execution: Execution
    files: dict[str, bytes] = field(default_factory=dict)
    worker: str = ""
    claude_streams: list[Any] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


CANCEL_POLL = 0.2
"""Seconds between checks that the scheduler still wants this task (a halt cancels it)."""


def _still_wanted(key: str) -> bool:
    """Whether this worker still holds `key` as a task to compute (Dask cannot interrupt a
    running task: a cancelled one is only forgotten by the worker, so the task looks)."""
    try:
        from distributed import get_worker

        ts = get_worker().state.tasks.get(key)
    except (ValueError, AttributeError):
        return True
    return ts is not None and ts.state in ("executing", "long-running", "ready", "constrained", "resumed")


async def _cancel_when_unwanted(key: str, runner: Runner) -> None:
    while _still_wanted(key):
        await asyncio.sleep(CANCEL_POLL)
    runner.interrupt("cancelled by the harness (--halt, --fail-fast or a signal)")


def _announce(key: str) -> None:
    try:
        from distributed import get_worker

        w = get_worker()
        w.log_event(START_TOPIC, {"key": key, "worker": w.address, "name": str(w.name)})
    except ValueError:  # not inside a worker (a direct call)
        pass


def run_attempt(key: str, run_id: str, planned: Planned, n: int, options: RunOptions) -> AttemptResult:
    """Attempt `n` of `planned` on this worker's executor; returns the attempt and its outputs."""
    if _SETUP is None:
        raise RuntimeError("this Dask worker has no executor: start workers with python -m stress.worker")
    _announce(key)
    scratch = Path(tempfile.mkdtemp(prefix="stress_task_"))
    report_dir = scratch / run_id  # the job tag (STRESS_JOB) names the run as a local run does
    started = time.time()
    try:
        runner = Runner(_SETUP.url, _SETUP.token, [planned], report_dir, options)

        async def go() -> None:
            runner.begin(1)
            watch = asyncio.ensure_future(_cancel_when_unwanted(key, runner))
            try:
                client = await runner.run_item(None, 0, n)
            finally:
                watch.cancel()
            if client is not None:
                try:
                    await aio.wait_for(client.close(), 5)
                except (asyncio.TimeoutError, OSError, Exception):  # noqa: BLE001 - best effort
                    pass

        asyncio.run(go())
        files = {str(p.relative_to(report_dir)): zlib.compress(p.read_bytes(), 6)
                 for p in sorted(report_dir.rglob("*")) if p.is_file()}
        return AttemptResult(runner.executions()[0], files, _SETUP.name,
                             list(runner.claude_streams), started, time.time())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
