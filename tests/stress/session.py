"""One harness run after its plan is made: start the services, preflight, run, stop, report.

Owns: `Session` (the run's state that a signal can cut short), `run_session` and its phases,
the decision of what each planned test's outcome is when the run stopped early, and
`run_and_report` (the run record, the history entry, the reports and the summary lines).

Order of work, and why: the model environment comes first (the services' jobs need it), then
the services (a managed one that does not start stops the run, exit 1), then the access check of
every --server and the Claude preflight (a failure stops the run with one message, exit 3,
instead of N identical test failures), then the tests. Every phase can be interrupted: the
first Ctrl-C or SIGTERM cancels the running tests (each keeps the output it had), stops the
services and still writes the reports, marked interrupted (exit 130 or 143); a second one kills
the services at once. Whatever stopped the run, every planned test appears in the report.

An early stop is recorded as an `EarlyStop` (stress.exits), never read back from the error
text: the text is for people, the marker decides the exit status.

Glossary: a *test* is an entry of a suite; a *case* is one expansion of a test; an *attempt*
is one run of a case (repeats, retries); an *instance* is one of K concurrent runs of an
instances test.

Must not import `stress.cli` (it imports this module).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import cc_executor
from cc_executor.load import read_load
from stress.argtypes import redact_argv, split_server
from stress.exits import EXIT_SIGNAL, EarlyStop, exit_status
from stress.fleet import ServiceFleet, build_fleet, describe_services, stop_json
from stress.history import History
from stress.history.link import history_line, record_history
from stress.live.view import LiveView
from stress.report import write_reports
from stress.report.host_trace import HostTrace
from stress.report.progress import Progress
from stress.report.results import RunResult, Totals
from stress.report.simulated import is_simulated, totals_line
from stress.report.text import fmt_metric
from stress.run.driver import LoadDriver
from stress.run.flaky import HaltRule
from stress.run.plan import count_runs, unmet_requirement
from stress.run.profile import ArrivalRate, LoadPlan
from stress.run.runner import CLAUDE_CAPABILITY, Planned, Runner, RunOptions
from stress.service.managed import ServiceError
from stress.service.modelmode import ModelEnvironment, model_environment, plan_needs
from stress.service.preflight import (
    access_failure,
    access_message,
    local_cli_version,
    probe_cli,
    run_preflight,
)
from stress.service.sampling import HostSampler
from stress.suite import Suite
from stress.suite import claude_stream as claude_mod

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The current phase was cut short (a signal, or an early stop): unwind to the report."""


class PreflightFailed(Interrupted):
    """The Claude preflight stopped the run before any test (exit 3); tests are reported not run."""


class ServiceFailed(Interrupted):
    """The service could not be started or reached (exit 1); tests are reported not run."""


_STOP_RAISES = {EarlyStop.SERVICE: ServiceFailed, EarlyStop.PREFLIGHT: PreflightFailed}


@dataclass
class Session:
    """One harness run: phases that a signal can cut short, and what to write at the end."""

    ns: argparse.Namespace
    tool: str
    complex_mode: bool
    suites: list[Suite]
    plan: list[Planned]
    run: RunResult
    report_dir: Path
    interrupted: str | None = None
    runner: Runner | None = None
    service: Any = None
    """The run's `ServiceFleet` once built (a second signal kills it at once)."""
    phase_task: asyncio.Task | None = None
    halt: HaltRule | None = None
    early_stop: EarlyStop | None = None
    """Why the run stopped before its tests ran (decides the exit status; `run.error` says it)."""
    progress: Progress | None = None
    monitor: Any = None
    load: LoadPlan | None = None
    """--stages / --arrival-rate / --find-capacity / --threshold (stress.load_cli); None: a plain run."""
    trace: Any = None
    """The host and service sampled once a second for the HTML report (stress.report.host_trace)."""
    live: Any = None
    """--dashboard: the run's live page (stress.live.view.LiveView), None without it."""

    def on_signal(self, signame: str) -> None:
        if self.interrupted is not None:
            if self.service is not None:
                self.service.kill_now()  # second signal: no more waiting
            return
        self.interrupted = signame
        if not self.ns.quiet:
            print(f"\n{self.tool}: {signame}: cancelling running tests, stopping the service...",
                  file=sys.stderr, flush=True)
        if self.runner is not None:
            self.runner.interrupt(f"interrupted by {signame}")
        elif self.phase_task is not None:
            self.phase_task.cancel()

    async def phase(self, coro):
        """Await `coro` so that a signal can cancel it; Interrupted if one did."""
        if self.interrupted:
            coro.close()
            raise Interrupted
        self.phase_task = asyncio.ensure_future(coro)
        try:
            return await self.phase_task
        except asyncio.CancelledError:
            if self.interrupted:
                raise Interrupted from None
            raise
        finally:
            self.phase_task = None

    def stop_early(self, why: EarlyStop, error: str) -> NoReturn:
        """End the run before its tests: `error` is what the report says, `why` what the exit
        status is decided from (the caller has printed its message)."""
        self.early_stop = why
        self.run.error = error
        raise _STOP_RAISES[why]


