"""The load options of `python -m stress.local|complex`: profiles, thresholds, the capacity search.

Owns `add_load_options` (the options, in their own --help group), `check_load_options` (every load
option that can be wrong on its own or against another option -> a `stress.run.profile.LoadPlan`,
or None for a plain run) and `check_plan_fits` (a test the profile could never start).

Why refusals instead of guesses: a profile decides how many tests run and how often, so
`--repeat` always contradicts it, and `--concurrency` does unless it only restates the peak of
`--stages`; a silently ignored option would make a capacity figure wrong without anyone noticing.
Each refusal is one line naming the option or the bad token (exit 2).

Must not import `stress.cli` or `stress.session` (they import this module).
"""

from __future__ import annotations

import argparse
import os

from cc_executor.settings import parse_max_load
from stress.argtypes import UsageError, int_at_least
from stress.run.planned import Planned
from stress.run.profile import (
    DEFAULT_MAX_STARTS,
    DEFAULT_MAX_STEPS,
    DEFAULT_STEP_DURATION,
    LoadPlan,
    Profile,
    StepSearch,
    build_arrival_rate,
    build_step_search,
    parse_stages,
)
from stress.run.thresholds import parse_threshold
from stress.run.units import OptionError, fmt_duration

DEFAULT_STEP = 2


def add_load_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "load profiles and thresholds",
        "k6-style runs: tests are drawn round-robin from the suites and repeated until the "
        "profile ends; each instance of an instances test counts as one test in flight. "
        "See docs/harness.md \"Load runs\".")
    g.add_argument("--stages", metavar="D:N,...",
                   help="ramp the tests in flight linearly to each target N over each "
                        "duration D, from 0 (k6 ramping-vus), e.g. 30s:8,60s:32,30s:0")
    g.add_argument("--arrival-rate", metavar="N/s",
                   help="start tests at this rate whether or not earlier ones ended (k6 "
                        "constant-arrival-rate), e.g. 2/s, 90/m, 3/10s; needs --duration")
    g.add_argument("--duration", metavar="D", help="how long --arrival-rate starts tests, e.g. 60s")
    g.add_argument("--max-in-flight", type=int_at_least(1), metavar="N",
                   help="--arrival-rate: a start that would exceed N tests in flight is dropped "
                        "(counted in the report; default 50)")
    g.add_argument("--threshold", action="append", default=[], metavar="EXPR",
                   help="pass/fail criterion judged at the end, e.g. 'p95_duration<30s', "
                        "'error_rate<1%%', 'host_load<8', 'peak_rss<2GiB'; suffix :abort stops "
                        "the run as soon as it is crossed; repeatable; a crossed one exits 99")
    g.add_argument("--find-capacity", action="store_true",
                   help="step the tests in flight up (N, 2N, 3N...) until a step crosses its "
                        "thresholds (default: errors < 1%%, p95 run time and p95 time to "
                        "completion within 2x of the first step's, load under --max-load, no "
                        "OOM) and report the highest that held")
    g.add_argument("--step", type=int_at_least(1), metavar="N",
                   help=f"--find-capacity: tests in flight added per step (default {DEFAULT_STEP})")
    g.add_argument("--step-duration", metavar="D",
                   help="--find-capacity: how long each step runs (default "
                        f"{fmt_duration(DEFAULT_STEP_DURATION)})")
    g.add_argument("--max-steps", type=int_at_least(1), metavar="N",
                   help=f"--find-capacity: at most N steps (default {DEFAULT_MAX_STEPS})")
    g.add_argument("--max-starts", type=int_at_least(1), metavar="N",
                   help=f"no profile starts more than N tests (default {DEFAULT_MAX_STARTS})")


def _profile_name(ns: argparse.Namespace) -> list[str]:
    return [name for name, on in (("--stages", ns.stages is not None),
                                  ("--arrival-rate", ns.arrival_rate is not None),
                                  ("--find-capacity", ns.find_capacity)) if on]


