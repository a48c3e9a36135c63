"""Run one case once through `cc_executor.client`: the request, the event consumer, the guards.

Owns `CaseExecutor.execute`, which turns one run of a case (an attempt, or one instance of it)
into an `Execution`: it builds the job's request and environment, starts the job, consumes its
events into `LiveJob`, waits for the completion under the client-side guards, ends leftover
processes, and hands the `Observed` result to `stress.run.attempt_record` to be judged.

Why the harness guards time itself although the service enforces the limits: the service is what
is under test. If it ever failed to report an end (a lost notification, a hung kill), a harness
that simply waited would hang too. So each run has two client-side deadlines, both later than the
service's by a grace period: nothing at all received for stall + grace, or total + grace since the
start. When one passes, the harness sends control CANCEL, waits a bounded time, gives up on the
job, and records which guard fired. A run can therefore never take longer than its limits plus a
fixed overhead.

Why a lost connection is a typed outcome: the run drops a broken connection (the next attempt
connects afresh) and reports the attempt's end as a lost connection. Whether an attempt was lost is
decided where `ConnectionLost` (or the request's timeout) is caught - `Followed.lost`,
`Observed.lost` - never by reading the text shown to people, which may be reworded freely.

Must not import: the Runner (runner.py: it imports this module); the service only
through `cc_executor.client` and the shared libraries (`aio`, `load`, `timing`), never
`cc_executor.jobs/server/process/tree/registry`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cc_executor import aio
from cc_executor.claude_cli import NESTING_VAR
from cc_executor.client import ConnectionLost, ExecutorClient, ExecutorError, JobHandle
from cc_executor.load import read_load
from cc_executor.timing import Timeouts, load_factor, stretch_timeouts
from stress.run.attempt_record import Execution, judge_run, read_output
from stress.run.code_runs import needs_python, run_code_checks
from stress.run.leftovers import JOB_TAG_VAR, LEFTOVER_WAIT, end_leftovers
from stress.run.observed import CaseRun, LiveJob, Observed
from stress.run.planned import REQUEST_TIMEOUT, Planned, ProgressSink, RunOptions
from stress.suite import claude_stream as claude_mod


class RunState(Protocol):
    """What an execution reads of the run it belongs to (the Runner), at the moment it needs it."""

    halted: str | None
    """Why --halt stopped the run, or None."""
    interrupted: bool
    """The user interrupted the run."""
    stop_reason: str | None


@dataclass(frozen=True)
class Followed:
    """How waiting for the completion ended: `detail` is for people (None: nothing to add), `lost`
    says the connection to the service broke - decided by the exception's type, not its text."""

    detail: str | None = None
    lost: bool = False


def lost_text(e: ConnectionLost) -> str:
    """What people see of a lost connection; it always starts "connection lost" (the client's
    own message does already). For display only: nothing decides on this text."""
    text = str(e)
    return text if text.startswith("connection lost") else f"connection lost: {text}"


def consumer_end(exc: BaseException | None) -> Followed:
    """How the event consumer ended, told by the exception's type: a `ConnectionLost` is a lost
    connection whatever its message says; any other exception is a harness error, even one whose
    message happens to read like a lost connection."""
    if exc is None:
        return Followed()
    if isinstance(exc, ConnectionLost):
        return Followed(lost_text(exc), lost=True)
    return Followed(f"{type(exc).__name__}: {exc}")


def refusal_text(e: ExecutorError) -> str:
    detail = f"the service refused the job: {e.message}"
    if e.data:
        detail += f" ({e.data})"
    return detail


def in_force(job: JobHandle, factor: float, limits: Timeouts) -> tuple[float, Timeouts]:
    """The stretch factor and limits the service applied when the job started (the one rule of
    `cc_executor.timing`, on the service's host); ours, from this host's load, until it says
    (a queued job) or when it never does (a service that does not report them)."""
    if job.timeout_factor is None:
        return factor, limits
    return job.timeout_factor, Timeouts(job.timeout, job.stall_timeout)


def job_argv(command: str | None, args: Sequence[str] | None) -> list[str]:
    """What the service is asked to run: a command string goes through /bin/sh -c."""
    if command is not None:
        return ["/bin/sh", "-c", command]
    return list(args or ())


def _uncancel() -> None:
    """We handle this cancellation ourselves (record what the run had, then return)."""
    me = asyncio.current_task()
    if me is not None:
        me.uncancel()


