"""How busy the host is, and whether a new job may start now.

Why this exists: a host once reached a 1-minute load of 25 and stopped answering because nothing
held test and job processes back. Everything that admits work (the service's queue, the safe test
runner, the stress harness) asks the same question through `decide`, so they agree on the rule.

Reading the host must stay cheap (far under the 1 s budget): one read of /proc/loadavg and two of
psutil's /proc/meminfo parsers, no `cpu_percent(interval=...)` sleeps. `read_load` costs well
under a millisecond; see docs/load.md for the measured figure.

Run `python -m cc_executor.load` to see the reading and the decision; it exits 0 when a new job
may start now, 1 when it should wait, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace

import psutil

from . import aio
from .pressure import Pressure, Totals, read_totals, window

MIB = 1024**2

_CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class LoadReading:
    """One sample of the host, plus the executor's own counters when the service has them.

    `runnable` is the instantaneous count of runnable scheduling entities from /proc/loadavg: it
    leads the load averages (which lag by about a minute), so a queue can see a burst coming.
    Counters are None when nobody filled them in (e.g. the command-line check).
    """

    load1: float
    load5: float
    load15: float
    cores: int
    runnable: int | None
    mem_available: int
    mem_total: int
    swap_used: int
    swap_total: int
    timestamp: float
    running_jobs: int | None = None
    queued_jobs: int | None = None
    live_processes: int | None = None
    cpu_pressure: float | None = None
    memory_pressure: float | None = None
    io_pressure: float | None = None
    """PSI: the share of the last window some task stalled on CPU, memory, IO (`pressure`);
    None without PSI, or before a second sample gives a window."""

    @property
    def load_per_core(self) -> float:
        return self.load1 / max(self.cores, 1)

    def with_counters(
        self,
        *,
        running_jobs: int | None = None,
        queued_jobs: int | None = None,
        live_processes: int | None = None,
    ) -> "LoadReading":
        """A copy carrying the executor's counters (only the ones given change)."""
        changes = {
            k: v
            for k, v in (
                ("running_jobs", running_jobs),
                ("queued_jobs", queued_jobs),
                ("live_processes", live_processes),
            )
            if v is not None
        }
        return replace(self, **changes)

    def with_pressure(self, p: Pressure | None) -> "LoadReading":
        """A copy carrying one window's PSI shares (None: unchanged)."""
        if p is None:
            return self
        return replace(self, cpu_pressure=round(p.cpu, 4), memory_pressure=round(p.memory, 4),
                       io_pressure=round(p.io, 4))

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["load_per_core"] = round(self.load_per_core, 4)
        return d

    def summary(self) -> str:
        """One human line, used by the command-line check and the safe runner's log lines."""
        text = (
            f"load {self.load1:.2f} {self.load5:.2f} {self.load15:.2f} "
            f"({self.cores} cores, {self.load_per_core:.2f}/core"
        )
        if self.runnable is not None:
            text += f", {self.runnable} runnable"
        if self.cpu_pressure is not None:
            text += (f", pressure cpu {self.cpu_pressure:.2f} memory {self.memory_pressure:.2f} "
                     f"io {self.io_pressure:.2f}")
        text += (
            f"), free memory {self.mem_available // MIB} MiB of {self.mem_total // MIB} MiB, "
            f"swap used {self.swap_used // MIB} MiB of {self.swap_total // MIB} MiB"
        )
        counters = [
            f"{name} {value}"
            for name, value in (
                ("running jobs", self.running_jobs),
                ("queued jobs", self.queued_jobs),
                ("live processes", self.live_processes),
            )
            if value is not None
        ]
        if counters:
            text += ", " + ", ".join(counters)
        return text


@dataclass(frozen=True)
class Decision:
    """Whether a new job may start now, and a reason a person can act on; when it may not, the
    signal that held it (`load`, `free_memory`, `cpu_pressure`, `slow_start`...), its value and
    the limit it crossed, for programs (`process.queued`, /health)."""

    may_start: bool
    reason: str
    signal: str | None = None
    value: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def held(self) -> dict[str, object]:
        """The structured part of why a queued job waits: the signal, its value and its limit
        (empty when it only waits behind earlier jobs)."""
        if self.signal is None:
            return {}
        return {"signal": self.signal, "value": self.value, "limit": self.limit}


