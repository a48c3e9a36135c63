"""Run a plan on a Dask cluster: route, submit, record each attempt exactly once, report per worker.

Each attempt of each test is one Dask task (`stress.cluster.task.run_attempt`) with the
resources it needs: one `claude` slot, one `allow.<program>` per program it runs, and `gpu` when
the test `requires` it. The scheduler places tasks only on workers that have those resources;
a test no current worker can take is reported not run, with the reason, before anything starts
(a Dask task with unmet restrictions would wait for ever). `pure=False`: repeats are separate runs.

Exactly once: a result is recorded the first time its future finishes and the future is then
released, so Dask has nothing to recompute if the worker holding the result dies; a key seen
again is ignored. A worker that dies mid-test makes Dask rerun the test elsewhere, up to the
scheduler's `allowed-failures`; past it the task fails with `KilledWorker` and the attempt is
reported lost. When no worker is left for `worker_wait` seconds (--worker-wait), every unfinished
attempt is reported lost and the run ends: nothing waits for ever.

Task keys are `stress_<test hash>-<attempt>-<nonce>`, so Dask's per-prefix duration estimates
are per test (learned across repeats, and across runs on a long-lived scheduler); the expected
duration of each test (history median, else its timeout) is declared to the scheduler before
submitting so its work stealing balances from the first task.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import statistics
import time
import zlib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from stress.cluster.task import START_TOPIC, AttemptResult, run_attempt, worker_report
from stress.report.results import FAILED, LOST, PASSED
from stress.run import attempt_record
from stress.run.plan import executables
from stress.run.runner import Planned, Runner

WORKER_WAIT = 15.0
"""Seconds a run waits with no worker at all before reporting what is left lost (--worker-wait)."""
POLL = 0.5
HARDWARE_WORDS = ("gpu",)
"""`requires` words a cluster provides through worker resources (not through the model mode)."""


def task_prefix(p: Planned) -> str:
    """Dask's key prefix for a test: stable across runs, one per test (letters and digits)."""
    digest = hashlib.sha1(f"{p.suite}/{p.test.id}".encode()).hexdigest()[:12]
    return "stress_" + "".join(c if c.isalpha() else chr(ord("g") + int(c)) for c in digest)


def needs(p: Planned) -> dict[str, float]:
    """The Dask resources one attempt of `p` takes."""
    res: dict[str, float] = {"claude": 1}
    for exe in executables([p]):
        res[f"allow.{os.path.basename(exe)}"] = 1
    for word in HARDWARE_WORDS:
        if word in p.test.requires:
            res[word] = 1
    return res


def _words(names: list[str]) -> str:
    return ", ".join(n.replace("allow.", "an executor allowing ") if n.startswith("allow.")
                     else f"'{n}'" for n in names)