def _only_with(ns: argparse.Namespace) -> None:
    """Options that mean something only with one profile."""
    for option, value, needs, on in (
            ("--duration", ns.duration, "--arrival-rate", ns.arrival_rate is not None),
            ("--max-in-flight", ns.max_in_flight, "--arrival-rate", ns.arrival_rate is not None),
            ("--step", ns.step, "--find-capacity", ns.find_capacity),
            ("--step-duration", ns.step_duration, "--find-capacity", ns.find_capacity),
            ("--max-steps", ns.max_steps, "--find-capacity", ns.find_capacity)):
        if value is not None and not on:
            raise UsageError(f"{option} is only used with {needs}")
    if ns.max_starts is not None and not _profile_name(ns):
        raise UsageError("--max-starts is only used with --stages, --arrival-rate or --find-capacity")


def _build_profile(ns: argparse.Namespace, name: str) -> Profile:
    if name == "--stages":
        return parse_stages(ns.stages)
    if name == "--arrival-rate":
        return build_arrival_rate(ns.arrival_rate, ns.duration, ns.max_in_flight)
    return build_step_search(ns.step or DEFAULT_STEP,
                             ns.step_duration or fmt_duration(DEFAULT_STEP_DURATION),
                             ns.max_steps or DEFAULT_MAX_STEPS)


def _contradictions(ns: argparse.Namespace, name: str, profile: Profile) -> None:
    """Options a profile overrides: refused with the reason, never silently ignored."""
    if ns.repeat is not None:
        raise UsageError(f"--repeat contradicts {name}: a load profile repeats the tests "
                         "round-robin until it ends (drop --repeat)")
    if ns.concurrency is not None:
        if name == "--arrival-rate":
            raise UsageError("--concurrency does not apply to --arrival-rate: an open model "
                             "starts tests at its rate (cap what runs at once with --max-in-flight)")
        if name == "--find-capacity":
            raise UsageError("--concurrency contradicts --find-capacity: the search sets it per "
                             "step (use --step N)")
        if ns.concurrency != profile.peak:
            raise UsageError(f"--concurrency {ns.concurrency} contradicts --stages, whose peak is "
                             f"{profile.peak} in flight (drop --concurrency)")
    if name == "--find-capacity" and ns.fail_fast:
        raise UsageError("--fail-fast contradicts --find-capacity: the search expects failures "
                         "at the step that breaks")


def check_load_options(ns: argparse.Namespace) -> LoadPlan | None:
    """The run's LoadPlan (None: a plain run); UsageError naming the option or token. Leaves
    `ns.concurrency` at what the run uses (the profile's peak, else the given value or 1)."""
    names = _profile_name(ns)
    if len(names) > 1:
        raise UsageError(f"{names[0]} and {names[1]} are two load profiles; give one")
    _only_with(ns)
    try:
        profile = _build_profile(ns, names[0]) if names else None
        thresholds = tuple(parse_threshold(t) for t in ns.threshold)
    except OptionError as e:
        raise UsageError(str(e)) from None
    if profile is not None:
        _contradictions(ns, names[0], profile)
    for th in thresholds:
        if th.relative and not ns.find_capacity:
            raise UsageError(f"--threshold: {th.text!r}: a relative limit (2x) compares with "
                             "the first step of --find-capacity; give an absolute one")
    ns.concurrency = profile.peak if profile is not None else (ns.concurrency or 1)
    if profile is None and not thresholds:
        return None
    max_load = parse_max_load(ns.max_load, os.cpu_count() or 1) if ns.max_load else None
    return LoadPlan(profile, thresholds, ns.max_starts or DEFAULT_MAX_STARTS, max_load)


def check_plan_fits(load: LoadPlan | None, plan: list[Planned]) -> None:
    """A test with more instances than the profile ever allows in flight would never start."""
    if load is None or load.profile is None:
        return
    room = load.profile.step if isinstance(load.profile, StepSearch) else load.profile.peak
    what = ("the first step (--step)" if isinstance(load.profile, StepSearch)
            else "--max-in-flight" if load.profile.kind == "arrival_rate" else "the peak of --stages")
    for p in plan:
        inst = p.test.instances
        if p.skip is None and inst is not None and inst.count > room:
            raise UsageError(f"test {p.test.id!r} runs {inst.count} instances at once, more than "
                             f"{what} allows in flight ({room}); each instance is one test in flight")


__all__ = ["DEFAULT_STEP", "add_load_options", "check_load_options", "check_plan_fits"]
