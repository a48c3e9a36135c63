"""Load profiles: how many tests are in flight, or when each one starts, over time (no I/O).

Owns the three shapes a run can take besides a fixed `--concurrency N`, the parsers of their
option text, and `LoadPlan` (a profile plus the run's thresholds and bounds):

    Stages       --stages 30s:8,60s:32,30s:0     closed model, k6 `ramping-vus`: the number of
                                                  tests in flight ramps linearly to each target
    ArrivalRate  --arrival-rate 2/s --duration 60s [--max-in-flight N]
                                                  open model, k6 `constant-arrival-rate`: starts
                                                  at a fixed rate whether earlier tests ended
    StepSearch   --find-capacity [--step N] [--step-duration 60s] [--max-steps K]
                                                  steps of N, 2N, 3N... in flight (run/capacity.py
                                                  decides when to stop)

Why pure: what a profile promises (the target at time t, when the i-th start is due) is what the
tests check the run against, so it must be computable without a clock or a service; the driver
(`stress.run.driver`) only asks these values at the times it observes.

Rules (docs/harness.md "Load profiles"): durations need a unit (`500ms`, `30s`, `2m`, `1h`,
compound `1m30s`), since k6 reads a bare number as milliseconds and this harness reads seconds
everywhere else; stages ramp from 0; a ramp changes the target one step at a time at evenly spaced
moments, rounding toward the stage's start value (so 0 -> 8 over 8 s reaches 1 at 1 s and 8 at
8 s), and a 0 s stage jumps at once.

Imports nothing of the harness but `stress.run.units` and `stress.run.thresholds` (for `LoadPlan`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from stress.run.thresholds import Threshold
from stress.run.units import MAX_DURATION, OptionError, fmt_duration, parse_duration

MAX_IN_FLIGHT = 1024
"""The most tests a profile may keep in flight (each holds a connection and a process tree)."""
MAX_STAGES = 100
MAX_RATE = 1000.0
"""Starts per second, at most."""
MAX_STEPS = 100
DEFAULT_MAX_STEPS = 8
DEFAULT_STEP_DURATION = 60.0
DEFAULT_MAX_IN_FLIGHT = 50
"""--arrival-rate without --max-in-flight (k6 makes you choose maxVUs; this is ours)."""
DEFAULT_MAX_STARTS = 20000
"""--max-starts: no profile starts more tests than this, however short they are."""

_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
               "h": 3600.0, "hour": 3600.0}
_EPS = 1e-9


class ProfileError(OptionError):
    """A malformed profile option; the message names the option and the bad token."""


def parse_rate(text: str, option: str = "--arrival-rate") -> float:
    """'2/s' -> 2.0, '120/m' -> 2.0, '3/10s' -> 0.3, '1/500ms' -> 2.0 (starts per second)."""
    count, sep, per = text.strip().lower().partition("/")
    bad = ProfileError(f"{option}: bad rate {text!r} (expected N/s, N/m, N/h or N/DURATION, "
                       "e.g. 2/s or 3/10s)")
    if not sep or not re.fullmatch(r"\d+(?:\.\d+)?", count.strip()):
        raise bad
    per = per.strip()
    if per in _RATE_UNITS:
        seconds = _RATE_UNITS[per]
    else:
        try:
            seconds = parse_duration(per, option)
        except OptionError:
            raise bad from None
    rate = float(count) / seconds if seconds > 0 else math.inf
    if not 0 < rate <= MAX_RATE:
        raise ProfileError(f"{option}: rate {text!r} must be above 0 and at most "
                           f"{MAX_RATE:g}/s")
    return rate


def _int_in(text: str, option: str, low: int, high: int, what: str) -> int:
    t = text.strip()
    if not re.fullmatch(r"\d+", t) or not low <= int(t) <= high:
        raise ProfileError(f"{option}: bad {what} {text!r} (a whole number from {low} to {high})")
    return int(t)


@dataclass(frozen=True)
class Stage:
    duration: float
    target: int

    def to_json(self) -> dict[str, Any]:
        return {"duration": self.duration, "target": self.target}


@dataclass(frozen=True)
class Stages:
    """k6 ramping-vus: the target in flight moves linearly from the previous stage's target (0
    before the first) to each stage's over its duration."""

    stages: tuple[Stage, ...]
    text: str = ""
    start: int = 0
    kind: str = field(default="stages", init=False)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.stages)

    @property
    def peak(self) -> int:
        return max([self.start, *(s.target for s in self.stages)])

    def _segments(self):
        t, a = 0.0, self.start
        for s in self.stages:
            yield t, s.duration, a, s.target
            t, a = t + s.duration, s.target

    def target(self, t: float) -> int:
        """The number of tests the profile wants in flight at `t` seconds (0 after the end)."""
        if t < 0 or t >= self.duration:
            return 0 if t >= self.duration else self.start
        for t0, d, a, b in self._segments():
            if t < t0 + d:
                steps = math.floor(abs(b - a) * (t - t0) / d + _EPS)
                return a + (steps if b >= a else -steps)
        return self.stages[-1].target  # pragma: no cover - t < duration always finds a segment

    def next_change(self, t: float) -> float | None:
        """The first moment after `t` at which `target` changes; None when it never will.

        A ramp's next step can fall where a 0 s stage jumps back to the same count (`1s:1,0s:0`
        from 0): no change there, so the search goes on from it (bounded: each step moves on)."""
        now = self.target(t)
        for _ in range(10_000):
            at = self._next_step(t)
            if at is None or at >= self.duration or self.target(at) != now:
                return at
            t = at
        return None  # pragma: no cover - more steps than any profile can have

    def _next_step(self, t: float) -> float | None:
        """The next moment after `t` at which a stage would move the target (a ramp's step or a
        jump), whether or not the stage after it undoes that."""
        for t0, d, a, b in self._segments():
            if a == b or t0 + d <= t:
                continue  # a constant stage, or one already over
            if d == 0:
                return t0  # a jump, still ahead
            n = abs(b - a)
            j = 1 if t < t0 else math.floor(n * (t - t0) / d + _EPS) + 1
            if j <= n:
                return t0 + d * j / n
        return self.duration if t < self.duration and self.stages[-1].target != 0 else None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "start": self.start,
                "stages": [s.to_json() for s in self.stages], "duration": self.duration,
                "peak": self.peak}


