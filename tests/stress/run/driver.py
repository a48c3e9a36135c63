"""Drive a `Runner` through a load profile, watch the run, and judge its thresholds.

Owns `LoadDriver`: it decides *when* the next attempt starts and leaves *how* to the Runner
(`Runner.run_item`, the same step a --concurrency worker takes), so every attempt is run, judged
and recorded exactly as in any other run. Three loops, one per profile (stress.run.profile):

- closed (`--stages`, each `--find-capacity` step): whenever fewer tests are in flight than the
  profile's target at this moment, start the next test of the suite, round-robin; otherwise wait
  until one ends or the target next changes. A ramp-down never cancels a running test.
- open (`--arrival-rate`): start i is due at i / rate; when it is due and `max_in_flight` tests
  are running it is dropped (counted, never delayed or retried); a late loop catches up.
- steps (`--find-capacity`): one closed loop per step at `step x k` in flight, then the step's
  attempts finish (bounded by their own limits), the step is judged (stress.run.capacity) and
  the search stops at the first step that does not hold.

An instances test takes one slot per instance. Alongside, a monitor samples the services' host
about once a second (the injected `probe`, stress.service.sampling) and checks every `:abort`
threshold over what has ended so far; a crossing aborts the run (`Runner.abort`). Without a
profile (--threshold with a fixed --concurrency) the Runner's own loop runs under the monitor.

Bounds: every loop ends by its profile's duration, `max_starts` and the stop rules; the waits
inside are at most `TICK` long, and the attempts themselves are bounded by their guards.

Must not import the service's internals; talks to the service only through the Runner.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from cc_executor import aio
from cc_executor.client import ExecutorClient
from stress.report.resources import downsample
from stress.report.results import Capacity, Outcome, ThresholdResult
from stress.report.text import fmt_metric
from stress.run import attempt_record
from stress.run.capacity import (
    StepResult,
    baseline_of,
    conclude,
    default_criteria,
    judge_step,
)
from stress.run.metrics import (
    Observation,
    Sample,
    Window,
    cores,
    measure,
    observe,
    summary,
)
from stress.run.plan import effective_threshold
from stress.run.profile import ArrivalRate, LoadPlan, Stages, StepSearch
from stress.run.runner import Runner
from stress.run.thresholds import Threshold, judge
from stress.run.units import fmt_duration

SAMPLE_INTERVAL = 1.0
"""Seconds between two samples of the host (and two checks of the :abort thresholds)."""
TICK = 0.25
"""The longest a loop waits without looking at the clock and the stop rules again."""
MAX_TIMELINE = 600
Probe = Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class LoadOutcome:
    """What the driver hands the session for the report."""

    outcomes: list[Outcome]
    profile: dict[str, Any] | None
    thresholds: list[ThresholdResult]
    capacity: Capacity | None


class LoadDriver:
    """One load run over `runner`'s plan (tests round-robin, repeated until the profile ends)."""

    def __init__(self, runner: Runner, load: LoadPlan, probe: Probe | None = None, *,
                 fixed_concurrency: int = 1) -> None:
        self.runner = runner
        self.load = load
        self.probe = probe
        self.fixed_concurrency = fixed_concurrency
        self.order = [i for i, p in enumerate(runner.plan) if p.skip is None]
        self.pos = 0
        self.counts: collections.Counter[int] = collections.Counter()
        self.dropped_by: collections.Counter[int] = collections.Counter()
        self.in_flight = self.peak_in_flight = self.starts = self.dropped = 0
        self.samples: list[Sample] = []
        self.timeline: list[list[float]] = []
        self.target_now: Callable[[], int | None] = lambda: None
        self.idle: list[ExecutorClient] = []
        self.tasks: set[asyncio.Task] = set()
        self.changed = asyncio.Event()
        self.stop_note: str | None = None
        self.window_start = 0.0
        self.window_starts = self.window_dropped = 0
        self.aborted: ThresholdResult | None = None
        self.baseline: dict[str, float | None] = {}
        """The first capacity step's values, what `2x` limits are relative to (none before)."""
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        if load.profile is not None:
            # Attempts are numbered (outputs <id>.<n>.stdout) up to the start cap; the real
            # count replaces it when the profile has ended.
            runner.plan = [replace(p, repeat=load.max_starts,
                                   threshold=effective_threshold(p.test, load.max_starts))
                           for p in runner.plan]
            runner.options.concurrency = load.profile.peak

    # ---- the clock, the stop rules, the round-robin -------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def stopping(self) -> bool:
        return self.runner.stop_reason is not None or self.stop_note is not None

    def slots(self, idx: int) -> int:
        inst = self.runner.plan[idx].test.instances
        return inst.count if inst is not None else 1

    def peek(self) -> int | None:
        return self.order[self.pos % len(self.order)] if self.order else None

    def take(self) -> int:
        idx = self.order[self.pos % len(self.order)]
        self.pos += 1
        return idx

    # ---- starting and ending attempts ---------------------------------------------------------

    def start(self, idx: int) -> bool:
        """Start the next attempt of `idx` now; False when the start cap is reached."""
        if self.starts >= self.load.max_starts:
            self.stop_note = f"--max-starts {self.load.max_starts} reached"
            return False
        self.counts[idx] += 1
        k = self.slots(idx)
        self.in_flight += k
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self.starts += 1
        self.window_starts += 1
        self.runner.expect(self.starts)
        task = asyncio.ensure_future(self._one(idx, self.counts[idx], k))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _one(self, idx: int, n: int, k: int) -> None:
        client = self.idle.pop() if self.idle else None
        try:
            client = await self.runner.run_item(client, idx, n)
        finally:
            self.in_flight -= k
            self.changed.set()
        if client is not None:
            self.idle.append(client)

    async def wait(self, seconds: float) -> None:
        """Until an attempt ends, or `seconds` (at most TICK) pass."""
        try:
            await aio.wait_for(self.changed.wait(), max(0.0, min(seconds, TICK)))
        except asyncio.TimeoutError:
            pass

    async def drain(self) -> None:
        """Every started attempt has ended (each is bounded by its own limits and guards)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    # ---- the three loops ----------------------------------------------------------------------

    async def closed(self, target: Callable[[float], int], next_change: Callable[[float], float | None],
                     start: float, duration: float) -> None:
        """Keep `target(t)` tests in flight (t from `start`) for `duration` seconds."""
        self.target_now = lambda: target(self.now() - start)
        while not self.stopping():
            self.changed.clear()
            t = self.now() - start
            idx = self.peek()
            if t >= duration or idx is None:
                break
            if self.in_flight + self.slots(idx) <= target(t):
                self.start(self.take())
                continue
            nxt = next_change(t)
            await self.wait((duration if nxt is None else min(nxt, duration)) - t)
        self.target_now = lambda: None

    async def open(self, profile: ArrivalRate) -> None:
        """Start i at i / rate, dropping a start that `max_in_flight` leaves no room for."""
        self.target_now = lambda: profile.max_in_flight
        for i in range(profile.total_starts):
            while not self.stopping() and self.now() < profile.start_time(i):
                await asyncio.sleep(max(0.0, min(profile.start_time(i) - self.now(), TICK)))
            if self.stopping() or self.peek() is None:
                break
            idx = self.take()
            if self.in_flight + self.slots(idx) > profile.max_in_flight:
                self.dropped += 1
                self.window_dropped += 1
                self.dropped_by[idx] += 1
                continue
            if not self.start(idx):
                break
        self.target_now = lambda: None

    async def search(self, search: StepSearch) -> Capacity:
        """Steps of step x k in flight until one does not hold (stress.run.capacity)."""
        criteria = self.load.thresholds or default_criteria(self.max_load())
        steps: list[StepResult] = []
        for k in range(search.max_steps):
            if self.stopping():
                break
            c = search.concurrency(k)
            self.note(f"STEP {k + 1}: {c} in flight for {fmt_duration(search.step_duration)}")
            begin = self.open_window()
            await self.closed(lambda _t, c=c: c, lambda _t: None, begin, search.step_duration)
            await self.drain()
            if self.runner.interrupted:
                break  # a step cut short by the user says nothing about the host
            window = self.window(begin)
            if k == 0:
                self.baseline = baseline_of(window, criteria)
            step = judge_step(k, c, window, criteria, self.baseline, started=begin,
                              ended=self.now())
            self._keep_abort(step)
            steps.append(step)
            self.note(step_line(step))
            if (seen := getattr(self.runner.progress, "step", None)) is not None:
                seen(step.to_json())  # the live dashboard's capacity curve
            if not step.held:
                break
        stopped = self.stop_note or (self.runner.stop_reason if not self.runner.interrupted else None)
        return conclude(steps, search, criteria, stopped, interrupted=self.runner.interrupted)

    def _keep_abort(self, step: StepResult) -> None:
        """A criterion that aborted the step stands as crossed, whatever the rest of it did."""
        if self.aborted is None or not (step.started <= (self.aborted.at or 0.0)):
            return
        step.results = [self.aborted if r.expr == self.aborted.expr else r for r in step.results]
        step.results.sort(key=lambda r: r.passed)

    # ---- windows, samples, thresholds -----------------------------------------------------------

    def open_window(self) -> float:
        self.window_start = self.now()
        self.window_starts = self.window_dropped = 0
        return self.window_start

    def observations(self) -> list[Observation]:
        seen = (observe(ex.attempt, self.t0_wall) for ex in self.runner.executions())
        return sorted((o for o in seen if o is not None), key=lambda o: o.start)

    def window(self, begin: float, *, whole: bool = False) -> Window:
        """The attempts started since `begin` and the samples taken since (the whole run's when
        `whole`), with the OOM count the window starts from."""
        obs = [o for o in self.observations() if o.start >= begin - 1e-3]
        samples = [s for s in self.samples if s.at >= begin - 1e-3]
        before = [s.oom_kills for s in self.samples if s.at < begin and s.oom_kills is not None]
        started = self.starts if whole else self.window_starts
        if self.load.profile is None:
            started = len(obs)
        return Window(obs, samples, started, self.dropped if whole else self.window_dropped,
                      before[-1] if before else 0)

    def max_load(self) -> float | None:
        """The load limit of the capacity search: --max-load, else the service's own."""
        if self.load.max_load is not None:
            return self.load.max_load
        return next((s.max_load for s in self.samples if s.max_load is not None), None)

    async def take_sample(self) -> None:
        if self.probe is None:
            return
        try:
            fields = await aio.wait_for(self.probe(), 5.0)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a failed reading must not end the monitor
            fields = {}
        in_flight = self.in_flight if self.load.profile is not None else self.runner.in_flight
        self.samples.append(Sample(at=round(self.now(), 3), **fields))
        self.timeline.append([round(self.now(), 3), self.target_now(), in_flight])

    async def monitor(self) -> None:
        """Sample the host and check the :abort thresholds, once a second, until cancelled."""
        aborts = [th for th in self.load.thresholds if th.abort]
        while True:
            await self.take_sample()
            if aborts and self.aborted is None and not self.stopping():
                self.check_aborts(aborts)
            await asyncio.sleep(SAMPLE_INTERVAL)

    def check_aborts(self, aborts: list[Threshold]) -> None:
        t = self.now() - self.window_start
        w = self.window(self.window_start)
        for th in aborts:
            if t < th.abort_delay:
                continue
            value = measure(w, th)
            base = self.baseline.get(th.text)
            if value is None or (th.relative and base is None):
                continue  # no data (or no first step) yet: an abort needs a value that crossed
            r = judge(th, value, baseline=base, cores=cores(w))
            if not r.passed:
                r.aborted, r.at = True, round(self.now(), 3)
                self.aborted = r
                self.runner.abort(f"threshold {th.text} crossed (observed "
                                  f"{fmt_metric(r.unit, value)})")
                return

    def note(self, text: str) -> None:
        note = getattr(self.runner.progress, "note", None)
        if note is not None:
            note(text)

    # ---- the run --------------------------------------------------------------------------------

    async def run(self, fixed: Callable[[], Awaitable[list[Outcome]]] | None = None) -> LoadOutcome:
        """The whole load run; `fixed` runs the plan without a profile (the Runner's own loop)."""
        self.t0, self.t0_wall = time.monotonic(), time.time()
        profile, capacity = self.load.profile, None
        if profile is not None:
            self.runner.begin(getattr(profile, "total_starts", 0))
        watcher = asyncio.ensure_future(self.monitor())
        try:
            if profile is None:
                assert fixed is not None
                self.target_now = lambda: self.fixed_concurrency
                await fixed()
            elif isinstance(profile, Stages):
                await self.closed(profile.target, profile.next_change, 0.0, profile.duration)
            elif isinstance(profile, ArrivalRate):
                await self.open(profile)
            else:
                capacity = await self.search(profile)
            await self.drain()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await self.drain()
            await self.close_idle()
        await self.take_sample()
        return LoadOutcome(self.outcomes(), self.profile_json(), self.final_thresholds(),
                           capacity)

    async def close_idle(self) -> None:
        idle, self.idle = self.idle, []
        for client in idle:
            try:
                await aio.wait_for(client.close(), 5)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def outcomes(self) -> list[Outcome]:
        """Each test's outcome over the attempts the profile gave it (at least one: a test the
        profile never reached reads "not run")."""
        if self.load.profile is not None:
            why = f"not run: {self.runner.stop_reason or 'the load profile ended before its turn'}"
            for idx in self.order:
                if self.counts[idx] == 0:
                    p = self.runner.plan[idx]
                    self.runner.record(idx, 1, attempt_record.not_run(
                        p, 1, why, interrupted=self.runner.interrupted))
            self.runner.plan = [replace(p, repeat=max(1, self.counts[i]),
                                        threshold=effective_threshold(p.test, max(1, self.counts[i])))
                                for i, p in enumerate(self.runner.plan)]
        return self.runner.outcomes()

    def final_thresholds(self) -> list[ThresholdResult]:
        """Every --threshold over the whole run, crossed ones first (the capacity search's are
        its step criteria instead)."""
        if self.load.capacity is not None:
            return []
        w = self.window(0.0, whole=True)
        results = []
        for th in self.load.thresholds:
            if self.aborted is not None and self.aborted.expr == th.text:
                results.append(self.aborted)
            else:
                results.append(judge(th, measure(w, th), cores=cores(w)))
        return sorted(results, key=lambda r: r.passed)

    def profile_json(self) -> dict[str, Any] | None:
        """report.json's `profile`: the shape, what it started and dropped, the in-flight
        timeline (seconds, target, in flight) and the run's figures."""
        profile = self.load.profile
        if profile is None and not self.load.thresholds:
            return None
        shape = profile.to_json() if profile is not None else {
            "kind": "concurrency", "concurrency": self.fixed_concurrency,
            "peak": self.fixed_concurrency}
        plan = self.runner.plan
        return {
            **shape, "started_at": self.t0_wall, "starts": self.starts if profile else None,
            "dropped_starts": self.dropped,
            "dropped_by_test": {plan[i].test.id: n for i, n in sorted(self.dropped_by.items())},
            "peak_in_flight": self.peak_in_flight if profile else None,
            "ended_early": self.stop_note or self.runner.stop_reason,
            "figures": summary(self.window(0.0, whole=True)),
            "timeline": downsample(self.timeline, MAX_TIMELINE),
            "samples": [s.to_json() for s in self.samples[-MAX_TIMELINE:]],
        }


def step_line(step: StepResult) -> str:
    """One terminal line per capacity step."""
    f = step.figures
    text = (f"STEP {step.index + 1} {'held' if step.held else 'CROSSED'}: {step.concurrency} in "
            f"flight, {f['attempts']} runs, p95 {fmt_metric('seconds', f['p95_duration'])}, "
            f"errors {fmt_metric('ratio', f['error_rate'])}, load {fmt_metric('load', f['host_load'])}")
    if step.crossed:
        text += "; crossed: " + ", ".join(
            f"{r.expr} ({fmt_metric(r.unit, r.observed)})" for r in step.crossed)
    return text


__all__ = ["MAX_TIMELINE", "SAMPLE_INTERVAL", "TICK", "LoadDriver", "LoadOutcome", "Probe",
           "step_line"]