def claude_path_env(claude_exe: str | None) -> dict[str, str]:
    """PATH for shell jobs that call `claude`: the service finds the pinned CLI in the project's
    node_modules/.bin, but `sh -c "claude ..."` searches only PATH, so put its folder first."""
    if not claude_exe or not os.path.isabs(claude_exe):
        return {}
    folder = os.path.dirname(claude_exe)
    path = os.environ.get("PATH", os.defpath)
    if folder in path.split(os.pathsep):
        return {}
    return {"PATH": f"{folder}{os.pathsep}{path}"}


# ---------------------------------------------------------------------------------------------
# The session's phases


async def run_session(s: Session) -> int:
    """Run the session's phases under its signal handlers; the exit status."""
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, s.on_signal, sig.name)
    if getattr(s.ns, "dashboard", None) is not None:
        s.live = await LiveView.start(s.ns.dashboard, f"{s.tool} {s.run.run_id}", s.tool)
    try:
        async with model_environment(s.ns.model, **plan_needs(s.plan)) as model:
            s.run.environment["model_description"] = model.description
            s.run.environment.update(model_effective=model.mode, model_reason=model.reason)
            if s.ns.cluster:  # a Dask fleet (Dask is imported only then)
                from stress.cluster.hook import run_cluster

                await run_cluster(s, model)
            else:
                fleet = await start_services(s)
                await check_services(s, fleet)
                claude_env = await check_claude(s, fleet, model)
                await run_tests(s, fleet, model, claude_env)
    except Interrupted:
        pass
    finally:
        await shut_down(s)
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
    return settle(s)


async def start_services(s: Session) -> ServiceFleet:
    """Start (or reach) the run's services; an early stop (exit 1) when that fails."""
    fleet = build_fleet(s.ns, s.plan, s.report_dir)
    s.service = fleet
    try:
        await s.phase(fleet.start())
    except ServiceError as e:
        error = f"service: {e}"
        print(f"{s.tool}: {error}", file=sys.stderr)
        s.stop_early(EarlyStop.SERVICE, error)
    return fleet


async def check_services(s: Session, fleet: ServiceFleet) -> None:
    """The --server's token; record the service in the report. A refused token is an early
    stop (exit 3, one message)."""
    refused = await s.phase(fleet.check_access())
    s.run.service.update(describe_services(fleet, s.plan))
    s.run.environment["cc_executor_service"] = fleet.live()[0][1].health.get("version")
    if refused is not None:  # no server accepted its token: one message, exit 3
        error = f"preflight: {access_failure(refused)}"
        print(access_message(s.tool, refused), file=sys.stderr, flush=True)
        s.stop_early(EarlyStop.PREFLIGHT, error)


async def check_claude(s: Session, fleet: ServiceFleet, model: ModelEnvironment) -> dict[str, str]:
    """What this run can provide (the model mode's words, `claude` when the CLI works), each
    test's skip reason when it needs more, and the environment Claude jobs get."""
    caps = set(model.provides)
    claude_note = "not used"
    claude_env: dict[str, str] = {}
    if any(p.uses_claude for p in s.plan):
        claude_note, claude_env = await claude_preflight(s, fleet, model, caps)
    else:
        s.run.environment["claude"] = "not used"
        if fleet.managed:  # the CLI a Claude test would have run here, for the record
            version, path = await s.phase(local_cli_version())
            if version is not None:
                s.run.environment.update(claude=version, claude_path=path, claude_used=False)
    s.plan = [replace(p, skip=unmet_requirement(p, caps, model.label, claude_note))
              for p in s.plan]
    s.run.environment["capabilities"] = sorted(caps)
    return claude_env


