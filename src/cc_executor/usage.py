"""What each running job really costs the host: its CPU-time rate and its memory, by process group.

Why measure instead of assume: a `claude -p` job spends most of its life waiting on the API, and
a job that waits costs almost nothing, while one that burns a core costs one. Admission that
assumed every job costs a core capped an idle 2-core host at 8 jobs (docs/load.md). Every job is
a process group of its own (its leader runs in a new session), so one pass over /proc, reading
each process's `stat` once, sums CPU time and resident memory per group. Processes that left the
group (a `setsid` grandchild) are not counted here; they are found and ended by their marker
(`tree`), this is only an estimate for admission.

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
"""Seconds a job must have run before its first pass gives it a rate (CPU time over age)."""


@dataclass(frozen=True, slots=True)
class GroupUsage:
    cpu_seconds: float
    """User plus system CPU time of the group's live processes."""
    rss: int
    """Their resident memory, bytes."""


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


def group_usage(pgids: Collection[int]) -> dict[int, GroupUsage]:
    """CPU time and RSS of each of `pgids`, from one pass over /proc."""
    wanted = set(pgids)
    ticks: dict[int, int] = {}
    pages: dict[int, int] = {}
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
    return {g: GroupUsage(ticks[g] / _TICK, pages[g] * _PAGE) for g in ticks}


class UsageRates:
    """Each group's CPU rate (cores: 1.0 = one core busy) between two passes, and its RSS.

    A group not measured yet has no rate (None): admission counts it as young (slow start)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}  # pgid -> (cpu seconds, at)
        self.rates: dict[int, float] = {}
        self.rss: dict[int, int] = {}

    def update(self, usage: Mapping[int, GroupUsage], now: float | None = None,
               ages: Mapping[int, float] | None = None) -> None:
        """Rates since the last pass; a group seen for the first time gets its CPU time over
        its age (`ages`, seconds since it started), so a job is measured at the first pass."""
        now = time.monotonic() if now is None else now
        rates: dict[int, float] = {}
        for group, u in usage.items():
            last = self._last.get(group)
            if last is not None and now > last[1]:
                rates[group] = max(0.0, (u.cpu_seconds - last[0]) / (now - last[1]))
            elif ages and ages.get(group, 0.0) >= FIRST_MEASURE_AGE:
                # Younger than that, one clock tick over a few ms would read as several cores.
                rates[group] = u.cpu_seconds / ages[group]
        self._last = {g: (u.cpu_seconds, now) for g, u in usage.items()}
        self.rates = rates
        self.rss = {g: u.rss for g, u in usage.items()}

    def rate(self, pgid: int) -> float | None:
        return self.rates.get(pgid)

    def total_rss(self) -> int:
        return sum(self.rss.values())