class CaseExecutor:
    """Runs one case once on a given client connection; shared by every worker of a run."""

    def __init__(self, options: RunOptions, outputs: Path, tag_prefix: str, progress: ProgressSink,
                 *, monitor: Any, service: Any, state: RunState,
                 claude_streams: list[claude_mod.StreamSummary]) -> None:
        self.options = options
        self.outputs = outputs
        self.tag_prefix = tag_prefix
        """The report folder's name: jobs are tagged <tag_prefix>/<output stem>."""
        self.progress = progress
        self.monitor = monitor
        self.service = service
        self.state = state
        self.claude_streams = claude_streams
        """Every Claude stream-json summary seen, for the run's totals."""

    async def execute(self, client: ExecutorClient, planned: Planned, n: int,
                      instance: int | None, stem: str) -> Execution:
        """Run attempt `n` of `planned` (or instance `instance` of it); never raises for what the
        service or the connection does: every end becomes the returned record."""
        run = CaseRun(planned, n, instance, stem)
        test = planned.test
        reading = read_load()
        factor = load_factor(reading.load1, reading.cores)
        limits = stretch_timeouts(test.timeout, test.stall_timeout, factor)
        argv, env = self._request(run)
        out_path = self.outputs / f"{stem}.stdout"
        err_path = self.outputs / f"{stem}.stderr"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        self.progress.started(stem, stem)
        if self.monitor is not None:
            self.monitor.begin(stem)
        started_at = time.time()
        t0 = time.monotonic()
        # Unbuffered: what arrived is on disk at once, even if the harness is killed.
        with open(out_path, "wb", buffering=0) as fo, open(err_path, "wb", buffering=0) as fe:
            seen = Observed(LiveJob(fo, fe), limits, factor, reading.load1, started_at)
            await self._talk(client, run, argv, env, seen)
        seen.wall = time.monotonic() - t0
        seen.resources = self.monitor.end(stem) if self.monitor is not None else None
        await self._end_leftovers(str(env[JOB_TAG_VAR]), seen)
        await self._code_checks(client, run, seen)
        ex = self._finish(run, seen)
        ex.lost = None if seen.interrupted else seen.lost
        return ex

    def _request(self, run: CaseRun) -> tuple[list[str], dict[str, str | None]]:
        """What to ask the service to run and with which environment: the model's, Claude's, the
        test's own, then the harness's markers and the job tag (`stress.run.leftovers`)."""
        planned, test = run.planned, run.planned.test
        inv = test.invocation(run.instance)
        env: dict[str, str | None] = {**self.options.model_env}
        if planned.uses_claude:
            env.update(self.options.claude_env)
        env.update(inv.env)
        env.update({"STRESS_TEST_ID": test.id, "STRESS_ATTEMPT": str(run.n)})
        env[JOB_TAG_VAR] = f"{self.tag_prefix}/{run.stem}"
        if run.instance is not None:
            env["STRESS_INSTANCE"] = str(run.instance + 1)
        if planned.uses_claude and NESTING_VAR not in inv.env:
            env[NESTING_VAR] = None  # the CLI refuses to run "inside" another Claude Code session
        return job_argv(inv.command, inv.args), env

    async def _talk(self, client: ExecutorClient, run: CaseRun, argv: list[str],
                    env: dict[str, str | None], seen: Observed) -> None:
        """Start the job and follow it to its end, recording everything into `seen`. A refusal,
        an unanswered request, a lost connection and a cancellation of this task all end here."""
        test = run.planned.test
        consumer: asyncio.Task | None = None
        try:
            try:
                seen.job = await aio.wait_for(
                    client.start(args=argv, cwd=test.cwd, env=env, input=test.input,
                                 timeout=test.timeout, stall_timeout=test.stall_timeout),
                    REQUEST_TIMEOUT)
            except ConnectionLost:
                raise
            except ExecutorError as e:
                seen.refused = e
                seen.detail = refusal_text(e)
            except asyncio.TimeoutError:
                seen.detail = seen.lost = ("the service did not answer the execute request "
                                           f"within {REQUEST_TIMEOUT:g} s")
            else:
                consumer = self._begin(run, seen.job, seen.live)
                followed = await self._follow(seen.job, consumer, seen.live, seen.limits)
                seen.factor, seen.limits = in_force(seen.job, seen.factor, seen.limits)
                seen.detail = followed.detail
                if followed.lost:
                    seen.lost = followed.detail
        except asyncio.CancelledError:
            _uncancel()
            seen.interrupted = True
            if self.state.halted is not None and not self.state.interrupted:
                seen.detail = f"cancelled: {self.state.halted}"
            else:
                seen.detail = f"interrupted ({self.state.stop_reason or 'cancelled'})"
            await self._cancel_job(seen.job, consumer)
        except ConnectionLost as e:
            seen.detail = seen.lost = lost_text(e)
        finally:
            if consumer is not None:
                if not consumer.done():
                    consumer.cancel()
                # Always collect its end: after an interrupt the consumer may have ended with
                # ConnectionLost (a second Ctrl-C killed the service) while nobody looked, and
                # asyncio would print "Task exception was never retrieved" at exit.
                await asyncio.gather(consumer, return_exceptions=True)

    def _begin(self, run: CaseRun, job: JobHandle, live: LiveJob) -> asyncio.Task:
        """The job was accepted: note its start (unless queued) and start consuming its events."""
        if not job.queued:
            live.started = live.last = time.monotonic()
            live.pid, live.pgid = job.pid, job.pgid
            self._note_job(run.stem, live)
        return asyncio.ensure_future(self._consume(job, live, run.stem))

    async def _end_leftovers(self, tag: str, seen: Observed) -> None:
        """Managed (same-host) service: kill what the job left running, and record it."""
        if seen.job is None or not getattr(self.service, "managed", False):
            return
        # Interrupted by the user: no grace for the tree to finish dying (a second Ctrl-C
        # must not wait); what is left is killed now, and the attempt is not judged anyway.
        wait = 0.0 if seen.interrupted and self.state.interrupted else LEFTOVER_WAIT
        try:
            seen.leftovers = await asyncio.to_thread(end_leftovers, tag, wait)
        except asyncio.CancelledError:
            _uncancel()
            seen.interrupted = True
            seen.detail = seen.detail or f"interrupted ({self.state.stop_reason or 'cancelled'})"

    async def _code_checks(self, client: ExecutorClient, run: CaseRun, seen: Observed) -> None:
        """python-runs assertions: the model's code as jobs on the same service (`code_runs`)."""
        if not needs_python(run.planned):
            return
        try:
            seen.code_runs = await run_code_checks(client, run.planned, seen)
        except asyncio.CancelledError:
            _uncancel()
            seen.interrupted = True
            seen.detail = seen.detail or f"interrupted ({self.state.stop_reason or 'cancelled'})"

    def _finish(self, run: CaseRun, seen: Observed) -> Execution:
        """Judge the run and report it finished."""
        out = read_output(run.planned, seen)
        if out.is_claude_stream:
            assert out.stream is not None
            self.claude_streams.append(out.stream)
        halted_only = self.state.halted is not None and not self.state.interrupted
        ex = judge_run(run, seen, out, self.options, halted_only=halted_only)
        a = ex.attempt
        # An instance is one of the attempt's K jobs: the attempt is counted once, by the
        # runner, when its best instance is known (stress.report.progress).
        done = getattr(self.progress, "instance_finished", None) if run.instance is not None \
            else None
        (done or self.progress.finished)(run.stem, run.stem, a.status, a.reason, a.duration,
                                         a.message)
        return ex

    def _note_job(self, stem: str, live: LiveJob) -> None:
        if self.monitor is not None:
            self.monitor.set_job(stem, live.pid, live.pgid)
        if self.service is not None:
            self.service.note_job(live.pid)

    async def _consume(self, job: JobHandle, live: LiveJob, stem: str) -> None:
        async for ev in job:
            live.on_event(ev)
            if ev.kind == "started":
                self._note_job(stem, live)
            elif ev.kind == "queued":
                note = getattr(self.progress, "note", None)
                if note is not None:
                    note(f"QUEUE {stem}: the service queued the job ({live.queue_reason})")

    async def _follow(self, job: JobHandle, consumer: asyncio.Task, live: LiveJob,
                      limits: Timeouts) -> Followed:
        """Wait for the completion under the client-side guards (queue, deadline, stall)."""
        grace = self.options.guard_grace
        while True:
            now = time.monotonic()
            if live.started is None:
                deadline, which = live.queued_at + self.options.queue_limit, "queue"
            else:
                _, limits = in_force(job, 1.0, limits)
                candidates = []
                if limits.total is not None:
                    candidates.append((live.started + limits.total + grace, "deadline"))
                if limits.stall is not None:
                    candidates.append((live.last + limits.stall + grace, "stall"))
                deadline, which = min(candidates) if candidates else (None, "")
            if deadline is not None and now >= deadline:
                live.guard = which
                await self._cancel_job(job, consumer)
                if which == "queue":
                    return Followed(f"waited over {self.options.queue_limit:g} s in the service's queue")
                return Followed()
            timeout = None if deadline is None else max(0.0, deadline - now)
            done, _ = await asyncio.wait({consumer}, timeout=timeout)
            if done:
                return consumer_end(consumer.exception())

    async def _cancel_job(self, job: JobHandle | None, consumer: asyncio.Task | None) -> None:
        """control CANCEL, then a bounded wait for the completion; never raises."""
        if job is None:
            return
        if consumer is not None and consumer.done():
            return
        try:
            await aio.wait_for(job.cancel(), 5.0)
        except (ExecutorError, asyncio.TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        if consumer is not None:
            try:
                await asyncio.wait({consumer}, timeout=self.options.cancel_wait)
            except asyncio.CancelledError:
                pass


__all__ = ["CaseExecutor", "Followed", "RunState", "consumer_end", "in_force", "job_argv",
           "lost_text", "refusal_text"]
