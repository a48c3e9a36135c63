"""Run planned tests against one service, attempt by attempt, and judge every attempt.

Owns `Runner`: the loop over the planned tests' attempts (which attempt runs next, on which
connection), the run's stop rules (interrupt, --fail-fast, --halt), and the per-server section of
the report. How one attempt runs lives elsewhere, one idea per module:

    planned.py         Planned, RunOptions, ProgressSink: what the run is asked to do
    execution.py       one run of a case through `cc_executor.client`: request, events, guards
    observed.py        what one run saw (LiveJob, Observed), the input of judging
    attempt_record.py  judging one run into its Attempt record; attempts that never ran a job
    instance_runs.py   one attempt of an instances test: K instances at once, the best one wins
    leftovers.py       the job tag, and ending a job's leftover processes on this host
    outcomes.py        folding each test's attempts into its Outcome (stress.report.results)

`run()` runs a plan against one service (N workers, one connection each, taking (test, attempt)
items in suite order); `run_item` is one such step, which the load driver (stress.run.driver) and
a fleet worker's task (stress.cluster.task: one attempt on the worker's own executor) call too.
A fleet run records attempts that ran on its workers with `take`, judged and counted alike.
Whether an attempt lost its connection is a typed flag (`Execution.lost`, set where
`ConnectionLost` is caught), never read off the message.

The names other modules import from here stay importable from here (`Planned`, `RunOptions`,
`invocation_summary`, `CLAUDE_CAPABILITY`, `JOB_TAG_VAR`, `end_leftovers`, `tagged_processes`, ...).

Must not import: the service's internals (`cc_executor.jobs/server/process/tree/registry`); the
service is reached only through `cc_executor.client` and the shared libraries (`aio`, `load`,
`timing`, `protocol`, `settings`, `claude_cli`).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cc_executor import aio
from cc_executor.client import ExecutorClient
from stress.report.results import FAILED, PASSED, Outcome
from stress.run import attempt_record
from stress.run.attempt_record import Execution, make_preview, printable
from stress.run.execution import CaseExecutor, job_argv
from stress.run.flaky import halt_reason
from stress.run.instance_runs import run_instances
from stress.run.leftovers import (
    JOB_TAG_VAR,
    LEFTOVER_WAIT,
    end_leftovers,
    tagged_processes,
)
from stress.run.outcomes import fold
from stress.run.planned import (
    CANCEL_WAIT,
    CLAUDE_CAPABILITY,
    GUARD_GRACE,
    PREVIEW_CHARS,
    QUEUE_LIMIT,
    REQUEST_TIMEOUT,
    NoProgress,
    Planned,
    ProgressSink,
    RunOptions,
    invocation_summary,
)
from stress.suite import claude_stream as claude_mod


class Runner:
    """Runs `plan` with `concurrency` workers, one client connection each."""

    def __init__(
        self,
        url: str,
        token: str | None,
        plan: Sequence[Planned],
        report_dir: Path,
        options: RunOptions | None = None,
        *,
        progress: ProgressSink | None = None,
        monitor: Any = None,
        service: Any = None,
    ) -> None:
        self.url = url
        self.token = token
        self.plan = list(plan)
        self.report_dir = Path(report_dir)
        self.outputs = self.report_dir / "outputs"
        self.options = options or RunOptions()
        self.progress = progress or NoProgress()
        self.monitor = monitor
        self.service = service
        self.stop_reason: str | None = None
        self.interrupted = False
        self.halted: str | None = None
        """Why --halt stopped the run (None when it did not)."""
        self.aborted: str | None = None
        """Why a threshold marked :abort stopped the run (None when none did)."""
        self.server_name = url
        self._running: dict[str, asyncio.Task] = {}
        self._results: dict[tuple[int, int], Execution] = {}
        self._fails: collections.Counter[int] = collections.Counter()
        self._done = 0
        self._failed = 0
        self._total = 0
        self._busy = 0.0
        self._t0 = 0.0
        self._last_end: float | None = None
        self.claude_streams: list[claude_mod.StreamSummary] = []
        self.fleet_stats: dict[str, Any] | None = None
        """A cluster run's per-worker section (stress.cluster), reported as it is."""
        self._executor = CaseExecutor(
            self.options, self.outputs, self.report_dir.name, self.progress, monitor=monitor,
            service=service, state=self, claude_streams=self.claude_streams)

    # ---- control ---------------------------------------------------------------------------

    def interrupt(self, why: str) -> None:
        """Stop taking work and cancel every running attempt (each records what it had)."""
        self.interrupted = True
        if self.stop_reason is None:
            self.stop_reason = why
        for task in list(self._running.values()):
            task.cancel()

    def abort(self, why: str) -> None:
        """A threshold marked `:abort` was crossed: start nothing new and cancel the running
        attempts, which are reported cancelled (as with --halt now), not failed."""
        self.aborted = why
        if self.halted is None:
            self.halted = why  # what a cancelled attempt says it was cancelled by
        if self.stop_reason is None:
            self.stop_reason = why
        note = getattr(self.progress, "note", None)
        if note is not None:
            note(f"ABORT {why}")
        for task in list(self._running.values()):
            task.cancel()

    def _halt(self, why: str, *, now: bool) -> None:
        """--halt fired: start nothing new; with `now`, cancel the running attempts too."""
        if self.halted is None:
            self.halted = why
        if self.stop_reason is None:
            self.stop_reason = why
        note = getattr(self.progress, "note", None)
        if note is not None:
            note(f"HALT {why}")
        if now:
            for task in list(self._running.values()):
                task.cancel()

    def _count(self, idx: int, planned: Planned, ex: Execution, *, halt_rule: bool) -> None:
        """After each attempt: the --fail-fast rule, and (single service) the --halt rule."""
        status = ex.attempt.status
        if status not in (PASSED, FAILED):
            return
        self._done += 1
        if status == FAILED:
            self._failed += 1
            self._fails[idx] += 1
            need = planned.threshold.required(planned.repeat)
            if self.options.fail_fast and self._fails[idx] > planned.repeat - need:
                if self.stop_reason is None:
                    self.stop_reason = f"--fail-fast: stopped after {planned.test.id} failed"
        rule = self.options.halt
        if halt_rule and rule is not None and self.halted is None and not self.interrupted:
            when = rule.should_halt(self._done, self._failed, self._total)
            if when is not None:
                self._halt(halt_reason(rule, self._done, self._failed), now=when == "now")

    # ---- one service -----------------------------------------------------------------------

    def _work(self) -> list[tuple[int, int]]:
        return [(i, n) for i, p in enumerate(self.plan) if p.skip is None
                for n in range(1, p.repeat + 1)]

    async def run(self) -> list[Outcome]:
        """Against one service: `concurrency` workers take (test, attempt) items in suite order."""
        self.outputs.mkdir(parents=True, exist_ok=True)
        queue: collections.deque[tuple[int, int]] = collections.deque(self._work())
        self._total = len(queue)
        self._t0 = time.monotonic()
        workers = max(1, min(self.options.concurrency, len(queue) or 1))
        await asyncio.gather(*(self._worker(queue) for _ in range(workers)))
        return self.outcomes()

    async def _worker(self, queue: collections.deque[tuple[int, int]]) -> None:
        client: ExecutorClient | None = None
        try:
            while queue and self.stop_reason is None:
                idx, n = queue.popleft()
                client = await self.run_item(client, idx, n)
        finally:
            if client is not None:
                await _close_quietly(client)

    async def run_item(self, client: ExecutorClient | None, idx: int, n: int
                       ) -> ExecutorClient | None:
        """Attempt `n` of planned test `idx` on `client` (None: connect first), recorded and
        counted (--fail-fast, --halt); the connection to reuse next. What a worker does per item,
        and what the load driver (stress.run.driver) starts whenever its profile allows."""
        planned = self.plan[idx]
        key = f"{planned.attempt_stem(n)}"
        task = asyncio.ensure_future(self._attempt(client, planned, n))
        self._running[key] = task
        t0 = time.monotonic()
        try:
            ex, client = await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the caller itself is being cancelled
            # Cancelled (interrupt, --halt now, :abort) before the attempt began.
            ex = attempt_record.not_run(planned, n, f"not run: {self.stop_reason}",
                                        interrupted=self.interrupted)
        finally:
            self._running.pop(key, None)
            self._busy += time.monotonic() - t0
            self._last_end = time.monotonic() - self._t0
        ex.attempt.server = self.server_name
        self._results[(idx, n)] = ex
        self._count(idx, planned, ex, halt_rule=True)
        return client

    def begin(self, expected: int = 0) -> None:
        """Before the load driver's first `run_item`: the outputs folder and the clock."""
        self.outputs.mkdir(parents=True, exist_ok=True)
        self._t0 = time.monotonic()
        self._total = expected

    def expect(self, total: int) -> None:
        """The attempts a load profile has started so far: what --halt percentages count over."""
        self._total = total

    def take(self, idx: int, n: int, ex: Execution) -> None:
        """Record attempt `n` of test `idx` that ran elsewhere (a cluster worker) and count it
        (--fail-fast, --halt) as if it had run here."""
        self._results[(idx, n)] = ex
        self._count(idx, self.plan[idx], ex, halt_rule=True)

    def recorded(self, idx: int, n: int) -> Execution | None:
        return self._results.get((idx, n))

    def record(self, idx: int, n: int, ex: Execution) -> None:
        """Record attempt `n` of test `idx` that the load driver never started."""
        self._results[(idx, n)] = ex

    @property
    def in_flight(self) -> int:
        """Attempts running now (an instances attempt counts once)."""
        return len(self._running)

    def executions(self) -> list[Execution]:
        """Every attempt recorded so far (the load driver measures them while the run goes)."""
        return list(self._results.values())

    async def _connect(self) -> ExecutorClient:
        # resume: a network blip reconnects and re-attaches the jobs (no gap, no duplicate)
        # instead of failing them; a service that is really gone is lost after 10 s of tries.
        # Not for a fleet task (RunOptions.resume False): its job ends with its connection.
        if not self.options.resume:
            return await ExecutorClient.connect(self.url, self.token, open_timeout=10.0,
                                                ping_timeout=None)
        return await ExecutorClient.connect(self.url, self.token, open_timeout=10.0,
                                            ping_timeout=None, resume=True,
                                            detach_timeout=30.0, resume_timeout=10.0)

    async def _attempt(self, client: ExecutorClient | None, p: Planned, n: int
                       ) -> tuple[Execution, ExecutorClient | None]:
        """One attempt (all instances, if the test has them). Returns the client to reuse: None
        after a lost connection, so the next attempt connects afresh."""
        stem = p.attempt_stem(n)
        if client is None:
            try:
                client = await aio.wait_for(self._connect(), 15.0)
            except asyncio.CancelledError:
                why = f"interrupted ({self.stop_reason})"
                return attempt_record.not_run(p, n, why, interrupted=True), None
            except Exception as e:  # noqa: BLE001 - any connect failure is this attempt's error
                return self._failed_to_start(p, n, stem, f"cannot connect to {self.url}: {e}"), None
        ex = await self._run_attempt(client, p, n)
        if ex.lost is not None:
            await _close_quietly(client)
            client = None
        return ex, client

    async def _run_attempt(self, client: ExecutorClient, p: Planned, n: int) -> Execution:
        """One attempt on `client`: the test itself, or all its instances at once."""
        stem = p.attempt_stem(n)
        inst = p.test.instances
        if inst is None:
            return await self._executor.execute(client, p, n, None, stem)

        def instance(i: int, instance_stem: str):
            return self._executor.execute(client, p, n, i, instance_stem)

        ex = await run_instances(instance, inst, stem)
        if ex.lost is None or not self.dispatched:  # a lost one may still run elsewhere
            a = ex.attempt
            self.progress.finished(stem, stem, a.status, a.reason, a.duration, a.message)
        return ex

    def _failed_to_start(self, p: Planned, n: int, stem: str, detail: str) -> Execution:
        ex = attempt_record.failed_to_start(p, n, detail)
        self.progress.finished(stem, stem, FAILED, ex.attempt.reason, 0.0, ex.attempt.message)
        return ex

    # ---- aggregation -----------------------------------------------------------------------

    def outcomes(self) -> list[Outcome]:
        """Every planned test's outcome so far (attempts not run say why, from the stop reason)."""
        return fold(self.plan, self._results, stop_reason=self.stop_reason,
                    interrupted=self.interrupted)

    def server_stats(self) -> dict[str, Any]:
        """The per-server section of the report: a cluster run's per-worker statistics, or the same shape
        for the one service of a single-service run."""
        if self.fleet_stats is not None:
            return self.fleet_stats
        ran = [e for e in self._results.values() if e.attempt.status in (PASSED, FAILED)]
        makespan = self._last_end or 0.0
        conc = max(1, min(self.options.concurrency, self._total or 1))
        return {
            "mode": "single", "makespan": round(makespan, 4),
            "fairness_cv": 0.0 if ran else None,
            "halted": self.halted, "retries_used": 0,
            "servers": [{
                "name": self.server_name, "url": self.url, "weight": 1.0, "concurrency": conc,
                "dealt": self._total, "tests_run": len(ran), "busy": round(self._busy, 4),
                "idle": round(max(0.0, makespan * conc - self._busy), 4), "steals_in": 0,
                "steals_out": 0, "retries": 0, "lost_items": 0,
                "completion": round(makespan, 4) if ran else None, "alive": True,
                "lost_reason": None, "lost_at": None, "rejoins": 0}],
        }


async def _close_quietly(client: ExecutorClient) -> None:
    """Close a connection, bounded and best effort (it may already be broken)."""
    try:
        await aio.wait_for(client.close(), 5)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing is best effort
        pass


# The Runner, plus the names importers of stress.run.runner used before the split (kept working).
__all__ = ["CANCEL_WAIT", "CLAUDE_CAPABILITY", "GUARD_GRACE", "JOB_TAG_VAR", "LEFTOVER_WAIT",
           "PREVIEW_CHARS", "QUEUE_LIMIT", "REQUEST_TIMEOUT", "Planned", "ProgressSink",
           "RunOptions", "Runner", "end_leftovers", "invocation_summary", "job_argv",
           "make_preview", "printable", "tagged_processes"]