def unroutable(p: Planned, workers: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why no worker of the cluster can take `p` (None: at least one can), naming what each
    worker lacks."""
    need = needs(p)
    lacks = {}
    for w in workers.values():
        have = w.get("resources") or {}
        lacks[str(w.get("name"))] = sorted(k for k in need if have.get(k, 0) < need[k])
    if not workers or not all(lacks.values()):
        return None if workers else "no worker in the cluster"
    common = sorted(set.intersection(*(set(v) for v in lacks.values())))
    if common:
        return f"no worker of the cluster has {_words(common)} (workers: {', '.join(sorted(lacks))})"
    return "no worker of the cluster has all it needs (" + "; ".join(
        f"{name} lacks {_words(v)}" for name, v in sorted(lacks.items())) + ")"


def declare_durations(durations: dict[str, float], dask_scheduler: Any = None) -> int:
    """Runs on the scheduler: each test prefix's expected seconds, for prefixes not yet timed."""
    import dask

    known = dask.config.get("distributed.scheduler.default-task-durations", {}) or {}
    dask.config.set({"distributed.scheduler.default-task-durations": {**known, **durations}})
    return len(durations)


class FleetRun:
    """One plan on one cluster: the futures, the results recorded once, the statistics."""

    def __init__(self, runner: Runner, fleet: Any, run_id: str, progress: Any,
                 worker_wait: float = WORKER_WAIT) -> None:
        self.runner = runner
        self.fleet = fleet
        self.client = fleet.client
        self.run_id = run_id
        self.progress = progress
        self.recorded: set[str] = set()
        self.results: dict[str, AttemptResult] = {}
        self.arrived: dict[str, float] = {}
        """When each result reached the harness (its clock: workers' clocks may differ)."""
        self.keys: dict[str, tuple[int, int]] = {}
        self.lost: dict[str, str] = {}
        self.t0 = 0.0
        self.workers_at_start: dict[str, Any] = {}
        self.reports: dict[str, Any] = {}
        self.gone: dict[str, float] = {}
        self.worker_wait = worker_wait

    async def route(self) -> None:
        """Learn the workers; a test no worker can take is skipped with the reason."""
        from stress.cluster.connect import workers_now

        self.workers_at_start = await workers_now(self.client)
        try:
            self.reports = await self.client.run(worker_report)
        except Exception as e:  # noqa: BLE001 - plain dask workers: report without details
            self.reports = {a: {"error": str(e)} for a in self.workers_at_start}
        plan = self.runner.plan
        for i, p in enumerate(plan):
            if p.skip is None:
                why = unroutable(p, self.workers_at_start)
                if why is not None:
                    plan[i] = replace(p, skip=why)
                    self.progress.skipped(p.test.id, why, p.repeat)

    async def declare(self) -> None:
        durations = {}
        for p in self.runner.plan:
            expected = p.median if p.median is not None else p.test.timeout
            durations[task_prefix(p)] = float(expected)
        try:
            await self.client.run_on_scheduler(declare_durations, durations)
        except Exception:  # noqa: BLE001 - a scheduler that cannot import stress: dask.yaml's default
            pass

    async def run(self) -> None:
        from distributed import as_completed

        await self.route()
        await self.declare()
        runner = self.runner
        runner.begin(0)
        work = [(i, n) for i, p in enumerate(runner.plan) if p.skip is None
                for n in range(1, p.repeat + 1)]
        runner.expect(len(work))
        self.t0 = time.time()
        futures = []
        for idx, n in work:
            p = runner.plan[idx]
            key = f"{task_prefix(p)}-{n}-{secrets.token_hex(4)}"
            self.keys[key] = (idx, n)
            futures.append(self.client.submit(run_attempt, key, self.run_id, p, n, runner.options,
                                              key=key, resources=needs(p), pure=False))
        pending = {f.key: f for f in futures}
        watch = asyncio.ensure_future(self._watch_workers(pending))
        try:
            async for fut in as_completed(futures, loop=self.client.loop):
                pending.pop(fut.key, None)
                await self._take(fut)
                await self._stop_if_asked(pending)
        finally:
            watch.cancel()
        self._record_lost()

    async def _take(self, fut: Any) -> None:
        """One finished future: its attempt recorded once; a dead-worker failure is lost."""
        key = fut.key
        if key in self.recorded:
            return
        idx, n = self.keys[key]
        if fut.status == "cancelled":
            fut.release()
            return
        try:
            res: AttemptResult = await fut
        except Exception as e:  # noqa: BLE001 - KilledWorker and harness errors alike
            from distributed import KilledWorker

            if isinstance(e, KilledWorker):
                self.lost.setdefault(key, "lost: its worker died while running it, on every "
                                          "try the scheduler's allowed-failures permits")
            else:  # the task itself raised: a harness bug, this attempt's error (not retried)
                self.recorded.add(key)
                p = self.runner.plan[idx]
                ex = attempt_record.failed_to_start(
                    p, n, f"harness error on the worker: {type(e).__name__}: {e}")
                self.runner.take(idx, n, ex)
                self.progress.finished(p.attempt_stem(n), p.attempt_stem(n), ex.attempt.status,
                                       ex.attempt.reason, 0.0, ex.attempt.message)
            fut.release()
            return
        fut.release()
        self.recorded.add(key)
        self.results[key] = res
        self.arrived[key] = time.time()
        self._write_files(res)
        ex = res.execution
        ex.attempt.server = res.worker
        self.runner.claude_streams.extend(res.claude_streams)
        self.runner.take(idx, n, ex)
        a = ex.attempt
        self.progress.finished(a_stem := self.runner.plan[idx].attempt_stem(n), a_stem, a.status,
                               a.reason, a.duration, a.message)

    def _write_files(self, res: AttemptResult) -> None:
        for rel, blob in res.files.items():
            dest = self.runner.report_dir / rel
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zlib.decompress(blob))

    async def _stop_if_asked(self, pending: dict[str, Any]) -> None:
        """--fail-fast, --halt or a signal stopped the run: cancel every test not yet recorded
        (Dask cannot interrupt a running task; its result is simply not recorded)."""
        if self.runner.stop_reason is not None and pending:
            futures = list(pending.values())
            pending.clear()
            await self.client.cancel(futures)

    async def _watch_workers(self, pending: dict[str, Any]) -> None:
        """Note workers that leave; with none left for `worker_wait` s, cancel what is left.
        Also where a signal's stop is noticed while no test finishes."""
        from stress.cluster.connect import workers_now

        empty_since: float | None = None
        while pending:
            await asyncio.sleep(POLL)
            await self._stop_if_asked(pending)
            try:
                now = await workers_now(self.client)
            except (OSError, asyncio.TimeoutError):
                now = {}
            for addr in self.workers_at_start:
                if addr not in now and addr not in self.gone:
                    self.gone[addr] = time.time() - self.t0
                    name = self.workers_at_start[addr].get("name")
                    self.progress.note(f"WORKER LOST {name} ({addr})")
            if now:
                empty_since = None
                continue
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since >= self.worker_wait:
                for key in list(pending):
                    self.lost.setdefault(key, f"lost: no worker left in the cluster for "
                                              f"{self.worker_wait:g} s")
                await self.client.cancel(list(pending.values()))
                pending.clear()
                return

    def _record_lost(self) -> None:
        for key, why in self.lost.items():
            if key in self.recorded:
                continue
            idx, n = self.keys[key]
            p = self.runner.plan[idx]
            self.recorded.add(key)
            ex = attempt_record.lost(p, n, why, [], None)
            self.progress.finished(p.attempt_stem(n), p.attempt_stem(n), LOST, LOST, 0.0, why)
            self.runner.take(idx, n, ex)

    async def stats(self) -> dict[str, Any]:
        """The report's per-worker section (`servers`, mode `cluster`)."""
        starts = await _events(self.client, START_TOPIC)
        steals = await _events(self.client, "stealing")
        return fleet_stats(self, starts, steals)