def parse_stages(text: str, option: str = "--stages") -> Stages:
    """'30s:8,60s:32,30s:0' -> Stages; ProfileError naming the bad stage."""
    tokens = text.split(",")
    if len(tokens) > MAX_STAGES:
        raise ProfileError(f"{option}: {len(tokens)} stages, at most {MAX_STAGES}")
    stages = []
    for token in tokens:
        dur, sep, target = token.strip().partition(":")
        if not sep:
            raise ProfileError(f"{option}: bad stage {token!r} (expected DURATION:TARGET, e.g. 30s:8)")
        try:
            seconds = parse_duration(dur, option)
        except OptionError:
            raise ProfileError(f"{option}: bad duration {dur!r} in stage {token!r} (expected "
                               "e.g. 500ms, 30s, 2m, 1m30s)") from None
        stages.append(Stage(seconds, _int_in(target, option, 0, MAX_IN_FLIGHT,
                                              f"target in stage {token!r}:")))
    profile = Stages(tuple(stages), text=text)
    if profile.duration <= 0:
        raise ProfileError(f"{option}: {text!r} lasts 0 s; give at least one stage a duration")
    if profile.duration > MAX_DURATION:
        raise ProfileError(f"{option}: {text!r} lasts longer than {fmt_duration(MAX_DURATION)}")
    if profile.peak == 0:
        raise ProfileError(f"{option}: {text!r} never has a test in flight (every target is 0)")
    return profile


