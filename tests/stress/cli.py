"""The command line shared by `python -m stress.local` and `python -m stress.complex`.

Order of work, and why: parse and load every suite first (a typo must fail before anything
starts, exit 2), plan and filter, then start the service, probe what it can run, run, stop the
service and write the reports. Every phase after loading can be interrupted: the first Ctrl-C or
SIGTERM cancels the running tests (each keeps the output it had), stops the service and still
writes the reports, marked interrupted (exit 130 or 143); a second one kills the service at once.

Exit status: 0 every test that ran passed (or met its pass threshold) and at least one ran;
1 a test failed, nothing ran, or the service could not be started; 2 usage or suite errors;
130 / 143 interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import os
import platform
import re
import secrets
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cc_executor
from cc_executor.client import ExecutorClient, ExecutorError
from cc_executor.load import read_load
from cc_executor.settings import parse_max_load

from . import claude as claude_mod
from .modelmode import MODES, REAL_MODEL, model_environment
from .progress import Progress
from .report import write_reports
from .results import RunResult, Totals
from .runner import CLAUDE_CAPABILITY, Planned, RunOptions, Runner, invocation_summary
from .service import ManagedService, RemoteService, ServiceError
from .suites import FORMAT_OURS, Suite, SuiteError, Test, load_suite, read_json
from .verdict import MatchRule, PassThreshold

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
COMPLEX_DEFAULT_MATCH = MatchRule("min_ratio", 0.8)
CLAUDE_VERSION_TIMEOUT = 30.0


class UsageError(Exception):
    """Bad options or suites: printed, exit 2."""


class Interrupted(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Arguments


def build_parser(prog: str, default_suite: str, what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"{what} Starts `python -m cc_executor` on a free loopback port (or uses "
                    "--server), runs the suites through the WebSocket client, and writes "
                    "report.md, report.json and junit.xml under --out/<run-id>/.",
        epilog="Exit status: 0 all passed; 1 a test failed or nothing ran; 2 usage or suite "
               "error; 130/143 interrupted (SIGINT/SIGTERM). See docs/harness.md.",
    )
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"suite names (configs/<name>.json) or paths; default: {default_suite}")
    p.add_argument("--list", action="store_true", help="print the tests that would run, then exit 0")
    p.add_argument("--concurrency", type=_positive_int, default=1, metavar="N",
                   help="run N tests at once (one client connection each; default 1)")
    p.add_argument("--repeat", type=_positive_int, metavar="N",
                   help="run every test N times (overrides the suite's repeat)")
    p.add_argument("--filter", action="append", default=[], metavar="X",
                   help="keep tests whose id or a tag matches X (glob: * ? [..]); repeatable, any matches")
    p.add_argument("--fail-fast", action="store_true",
                   help="start no new test once one has failed (running ones finish)")
    p.add_argument("--out", default="reports", metavar="DIR", help="report folder (default reports/)")
    p.add_argument("--quiet", action="store_true", help="print only the summary and the report path")
    p.add_argument("--model", choices=MODES, default="auto",
                   help="how the Claude CLI gets a model (recorded in the report; default auto)")
    p.add_argument("--claude-template", metavar="CMD",
                   help="argv template for `prompt` tests, e.g. "
                        "'claude -p ${PROMPT} --output-format stream-json --verbose' "
                        "(split like a shell line; ${PROMPT} becomes one argument)")
    p.add_argument("--max-load", metavar="LOAD",
                   help="passed to the service: queue jobs above this 1-minute load (8 or 2/core)")
    p.add_argument("--server", metavar="URL", help="test this running service (ws://...) instead")
    p.add_argument("--token", help="bearer token for --server")
    return p


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


# ---------------------------------------------------------------------------------------------
# Suites -> plan


def load_suites(names: list[str], *, complex_mode: bool) -> list[Suite]:
    """Load every suite; raise UsageError listing the problems of all of them."""
    suites, errors = [], []
    for name in names:
        try:
            suite = load_suite(name, complex_suite=True if complex_mode else None)
        except SuiteError as e:
            errors.append(str(e))
            continue
        if complex_mode and suite.format == FORMAT_OURS:
            suite = _default_complex_match(suite)
        suites.append(suite)
    if errors:
        raise UsageError("\n".join(errors))
    return suites


def _default_complex_match(suite: Suite) -> Suite:
    """Our format under stress.complex: a test that sets no `match` (nor defaults) needs 80%."""
    raw = read_json(suite.path)
    if "match" in (raw.get("defaults") or {}):
        return suite
    explicit = {t.get("id") for t in raw.get("tests", []) if isinstance(t, dict) and "match" in t}
    tests = tuple(t if t.id in explicit else replace(t, match=COMPLEX_DEFAULT_MATCH)
                  for t in suite.tests)
    return replace(suite, tests=tests)


_TEMPLATE_VARS = re.compile(r"\$\{(PROMPT|REQUEST|TEST_ID|TIMESTAMP|METATAGS)\}")


def parse_template(template: str) -> list[str]:
    try:
        argv = shlex.split(template)
    except ValueError as e:
        raise UsageError(f"--claude-template: cannot split {template!r}: {e}") from None
    if not argv:
        raise UsageError("--claude-template: empty")
    if not any("${PROMPT}" in a or "${REQUEST}" in a for a in argv):
        raise UsageError("--claude-template: must contain ${PROMPT} where the prompt goes")
    return argv


def apply_template(suite: Suite, template: list[str]) -> Suite:
    """Re-render `prompt` tests through the template, as an argv (no shell)."""
    def render(t: Test) -> Test:
        if t.kind != "prompt" or t.prompt is None:
            return t
        meta = t.extra.get("metatags", "")
        values = {"PROMPT": t.prompt, "REQUEST": t.prompt, "TEST_ID": t.id,
                  "TIMESTAMP": suite.timestamp, "METATAGS": meta if isinstance(meta, str) else ""}
        args = tuple(_TEMPLATE_VARS.sub(lambda m: values[m.group(1)], a) for a in template)
        return replace(t, command=None, args=args)

    return replace(suite, tests=tuple(render(t) for t in suite.tests))


def matches_filter(test: Test, filters: list[str]) -> bool:
    if not filters:
        return True
    names = [test.id, *test.tags]
    return any(fnmatch.fnmatchcase(n, f) for f in filters for n in names)


def uses_claude(test: Test) -> bool:
    if CLAUDE_CAPABILITY in test.requires or test.kind == "prompt":
        return True
    if claude_mod.mentions_claude(test.command, test.args):
        return True
    if test.instances:
        for i in range(test.instances.count):
            inv = test.invocation(i)
            if claude_mod.mentions_claude(inv.command, inv.args):
                return True
    return False


def effective_threshold(test: Test, repeat: int) -> PassThreshold:
    """--repeat N with a {"passes": p, "of": q} threshold keeps the ratio p/q over N runs."""
    th = test.pass_threshold
    if th.passes is not None and th.of is not None and th.of != repeat:
        return PassThreshold(ratio=th.passes / th.of)
    return th


def build_plan(suites: list[Suite], filters: list[str], repeat: int | None) -> list[Planned]:
    chosen = [(s, t) for s in suites for t in s.tests if matches_filter(t, filters)]
    counts: dict[str, int] = {}
    for _, t in chosen:
        counts[t.id] = counts.get(t.id, 0) + 1
    plan = []
    for s, t in chosen:
        stem = t.id if counts[t.id] == 1 else f"{_slug(s.name)}/{t.id}"
        n = repeat or t.repeat
        plan.append(Planned(s.name, t, stem, n, effective_threshold(t, n), uses_claude(t)))
    return plan


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "suite"


def executables(plan: list[Planned]) -> list[str]:
    """What the service must allow: sh for command strings, argv[0] of argv tests, claude."""
    names: list[str] = []
    for p in plan:
        t = p.test
        idx = range(t.instances.count) if t.instances else [None]
        for i in idx:
            inv = t.invocation(i)
            names.append("sh" if inv.command is not None else (inv.args or ("sh",))[0])
        if p.uses_claude:
            names.append("claude")
    return list(dict.fromkeys(names))


def unmet_requirement(p: Planned, caps: set[str], model_mode: str, claude_note: str) -> str | None:
    needs = list(p.test.requires)
    if p.uses_claude and CLAUDE_CAPABILITY not in needs:
        needs.insert(0, CLAUDE_CAPABILITY)
    for word in needs:
        if word in caps:
            continue
        if word == REAL_MODEL:
            return f"requires '{REAL_MODEL}', but the model mode is '{model_mode}' (use --model real)"
        if word == CLAUDE_CAPABILITY:
            return f"requires 'claude', which the service cannot run: {claude_note}"
        return f"requires '{word}', which this harness does not provide"
    return None


def list_plan(suites: list[Suite], plan: list[Planned], out=None) -> None:
    out = out or sys.stdout
    by_suite: dict[str, list[Planned]] = {}
    for p in plan:
        by_suite.setdefault(p.suite, []).append(p)
    for s in suites:
        items = by_suite.get(s.name, [])
        print(f"suite {s.name} ({s.format}, {s.path}): {len(items)} of {len(s.tests)} tests", file=out)
        for p in items:
            t = p.test
            bits = [f"timeout {t.timeout:g} s"]
            if t.stall_timeout is not None:
                bits.append(f"stall {t.stall_timeout:g} s")
            if p.repeat > 1:
                bits.append(f"repeat {p.repeat}")
            if t.requires:
                bits.append("requires " + ",".join(t.requires))
            if t.instances:
                bits.append(f"{t.instances.count} instances ({t.instances.criterion})")
            tags = ",".join(t.tags) or "-"
            print(f"  {t.id}\t{t.name}\ttags={tags}\t{'; '.join(bits)}\t{invocation_summary(t)}", file=out)
    print(f"{len(plan)} tests", file=out)


# ---------------------------------------------------------------------------------------------
# The run


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


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
    phase_task: asyncio.Task | None = None

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


@dataclass
class ClaudeProbe:
    ok: bool
    note: str
    """The version line, or why claude cannot run."""
    path: str | None = None
    """Where the service found the executable (argv[0] of its `process.started`)."""


async def probe_claude(url: str, token: str | None) -> ClaudeProbe:
    """`claude --version` through the service."""
    try:
        client = await asyncio.wait_for(ExecutorClient.connect(url, token), 15)
    except Exception as e:  # noqa: BLE001
        return ClaudeProbe(False, f"cannot connect: {e}")
    path: list[str] = []

    def on_event(ev) -> None:
        argv = ev.params.get("argv") if ev.kind == "started" else None
        if argv:
            path.append(argv[0])

    try:
        res = await asyncio.wait_for(
            client.execute(args=["claude", "--version"], timeout=CLAUDE_VERSION_TIMEOUT,
                           env={"CLAUDECODE": None}, on_event=on_event),
            CLAUDE_VERSION_TIMEOUT + 15)
    except ExecutorError as e:
        return ClaudeProbe(False, e.message)
    except asyncio.TimeoutError:
        return ClaudeProbe(False, f"claude --version gave no answer within {CLAUDE_VERSION_TIMEOUT:g} s")
    finally:
        try:
            await asyncio.wait_for(client.close(), 5)
        except Exception:  # noqa: BLE001
            pass
    text = (res.stdout_text or res.stderr_text).strip()
    if res.reason == "exited" and res.exit_code == 0 and text:
        return ClaudeProbe(True, text.splitlines()[0], path[0] if path else None)
    return ClaudeProbe(False, f"claude --version ended {res.reason} with exit {res.exit_code}: {text[:200]}")


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


async def run_session(s: Session) -> int:
    ns, run = s.ns, s.run
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, s.on_signal, sig.name)
    monitor = None
    progress = None
    try:
        async with model_environment(ns.model) as model:
            run.environment["model_description"] = model.description
            if ns.server:
                s.service = RemoteService(ns.server, ns.token)
            else:
                s.service = ManagedService(allow=executables(s.plan), log_dir=s.report_dir / "logs",
                                           max_load=ns.max_load)
            try:
                await s.phase(s.service.start())
            except ServiceError as e:
                run.error = f"service: {e}"
                print(f"{s.tool}: {run.error}", file=sys.stderr)
                return EXIT_FAILED
            svc = s.service
            run.service.update({
                "kind": "managed" if svc.managed else "remote", "url": svc.url, "pid": svc.pid,
                "argv": svc.describe_argv(), "version": svc.health.get("version"),
                "allow": executables(s.plan) if svc.managed else None,
            })
            run.environment["cc_executor_service"] = svc.health.get("version")

            caps = set(model.provides)
            claude_note = "not used"
            claude_env: dict[str, str] = {}
            if any(p.uses_claude for p in s.plan):
                probe = await s.phase(probe_claude(svc.url, svc.token))
                claude_note = probe.note
                if probe.ok:
                    caps.add(CLAUDE_CAPABILITY)
                    claude_env = claude_path_env(probe.path)
                run.environment["claude"] = probe.note if probe.ok else f"unavailable: {probe.note}"
                run.environment["claude_path"] = probe.path
            else:
                run.environment["claude"] = "not used"
            s.plan = [replace(p, skip=unmet_requirement(p, caps, ns.model, claude_note))
                      for p in s.plan]
            run.environment["capabilities"] = sorted(caps)

            if s.complex_mode:
                from .resources import ResourceMonitor

                monitor = ResourceMonitor(svc.pid)
                monitor.start()
            total = sum(p.repeat * (p.test.instances.count if p.test.instances else 1)
                        for p in s.plan if p.skip is None)
            progress = Progress(total, quiet=ns.quiet)
            for p in s.plan:
                if p.skip is not None:
                    progress.note(f"SKIP {p.test.id}: {p.skip}")
            s.runner = Runner(
                svc.url, svc.token, s.plan, s.report_dir,
                RunOptions(concurrency=ns.concurrency, fail_fast=ns.fail_fast, model_env=model.env,
                           claude_env=claude_env),
                progress=progress, monitor=monitor, service=svc)
            if s.interrupted:
                s.runner.interrupt(f"interrupted by {s.interrupted}")
            run.outcomes = await s.runner.run()
    except Interrupted:
        pass
    finally:
        if progress is not None:
            progress.close()
        if monitor is not None:
            monitor.stop()
            run.resources = monitor.run_summary()
        if s.service is not None:
            info = await s.service.stop()
            run.service["stop"] = {"how": info.how, "exit_code": info.exit_code,
                                   "seconds": info.seconds, "leftovers_killed": info.leftovers_killed}
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if s.runner is None or not run.outcomes:
        # Interrupted (or failed) before the tests ran: every planned test is "not run".
        dummy = Runner("", None, s.plan, s.report_dir)
        dummy.stop_reason = (f"interrupted by {s.interrupted}" if s.interrupted
                             else run.error or "not run")
        dummy.interrupted = bool(s.interrupted)
        run.outcomes = dummy.outcomes()
    if s.runner is not None and s.runner.claude_streams:
        totals = claude_mod.ClaudeTotals()
        for st in s.runner.claude_streams:
            totals.add(st)
        run.claude_totals = totals.to_json()
    if s.interrupted:
        return EXIT_SIGNAL.get(s.interrupted, 130)
    if run.error:
        return EXIT_FAILED
    t = Totals.of(run.outcomes)
    return EXIT_OK if t.failed == 0 and t.passed > 0 else EXIT_FAILED


def environment_info(model_mode: str) -> dict[str, Any]:
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
    t = run.totals
    ratio = t.ratio
    state = " INTERRUPTED" if run.interrupted else ""
    dur = (run.finished_at or time.time()) - run.started_at
    return (f"{tool}{state}: {t.tests} tests: {t.passed} passed, {t.failed} failed, {t.skipped} skipped; "
            f"success ratio {ratio.text()} ({'graduates' if ratio.graduates else 'does not graduate'}"
            f" at 10:1); {dur:.1f} s")


def main(argv: list[str] | None = None, *, prog: str = "python -m stress.local",
         default_suite: str = "local", complex_mode: bool = False,
         what: str = "Run stress suites against cc_executor.") -> int:
    parser = build_parser(prog, default_suite, what)
    try:
        ns = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    tool = prog.split()[-1]
    try:
        return _main(ns, argv, prog=prog, tool=tool, default_suite=default_suite,
                     complex_mode=complex_mode)
    except KeyboardInterrupt:  # Ctrl-C while loading suites: nothing started yet
        print(f"{tool}: interrupted", file=sys.stderr)
        return EXIT_SIGNAL["SIGINT"]


def _main(ns: argparse.Namespace, argv: list[str] | None, *, prog: str, tool: str,
          default_suite: str, complex_mode: bool) -> int:
    try:
        if ns.token and not ns.server:
            raise UsageError("--token is only used with --server")
        if ns.max_load is not None:
            try:
                if not parse_max_load(ns.max_load, os.cpu_count() or 1) >= 0:
                    raise ValueError
            except ValueError:
                raise UsageError(f"--max-load: not a load: {ns.max_load!r} (expected e.g. 8 or 2/core)") from None
        suites = load_suites(ns.suites or [default_suite], complex_mode=complex_mode)
        if ns.claude_template:
            template = parse_template(ns.claude_template)
            suites = [apply_template(s, template) for s in suites]
        plan = build_plan(suites, ns.filter, ns.repeat)
        if not plan:
            raise UsageError("no test matches --filter " + " ".join(map(repr, ns.filter))
                             if ns.filter else "the selected suites contain no tests")
    except UsageError as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if ns.list:
        list_plan(suites, plan)
        return EXIT_OK

    run_id = new_run_id()
    report_dir = Path(ns.out) / run_id
    report_dir.mkdir(parents=True, exist_ok=True)
    run = RunResult(run_id=run_id, tool=tool, argv=[prog, *(argv if argv is not None else sys.argv[1:])],
                    started_at=time.time())
    run.environment = environment_info(ns.model)
    run.options = {
        "suites": ns.suites or [default_suite], "concurrency": ns.concurrency, "repeat": ns.repeat,
        "filter": ns.filter, "fail_fast": ns.fail_fast, "out": ns.out, "quiet": ns.quiet,
        "model": ns.model, "claude_template": ns.claude_template, "max_load": ns.max_load,
        "server": ns.server, "resources": complex_mode,
    }
    run.suites = [{"name": s.name, "path": str(s.path), "format": s.format, "tests": len(s.tests),
                   "selected": sum(1 for p in plan if p.suite == s.name)} for s in suites]
    session = Session(ns, tool, complex_mode, suites, plan, run, report_dir)
    try:
        code = asyncio.run(run_session(session))
    except KeyboardInterrupt:  # a Ctrl-C in the instant before the handlers were installed
        session.interrupted = session.interrupted or "SIGINT"
        code = EXIT_SIGNAL["SIGINT"]
    # Writing the report takes milliseconds: a signal now must not lose it.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    run.interrupted = session.interrupted is not None
    run.interrupt_signal = session.interrupted
    run.finished_at = time.time()
    run.environment["load_end"] = read_load().to_dict()
    run.exit_code = code
    try:
        paths = write_reports(run, report_dir)
        print(summary_line(tool, run))
        print(f"report: {paths['markdown']}", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
