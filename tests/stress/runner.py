"""Run planned tests against a service through the public client, and judge every run.

Why the harness guards time itself although the service enforces the limits: the service is what
is under test. If it ever failed to report an end (a lost notification, a hung kill), a harness
that simply waited would hang too. So each run has two client-side deadlines, both later than the
service's by a grace period: nothing at all received for stall + grace, or total + grace since the
start. When one passes, the harness sends control CANCEL, waits a bounded time, gives up on the
job, and records which guard fired. A run can therefore never take longer than its limits plus a
fixed overhead.

Why outputs stream to disk as they arrive: a run that is interrupted, stalls or times out still
leaves its partial output byte-exact in outputs/, and the report can link to it.

Patterns are matched against stdout + stderr (seed 004's runner merged the two) and, for Claude
stream-json output, the assembled assistant text and the result text (see `stress.claude`).

Two ways to run a plan: `run()` against one service (N workers, one connection each, taking
(test, attempt) items in suite order), and `run_dispatched()` over several services through
`stress.dispatch.Dispatcher` (weighted dealing, work stealing, retries on lost servers). Both
judge every execution the same way and honour `--halt`; only the dispatched path turns a broken
connection into a retry elsewhere, because with one service there is nowhere else to go.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cc_executor import aio
from cc_executor.client import ConnectionLost, Event, ExecutorClient, ExecutorError, JobHandle
from cc_executor.load import read_load
from cc_executor.timing import Timeouts, load_factor, stretch_timeouts

from . import claude as claude_mod
from . import instances as instances_mod
from .dispatch import (CANCELLED, COMPLETED, ERROR, LOST as D_LOST, ClientPool, DispatchEvent,
                       Dispatcher, DispatchReport, ServerLost, ServerSpec, TestItem,
                       coefficient_of_variation)
from .flaky import HaltRule, classify, halt_reason
from .results import FAILED, LOST, PASSED, SKIPPED, Attempt, TestOutcome
from .suites import Test
from .verdict import PassThreshold, Reason, Verdict, judge, judge_repeats, pattern_coverage

GUARD_GRACE = 10.0
"""Seconds the client waits beyond a service limit before acting itself (service kill grace is 3 s)."""
CANCEL_WAIT = 10.0
"""Seconds to wait for the completion after the harness sends CANCEL."""
QUEUE_LIMIT = 960.0
"""Seconds a job may wait in the service's queue before the harness gives up (service: 900 s)."""
REQUEST_TIMEOUT = 30.0
"""Seconds for the service to answer an execute request."""
PREVIEW_CHARS = 1500
CLAUDE_CAPABILITY = "claude"


class ProgressSink(Protocol):
    def started(self, key: str, label: str) -> None: ...
    def finished(self, key: str, label: str, status: str, reason: str, duration: float,
                 message: str) -> None: ...


class _NoProgress:
    def started(self, key: str, label: str) -> None:
        pass

    def finished(self, *a: Any, **k: Any) -> None:
        pass


@dataclass(frozen=True)
class Planned:
    """A test as it will run: its suite, where its outputs go, repeats and threshold in effect."""

    suite: str
    test: Test
    stem: str
    """Output path stem under outputs/ (the test id; "<suite>/<id>" when ids clash)."""
    repeat: int
    threshold: PassThreshold
    uses_claude: bool
    skip: str | None = None
    """Why this test will not run (unmet requirement), or None."""
    median: float | None = None
    """Median duration of the test's recent passed attempts in the history (None: unknown)."""
    learned_timeout: dict[str, Any] | None = None
    """Set by --learned-timeouts: {percent, median, learned, configured}; `test.timeout` is then
    the learned limit."""

    def attempt_stem(self, attempt: int) -> str:
        return self.stem if self.repeat == 1 else f"{self.stem}.{attempt}"

    @property
    def label(self) -> str:
        return self.test.id