async def claude_preflight(s: Session, fleet: ServiceFleet, model: ModelEnvironment,
                           caps: set[str]) -> tuple[str, dict[str, str]]:
    """The Claude preflight through every live service (only the CLI check with
    --no-preflight). Adds `claude` to `caps` when all pass; a failure is an early stop (exit 3)
    unless --no-preflight, when the Claude tests are skipped instead. (note, Claude jobs' env)."""
    ns = s.ns
    check = (
        (lambda url, token: probe_cli(url, token, managed=fleet.managed))
        if ns.no_preflight else
        (lambda url, token: run_preflight(url, token, model, managed=fleet.managed)))
    probes = await s.phase(asyncio.gather(*(check(sp.url, sp.token) for sp, _ in fleet.live())))
    bad = next((pr for pr in probes if not pr.ok), None)
    probe = bad or probes[0]
    claude_env: dict[str, str] = {}
    if bad is None:
        caps.add(CLAUDE_CAPABILITY)
        claude_env = claude_path_env(probe.path)
    s.run.environment["claude"] = probe.note if bad is None else f"unavailable: {probe.note}"
    s.run.environment.update(claude_path=probe.path, claude_used=True)
    if not ns.no_preflight:
        s.run.environment["preflight"] = probe.to_json()
        if bad is not None:
            error = f"preflight: {bad.failure}"
            print(bad.message(s.tool), file=sys.stderr, flush=True)
            s.stop_early(EarlyStop.PREFLIGHT, error)
    if bad is None and not ns.quiet:
        print(probe.terminal_line(model, services=len(probes)), flush=True)
    return probe.note, claude_env


async def run_tests(s: Session, fleet: ServiceFleet, model: ModelEnvironment,
                    claude_env: dict[str, str]) -> None:
    """Run the plan through the one service (a cluster run goes through stress.cluster.hook)."""
    ns = s.ns
    first_spec, svc = fleet.live()[0]
    if s.complex_mode:
        from stress.report.resources import ResourceMonitor

        s.monitor = ResourceMonitor(svc.pid)
        s.monitor.start()
    live = s.live.state if s.live is not None else None
    s.trace = HostTrace([sv.pid for _, sv in fleet.live() if sv.managed],
                        listener=live.host if live is not None else None)
    s.trace.start()
    s.progress = Progress(progress_total(s), quiet=ns.quiet, listener=live)
    if live is not None:
        live.set_phase("running tests", progress_total(s))
    for p in s.plan:
        if p.skip is not None:
            s.progress.skipped(p.test.id, p.skip, p.repeat)
    s.runner = Runner(
        first_spec.url, first_spec.token, s.plan, s.report_dir,
        RunOptions(concurrency=ns.concurrency, fail_fast=ns.fail_fast, model_env=model.env,
                   claude_env=claude_env, halt=s.halt,
                   simulated_cost=model.mode == "local"),
        progress=s.progress, monitor=s.monitor, service=fleet)
    if s.interrupted:
        s.runner.interrupt(f"interrupted by {s.interrupted}")
    if s.load is not None:
        await run_load(s, fleet)
    else:
        s.run.outcomes = await s.runner.run()


def progress_total(s: Session) -> int | None:
    """How many runs the progress display counts towards (unknown for most load profiles)."""
    profile = s.load.profile if s.load is not None else None
    if profile is None:
        return count_runs(s.plan)
    return profile.total_starts if isinstance(profile, ArrivalRate) else None


async def run_load(s: Session, fleet: ServiceFleet) -> None:
    """A load run (stress.run.driver): the profile or the plain run under the thresholds'
    monitor, sampling the services' host; its profile, thresholds and capacity go to the report."""
    assert s.runner is not None and s.load is not None
    live = fleet.live()
    sampler = HostSampler([sp.url for sp, _ in live],
                          [sv.pid if sv.managed else None for _, sv in live], local=fleet.managed)
    driver = LoadDriver(s.runner, s.load, sampler.sample, fixed_concurrency=s.ns.concurrency)
    runner = s.runner
    fixed = None
    if s.load.profile is None:
        fixed = runner.run
    result = await driver.run(fixed)
    s.run.outcomes = result.outcomes
    s.run.profile, s.run.thresholds, s.run.capacity = (result.profile, result.thresholds,
                                                       result.capacity)