@dataclass(frozen=True)
class ArrivalRate:
    """k6 constant-arrival-rate: start i is due at i / rate seconds (i = 0, 1, ...) while that is
    before `duration`; a start that would exceed `max_in_flight` is dropped, not delayed."""

    rate: float
    duration: float
    max_in_flight: int
    text: str = ""
    kind: str = field(default="arrival_rate", init=False)

    @property
    def total_starts(self) -> int:
        return max(1, math.ceil(self.duration * self.rate - _EPS))

    @property
    def peak(self) -> int:
        return self.max_in_flight

    def start_time(self, i: int) -> float:
        return i / self.rate

    def due(self, t: float) -> int:
        """How many starts are due by `t` seconds."""
        if t < 0:
            return 0
        return min(self.total_starts, math.floor(t * self.rate + _EPS) + 1)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "rate_per_second": self.rate,
                "duration": self.duration, "max_in_flight": self.max_in_flight,
                "planned_starts": self.total_starts, "peak": self.peak}


@dataclass(frozen=True)
class StepSearch:
    """--find-capacity: step k (0-based) keeps `step * (k + 1)` tests in flight for
    `step_duration`, for at most `max_steps` steps."""

    step: int
    step_duration: float
    max_steps: int
    kind: str = field(default="find_capacity", init=False)

    def concurrency(self, k: int) -> int:
        return self.step * (k + 1)

    @property
    def peak(self) -> int:
        return self.concurrency(self.max_steps - 1)

    @property
    def duration(self) -> float:
        return self.step_duration * self.max_steps

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step, "step_duration": self.step_duration,
                "max_steps": self.max_steps, "peak": self.peak}


Profile = Stages | ArrivalRate | StepSearch


@dataclass(frozen=True)
class LoadPlan:
    """What a load run is asked to do besides the suites: a profile (None: the fixed
    --concurrency), the thresholds, and the bounds every load loop keeps."""

    profile: Profile | None
    thresholds: tuple[Threshold, ...] = ()
    max_starts: int = DEFAULT_MAX_STARTS
    max_load: float | None = None
    """--max-load as a number, when given (the capacity search's default load limit)."""

    @property
    def capacity(self) -> StepSearch | None:
        return self.profile if isinstance(self.profile, StepSearch) else None


def build_step_search(step: int, step_duration: str, max_steps: int) -> StepSearch:
    seconds = parse_duration(step_duration, "--step-duration")
    if seconds <= 0:
        raise ProfileError(f"--step-duration: {step_duration!r} must be above 0")
    if not 1 <= step <= MAX_IN_FLIGHT:
        raise ProfileError(f"--step: {step} must be from 1 to {MAX_IN_FLIGHT}")
    if not 1 <= max_steps <= MAX_STEPS:
        raise ProfileError(f"--max-steps: {max_steps} must be from 1 to {MAX_STEPS}")
    if step * max_steps > MAX_IN_FLIGHT:
        raise ProfileError(f"--step {step} x --max-steps {max_steps} would put "
                           f"{step * max_steps} tests in flight, more than {MAX_IN_FLIGHT}")
    return StepSearch(step, seconds, max_steps)


def build_arrival_rate(rate: str, duration: str | None, max_in_flight: int | None) -> ArrivalRate:
    if duration is None:
        raise ProfileError("--arrival-rate needs --duration (e.g. --duration 60s)")
    per_second = parse_rate(rate)
    seconds = parse_duration(duration, "--duration")
    if seconds <= 0:
        raise ProfileError(f"--duration: {duration!r} must be above 0")
    cap = DEFAULT_MAX_IN_FLIGHT if max_in_flight is None else max_in_flight
    if not 1 <= cap <= MAX_IN_FLIGHT:
        raise ProfileError(f"--max-in-flight: {cap} must be from 1 to {MAX_IN_FLIGHT}")
    return ArrivalRate(per_second, seconds, cap, text=rate)


__all__ = ["DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MAX_STARTS", "DEFAULT_MAX_STEPS",
           "DEFAULT_STEP_DURATION", "MAX_DURATION", "MAX_IN_FLIGHT", "MAX_RATE", "MAX_STAGES",
           "MAX_STEPS", "ArrivalRate", "LoadPlan", "Profile", "ProfileError", "Stage", "Stages",
           "StepSearch", "build_arrival_rate", "build_step_search", "fmt_duration",
           "parse_duration", "parse_rate", "parse_stages"]
