"""The service's admission rule: start a job when the host shows room, measured, not assumed.

Why: counting every running job as one unit of load capped an idle 2-core host at about 8 jobs
(`max_load`), while a `claude -p` job mostly waits on the API. The rule now reads what the host
feels, each sample (every `sample_interval`, 0.5 s by default):

1. free memory at least `min_free_mem`;
2. the 1-minute load, plus what the running jobs will still add to it, at most `max_load` (seed
   000's ceiling, 8): each job counts its *measured* CPU rate (a waiting job ~0, a job that burns
   a core 1) times the share the lagging average does not show yet (`load.unshown_load`);
3. PSI (`pressure`): the share of the last window some task stalled on CPU, memory or IO, each
   under its limit (`cpu_pressure_limit`...); CPU counts while the heavy jobs themselves use at
   least `job_cpu_share` of the cores (else the contention is the service's, many light jobs'
   or another tenant's, and holding light jobs back would only serialise them);
4. slow start, the burst protection: at most `slow_start` *young or heavy* jobs at once (young:
   started, not measured yet; heavy: measured runnable 80% of the time or more, its *demand*
   (`usage`: the time it ran or waited for a CPU), so a burner sharing a busy CPU still reads
   heavy; half a core of CPU rate where schedstat is missing). Each calm sample after the window
   filled doubles it (quadruples it when no running job is heavy); a contended one (a counted
   PSI share over half its limit) or an idle one (no start) puts it back, and one in which under
   half of it was used halves it (down to the start). While the window holds jobs back the
   service samples every `QUICK_SAMPLE` seconds instead of every `sample_interval`, so a burst of
   light jobs starts in steps of 8, 32, 128 about a tenth of a second apart. A stream of short
   jobs one after another is never held by it. Sixty sleepers run together within a quarter
   second; a burst of CPU burners starts 8, which are measured heavy and make the CPU contended,
   and nothing more starts until they end.

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
HEAVY = 0.5
"""A job measured using this many cores or more counts against the slow-start window."""
HEAVY_DEMAND = 0.8
"""The same for demand (run + run-queue wait): a burner is runnable all the time (~1.0 however
starved), while a light job's waits grow with the host's contention, so the bar sits higher."""
QUICK_SAMPLE = 0.06
"""Seconds to the next sample while the slow-start window holds jobs back: just over the age
at which a job's demand is first measured (`usage.FIRST_DEMAND_AGE`)."""


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
    job_cpu_share: float = 0.5
    cores: int = 1
    settle: float = 0.25
    """Seconds a job must have run before its effect on pressure counts as evidence to grow."""


@dataclass(frozen=True)
class RunningJob:
    """What admission knows of a running job: its age, and its CPU rate and demand once
    measured (None until the first usage pass after its start: a *young* job)."""

    age: float
    cpu_rate: float | None
    demand: float | None = None
    """Cores it ran or waited for (schedstat); None where unknown: then `cpu_rate` judges."""

    @property
    def young(self) -> bool:
        return self.cpu_rate is None and self.demand is None

    @property
    def heavy(self) -> bool:
        if self.demand is not None:
            return self.demand >= HEAVY_DEMAND
        return self.cpu_rate is not None and self.cpu_rate >= HEAVY