@dataclass
class RunOptions:
    concurrency: int = 1
    fail_fast: bool = False
    model_env: Mapping[str, str | None] = field(default_factory=dict)
    claude_env: Mapping[str, str | None] = field(default_factory=dict)
    """Added for tests that use Claude (e.g. PATH to the CLI for `sh -c "claude ..."`)."""
    guard_grace: float = GUARD_GRACE
    cancel_wait: float = CANCEL_WAIT
    queue_limit: float = QUEUE_LIMIT
    preview_chars: int = PREVIEW_CHARS
    halt: HaltRule | None = None
    """--halt: counted over attempts that ran (passed or failed; lost ones count as failed)."""
    steal: bool = True
    max_retries_per_test: int = 2
    """Dispatched runs: how often one attempt may move to another server after a loss."""
    retry_budget: int | None = None
    """Dispatched runs: how many such moves the whole run may make (None: no run-wide limit)."""


def invocation_summary(test: Test, limit: int = 120) -> str:
    """One line saying what a test runs (prompt first when there is one)."""
    if test.prompt is not None and test.kind == "prompt":
        text = f"prompt: {test.prompt}"
    elif test.command is not None:
        text = test.command
    else:
        import shlex

        text = shlex.join(test.args or ())
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


JOB_TAG_VAR = "STRESS_JOB"
"""Every job gets STRESS_JOB=<report dir>/<output stem>. Everything it starts inherits it (the
Claude CLI hands its environment to Bash tool commands, which may setsid or nohup away from its
group), so after the service reports the end, a managed (same-host) run can check that nothing
of the job is left: any survivor fails the attempt (reason leftover_processes) and is killed."""
LEFTOVER_WAIT = 2.0
"""Seconds a tagged process may take to finish dying after the completion before it counts."""


def tagged_processes(tag: str) -> dict[int, str]:
    """Live processes on this host whose environment holds STRESS_JOB=<tag>: pid -> command line."""
    needle = f"{JOB_TAG_VAR}={tag}".encode()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                found[int(entry.name)] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
    return found


def end_leftovers(tag: str, wait: float = LEFTOVER_WAIT) -> list[str]:
    """Tagged processes still alive `wait` s after the job ended, SIGKILLed by pid: "pid: cmdline"."""
    deadline = time.monotonic() + wait
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return [f"{pid}: {cmd[:160]}" for pid, cmd in sorted(left.items())]


def job_argv(command: str | None, args: Sequence[str] | None) -> list[str]:
    """What the service is asked to run: a command string goes through /bin/sh -c."""
    if command is not None:
        return ["/bin/sh", "-c", command]
    return list(args or ())


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(text: str) -> str:
    """Control characters (other than newline, tab and CR) as U+FFFD: previews must not drive a terminal."""
    return _CONTROL.sub("\ufffd", text)