def _read_loadavg() -> tuple[float, float, float, int | None]:
    """Load averages and the runnable count; falls back to os.getloadavg off Linux."""
    try:
        with open("/proc/loadavg", "rb") as f:
            parts = f.read().split()
        return float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3].split(b"/")[0])
    except (OSError, IndexError, ValueError):
        l1, l5, l15 = os.getloadavg()
        return l1, l5, l15, None


def read_load() -> LoadReading:
    """Sample the host now. Non-blocking in the sense that matters: no sleeps, only /proc reads."""
    l1, l5, l15, runnable = _read_loadavg()
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    return LoadReading(
        load1=l1,
        load5=l5,
        load15=l15,
        cores=_CORES,
        runnable=runnable,
        mem_available=int(vm.available),
        mem_total=int(vm.total),
        swap_used=int(sw.used),
        swap_total=int(sw.total),
        timestamp=time.time(),
    )


# The kernel's 1-minute load average is an exponential average with a 60 s time constant.
LOAD1_TAU = 60.0


def unshown_load(ages: Iterable[float], tau: float = LOAD1_TAU) -> float:
    """The load that jobs started `ages` seconds ago will add but the 1-minute average does not
    show yet: a job that keeps one core busy shows up as 1 - e^(-age/tau), so e^(-age/tau) of
    it is still to come.

    Why: admission that reads only the 1-minute average lets a burst through. Jobs released
    together (a queue reopening, fifty executes at once) all see the same low figure and all
    start; the load they bring shows a minute later, on a host already tipping over. Counting
    each young job as the load it has not shown yet paces starts instead. It assumes every job
    busies a core, which overestimates jobs that mostly wait (a CLI waiting on the API); the
    term fades within a few minutes, after which the real average rules alone.
    """
    return sum(math.exp(-max(age, 0.0) / tau) for age in ages)


def decide(
    reading: LoadReading, max_load: float, min_free_mem: int, *, throttle: bool = True,
    starting: float = 0.0,
) -> Decision:
    """The one admission rule: 1-minute load (plus `starting`, the load of the caller's own
    young jobs that the average does not show yet: see `unshown_load`) at most `max_load`,
    free memory at least the floor.

    Both limits are checked so the reason names every cause of waiting, not just the first.
    The 1-minute average is used (not `runnable`) because it is what the seed's limit of 8 was
    stated in and what `uptime` shows, so an operator can check the figure by hand.
    """
    if not throttle:
        return Decision(True, "throttling is off (CC_EXECUTOR_THROTTLE=0)")
    if not max_load >= 0:  # also rejects NaN, which would silently admit everything
        raise ValueError(f"max_load must be a number >= 0, got {max_load}")
    if min_free_mem < 0:
        raise ValueError(f"min_free_mem must be >= 0 bytes, got {min_free_mem}")
    free_mib, floor_mib = reading.mem_available // MIB, min_free_mem // MIB
    load = f"load {reading.load1:.2f}"
    if starting > 0.005:
        load += f" + {starting:.2f} from jobs just started"
    problems = []
    first: tuple[str, float, float] | None = None
    if reading.mem_available < min_free_mem:
        first = ("free_memory", float(reading.mem_available), float(min_free_mem))
    if reading.load1 + starting > max_load:
        problems.append(f"{load} > max {max_load:.2f}")
        first = ("load", round(reading.load1 + starting, 4), max_load)
    if reading.mem_available < min_free_mem:
        problems.append(f"free memory {free_mib} MiB < floor {floor_mib} MiB")
    if problems:
        assert first is not None
        return Decision(False, "; ".join(problems), *first)
    return Decision(
        True,
        f"{load} <= max {max_load:.2f}, "
        f"free memory {free_mib} MiB >= floor {floor_mib} MiB",
    )


Counters = Callable[[], Mapping[str, int]]


