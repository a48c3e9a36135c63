"""Run planned tests against one service or several, attempt by attempt, and judge every attempt.

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

Two ways to run a plan: `run()` against one service (N workers, one connection each, taking
(test, attempt) items in suite order), and `run_dispatched()` over several services through
`stress.dispatch.Dispatcher` (weighted dealing, work stealing, retries on lost servers). Both
judge every attempt the same way and honour `--halt`; only the dispatched path turns a broken
connection into a retry elsewhere, because with one service there is nowhere else to go. Whether
an attempt lost its connection is a typed flag (`Execution.lost`, set where `ConnectionLost` is
caught), never read off the message.

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
from stress.dispatch import (
    CANCELLED,
    COMPLETED,
    ERROR,
    ClientPool,
    Dispatcher,
    DispatchEvent,
    DispatchReport,
    ServerLost,
    ServerSpec,
    TestItem,
    coefficient_of_variation,
)
from stress.dispatch import LOST as D_LOST
from stress.report.results import FAILED, LOST, PASSED, Outcome
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
        self.dispatch_report: DispatchReport | None = None
        self._dispatcher: Dispatcher | None = None
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
        self._executor = CaseExecutor(
            self.options, self.outputs, self.report_dir.name, self.progress, monitor=monitor,
            service=service, state=self, claude_streams=self.claude_streams)

    @property
    def dispatched(self) -> bool:
        """The run goes through the dispatcher (several services)."""
        return self._dispatcher is not None

    # ---- control ---------------------------------------------------------------------------

    def interrupt(self, why: str) -> None:
        """Stop taking work and cancel every running attempt (each records what it had)."""
        self.interrupted = True
        if self.stop_reason is None:
            self.stop_reason = why
        if self._dispatcher is not None:
            self._dispatcher.stop(why, now=True)
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
        if self._dispatcher is not None:
            self._dispatcher.stop(why, now=True)
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
                    if self._dispatcher is not None:
                        self._dispatcher.stop(self.stop_reason)
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

        return await run_instances(instance, inst, stem)

    def _failed_to_start(self, p: Planned, n: int, stem: str, detail: str) -> Execution:
        ex = attempt_record.failed_to_start(p, n, detail)
        self.progress.finished(stem, stem, FAILED, ex.attempt.reason, 0.0, ex.attempt.message)
        return ex

    def _lost(self, p: Planned, n: int, why: str, tries: list[str], server: str | None) -> Execution:
        ex = attempt_record.lost(p, n, why, tries, server)
        stem = p.attempt_stem(n)
        self.progress.finished(stem, stem, LOST, LOST, 0.0, ex.attempt.message)
        return ex

    # ---- aggregation -----------------------------------------------------------------------

    def outcomes(self) -> list[Outcome]:
        """Every planned test's outcome so far (attempts not run say why, from the stop reason)."""
        return fold(self.plan, self._results, stop_reason=self.stop_reason,
                    interrupted=self.interrupted)

    # ---- several services ------------------------------------------------------------------

    async def run_dispatched(
        self,
        servers: Sequence[ServerSpec],
        *,
        probe: Any = None,
        probe_interval: float = 5.0,
        max_probes: int = 12,
    ) -> list[Outcome]:
        """Over several services: each (test, attempt) is one dispatch item, expected to take the
        test's history median (else its timeout); a broken connection is a lost server, and the
        attempt is retried elsewhere."""
        self.outputs.mkdir(parents=True, exist_ok=True)
        work = self._work()
        self._total = len(work)
        items = []
        for idx, n in work:
            p = self.plan[idx]
            expected = p.median if p.median is not None else p.test.timeout
            items.append(TestItem(p.attempt_stem(n), float(expected), p.test.timeout, (idx, n)))
        pool = ClientPool()

        async def run_one(spec: ServerSpec, item: TestItem) -> Execution:
            idx, n = item.payload
            p = self.plan[idx]
            async with pool.client(spec) as client:
                ex = await self._run_attempt(client, p, n)
                if ex.lost is not None:
                    raise ServerLost(spec.name, ex.lost)
            ex.attempt.server = spec.name
            self._count(idx, p, ex, halt_rule=False)  # --fail-fast; the dispatcher does --halt
            return ex

        self._dispatcher = Dispatcher(
            servers, run_one, steal=self.options.steal, halt=self.options.halt,
            max_retries_per_test=self.options.max_retries_per_test,
            retry_budget=self.options.retry_budget,
            is_failure=lambda ex: ex.attempt.status == FAILED,
            probe=probe, probe_interval=probe_interval, max_probes=max_probes,
            on_event=self._on_dispatch_event)
        if self.interrupted:
            self._dispatcher.stop(self.stop_reason or "interrupted", now=True)
        try:
            report = await self._dispatcher.run(items)
        finally:
            await pool.close()
        self._take_dispatch_report(report)
        return self.outcomes()

    def _take_dispatch_report(self, report: DispatchReport) -> None:
        """Record each dispatched item's end as its attempt: ran, lost, errored or cancelled."""
        self.dispatch_report = report
        if report.halted and self.stop_reason is None:
            self.stop_reason = report.halted
        for d in report.results:
            idx, n = d.item.payload
            p = self.plan[idx]
            if d.state in (COMPLETED, CANCELLED) and d.value is not None:
                ex = d.value
            elif d.state == D_LOST:
                ex = self._lost(p, n, d.reason, d.tries, d.server)
            elif d.state == ERROR:
                ex = self._failed_to_start(p, n, p.attempt_stem(n), f"harness error: {d.reason}")
            elif d.state == CANCELLED:
                ex = attempt_record.not_run(p, n, d.reason, interrupted=self.interrupted,
                                            reason="skipped" if self.interrupted else "cancelled")
            else:
                continue  # not run: outcomes() fills it in with the stop reason
            ex.attempt.server = d.server
            ex.attempt.tries = list(d.tries)
            self._results[(idx, n)] = ex

    def _on_dispatch_event(self, ev: DispatchEvent) -> None:
        if ev.kind == "halt":
            if self.stop_reason is None:  # the rule fired (stop() from us sets stop_reason first)
                self.stop_reason = ev.detail
                self.halted = ev.detail
        note = getattr(self.progress, "note", None)
        if note is None:
            return
        text = {
            "server_lost": f"SERVER LOST {ev.server}: {ev.detail}",
            "requeue": f"RETRY {ev.key} on {ev.server}: {ev.detail}",
            "steal": f"STEAL {ev.server} took {ev.detail}",
            "rejoin": f"REJOIN {ev.server}: {ev.detail}",
            "halt": f"HALT {ev.detail}",
        }.get(ev.kind)
        if text is not None:
            note(text)

    def server_stats(self) -> dict[str, Any]:
        """The per-server section of the report: the dispatcher's statistics, or the same shape
        for the one service of a single-service run."""
        if self.dispatch_report is not None:
            d = self.dispatch_report.to_json()
            d.pop("items", None)
            return {"mode": "dispatch", **d}
        ran = [e for e in self._results.values() if e.attempt.status in (PASSED, FAILED)]
        makespan = self._last_end or 0.0
        conc = max(1, min(self.options.concurrency, self._total or 1))
        return {
            "mode": "single", "makespan": round(makespan, 4),
            "fairness_cv": coefficient_of_variation([makespan]) if ran else None,
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