async def _events(client: Any, topic: str) -> list[Any]:
    try:
        return list(await client.get_events(topic))
    except Exception:  # noqa: BLE001 - statistics are best effort
        return []


def cv(values: list[float]) -> float | None:
    """Coefficient of variation (pstdev / mean): 0 when all equal; None without values."""
    if not values:
        return None
    mean = statistics.fmean(values)
    return round(statistics.pstdev(values) / mean, 4) if mean > 0 else 0.0


def lost_busy(starts: list[Any], addr: str, done: set[str], t0: float, lost_at: float) -> float:
    """Slot seconds a worker that died spent on tests that came to nothing there: from each
    one's start event (the scheduler's clock) to the loss. They were busy, not idle, though no
    result came of them. Clamped to the worker's life, in case the clocks disagree."""
    total = 0.0
    for stamp, msg in starts:
        if isinstance(msg, dict) and msg.get("worker") == addr and msg.get("key") not in done:
            total += min(max(0.0, t0 + lost_at - float(stamp)), lost_at)
    return total


def fleet_stats(run: FleetRun, starts: list[Any], steals: list[Any]) -> dict[str, Any]:
    """Per worker: slots and their source, tests run, busy/idle, steals, retries, losses."""
    tries: dict[str, list[str]] = {}
    for _, msg in starts:
        if isinstance(msg, dict) and msg.get("key") in run.keys:
            tries.setdefault(msg["key"], []).append(msg.get("worker", "?"))
    steal_in: dict[str, int] = {}
    steal_out: dict[str, int] = {}
    for _, msg in steals:
        if isinstance(msg, (list, tuple)) and msg and msg[0] == "confirm" and msg[1] in run.keys:
            steal_out[msg[3]] = steal_out.get(msg[3], 0) + 1
            steal_in[msg[4]] = steal_in.get(msg[4], 0) + 1
    for key, where in tries.items():
        idx, n = run.keys[key]
        ex = run.runner.recorded(idx, n)
        if ex is not None:
            ex.attempt.tries = list(where)
    makespan = max(run.arrived.values(), default=run.t0) - run.t0
    by_worker: dict[str, list[tuple[AttemptResult, float]]] = {}
    addr_of = {str(w.get("name")): a for a, w in run.workers_at_start.items()}
    for key, r in run.results.items():
        by_worker.setdefault(addr_of.get(r.worker, r.worker), []).append((r, run.arrived[key]))
    rows = []
    for addr, info in run.workers_at_start.items():
        done = by_worker.get(addr, [])
        slots = int((info.get("resources") or {}).get("claude", info.get("nthreads", 1)))
        rep = run.reports.get(addr) or {}
        cap = rep.get("capacity") or {}
        busy = sum(r.ended - r.started for r, _ in done)  # one worker's clock: a duration
        completion = max((at for _, at in done), default=None)
        end = run.gone.get(addr, makespan)
        if addr in run.gone:
            mine = {k for k, r in run.results.items() if addr_of.get(r.worker, r.worker) == addr}
            ours = [e for e in starts if isinstance(e[1], dict) and e[1].get("key") in run.keys]
            busy += lost_busy(ours, addr, mine, run.t0, end)
        rows.append({
            "name": str(info.get("name")), "url": addr, "weight": float(slots),
            "concurrency": slots, "dealt": sum(1 for w in tries.values() if addr in w),
            "tests_run": len(done), "busy": round(busy, 4),
            "idle": round(max(0.0, end * slots - busy), 4),
            "steals_in": steal_in.get(addr, 0), "steals_out": steal_out.get(addr, 0),
            "retries": sum(1 for k, w in tries.items() if len(w) > 1 and w[-1] == addr
                           and k in run.results),
            "lost_items": sum(1 for w in tries.values() if addr in w[:-1]),
            "completion": None if completion is None else round(completion - run.t0, 4),
            "alive": addr not in run.gone, "lost_reason": "left the cluster" if addr in run.gone else None,
            "lost_at": run.gone.get(addr), "rejoins": 0,
            "slots_source": cap.get("slots_source", "the worker's nthreads"),
            "gpus": cap.get("gpus", int((info.get("resources") or {}).get("gpu", 0))),
            "gpu_weight": cap.get("gpu_weight"), "hardware": rep.get("hardware"),
            "executor": rep.get("executor"),
        })
    completions = [r["completion"] for r in rows if r["completion"] is not None and r["alive"]]
    retried = sorted(run.runner.plan[run.keys[k][0]].attempt_stem(run.keys[k][1])
                     for k, w in tries.items() if len(w) > 1)
    ran = [e for e in run.runner.executions() if e.attempt.status in (PASSED, FAILED)]
    return {"mode": "cluster", "makespan": round(makespan, 4),
            "fairness_cv": cv(completions) if ran else None, "halted": run.runner.halted,
            "retries_used": len(retried), "retried": retried, "scheduler": run.fleet.address,
            "dashboard": run.fleet.dashboard, "servers": rows}