class LoadMonitor:
    """Samples the host every `interval` seconds on the event loop, for /health and admission.

    Reads run in a private one-thread executor with a time bound (`read_timeout`): they are cheap,
    but a stuck /proc read must never stall the loop, and while one read is stuck no second one
    is started (no pile-up of threads). A waiter calls `wait_for_change(seq)` and is woken by the
    next sample, so a queue re-checks admission exactly when there is something new to check.

    `counters`, if given, is called on the loop after each read and its `running_jobs`,
    `queued_jobs`, `live_processes` entries are stored in the reading.
    """

    def __init__(
        self,
        interval: float = 1.0,
        *,
        read_timeout: float = 0.5,
        counters: Counters | None = None,
        read: Callable[[], LoadReading] = read_load,
        psi_dir: str | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval}")
        if not read_timeout > 0:
            raise ValueError(f"read_timeout must be > 0 seconds, got {read_timeout}")
        self.interval = interval
        self.read_timeout = read_timeout
        self._counters = counters
        self._read = read
        self._psi_dir = psi_dir
        self._totals: Totals | None = None
        self.pressure: Pressure | None = None
        """PSI over the last sample window; None without PSI (or `psi_dir`) or before two."""
        self._latest: LoadReading | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self._hurry = asyncio.Event()
        self._hurry_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: concurrent.futures.Future[LoadReading] | None = None
        self.read_errors = 0
        self.last_error: str | None = None

    @property
    def latest(self) -> LoadReading | None:
        """The newest reading (None only before `start`)."""
        return self._latest

    @property
    def seq(self) -> int:
        """Count of samples taken; pass it to `wait_for_change` to wait for the next one."""
        return self._seq

    @property
    def psi_available(self) -> bool:
        """Whether the host gives PSI (read at the last sample)."""
        return self._totals is not None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Take a first sample (so `latest` is set on return), then sample in the background."""
        if self.running:
            return
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cc-load")
        await self.sample()
        self._task = asyncio.create_task(self._loop(), name="cc-load-monitor")

    async def stop(self) -> None:
        """Stop sampling and wake every waiter (they get the latest reading)."""
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                # asyncio.wait, not `await task` under `except CancelledError`: that would
                # also swallow a cancel aimed at the caller (a timeout around stop, Ctrl-C).
                await asyncio.wait({task})
        finally:  # even when the caller is cancelled meanwhile
            if self._pool is not None:
                # wait=False: a read stuck in /proc must not block shutdown.
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            self._wake()

    async def __aenter__(self) -> "LoadMonitor":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += self.interval
            while True:
                due = next_at if self._hurry_at is None else min(next_at, self._hurry_at)
                self._hurry.clear()
                try:  # sleep until due, or until `hurry` brings the next sample forward
                    await aio.wait_for(self._hurry.wait(), max(0.0, due - time.monotonic()))
                except asyncio.TimeoutError:
                    break
            now = time.monotonic()
            if self._hurry_at is not None and self._hurry_at < next_at:
                next_at = now  # a hurried sample: the regular rhythm restarts from it
            elif now - next_at > self.interval:
                next_at = now  # fell behind (suspended host): do not burst
            self._hurry_at = None
            await self.sample()

    def hurry(self, within: float) -> None:
        """Take the next sample within `within` seconds instead of at the regular interval.

        For admission: while its slow-start window holds jobs back, it wants the window's jobs
        measured as soon as they can be, not half a second later. Idempotent; cheap enough to
        call on every held decision."""
        at = time.monotonic() + max(0.0, within)
        if self._hurry_at is None or at < self._hurry_at:
            self._hurry_at = at
            self._hurry.set()

    def _read_with_psi(self) -> tuple[LoadReading, Totals | None]:
        totals = read_totals(self._psi_dir, time.monotonic()) if self._psi_dir else None
        return self._read(), totals

    async def sample(self) -> LoadReading | None:
        """Take one reading now (bounded by `read_timeout`); returns it, or None if it failed."""
        if self._pool is None:
            reading, totals = self._read_with_psi()
        else:
            if self._pending is None or self._pending.done():
                self._pending = self._pool.submit(self._read_with_psi)
            try:
                reading, totals = await aio.wait_for(
                    asyncio.shield(asyncio.wrap_future(self._pending)), self.read_timeout
                )
            except asyncio.TimeoutError:
                self._fail(f"load read took longer than {self.read_timeout} s")
                return None
            except Exception as exc:  # a failed read must not end the sampler
                self._pending = None
                self._fail(f"load read failed: {exc!r}")
                return None
            self._pending = None
        self.pressure = (window(self._totals, totals)
                         if self._totals is not None and totals is not None else None)
        self._totals = totals  # also after a reset (counters going back): start afresh
        reading = reading.with_pressure(self.pressure)
        if self._counters is not None:
            c = self._counters()
            reading = reading.with_counters(
                running_jobs=c.get("running_jobs"),
                queued_jobs=c.get("queued_jobs"),
                live_processes=c.get("live_processes"),
            )
        self._latest = reading
        self._seq += 1
        self._wake()
        return reading

    def _fail(self, message: str) -> None:
        self.read_errors += 1
        self.last_error = message

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_for_change(
        self, after: int | None = None, timeout: float | None = None
    ) -> LoadReading | None:
        """Wait until a sample newer than `after` (default: the current one) exists.

        Returns the latest reading when a newer sample arrives, `timeout` passes, or the monitor
        stops; compare `seq` to tell which. Never loops on its own.
        """
        after = self._seq if after is None else after
        if self._seq > after:
            return self._latest
        event = self._changed
        try:
            await aio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        return self._latest

    async def wait_for_admission(
        self,
        max_load: float,
        min_free_mem: int,
        *,
        throttle: bool = True,
        timeout: float | None = None,
    ) -> Decision:
        """Wait until `decide` admits a job, or `timeout` passes; returns the last decision."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reading = self._latest
            if reading is None:
                raise RuntimeError("LoadMonitor.wait_for_admission called before start()")
            decision = decide(reading, max_load, min_free_mem, throttle=throttle)
            if decision.may_start or not self.running:
                return decision
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return decision
            await self.wait_for_change(self._seq, left)


