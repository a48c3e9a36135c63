"""The one timeout rule shared by the service and the stress harness.

Why one module: a timeout that is right on an idle host is wrong on a busy one, and a timeout that
is right for one prompt is wrong for another. If the service and the harness each guessed, a job
could be killed by one while the other still expected it to finish. Both call these functions.

Two ideas, both pure functions (no I/O except `current_load_factor`):

* Stretch by load. The reference is seed 004's guide for its host: 1-minute load below 5 is
  normal, 5-14 is slower, above 14 expect three times slower and multiply timeouts by 3. The
  host's core count was not stated; the guide reads naturally as "up to about one runnable
  process per core nothing waits", which puts that host near 5 cores, and then 14 is 2.8 per
  core. So, per core `p = load1 / cores`:

      factor(p) = 1.0                              for p <= 1.0
                = 1.0 + (p - 1.0) * 2.0 / 1.8      for 1.0 < p < 2.8   (straight line)
                = 3.0                              for p >= 2.8

  Linear in between because a CPU-bound process's share of a core falls roughly as
  cores / runnable once the cores are full, so its slowdown grows about linearly with load per
  core. Capped at 3.0 because that is the largest stretch the guide asks for, and an unbounded
  stretch would let a stuck job hold a slot for ever on a host that is already in trouble.

* Learn from history (GNU parallel's `--timeout N%`): a job that takes much longer than its
  siblings usually did is probably stuck, so the limit is a percentage of the median of past
  durations, never above the configured limit, never below a floor.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

NORMAL_PER_CORE = 1.0  # load per core up to which nothing is stretched
FULL_PER_CORE = 2.8  # load per core from which the full stretch applies (seed 004: 14 vs 5)
MAX_FACTOR = 3.0  # seed 004: "expect 3x slower, stretch timeouts x3"


def load_factor(load1: float, cores: int) -> float:
    """Timeout stretch for a 1-minute load average on `cores` cores: in [1.0, 3.0], monotonic."""
    if not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an integer >= 1, got {cores!r}")
    if math.isnan(load1) or load1 < 0:
        raise ValueError(f"load1 must be a number >= 0, got {load1!r}")
    per_core = load1 / cores
    if per_core <= NORMAL_PER_CORE:
        return 1.0
    if per_core >= FULL_PER_CORE:
        return MAX_FACTOR
    slope = (MAX_FACTOR - 1.0) / (FULL_PER_CORE - NORMAL_PER_CORE)
    return min(MAX_FACTOR, 1.0 + (per_core - NORMAL_PER_CORE) * slope)


def current_load_factor() -> float:
    """`load_factor` for this host right now (one read of the load average)."""
    return load_factor(os.getloadavg()[0], os.cpu_count() or 1)


def stretch(timeout: float | None, factor: float) -> float | None:
    """`timeout` times `factor`; None (no limit) stays None."""
    if math.isnan(factor) or factor < 1.0:
        raise ValueError(f"stretch factor must be >= 1.0, got {factor!r}")
    if timeout is None:
        return None
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    return timeout * factor


@dataclass(frozen=True)
class Timeouts:
    """A job's two limits: `total` run time, and `stall` (longest time without output)."""

    total: float | None
    stall: float | None

    def stretched(self, factor: float) -> "Timeouts":
        return Timeouts(stretch(self.total, factor), stretch(self.stall, factor))


def stretch_timeouts(total: float | None, stall: float | None, factor: float) -> Timeouts:
    """Both limits of a job stretched by the same load factor."""
    return Timeouts(total, stall).stretched(factor)


def learned_timeout(
    past_durations: Iterable[float],
    percent: float,
    configured_cap: float | None,
    minimum: float,
) -> float | None:
    """`percent`% of the median past duration, at most `configured_cap`, at least `minimum`.

    None when there is no history yet (the caller then uses its configured timeout). The cap
    wins over the floor: the configured timeout is the operator's hard limit, the floor only
    protects short histories from killing a job that is merely a little slower than usual.
    """
    durations = [float(d) for d in past_durations]
    if not (percent > 0) or math.isinf(percent):
        raise ValueError(f"percent must be a finite number > 0, got {percent!r}")
    if math.isnan(minimum) or minimum < 0:
        raise ValueError(f"minimum must be >= 0 seconds, got {minimum!r}")
    if configured_cap is not None and (math.isnan(configured_cap) or configured_cap <= 0):
        raise ValueError(f"configured_cap must be > 0 seconds or None, got {configured_cap!r}")
    for d in durations:
        if math.isnan(d) or math.isinf(d) or d < 0:
            raise ValueError(f"past durations must be finite and >= 0, got {d!r}")
    if not durations:
        return None
    value = max(minimum, statistics.median(durations) * percent / 100.0)
    if configured_cap is not None:
        value = min(value, configured_cap)
    return value
