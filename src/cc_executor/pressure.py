"""Linux pressure stall information (PSI): how much of the time work waited for CPU, memory or IO.

Why PSI: the load average counts runnable tasks, so it cannot tell a host with sixty jobs asleep
on the network from one with sixty jobs fighting for two cores, and it lags by a minute. PSI
counts the time tasks actually stalled. The kernel keeps cumulative `total=` counters (micro-
seconds) besides its 10/60/300 s averages; two readings of the totals give the exact stalled
share of the time between them, so a window as short as the sampling interval is exact instead
of waiting for `avg10` to catch up.

`parse` and `window` are pure (tested with plain text); `read_totals` reads `/proc/pressure`
(or the folder the `psi_dir` setting names) and returns None where PSI is missing (older kernels,
some containers): callers then fall back to the load-average rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

RESOURCES = ("cpu", "memory", "io")


@dataclass(frozen=True, slots=True)
class Totals:
    """Cumulative stalled microseconds ("some": at least one task waited) per resource, and the
    monotonic time they were read at."""

    cpu: int
    memory: int
    io: int
    at: float


@dataclass(frozen=True, slots=True)
class Pressure:
    """The share of wall time (0..1) some task stalled on each resource, over one window."""

    cpu: float
    memory: float
    io: float
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return {"cpu": round(self.cpu, 4), "memory": round(self.memory, 4),
                "io": round(self.io, 4), "window": round(self.seconds, 3)}


def parse(text: str) -> int:
    """The "some" line's `total=` of one /proc/pressure file (microseconds).

    ValueError when the text has no such line (a malformed or foreign file)."""
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "total":
                    return int(value)
    raise ValueError(f"no 'some ... total=' line in {text[:80]!r}")


def read_totals(folder: str, now: float) -> Totals | None:
    """Read the three files; None when any is missing or unreadable (PSI unavailable)."""
    values = []
    for name in RESOURCES:
        try:
            with open(os.path.join(folder, name), encoding="ascii") as f:
                values.append(parse(f.read()))
        except (OSError, ValueError):
            return None
    return Totals(values[0], values[1], values[2], now)


def window(before: Totals, after: Totals) -> Pressure | None:
    """The stalled share of the time between two readings; None for an empty window (or a
    counter that went backwards, which only a reset can cause)."""
    seconds = after.at - before.at
    if seconds <= 0:
        return None
    shares = []
    for name in RESOURCES:
        stalled = getattr(after, name) - getattr(before, name)
        if stalled < 0:
            return None
        shares.append(min(1.0, stalled / 1e6 / seconds))
    return Pressure(shares[0], shares[1], shares[2], seconds)