async def shut_down(s: Session) -> None:
    """Whatever happened: close the progress display, stop the resource monitor and every
    service, and record how each service stopped (one that had to be killed is named)."""
    run = s.run
    if s.progress is not None:
        s.progress.close()
    if s.monitor is not None:
        s.monitor.stop()
        run.resources = s.monitor.run_summary()
    if s.trace is not None:
        run.trace = s.trace.stop()
    if s.live is not None:
        await s.live.stop(run)
    fleet: ServiceFleet | None = s.service
    if fleet is None:
        return
    if s.ns.cluster:  # stress.cluster.connect.Fleet: workers we started
        await fleet.close()
        return
    infos = await fleet.stop()
    stops = [stop_json(i) for i in infos]
    for sv, info in zip(fleet.services, infos):
        if info.how == "sigkill":
            print(f"{s.tool}: the service at {sv.url} did not stop within "
                  f"{sv.stop_timeout:g} s of SIGTERM and was killed; its stacks are in "
                  f"{sv.log_dir / 'service.stderr'}", file=sys.stderr, flush=True)
    if stops:
        run.service["stop"] = stops[0]


def settle(s: Session) -> int:
    """Complete the run record (a test that never ran is "not run", with why) and decide the
    exit status from the signal, the early stop and the outcomes (never from message text)."""
    run = s.run
    if s.runner is None or not run.outcomes:
        # Interrupted (or failed) before the tests ran: every planned test is "not run".
        dummy = Runner("", None, s.plan, s.report_dir)
        dummy.stop_reason = (f"interrupted by {s.interrupted}" if s.interrupted
                             else run.error or "not run")
        dummy.interrupted = bool(s.interrupted)
        run.outcomes = dummy.outcomes()
    if s.runner is not None:
        # An :abort is reported by its threshold, not as --halt (the runner shares the mechanism).
        run.halted = s.runner.halted if s.runner.halted != s.runner.aborted else None
        run.servers = s.runner.server_stats()
        if s.runner.claude_streams:
            totals = claude_mod.ClaudeTotals()
            for st in s.runner.claude_streams:
                totals.add(st)
            run.claude_totals = {**totals.to_json(), "simulated": is_simulated(run.environment)}
    return exit_status(s.interrupted, s.early_stop, Totals.of(run.outcomes),
                       thresholds=run.thresholds, capacity=run.capacity)