class Admission:
    """Slow-start state plus the decision; `on_sample` once per reading, `started` per start."""

    def __init__(self, slow_start: int) -> None:
        self.window = max(1, slow_start)
        self.started_in_window = 0
        self.young_peak = 0  # most young (and heavy) jobs at once since the last sample
        self.asked = False  # whether any job asked to start since the last sample
        self.cpu_by_jobs = False  # at the last sample, the jobs used job_cpu_share of the cores
        self.pressure: Pressure | None = None
        self.psi = True
        self.last: Decision | None = None

    @property
    def rule(self) -> str:
        return RULE_PRESSURE if self.psi else RULE_FALLBACK

    def on_sample(self, pressure: Pressure | None, psi: bool, limits: Limits,
                  jobs: Iterable[RunningJob] = ()) -> None:
        """A new reading (`pressure`: its window, None before a second sample; `psi`: whether
        the host has PSI at all): grow the window if the host stayed calm and the window was
        filled, put it back if not, and open it."""
        self.pressure, self.psi = pressure, psi
        jobs = list(jobs)
        # Judged once per sample, with rates measured for it: between samples a job's rate is
        # stale (measured while it shared the CPU), and the pressure window is the same anyway.
        # What the heavy jobs consume: 8 burners on 2 cores consume both (measured from 50 ms
        # of age, `usage`). Not light jobs: a hundred streaming output together consume about a
        # core in many short wake-ups and the host keeps up (holding them only serialises
        # them); should so many run that they starve, each becomes runnable most of the time,
        # heavy by demand, and counts then. Not what jobs wait for: on a host another tenant
        # keeps busy, a light job's run-queue waits grow with contention it suffers.
        jobs_cpu = sum(j.cpu_rate or 0.0 for j in jobs if j.heavy)
        self.cpu_by_jobs = jobs_cpu >= limits.job_cpu_share * limits.cores
        calm = pressure is not None and not self._contended(pressure, limits, 0.5)
        settled = all(j.age >= limits.settle for j in jobs)
        if not calm or not self.asked:
            # Contended, or idle (nothing asked to start): the next burst starts small again,
            # whatever a calm burst before it earned (TCP restarts slow start after idle too).
            self.window = max(1, limits.slow_start)
        elif self.young_peak >= self.window and settled:  # calm, with the jobs showing in it
            # x4 when none of the jobs is heavy (they proved light: sleepers, API waiters,
            # output streamers), x2 otherwise: a burst of light jobs is all running after two
            # or three quick samples instead of four or five.
            grow = 2 if any(j.heavy for j in jobs) else 4
            self.window = min(self.window * grow, MAX_WINDOW)
        elif 2 * self.young_peak < self.window:
            # A window a burst earned is kept only while used: under a steady stream of light
            # jobs it shrinks back, so a burst of burners that follows starts `slow_start`,
            # not the 64 the light burst grew it to (TCP's congestion window validation).
            self.window = max(max(1, limits.slow_start), self.window // 2)
        self.started_in_window = 0
        self.young_peak = 0
        self.asked = False

    def started(self) -> None:
        self.started_in_window += 1

    def decide(self, reading: LoadReading, jobs: Iterable[RunningJob], limits: Limits) -> Decision:
        jobs = list(jobs)
        self.asked = True
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
        held = None if p is None else self._contended(p, limits, 1.0)
        if held is not None:
            signal, value, limit = held
            return self._note(Decision(
                False, f"{signal.replace('_', ' ')} {value:.2f} > limit {limit:.2f} (tasks "
                f"stalled {value:.0%} of the last {p.seconds:.1f} s)", signal, round(value, 4),
                limit))
        # Young jobs (not measured yet) and heavy ones (measured burning half a core or more)
        # share the window: a burst of burners is held to it even once measured.
        young = sum(1 for j in jobs if j.young or j.heavy)
        self.young_peak = max(self.young_peak, young)  # a full window held back demand
        if young >= self.window:
            return self._note(Decision(
                False, f"slow start: {young} jobs young or busy (window {self.window}; it "
                "doubles while the host stays calm)", "slow_start",
                float(young), float(self.window)))
        self.young_peak = max(self.young_peak, young + 1)
        cpu = "" if p is None else f", cpu pressure {p.cpu:.2f}"
        return self._note(Decision(True, f"{d.reason}{cpu}, slow-start window {self.window}"))

    def _contended(self, p: Pressure, limits: Limits,
                   share: float) -> tuple[str, float, float] | None:
        """The first PSI share over `share` of its limit, as (signal, value, limit); None when
        none is. CPU counts only while the jobs themselves use `job_cpu_share` of the cores:
        when the service (streaming many light jobs' output) or another tenant is what keeps
        the CPU busy, holding light jobs back only serialises them."""
        for signal, value, limit, counts in (
                ("cpu_pressure", p.cpu, limits.cpu_pressure, self.cpu_by_jobs),
                ("memory_pressure", p.memory, limits.memory_pressure, True),
                ("io_pressure", p.io, limits.io_pressure, True)):
            if counts and value > limit * share:
                return signal, value, limit
        return None

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
