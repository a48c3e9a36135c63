"""What each running job really costs the host: its CPU-time rate and its memory, by process group.

Why measure instead of assume: a `claude -p` job spends most of its life waiting on the API, and
a job that waits costs almost nothing, while one that burns a core costs one. Admission that
assumed every job costs a core capped an idle 2-core host at 8 jobs (docs/load.md). Every job is
a process group of its own (its leader runs in a new session), so one pass over /proc, reading
each process's `stat` once, sums CPU time and resident memory per group. Processes that left the
group (a `setsid` grandchild) are not counted here; they are found and ended by their marker
(`tree`), this is only an estimate for admission.

Besides the CPU time it got, each job's *demand*: the share of time its processes were running
or waiting for a CPU (`/proc/PID/schedstat`, nanoseconds). On a contended host a burner gets a
fraction of a core but is runnable all the time, so demand tells a burner from a waiter where the
CPU rate cannot, and at nanosecond resolution it does so 50 ms after the start instead of the
200 ms that 10 ms clock ticks need. That is what lets admission's slow start let light jobs
through in quick steps while holding a burst of burners.

`group_usage` reads /proc (keep it off the event loop: ~10 us a process); `UsageRates` turns two
passes into rates and is pure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
FIRST_MEASURE_AGE = 0.2
"""Seconds a job must have run before its first pass gives it a CPU rate from clock ticks (CPU
time over age): younger, one tick over a few ms would read as several cores. Where schedstat
exists the main threads' CPU time (nanoseconds) gives a rate from `FIRST_DEMAND_AGE` on."""
FIRST_DEMAND_AGE = 0.05
"""The same for demand, which schedstat counts in nanoseconds."""


@dataclass(frozen=True, slots=True)
class GroupUsage:
    cpu_seconds: float
    """User plus system CPU time of the group's live processes."""
    rss: int
    """Their resident memory, bytes."""
    runnable_seconds: float | None = None
    """Time their main threads ran or waited to run (schedstat); None where schedstat is
    missing (a kernel without CONFIG_SCHED_INFO)."""
    ran_seconds: float | None = None
    """Time their main threads ran (schedstat's first field): CPU time in nanoseconds, where
    `cpu_seconds` counts 10 ms clock ticks."""


def _stat(pid: str) -> tuple[int, int, int] | None:
    """(pgrp, utime + stime ticks, rss pages) of one process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2:].split()  # the command name may hold spaces and ')'
    try:
        return int(rest[2]), int(rest[11]) + int(rest[12]), int(rest[21])
    except (IndexError, ValueError):
        return None


def _schedstat_ns(pid: str) -> tuple[int, int] | None:
    """Nanoseconds the process's main thread ran, and waited on a run queue; None if unknown."""
    try:
        with open(f"/proc/{pid}/schedstat", "rb") as f:
            ran, waited = f.read().split()[:2]
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


def group_usage(pgids: Collection[int]) -> dict[int, GroupUsage]:
    """CPU time, RSS and runnable time of each of `pgids`, from one pass over /proc."""
    wanted = set(pgids)
    ticks: dict[int, int] = {}
    pages: dict[int, int] = {}
    sched: dict[int, tuple[int, int] | None] = {}
    if not wanted:
        return {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if not name.isdigit():
            continue
        stat = _stat(name)
        if stat is None or stat[0] not in wanted:
            continue
        group, cpu, rss = stat
        ticks[group] = ticks.get(group, 0) + cpu
        pages[group] = pages.get(group, 0) + rss
        ns, before = _schedstat_ns(name), sched.get(group, (0, 0))
        sched[group] = None if ns is None or before is None else (before[0] + ns[0],
                                                                  before[1] + ns[1])
    out = {}
    for g in ticks:
        ran_waited = sched[g]
        out[g] = GroupUsage(ticks[g] / _TICK, pages[g] * _PAGE,
                            None if ran_waited is None else sum(ran_waited) / 1e9,
                            None if ran_waited is None else ran_waited[0] / 1e9)
    return out


def _rate(now_value: float, last: tuple[float, float] | None, now: float, age: float | None,
          min_age: float) -> float | None:
    """The growth per second of a cumulative figure since `last` (value, at), or over the
    group's whole `age` on its first pass; None while too young to tell."""
    if last is not None and now > last[1]:
        return max(0.0, (now_value - last[0]) / (now - last[1]))
    if age is not None and age >= min_age:
        return now_value / age
    return None


class UsageRates:
    """Each group's CPU rate (cores: 1.0 = one core busy) and demand (cores it ran or waited
    for) between two passes, and its RSS.

    A group not measured yet has no rate (None): admission counts it as young (slow start)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}  # pgid -> (cpu seconds, at)
        self._last_runnable: dict[int, tuple[float, float]] = {}
        self._last_ran: dict[int, tuple[float, float]] = {}
        self.rates: dict[int, float] = {}
        self.demands: dict[int, float] = {}
        self.rss: dict[int, int] = {}

    def update(self, usage: Mapping[int, GroupUsage], now: float | None = None,
               ages: Mapping[int, float] | None = None) -> None:
        """Rates since the last pass; a group seen for the first time gets its CPU time over
        its age (`ages`, seconds since it started), so a job is measured at the first pass."""
        now = time.monotonic() if now is None else now
        ages = ages or {}
        rates: dict[int, float] = {}
        demands: dict[int, float] = {}
        for group, u in usage.items():
            rate = _rate(u.cpu_seconds, self._last.get(group), now, ages.get(group),
                         FIRST_MEASURE_AGE)
            if u.ran_seconds is not None:  # the main threads' CPU, from 50 ms of age
                ran = _rate(u.ran_seconds, self._last_ran.get(group), now, ages.get(group),
                            FIRST_DEMAND_AGE)
                if ran is not None:
                    rate = ran if rate is None else max(rate, ran)
            if rate is not None:
                rates[group] = rate
            if u.runnable_seconds is not None:
                demand = _rate(u.runnable_seconds, self._last_runnable.get(group), now,
                               ages.get(group), FIRST_DEMAND_AGE)
                if demand is not None:
                    demands[group] = demand
        self._last = {g: (u.cpu_seconds, now) for g, u in usage.items()}
        self._last_runnable = {g: (u.runnable_seconds, now) for g, u in usage.items()
                               if u.runnable_seconds is not None}
        self._last_ran = {g: (u.ran_seconds, now) for g, u in usage.items()
                          if u.ran_seconds is not None}
        self.rates, self.demands = rates, demands
        self.rss = {g: u.rss for g, u in usage.items()}

    def rate(self, pgid: int) -> float | None:
        return self.rates.get(pgid)

    def demand(self, pgid: int) -> float | None:
        """Cores the group ran or waited for since the last pass; None until measured (or
        where schedstat is missing: then judge by `rate`)."""
        return self.demands.get(pgid)

    def total_rss(self) -> int:
        return sum(self.rss.values())