# ---------------------------------------------------------------------------------------------
# The run record and the reports


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def environment_info(model_mode: str) -> dict[str, Any]:
    """report.json's `environment` as known before the run; the session fills in the rest."""
    r = read_load()
    return {
        "hostname": socket.gethostname(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cc_executor": cc_executor.__version__,
        "claude": "not used",
        "model_mode": model_mode,
        "model_description": "none",
        "load_start": r.to_dict(),
        "load_end": None,
    }


def summary_line(tool: str, run: RunResult) -> str:
    """The one line every run prints: counts, the success ratio, the duration."""
    t = run.totals
    ratio = t.ratio
    state = (" INTERRUPTED" if run.interrupted else " THRESHOLD CROSSED" if run.thresholds_crossed
             else " HALTED" if run.halted else "")
    dur = (run.finished_at or time.time()) - run.started_at
    lost = f", {t.lost} lost" if t.lost else ""
    runs = "" if t.attempts == t.tests else (
        f" ({t.attempts} runs: {t.attempts_passed} passed, {t.attempts_failed} failed, "
        f"{t.attempts_skipped} skipped" + (f", {t.attempts_lost} lost" if t.attempts_lost else "") + ")")
    return (f"{tool}{state}: {t.tests} tests: {t.passed} passed, {t.failed} failed, {t.skipped} skipped"
            f"{lost}{runs}; success ratio {ratio.text()} ({'graduates' if ratio.graduates else 'does not graduate'}"
            f" at 10:1); {dur:.1f} s")


def load_lines(tool: str, run: RunResult, *, quiet: bool = False) -> list[str]:
    """The terminal's lines about a load run, crossed thresholds first, before the summary;
    --quiet keeps the crossed thresholds and the capacity answer (results, like the summary)."""
    lines = [f"{tool}: THRESHOLD CROSSED: {t.expr}: observed {fmt_metric(t.unit, t.observed)}"
             + (f" (limit {fmt_metric(t.unit, t.limit)})" if t.limit is not None else "")
             + (f"; {t.note}" if t.note else "") + ("; the run was aborted" if t.aborted else "")
             for t in run.thresholds_crossed]
    passed = [t for t in run.thresholds if t.passed]
    if passed and not quiet:
        lines.append(f"{tool}: thresholds held: " + ", ".join(
            f"{t.expr} ({fmt_metric(t.unit, t.observed)})" for t in passed))
    c = run.capacity
    if c is not None:
        found = ("no step held" if c.max_sustainable_concurrency is None
                 else f"sustains {c.max_sustainable_concurrency} tests in flight")
        lines.append(f"{tool}: capacity: {found}; limited by {c.limited_by}: {c.reason}")
    p = run.profile
    if p is not None and p.get("dropped_starts") and not quiet:
        lines.append(f"{tool}: {p['dropped_starts']} start(s) dropped (max in flight reached)")
    return lines


def run_options(ns: argparse.Namespace, *, default_suite: str, complex_mode: bool, halt: HaltRule,
                history: History | None) -> dict[str, Any]:
    """report.json's `options`: every option as it took effect (no tokens)."""
    return {
        "suites": ns.suites or [default_suite], "concurrency": ns.concurrency, "repeat": ns.repeat,
        "filter": ns.filter, "fail_fast": ns.fail_fast, "out": ns.out, "quiet": ns.quiet,
        "model": ns.model, "claude_template": ns.claude_template, "max_load": ns.max_load,
        "server": [split_server(t)[0] for t in ns.server] or None,
        "cluster": ns.cluster, "steal": not ns.no_steal, "retries": ns.retries,
        "halt": str(halt), "history_db": None if history is None else str(history.path),
        "baseline": ns.baseline, "duration_threshold": ns.duration_threshold,
        "duration_min": ns.duration_min, "learned_timeouts": ns.learned_timeouts,
        "learned_floor": ns.learned_floor, "resources": complex_mode,
        "stages": ns.stages, "arrival_rate": ns.arrival_rate, "duration": ns.duration,
        "max_in_flight": ns.max_in_flight, "threshold": ns.threshold,
        "find_capacity": ns.find_capacity, "step": ns.step, "step_duration": ns.step_duration,
        "max_steps": ns.max_steps, "max_starts": ns.max_starts,
    }


def run_and_report(ns: argparse.Namespace, argv: list[str] | None, *, prog: str, tool: str,
                   default_suite: str, complex_mode: bool, suites: list[Suite],
                   plan: list[Planned], halt: HaltRule, history: History | None,
                   load: LoadPlan | None = None) -> int:
    """Run the plan in a new report folder, then record it and write the reports even when a
    signal or an early stop ended it; the exit status."""
    run_id = new_run_id()
    report_dir = Path(ns.out) / run_id
    report_dir.mkdir(parents=True, exist_ok=True)
    run = RunResult(run_id=run_id, tool=tool,
                    argv=redact_argv([prog, *(argv if argv is not None else sys.argv[1:])]),
                    started_at=time.time())
    run.environment = environment_info(ns.model)
    run.options = run_options(ns, default_suite=default_suite, complex_mode=complex_mode,
                              halt=halt, history=history)
    run.suites = [{"name": s.name, "path": str(s.path), "format": s.format, "tests": len(s.tests),
                   "selected": sum(1 for p in plan if p.suite == s.name),
                   "warnings": list(s.warnings)} for s in suites]
    session = Session(ns, tool, complex_mode, suites, plan, run, report_dir, halt=halt, load=load)
    try:
        code = asyncio.run(run_session(session))
    except KeyboardInterrupt:  # a Ctrl-C in the instant before the handlers were installed
        session.interrupted = session.interrupted or "SIGINT"
        code = EXIT_SIGNAL["SIGINT"]
    write_run(session, history, code)
    return code


def write_run(s: Session, history: History | None, code: int) -> None:
    """Record the finished run in the history, write its reports and print the summary.
    Recording and writing take milliseconds: a signal now must not lose them, so SIGINT and
    SIGTERM are ignored meanwhile."""
    run, ns = s.run, s.ns
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS}
    run.interrupted = s.interrupted is not None
    run.interrupt_signal = s.interrupted
    run.finished_at = time.time()
    run.environment["load_end"] = read_load().to_dict()
    run.exit_code = code
    try:
        if history is not None:
            run.history = record_history(history, run, s.suites, ns)
        paths = write_reports(run, s.report_dir)
        for line in load_lines(s.tool, run, quiet=ns.quiet):
            print(line)
        print(summary_line(s.tool, run))
        if (line := totals_line(s.tool, run.claude_totals, is_simulated(run.environment))) and not ns.quiet:
            print(line)
        if run.history is not None and not ns.quiet:
            print(history_line(run.history))
        print(f"report: {paths['markdown']}", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
