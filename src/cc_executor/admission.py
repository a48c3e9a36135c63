"""The service's admission rule: start a job when the host shows room, measured, not assumed.

Why: counting every running job as one unit of load capped an idle 2-core host at about 8 jobs
(`max_load`), while a `claude -p` job mostly waits on the API. The rule now reads what the host
feels, each sample (every `sample_interval`, 0.5 s by default):

1. free memory at least `min_free_mem`;
2. the 1-minute load, plus what the running jobs will still add to it, at most `max_load` (seed
   000's ceiling, 8): each job counts its *measured* CPU rate (a waiting job ~0, a job that burns
   a core 1) times the share the lagging average does not show yet (`load.unshown_load`);
3. PSI (`pressure`): the share of the last window some task stalled on CPU, memory or IO, each
   under its limit (`cpu_pressure_limit`...);
4. slow start, the burst protection: at most `slow_start` jobs start in one sample window; each
   calm sample after a full window doubles it, a pressured one (any PSI share over half its
   limit) or an idle one (no start) puts it back. Fifty sleepers then start in a few windows; a burst of CPU burners stops growing as soon
   as the first ones make the CPU contended.

Where PSI is missing (older kernels, some containers), rules 3 and 4 fall away and rule 2 counts
every young job as `job_load` (the rule before PSI); /health and `python -m cc_executor.load`
say which rule is in force. Pure: the service feeds it readings, pressures and job rates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .load import LOAD1_TAU, Decision, LoadReading, decide, unshown_load
from .pressure import Pressure

RULE_PRESSURE = "pressure"
RULE_FALLBACK = "load-pacing (PSI unavailable)"
MAX_WINDOW = 1024


@dataclass(frozen=True)
class Limits:
    """The thresholds, all settings (see settings.py)."""

    max_load: float
    min_free_mem: int
    cpu_pressure: float
    memory_pressure: float
    io_pressure: float
    slow_start: int
    job_load: float


@dataclass(frozen=True)
class RunningJob:
    """What admission knows of a running job: its age, and its CPU rate when measured yet."""

    age: float
    cpu_rate: float | None


class Admission:
    """Slow-start state plus the decision; `on_sample` once per reading, `started` per start."""

    def __init__(self, slow_start: int) -> None:
        self.window = max(1, slow_start)
        self.started_in_window = 0
        self.pressure: Pressure | None = None
        self.psi = True
        self.last: Decision | None = None

    @property
    def rule(self) -> str:
        return RULE_PRESSURE if self.psi else RULE_FALLBACK

    def on_sample(self, pressure: Pressure | None, psi: bool, limits: Limits) -> None:
        """A new reading (`pressure`: its window, None before a second sample; `psi`: whether
        the host has PSI at all): grow the window if the host stayed calm and the window was
        used, put it back if not, and open it."""
        self.pressure, self.psi = pressure, psi
        if pressure is None or not _calm(pressure, limits) or self.started_in_window == 0:
            # Contended, or idle (nothing asked to start): the next burst starts small again,
            # whatever a calm burst before it earned (TCP restarts slow start after idle too).
            self.window = max(1, limits.slow_start)
        elif self.started_in_window >= self.window:
            self.window = min(self.window * 2, MAX_WINDOW)
        self.started_in_window = 0

    def started(self) -> None:
        self.started_in_window += 1

    def decide(self, reading: LoadReading, jobs: Iterable[RunningJob], limits: Limits) -> Decision:
        jobs = list(jobs)
        if not self.psi:  # no PSI: the rule before it, every young job a unit of load
            d = decide(reading, limits.max_load, limits.min_free_mem,
                       starting=limits.job_load * unshown_load(j.age for j in jobs))
            return self._note(d)
        starting = sum((j.cpu_rate or 0.0) * math.exp(-max(j.age, 0.0) / LOAD1_TAU)
                       for j in jobs)
        d = decide(reading, limits.max_load, limits.min_free_mem, starting=starting)
        if not d.may_start:
            return self._note(d)
        p = self.pressure
        for signal, value, limit in (() if p is None else (
                ("cpu_pressure", p.cpu, limits.cpu_pressure),
                ("memory_pressure", p.memory, limits.memory_pressure),
                ("io_pressure", p.io, limits.io_pressure))):
            if value > limit:
                name = signal.replace("_", " ")
                return self._note(Decision(
                    False, f"{name} {value:.2f} > limit {limit:.2f} (tasks stalled "
                    f"{value:.0%} of the last {p.seconds:.1f} s)", signal, round(value, 4), limit))
        if self.started_in_window >= self.window:
            return self._note(Decision(
                False, f"slow start: {self.started_in_window} jobs started since the last "
                f"sample (window {self.window}; it doubles while the host stays calm)",
                "slow_start", float(self.started_in_window), float(self.window)))
        cpu = "" if p is None else f", cpu pressure {p.cpu:.2f}"
        return self._note(Decision(True, f"{d.reason}{cpu}, slow-start window {self.window}"))

    def _note(self, d: Decision) -> Decision:
        self.last = d
        return d

    def describe(self) -> dict[str, object]:
        """For /health: which rule, the window, the pressures, and the last decision."""
        out: dict[str, object] = {"rule": self.rule, "window": self.window,
                                  "started_in_window": self.started_in_window}
        if self.pressure is not None:
            out["pressure"] = self.pressure.to_dict()
        if self.last is not None:
            out["last_decision"] = self.last.to_dict()
        return out


def _calm(p: Pressure, limits: Limits) -> bool:
    """Every share under half its limit: room to grow, not just room to stay."""
    return (p.cpu <= limits.cpu_pressure / 2 and p.memory <= limits.memory_pressure / 2
            and p.io <= limits.io_pressure / 2)