def limits_from_args(parser: argparse.ArgumentParser, settings, args: argparse.Namespace,
                     cores: int) -> tuple[float, int]:
    """`--max-load` and `--min-free-mem` over the settings' values; a bad value is a usage
    error naming the flag. Shared by `python -m cc_executor.load` and `safe_run`."""
    from .settings import parse_max_load, parse_size

    max_load = settings.max_load_value(cores)
    if args.max_load is not None:
        try:
            max_load = parse_max_load(args.max_load, cores)
        except ValueError:
            parser.error(f"--max-load: not a load: {args.max_load!r} (expected e.g. 8 or 2/core)")
    floor = settings.min_free_mem
    if args.min_free_mem is not None:
        try:
            floor = parse_size(args.min_free_mem)
        except ValueError as exc:
            parser.error(f"--min-free-mem: {exc}")
    return max_load, floor


def _main(argv: list[str] | None = None) -> int:
    from .settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m cc_executor.load",
        description="Print the host's load and whether a new job may start now. "
        "Exit 0: may start; 1: should wait; 2: bad usage.",
    )
    parser.add_argument("--max-load", help="max 1-minute load: absolute (8) or per core (2/core)")
    parser.add_argument("--min-free-mem", help="free-memory floor, e.g. 256M, 1G")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: bad CC_EXECUTOR_* setting: {exc}\n")
    before = read_totals(settings.psi_dir, time.monotonic()) if settings.psi_dir else None
    reading = read_load()
    if before is not None:  # one short window, for a PSI figure that is exact, not avg10's
        time.sleep(0.2)
        after = read_totals(settings.psi_dir, time.monotonic())
        reading = reading.with_pressure(window(before, after) if after else None)
    rule = ("pressure (PSI, slow start)" if before is not None
            else f"load-pacing: PSI unavailable at {settings.psi_dir or '(psi_dir unset)'}")
    max_load, floor = limits_from_args(parser, settings, args, reading.cores)
    decision = decide(reading, max_load, floor, throttle=settings.throttle)
    if args.json:
        print(json.dumps({
            "reading": reading.to_dict(),
            "max_load": max_load,
            "min_free_mem": floor,
            "throttle": settings.throttle,
            "admission_rule": rule,
            "decision": decision.to_dict(),
        }))
    else:
        print(reading.summary())
        print(f"{'run' if decision.may_start else 'wait'}: {decision.reason}")
        print(f"admission rule of the service: {rule}")
    return 0 if decision.may_start else 1


if __name__ == "__main__":
    sys.exit(_main())