def make_preview(stdout: bytes, stderr: bytes, stream: claude_mod.StreamSummary | None,
                 limit: int = PREVIEW_CHARS) -> str:
    """Head and tail of the output (Claude: the answer text first), at most about `limit` chars."""
    def clip(text: str, n: int) -> str:
        if len(text) <= n:
            return text
        head = n * 2 // 3
        return f"{text[:head]}\n... ({len(text) - n:,} characters omitted) ...\n{text[-(n - head):]}"

    parts = []
    if stream is not None and stream.is_stream_json:
        answer = stream.result_text or stream.assistant_text
        if answer:
            parts.append("[claude answer]\n" + clip(answer, limit // 2))
    parts.append(clip(stdout.decode("utf-8", "replace"), limit))
    if stderr:
        parts.append("[stderr]\n" + clip(stderr.decode("utf-8", "replace"), limit // 3))
    return printable("\n".join(p for p in parts if p))


def _connection_lost(e: BaseException) -> str:
    text = str(e)
    return text if text.startswith("connection lost") else f"connection lost: {text}"


class _Live:
    """The state of one running job, updated by the event consumer."""

    def __init__(self, out, err) -> None:
        self.out_file, self.err_file = out, err
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.out_batches = 0
        self.err_batches = 0
        self.queued_at = time.monotonic()
        self.started: float | None = None
        self.last: float = time.monotonic()
        self.completed: dict | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.guard: str | None = None
        self.queue_reason: str | None = None
        self.ended: float | None = None

    def on_event(self, ev: Event) -> None:
        if ev.kind == "output":
            data = ev.data
            if ev.stream == "stderr":
                self.err_file.write(data)
                self.stderr += data
                self.err_batches += 1
            else:
                self.out_file.write(data)
                self.stdout += data
                self.out_batches += 1
            self.last = ev.received
        elif ev.kind == "started":
            self.started = self.last = ev.received
            self.pid, self.pgid = ev.params.get("pid"), ev.params.get("pgid")
        elif ev.kind == "queued":
            self.queue_reason = ev.params.get("reason")
        elif ev.kind == "completed":
            self.completed = ev.params
            self.ended = ev.received


@dataclass
class _Exec:
    """One execution's attempt plus what instance picking ranks by."""

    attempt: Attempt
    verdict: Verdict
    cost: float | None
    coverage: float
    lost: str | None = None
    """Set when the connection to the service broke (or it stopped answering): in a dispatched
    run this becomes ServerLost, so the attempt is retried on another server."""


def _in_force(job: JobHandle, factor: float, limits: Timeouts) -> tuple[float, Timeouts]:
    """The stretch factor and limits the service applied when the job started (the one rule of
    `cc_executor.timing`, on the service's host); ours, from this host's load, until it says
    (a queued job) or when it never does (a service that does not report them)."""
    if job.timeout_factor is None:
        return factor, limits
    return job.timeout_factor, Timeouts(job.timeout, job.stall_timeout)


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
        self.progress = progress or _NoProgress()
        self.monitor = monitor
        self.service = service
        self.stop_reason: str | None = None
        self.interrupted = False
        self.halted: str | None = None
        """Why --halt stopped the run (None when it did not)."""
        self.server_name = url
        self.dispatch_report: DispatchReport | None = None
        self._dispatcher: Dispatcher | None = None
        self._running: dict[str, asyncio.Task] = {}
        self._results: dict[tuple[int, int], _Exec] = {}
        self._fails: collections.Counter[int] = collections.Counter()
        self._done = 0
        self._failed = 0
        self._total = 0
        self._busy = 0.0
        self._t0 = 0.0
        self._last_end: float | None = None
        self.claude_streams: list[claude_mod.StreamSummary] = []

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

    def _count(self, idx: int, planned: Planned, ex: _Exec, *, halt_rule: bool) -> None:
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

    # ---- the run ---------------------------------------------------------------------------

    def _work(self) -> list[tuple[int, int]]:
        return [(i, n) for i, p in enumerate(self.plan) if p.skip is None
                for n in range(1, p.repeat + 1)]

    async def run(self) -> list[TestOutcome]:
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
                planned = self.plan[idx]
                key = f"{planned.attempt_stem(n)}"
                task = asyncio.ensure_future(self._attempt(client, planned, n))
                self._running[key] = task
                t0 = time.monotonic()
                try:
                    ex, client = await task
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise  # this worker itself is being cancelled
                    # Cancelled (interrupt or --halt now) before the attempt began.
                    ex = self._not_run(planned, n, f"not run: {self.stop_reason}",
                                       interrupted=self.interrupted)
                finally:
                    self._running.pop(key, None)
                    self._busy += time.monotonic() - t0
                    self._last_end = time.monotonic() - self._t0
                ex.attempt.server = self.server_name
                self._results[(idx, n)] = ex
                self._count(idx, planned, ex, halt_rule=True)
        finally:
            if client is not None:
                try:
                    await aio.wait_for(client.close(), 5)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing is best effort
                    pass

    async def _connect(self) -> ExecutorClient:
        return await ExecutorClient.connect(self.url, self.token, open_timeout=10.0,
                                            ping_timeout=None)

    async def _attempt(self, client: ExecutorClient | None, p: Planned, n: int
                       ) -> tuple[_Exec, ExecutorClient | None]:
        """One attempt (all instances, if the test has them). Returns the client to reuse."""
        stem = p.attempt_stem(n)
        if client is None:
            try:
                client = await aio.wait_for(self._connect(), 15.0)
            except asyncio.CancelledError:
                return self._not_run(p, n, f"interrupted ({self.stop_reason})", interrupted=True), None
            except Exception as e:  # noqa: BLE001 - any connect failure is this attempt's error
                return self._failed_to_start(p, n, stem, f"cannot connect to {self.url}: {e}"), None
        ex = await self._run_attempt(client, p, n)
        if ex.lost is not None:
            try:
                await aio.wait_for(client.close(), 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                pass
            client = None
        return ex, client

    async def _run_attempt(self, client: ExecutorClient, p: Planned, n: int) -> _Exec:
        """One attempt on `client`: the test itself, or all its instances at once."""
        stem = p.attempt_stem(n)
        if p.test.instances is None:
            return await self._execute(client, p, n, None, stem)
        return await self._instances(client, p, n, stem)

    async def _instances(self, client: ExecutorClient, p: Planned, n: int, stem: str) -> _Exec:
        """Run the `count` instances at once; the best eligible one is the attempt's result."""
        inst = p.test.instances
        assert inst is not None
        tasks = [asyncio.ensure_future(self._execute(client, p, n, i, f"{stem}.i{i + 1}"))
                 for i in range(inst.count)]
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            # Interrupt or --halt now: each instance records what it had (bounded), then we
            # report the attempt as cut short instead of losing every instance's output.
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
            me = asyncio.current_task()
            if me is not None:
                me.uncancel()
        runs = [t.result() for t in tasks]
        lost = next((r.lost for r in runs if r.lost is not None), None)
        cut = any(r.attempt.interrupted for r in runs)
        ranked = [
            instances_mod.InstanceRun(
                index=i, eligible=not cut and instances_mod.why_not_eligible(r.verdict) is None,
                duration=r.attempt.duration, size=r.attempt.stdout_bytes, cost=r.cost,
                patterns_found=len(r.attempt.patterns_found),
                patterns_total=len(r.attempt.patterns_found) + len(r.attempt.patterns_missing),
                why_not="cut short" if cut else instances_mod.why_not_eligible(r.verdict))
            for i, r in enumerate(runs)]
        sel = instances_mod.select(inst.criterion, ranked)
        summary = []
        for i, r in enumerate(runs):
            v = inst.variant_for(i)
            summary.append({
                "instance": i + 1, "label": v.label if v else None,
                "model": v.model if v else None, "temperature": v.temperature if v else None,
                "status": r.attempt.status, "reason": r.attempt.reason,
                "exit_code": r.attempt.exit_code, "end_reason": r.attempt.end_reason,
                "duration": round(r.attempt.duration, 4), "stdout_bytes": r.attempt.stdout_bytes,
                "cost_usd": r.cost, "coverage": round(r.coverage, 4),
                "patterns_found": ranked[i].patterns_found,
                "patterns_total": ranked[i].patterns_total,
                "eligible": ranked[i].eligible, "why_not": ranked[i].why_not,
                "stdout_path": r.attempt.stdout_path, "chosen": i == sel.winner,
            })
        if sel.winner is not None:
            best = runs[sel.winner]
            a = replace(best.attempt, instances=summary, instance_selection=sel.to_json(),
                        message=f"{best.attempt.message} [instance {sel.winner + 1} of "
                                f"{inst.count}, picked by {inst.criterion}]")
            return replace(best, attempt=a, lost=lost)
        # Nothing eligible: the attempt fails (or, cut short, counts as not run) with the first
        # instance's outputs as its representative.
        first = runs[0]
        a = replace(first.attempt, instances=summary, instance_selection=sel.to_json(),
                    message=f"{sel.why}; first instance: {first.attempt.message}")
        return replace(first, attempt=a, lost=lost)

    # ---- one execution ---------------------------------------------------------------------

    async def _execute(self, client: ExecutorClient, p: Planned, n: int, instance: int | None,
                       stem: str) -> _Exec:
        test = p.test
        reading = read_load()
        factor = load_factor(reading.load1, reading.cores)
        limits = stretch_timeouts(test.timeout, test.stall_timeout, factor)
        inv = test.invocation(instance)
        argv = job_argv(inv.command, inv.args)
        env: dict[str, str | None] = {**self.options.model_env}
        if p.uses_claude:
            env.update(self.options.claude_env)
        env.update(inv.env)
        env.update({"STRESS_TEST_ID": test.id, "STRESS_ATTEMPT": str(n)})
        tag = env[JOB_TAG_VAR] = f"{self.report_dir.name}/{stem}"
        if instance is not None:
            env["STRESS_INSTANCE"] = str(instance + 1)
        if p.uses_claude and "CLAUDECODE" not in inv.env:
            env["CLAUDECODE"] = None  # the CLI refuses to run "inside" another Claude Code session
        out_path = self.outputs / f"{stem}.stdout"
        err_path = self.outputs / f"{stem}.stderr"
        out_path.parent.mkdir(parents=True, exist_ok=True)
        label = stem
        self.progress.started(stem, label)
        if self.monitor is not None:
            self.monitor.begin(stem)
        started_at = time.time()
        t0 = time.monotonic()
        detail: str | None = None
        lost: str | None = None
        interrupted = False
        job: JobHandle | None = None
        # Unbuffered: what arrived is on disk at once, even if the harness is killed.
        with open(out_path, "wb", buffering=0) as fo, open(err_path, "wb", buffering=0) as fe:
            live = _Live(fo, fe)
            consumer: asyncio.Task | None = None
            try:
                try:
                    job = await aio.wait_for(
                        client.start(args=argv, cwd=test.cwd, env=env, input=test.input,
                                     timeout=test.timeout, stall_timeout=test.stall_timeout),
                        REQUEST_TIMEOUT)
                except ConnectionLost:
                    raise
                except ExecutorError as e:
                    detail = f"the service refused the job: {e.message}"
                    if e.data:
                        detail += f" ({e.data})"
                except asyncio.TimeoutError:
                    detail = f"the service did not answer the execute request within {REQUEST_TIMEOUT:g} s"
                    lost = detail
                else:
                    if not job.queued:
                        live.started = live.last = time.monotonic()
                        live.pid, live.pgid = job.pid, job.pgid
                        self._note_job(stem, live)
                    consumer = asyncio.ensure_future(self._consume(job, live, stem))
                    detail = await self._follow(job, consumer, live, limits)
                    factor, limits = _in_force(job, factor, limits)
                    if detail is not None and detail.startswith("connection lost"):
                        lost = detail
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None:
                    me.uncancel()  # we handle it: record what the run had, then return
                interrupted = True
                if self.halted is not None and not self.interrupted:
                    detail = f"cancelled: {self.halted}"
                else:
                    detail = f"interrupted ({self.stop_reason or 'cancelled'})"
                await self._cancel_job(job, consumer)
            except ConnectionLost as e:
                detail = _connection_lost(e)
                lost = detail
            finally:
                if consumer is not None:
                    if not consumer.done():
                        consumer.cancel()
                    # Always collect its end: after an interrupt the consumer may have ended with
                    # ConnectionLost (a second Ctrl-C killed the service) while nobody looked, and
                    # asyncio would print "Task exception was never retrieved" at exit.
                    await asyncio.gather(consumer, return_exceptions=True)
        wall = time.monotonic() - t0
        resources = self.monitor.end(stem) if self.monitor is not None else None
        leftovers: list[str] = []
        if job is not None and getattr(self.service, "managed", False):
            # Interrupted by the user: no grace for the tree to finish dying (a second Ctrl-C
            # must not wait); what is left is killed now, and the attempt is not judged anyway.
            wait = 0.0 if interrupted and self.interrupted else LEFTOVER_WAIT
            try:
                leftovers = await asyncio.to_thread(end_leftovers, tag, wait)
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None:
                    me.uncancel()
                interrupted, detail = True, detail or f"interrupted ({self.stop_reason or 'cancelled'})"
        ex = self._finish(p, n, instance, stem, live, limits, factor, reading.load1, started_at,
                          wall, detail, interrupted, job, resources, lost=lost, leftovers=leftovers)
        ex.lost = None if interrupted else lost
        return ex

    def _note_job(self, stem: str, live: _Live) -> None:
        if self.monitor is not None:
            self.monitor.set_job(stem, live.pid, live.pgid)
        if self.service is not None:
            self.service.note_job(live.pid)

    async def _consume(self, job: JobHandle, live: _Live, stem: str) -> None:
        async for ev in job:
            live.on_event(ev)
            if ev.kind == "started":
                self._note_job(stem, live)
            elif ev.kind == "queued":
                note = getattr(self.progress, "note", None)
                if note is not None:
                    note(f"QUEUE {stem}: the service queued the job ({live.queue_reason})")

    async def _follow(self, job: JobHandle, consumer: asyncio.Task, live: _Live,
                      limits: Timeouts) -> str | None:
        """Wait for the completion under the client-side guards. Returns an error detail or None."""
        grace = self.options.guard_grace
        while True:
            now = time.monotonic()
            if live.started is None:
                deadline, which = live.queued_at + self.options.queue_limit, "queue"
            else:
                _, limits = _in_force(job, 1.0, limits)
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
                    return f"waited over {self.options.queue_limit:g} s in the service's queue"
                return None
            timeout = None if deadline is None else max(0.0, deadline - now)
            done, _ = await asyncio.wait({consumer}, timeout=timeout)
            if done:
                exc = consumer.exception()
                if exc is not None:
                    if isinstance(exc, ConnectionLost):
                        return _connection_lost(exc)
                    return f"{type(exc).__name__}: {exc}"
                return None

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

    # ---- judging ---------------------------------------------------------------------------

    def _finish(self, p: Planned, n: int, instance: int | None, stem: str, live: _Live,
                limits: Timeouts, factor: float, load1: float, started_at: float,
                wall: float, detail: str | None, interrupted: bool, job: JobHandle | None,
                resources: dict | None, *, lost: str | None = None,
                leftovers: Sequence[str] = ()) -> _Exec:
        test = p.test
        was_queued = bool(job is not None and job.queued)
        queue_wait = None
        duration = wall
        if was_queued and live.started is not None:
            queue_wait = live.started - live.queued_at
            duration = max(0.0, wall - queue_wait)
        c = live.completed or {}
        exit_code = c.get("exit_code")
        if interrupted:
            end = "cancelled"
        elif live.guard in ("stall", "deadline"):
            end = "stalled" if live.guard == "stall" else "timeout"
        elif live.guard == "queue" or not c:
            end = "error"
            detail = detail or "the service sent no completion"
        else:
            r = c.get("reason")
            if r in ("exited", "signalled", "timeout", "stalled", "cancelled", "shutdown"):
                end = r
                if r in ("cancelled", "shutdown"):
                    detail = detail or (c.get("error") or c.get("message")) or f"the service ended the job ({r})"
            else:
                end = "error"
                detail = (c.get("error") or c.get("message")) or f"the service ended the job: {r}"
            if end in ("exited", "signalled") and exit_code is None:
                end, detail = "error", "completion without an exit code"
        stdout, stderr = bytes(live.stdout), bytes(live.stderr)
        stream = None
        if p.uses_claude or stdout.lstrip()[:1] == b"{":
            stream = claude_mod.parse_stream(stdout)
            if not stream.is_stream_json:
                stream = None if not p.uses_claude else stream
        text = stdout.decode("utf-8", "replace")
        err_text = stderr.decode("utf-8", "replace")
        hay = text + "\n" + err_text
        if stream is not None and stream.is_stream_json:
            hay += "\n" + stream.matchable_text
            self.claude_streams.append(stream)
        if interrupted:
            # Cut short by the user: not a verdict on the test, so it counts as not run.
            verdict = judge(test, None, "skipped", hay, detail=detail)
        else:
            verdict = judge(test, exit_code, end, hay, detail=detail, leftovers=leftovers)
        notes = [verdict.message]
        if end == "timeout" and limits.total is not None:
            notes.append(f"limit used {limits.total:.3g} s = {test.timeout:g} s x {factor:.2f}")
        if end == "stalled" and limits.stall is not None:
            notes.append(f"stall limit used {limits.stall:.3g} s = {test.stall_timeout:g} s x {factor:.2f}")
        if end in ("timeout", "stalled"):
            notes.append(f"partial output kept ({len(stdout):,} bytes stdout, {len(stderr):,} bytes stderr)")
        if live.guard in ("stall", "deadline"):
            notes.append(f"the harness's {live.guard} guard fired: no completion from the service "
                         f"within {self.options.guard_grace:g} s after its limit; job cancelled")
        cli_failure = None
        if p.uses_claude and not verdict.passed and not interrupted:
            tail = "\n".join(line for line in text[-4096:].splitlines() if not line.startswith("{"))
            cf = claude_mod.classify_failure(
                exit_code if end in ("exited", "signalled") else None, stderr, stream,
                end_reason=end if end in ("exited", "signalled") else end,
                stdout_tail=tail + ("\n" + detail if detail else ""))
            if cf is not None:
                cli_failure = cf.to_json()
                notes.append(f"claude: {cf.message}")
        status = SKIPPED if interrupted else PASSED if verdict.passed else FAILED
        reason = verdict.reason.value
        if interrupted and self.halted is not None and not self.interrupted:
            reason = "cancelled"
        attempt = Attempt(
            attempt=n, status=status, reason=reason, message="; ".join(notes),
            end_reason=end, exit_code=exit_code, signal=c.get("signal"), started_at=started_at,
            duration=duration, service_duration=c.get("duration"), load1=load1, factor=factor,
            timeout=limits.total, stall_timeout=limits.stall, stdout_bytes=len(stdout),
            stderr_bytes=len(stderr), stdout_batches=live.out_batches,
            stderr_batches=live.err_batches, stdout_path=f"outputs/{stem}.stdout",
            stderr_path=f"outputs/{stem}.stderr",
            preview=make_preview(stdout, stderr, stream, self.options.preview_chars),
            job_id=job.job_id if job is not None else None, pid=live.pid,
            queued=was_queued, queue_wait=queue_wait, wall=wall, guard=live.guard,
            interrupted=interrupted, patterns_found=list(verdict.patterns_found),
            patterns_missing=list(verdict.patterns_missing),
            patterns_required=verdict.patterns_required,
            forbidden_seen=list(verdict.forbidden_seen),
            failures=[f.value for f in verdict.failures],
            claude=stream.to_json() if stream is not None else None,
            cli_failure=cli_failure, resources=resources,
        )
        requeued = getattr(self.progress, "requeued", None)
        if lost is not None and not interrupted and self._dispatcher is not None and requeued:
            requeued(stem, stem, lost)  # the dispatcher decides: retry elsewhere, or lost
        else:
            self.progress.finished(stem, stem, status, attempt.reason, duration, attempt.message)
        cov = pattern_coverage(test.expected_patterns, hay).ratio if test.expected_patterns else 1.0
        return _Exec(attempt, verdict, stream.total_cost_usd if stream else None, cov)

    def _failed_to_start(self, p: Planned, n: int, stem: str, detail: str) -> _Exec:
        verdict = judge(p.test, None, "error", "", detail=detail)
        a = Attempt(attempt=n, status=FAILED, reason=verdict.reason.value, message=verdict.message,
                    end_reason="error", failures=[f.value for f in verdict.failures],
                    started_at=time.time())
        self.progress.finished(stem, stem, FAILED, a.reason, 0.0, a.message)
        return _Exec(a, verdict, None, 0.0)

    def _not_run(self, p: Planned, n: int, why: str, *, interrupted: bool = False,
                 reason: str = Reason.SKIPPED.value) -> _Exec:
        verdict = judge(p.test, None, "skipped", "", detail=why)
        a = Attempt(attempt=n, status=SKIPPED, reason=reason, message=verdict.message,
                    end_reason="skipped", interrupted=interrupted, failures=["skipped"])
        return _Exec(a, verdict, None, 0.0)

    def _lost(self, p: Planned, n: int, why: str, tries: list[str], server: str | None) -> _Exec:
        """An attempt no server could finish: not judged (like skipped), but reported as lost."""
        verdict = judge(p.test, None, "skipped", "", detail=why)
        a = Attempt(attempt=n, status=LOST, reason=LOST, message=f"lost: {why}", end_reason=LOST,
                    failures=[LOST], server=server, tries=list(tries))
        self.progress.finished(p.attempt_stem(n), p.attempt_stem(n), LOST, LOST, 0.0, a.message)
        return _Exec(a, verdict, None, 0.0)

    # ---- aggregation -----------------------------------------------------------------------

    def outcomes(self) -> list[TestOutcome]:
        out = []
        for idx, p in enumerate(self.plan):
            t = p.test
            o = TestOutcome(
                suite=p.suite, id=t.id, name=t.name, tags=list(t.tags), source=str(t.source),
                kind=t.kind, invocation=invocation_summary(t), requires=list(t.requires),
                timeout=t.timeout, stall_timeout=t.stall_timeout, repeat=p.repeat,
                output_stem=p.stem,
            )
            execs: list[_Exec] = []
            for n in range(1, p.repeat + 1):
                ex = self._results.get((idx, n))
                if ex is None:
                    if p.skip is not None:
                        why = p.skip
                    elif self.stop_reason:
                        why = f"not run: {self.stop_reason}"
                    else:
                        why = "not run"
                    ex = self._not_run(p, n, why, interrupted=self.interrupted and p.skip is None)
                execs.append(ex)
            o.attempts = [e.attempt for e in execs]
            o.learned_timeout = p.learned_timeout
            o.stability = classify([a.status for a in o.attempts], p.threshold).to_json()
            rv = judge_repeats(p.threshold, [e.verdict for e in execs])
            o.passes, o.runs, o.required = rv.passes, rv.runs, rv.required
            lost = [e.attempt for e in execs if e.attempt.status == LOST]
            if rv.runs == 0 and lost:
                o.status, o.reason = LOST, LOST
                o.message = lost[0].message
            elif rv.runs == 0:
                o.status = SKIPPED
                o.reason = execs[0].attempt.reason if execs[0].attempt.reason == "cancelled" else "skipped"
                o.message = execs[0].attempt.message
            elif rv.passed:
                o.status, o.reason = PASSED, "passed"
                o.message = execs[0].attempt.message if p.repeat == 1 else rv.message
            else:
                o.status = FAILED
                first_bad = next((e.attempt for e in execs if e.attempt.status == FAILED), execs[0].attempt)
                o.reason = first_bad.reason
                o.message = first_bad.message if p.repeat == 1 else \
                    f"{rv.message}; first failure (attempt {first_bad.attempt}): {first_bad.message}"
            if lost and rv.runs:
                o.message += f"; {len(lost)} attempt(s) lost"
            out.append(o)
        return out

    # ---- several services ------------------------------------------------------------------

    async def run_dispatched(
        self,
        servers: Sequence[ServerSpec],
        *,
        probe: Any = None,
        probe_interval: float = 5.0,
        max_probes: int = 12,
    ) -> list[TestOutcome]:
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

        async def run_one(spec: ServerSpec, item: TestItem) -> _Exec:
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
                ex = self._not_run(p, n, d.reason, interrupted=self.interrupted,
                                   reason="skipped" if self.interrupted else "cancelled")
            else:
                continue  # not run: outcomes() fills it in with the stop reason
            ex.attempt.server = d.server
            ex.attempt.tries = list(d.tries)
            self._results[(idx, n)] = ex
        return self.outcomes()

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
