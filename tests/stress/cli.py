"""The command line shared by `python -m stress.local` and `python -m stress.complex`.

Order of work, and why: parse and load every suite first (a typo must fail before anything
starts, exit 2), plan and filter, then start the service, probe what it can run, run, stop the
service and write the reports. Every phase after loading can be interrupted: the first Ctrl-C or
SIGTERM cancels the running tests (each keeps the output it had), stops the service and still
writes the reports, marked interrupted (exit 130 or 143); a second one kills the service at once.

With several services (`--server` given more than once, or `--servers N`), the plan goes through
`stress.dispatch` instead of the single-service worker pool; every run is recorded in the history
database (`stress.history`) and compared with the previous run of the same suites, unless
`--no-history`.

Exit status: 0 every test that ran passed (or met its pass threshold) and at least one ran, and
none was lost; 1 a test failed or was lost, nothing ran, or the service could not be started;
2 usage or suite errors; 3 a preflight failed (stress.preflight: no --server accepted its token,
or the Claude preflight; a --server that refuses while another accepts is left out);
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
from cc_executor.load import read_load
from cc_executor.settings import parse_max_load
from cc_executor.timing import learned_timeout

from . import claude as claude_mod
from .dispatch import ServerSpec, server_allows, unfit_servers
from .flaky import HaltRule, HaltRuleError
from .history import History, HistoryError
from .modelmode import MODES, REAL_MODEL, model_environment, plan_needs
from .preflight import (EXIT_PREFLIGHT, AccessCheck, access_failure, access_message,
                        access_refusal, check_access, local_cli_version, probe_cli, run_preflight)
from .progress import Progress
from .report import write_reports
from .results import RunResult, Totals
from .runner import CLAUDE_CAPABILITY, Planned, RunOptions, Runner, invocation_summary
from .service import ManagedService, RemoteService, ServiceError, fetch_json, health_url
from .suites import FORMAT_OURS, Suite, SuiteError, Test, load_suite, read_json
from .verdict import MatchRule, PassThreshold

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
COMPLEX_DEFAULT_MATCH = MatchRule("min_ratio", 0.8)
MAX_LOCAL_SERVERS = 16
LEARNED_FLOOR = 2.0
"""Seconds: a learned timeout is never shorter (a 0.1 s test must not be killed at 0.3 s)."""
PROBE_INTERVAL = 5.0
"""Seconds between health probes of a lost server (it rejoins when /health answers ok)."""


class UsageError(Exception):
    """Bad options or suites: printed, exit 2."""


class Interrupted(Exception):
    pass


class PreflightFailed(Interrupted):
    """The Claude preflight stopped the run before any test (exit 3); tests are reported not run."""


class ServiceFailed(Interrupted):
    """The service could not be started or reached (exit 1); tests are reported not run."""


# ---------------------------------------------------------------------------------------------
# Arguments


def build_parser(prog: str, default_suite: str, what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"{what} Starts `python -m cc_executor` on a free loopback port (or uses "
                    "--server), runs the suites through the WebSocket client, and writes "
                    "report.md, report.json and junit.xml under --out/<run-id>/.",
        epilog="Exit status: 0 all passed; 1 a test failed or nothing ran; 2 usage or suite "
               "error; 3 preflight failed (no --server accepted its token, or Claude); "
               "130/143 interrupted (SIGINT/SIGTERM). See docs/harness.md.",
    )
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"suite names (configs/<name>.json) or paths; default: {default_suite}")
    p.add_argument("--list", action="store_true", help="print the tests that would run, then exit 0")
    p.add_argument("--concurrency", type=int_at_least(1), default=1, metavar="N",
                   help="run N tests at once (one client connection each; default 1)")
    p.add_argument("--repeat", type=int_at_least(1), metavar="N",
                   help="run every test N times (overrides the suite's repeat)")
    p.add_argument("--filter", action="append", default=[], metavar="X",
                   help="keep tests whose id or a tag matches X (glob: * ? [..]); repeatable, any matches")
    p.add_argument("--fail-fast", action="store_true",
                   help="start no new test once one has failed (running ones finish)")
    p.add_argument("--out", default="reports", metavar="DIR", help="report folder (default reports/)")
    p.add_argument("--quiet", action="store_true", help="print only the summary and the report path")
    p.add_argument("--model", choices=MODES, default="auto",
                   help="how the Claude CLI gets a model (recorded in the report; default auto)")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the Claude preflight (CLI found, model reachable, one canary prompt)")
    p.add_argument("--claude-template", metavar="CMD",
                   help="argv template for `prompt` tests, e.g. "
                        "'claude -p ${PROMPT} --output-format stream-json --verbose' "
                        "(split like a shell line; ${PROMPT} becomes one argument)")
    p.add_argument("--max-load", metavar="LOAD",
                   help="passed to the service: queue jobs above this 1-minute load (8 or 2/core)")
    p.add_argument("--server", action="append", default=[], metavar="URL[@W[:C]]",
                   help="test this running service (ws://...) instead; repeat for several, each "
                        "with an optional weight W and concurrency C (e.g. ws://h:8004/ws@2:2)")
    p.add_argument("--token", help="bearer token for every --server")
    p.add_argument("--server-token", action="append", default=[], metavar="URL=TOKEN",
                   help="bearer token for one --server URL (overrides --token for it)")
    p.add_argument("--servers", type=int_at_least(1), metavar="N",
                   help=f"start N local services (each on its own port) and spread the run over "
                        f"them (at most {MAX_LOCAL_SERVERS})")
    p.add_argument("--weights", metavar="W[:C],...",
                   help="with --servers: each service's weight (and concurrency), e.g. 1,2,3")
    p.add_argument("--no-steal", action="store_true",
                   help="several servers: keep the initial deal (no work stealing)")
    p.add_argument("--retries", type=int_at_least(0), default=2, metavar="N",
                   help="several servers: move an attempt to another server at most N times "
                        "when its server is lost (default 2)")
    p.add_argument("--retry-budget", type=int_at_least(0), default=None, metavar="N",
                   help="several servers: at most N such moves in the whole run (default: no "
                        "run-wide limit; --retries and the number of servers still bound them)")
    p.add_argument("--halt", metavar="RULE", default="never",
                   help="stop early, GNU parallel style: now,fail=1 | soon,fail=20%% | "
                        "soon,success=1 | now,done=10 | never (default)")
    p.add_argument("--history-db", metavar="PATH",
                   help="record the run in this SQLite file (default <out>/history.sqlite3)")
    p.add_argument("--no-history", action="store_true", help="do not record or compare the run")
    p.add_argument("--baseline", metavar="RUN_ID",
                   help="also compare with this recorded run (the previous run of the same "
                        "suites is always compared)")
    p.add_argument("--duration-threshold", default="25%", metavar="PCT",
                   help="report duration changes of at least this much (default 25%%)")
    p.add_argument("--duration-min", type=float, default=0.1, metavar="SECONDS",
                   help="... and at least this many seconds (default 0.1)")
    p.add_argument("--learned-timeouts", metavar="PCT",
                   help="limit each test to PCT%% of its history median run time, never above "
                        "its configured timeout (e.g. 300%%)")
    p.add_argument("--learned-floor", type=float, default=LEARNED_FLOOR, metavar="SECONDS",
                   help=f"a learned timeout is at least this long (default {LEARNED_FLOOR:g})")
    return p


def int_at_least(minimum: int):
    """An argparse type: a whole number >= `minimum`, with a message naming what was wrong."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {v}")
        return v
    return parse


def parse_percent(text: str, option: str) -> float:
    """'25%', '25' -> 25.0; UsageError naming the option otherwise."""
    raw = text.strip().removesuffix("%")
    try:
        v = float(raw)
    except ValueError:
        raise UsageError(f"{option}: not a percentage: {text!r} (expected e.g. 25%)") from None
    if not (v > 0) or v == float("inf"):
        raise UsageError(f"{option}: must be above 0%, got {text!r}")
    return v


_WEIGHT = re.compile(r"^(?P<w>\d+(?:\.\d+)?)(?::(?P<c>\d+))?$")


def parse_weight(text: str, where: str) -> tuple[float, int | None]:
    """'2' -> (2.0, None); '2:3' -> (2.0, 3)."""
    m = _WEIGHT.match(text.strip())
    if m is None or float(m["w"]) <= 0 or (m["c"] is not None and int(m["c"]) < 1):
        raise UsageError(f"{where}: bad weight {text!r}: expected W or W:C with W > 0 and C >= 1, "
                         "e.g. 2 or 2:3")
    return float(m["w"]), (int(m["c"]) if m["c"] is not None else None)


def split_server(text: str) -> tuple[str, float | None, int | None]:
    """'ws://h:1/ws@2:3' -> ('ws://h:1/ws', 2.0, 3); a URL without @W keeps weight None."""
    head, sep, tail = text.strip().rpartition("@")
    if sep and _WEIGHT.match(tail):
        w, c = parse_weight(tail, f"--server {text!r}")
        url = head
    else:
        url, w, c = text.strip(), None, None
    if not url.startswith(("ws://", "wss://")):
        raise UsageError(f"--server must be a ws:// or wss:// URL, optionally @WEIGHT[:CONCURRENCY]; "
                         f"got {text!r}")
    return url, w, c


def concurrencies(weights: list[float], given: list[int | None], base: int) -> list[int]:
    """A server without an explicit concurrency runs `base` x its weight / the smallest weight
    tests at once (rounded, at least 1), so throughput follows the weights on similar hosts."""
    lightest = min(weights)
    return [c if c is not None else max(1, round(base * w / lightest)) for w, c in zip(weights, given)]


def server_specs(ns: argparse.Namespace) -> list[ServerSpec]:
    """--server URL[@W[:C]] (repeatable) with --token / --server-token URL=TOKEN."""
    parsed = [split_server(t) for t in ns.server]
    urls = [u for u, _, _ in parsed]
    dup = sorted({u for u in urls if urls.count(u) > 1})
    if dup:
        raise UsageError(f"--server given twice: {', '.join(dup)}")
    tokens: dict[str, str] = {}
    for item in ns.server_token:
        url = next((u for u in sorted(urls, key=len, reverse=True) if item.startswith(u + "=")), None)
        if url is None:
            shown = item.split("=", 1)[0]
            raise UsageError(f"--server-token: {shown!r} is not one of the --server URLs "
                             f"({', '.join(urls) or 'none given'}); expected URL=TOKEN")
        tokens[url] = item[len(url) + 1:]
    weights = [w if w is not None else 1.0 for _, w, _ in parsed]
    conc = concurrencies(weights, [c for _, _, c in parsed], ns.concurrency)
    return [ServerSpec(u, tokens.get(u, ns.token), w, c, name=u)
            for (u, _, _), w, c in zip(parsed, weights, conc)]


def local_weights(ns: argparse.Namespace) -> list[tuple[float, int]]:
    """--servers N [--weights W[:C],...] -> (weight, concurrency) per local service."""
    n = ns.servers or 1
    if ns.weights is None:
        return [(1.0, ns.concurrency)] * n
    parts = [p for p in ns.weights.split(",")]
    if len(parts) != n:
        raise UsageError(f"--weights: {len(parts)} weights for --servers {n}; give one per server")
    pairs = [parse_weight(p, "--weights") for p in parts]
    weights = [w for w, _ in pairs]
    return list(zip(weights, concurrencies(weights, [c for _, c in pairs], ns.concurrency)))


_SECRET_OPTIONS = ("--token", "--server-token")


def redact_argv(argv: list[str]) -> list[str]:
    """The command line for reports and the history, with tokens shown as <token>."""
    out: list[str] = []
    hide_next = None
    for a in argv:
        if hide_next is not None:
            out.append("<token>" if hide_next == "--token" else a.split("=", 1)[0] + "=<token>")
            hide_next = None
            continue
        opt = a.split("=", 1)[0]
        if a in _SECRET_OPTIONS:
            hide_next = a
            out.append(a)
        elif opt in _SECRET_OPTIONS and "=" in a:
            out.append(f"{opt}=<token>" if opt == "--token"
                       else f"{opt}={a.split('=', 2)[1]}=<token>" if a.count("=") >= 2 else f"{opt}=<token>")
        else:
            out.append(a)
    return out


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
    halt: HaltRule | None = None

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


class ServiceFleet:
    """The services of one run: one (managed or remote, as before) or several.

    Why a fleet object: the session must start, signal and stop every service the same way
    whatever their number; a remote service that cannot be reached at the start, or refuses its
    token while another accepts, is left out of the rotation (and reported) rather than failing
    the whole run, while a managed one that does not start is our own fault and stops the run.
    """

    def __init__(self, specs: list[ServerSpec], services: list[Any]) -> None:
        self.specs = specs
        self.services = services
        self.errors: list[str | None] = [None] * len(services)

    @property
    def managed(self) -> bool:
        return bool(self.services) and self.services[0].managed

    def live(self) -> list[tuple[ServerSpec, Any]]:
        return [(sp, sv) for sp, sv, err in zip(self.specs, self.services, self.errors) if err is None]

    async def start(self) -> None:
        results = await asyncio.gather(*(sv.start() for sv in self.services), return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if not isinstance(r, ServiceError | OSError):
                    await self.stop()
                    raise r
                self.errors[i] = str(r)
        failed = [f"{sp.name}: {err}" for sp, err in zip(self.specs, self.errors) if err]
        if failed and (self.managed or not self.live()):
            await self.stop()
            raise ServiceError("; ".join(failed))
        # Tokens of managed services are only known now.
        self.specs = [replace(sp, url=sv.url or sp.url, token=sv.token)
                      if sv.managed else sp for sp, sv in zip(self.specs, self.services)]

    async def check_access(self) -> list[AccessCheck] | None:
        """Remote servers: one authenticated connection each (a wrong token would otherwise fail
        every test alike, "HTTP 401"). A server that refuses it is left out while another server
        accepts, as an unreachable one is; None then. When none accepts, the failed checks (the
        run stops with one message, exit 3) and nobody is marked left out."""
        if self.managed:
            return None
        live = [(i, sp) for i, (sp, err) in enumerate(zip(self.specs, self.errors)) if err is None]
        checks = await asyncio.gather(*(check_access(sp.url, sp.token) for _, sp in live))
        if not any(c.ok for c in checks):
            return list(checks)
        for (i, _), c in zip(live, checks):
            if not c.ok:
                self.errors[i] = access_refusal(c)
        return None

    async def leave_out_unfit(self, needed: list[str]) -> None:
        """Several remote servers: leave out one whose allow-list lacks an executable the plan
        needs while another server allows them all (one message, instead of a refusal per test
        it would steal). Managed services allow what the plan needs by construction."""
        live = [(i, sp) for i, (sp, err) in enumerate(zip(self.specs, self.errors)) if err is None]
        if self.managed or len(live) < 2:
            return
        allows = await asyncio.gather(*(server_allows(sp) for _, sp in live))
        unfit = unfit_servers({sp.name: a for (_, sp), a in zip(live, allows)}, needed)
        for i, sp in live:
            if sp.name in unfit:
                self.errors[i] = f"cannot run this plan: {unfit[sp.name]}"

    def note_job(self, pid: int | None) -> None:
        for sv in self.services:
            sv.note_job(pid)

    def kill_now(self) -> None:
        for sv in self.services:
            sv.kill_now()

    async def stop(self) -> list[Any]:
        return list(await asyncio.gather(*(sv.stop() for sv in self.services)))


def build_fleet(ns: argparse.Namespace, plan: list[Planned], report_dir: Path) -> ServiceFleet:
    if ns.server:
        specs = server_specs(ns)
        return ServiceFleet(specs, [RemoteService(sp.url, sp.token) for sp in specs])
    pairs = local_weights(ns)
    multi = len(pairs) > 1
    # IS_SANDBOX is the service's decision, never a job's (it lets the CLI skip permissions as
    # root): a plan that skips permissions as root gets services configured for it.
    service_env = {"CC_EXECUTOR_IS_SANDBOX": "1"} if plan_needs(plan)["skip_permissions"] else None
    services, specs = [], []
    for k, (w, c) in enumerate(pairs, 1):
        log_dir = report_dir / "logs" / f"server-{k}" if multi else report_dir / "logs"
        services.append(ManagedService(allow=executables(plan), log_dir=log_dir, max_load=ns.max_load,
                                       env=service_env))
        # A placeholder URL until the service prints its own (ServiceFleet.start fills it in).
        specs.append(ServerSpec("ws://127.0.0.1:0/ws", None, w, c, name=f"server-{k}"))
    return ServiceFleet(specs, services)


async def health_probe(spec: ServerSpec) -> bool:
    """Whether a lost server answers /health again (the dispatcher's rejoin probe)."""
    status, body = await fetch_json(health_url(spec.url), timeout=5.0)
    return status == 200 and isinstance(body, dict) and body.get("status") == "ok"


def _service_json(spec: ServerSpec, svc: Any, plan: list[Planned], err: str | None) -> dict[str, Any]:
    return {"name": spec.name, "kind": "managed" if svc.managed else "remote", "url": svc.url,
            "pid": svc.pid, "argv": svc.describe_argv(), "version": svc.health.get("version"),
            "allow": executables(plan) if svc.managed else None, "weight": spec.weight,
            "concurrency": spec.concurrency, "error": err}


async def run_session(s: Session) -> int:
    ns, run = s.ns, s.run
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, s.on_signal, sig.name)
    monitor = None
    progress = None
    fleet: ServiceFleet | None = None
    try:
        async with model_environment(ns.model, **plan_needs(s.plan)) as model:
            run.environment["model_description"] = model.description
            run.environment.update(model_effective=model.mode, model_reason=model.reason)
            fleet = build_fleet(ns, s.plan, s.report_dir)
            s.service = fleet
            try:
                await s.phase(fleet.start())
            except ServiceError as e:
                run.error = f"service: {e}"
                print(f"{s.tool}: {run.error}", file=sys.stderr)
                raise ServiceFailed from None
            refused = await s.phase(fleet.check_access())
            if len(fleet.services) > 1 and refused is None:
                await s.phase(fleet.leave_out_unfit(executables(s.plan)))
            live = fleet.live()
            first_spec, svc = live[0]
            multi = len(fleet.services) > 1
            if multi:
                run.service.update({
                    "kind": "managed" if fleet.managed else "remote", "url": None, "pid": None,
                    "argv": [], "version": svc.health.get("version"),
                    "allow": executables(s.plan) if fleet.managed else None,
                    "servers": [_service_json(sp, sv, s.plan, err) for sp, sv, err
                                in zip(fleet.specs, fleet.services, fleet.errors)],
                })
                for sp, err in zip(fleet.specs, fleet.errors):
                    if err and not ns.quiet:
                        print(f"{s.tool}: server {sp.name} left out: {err}", file=sys.stderr)
            else:
                run.service.update({
                    "kind": "managed" if svc.managed else "remote", "url": svc.url, "pid": svc.pid,
                    "argv": svc.describe_argv(), "version": svc.health.get("version"),
                    "allow": executables(s.plan) if svc.managed else None,
                })
            run.environment["cc_executor_service"] = svc.health.get("version")
            if refused is not None:  # no server accepted its token: one message, exit 3
                run.error = f"preflight: {access_failure(refused)}"
                print(access_message(s.tool, refused), file=sys.stderr, flush=True)
                raise PreflightFailed

            caps = set(model.provides)
            claude_note = "not used"
            claude_env: dict[str, str] = {}
            if any(p.uses_claude for p in s.plan):
                check = (
                    (lambda url, token: probe_cli(url, token, managed=fleet.managed))
                    if ns.no_preflight else
                    (lambda url, token: run_preflight(url, token, model, managed=fleet.managed)))
                probes = await s.phase(asyncio.gather(*(check(sp.url, sp.token)
                                                        for sp, _ in fleet.live())))
                bad = next((pr for pr in probes if not pr.ok), None)
                probe = bad or probes[0]
                claude_note = probe.note
                if bad is None:
                    caps.add(CLAUDE_CAPABILITY)
                    claude_env = claude_path_env(probe.path)
                run.environment["claude"] = probe.note if bad is None else f"unavailable: {probe.note}"
                run.environment.update(claude_path=probe.path, claude_used=True)
                if not ns.no_preflight:
                    run.environment["preflight"] = probe.to_json()
                    if bad is not None:
                        run.error = f"preflight: {bad.failure}"
                        print(bad.message(s.tool), file=sys.stderr, flush=True)
                        raise PreflightFailed
                if bad is None and not ns.quiet:
                    print(probe.terminal_line(model, services=len(probes)), flush=True)
            else:
                run.environment["claude"] = "not used"
                if fleet.managed:  # the CLI a Claude test would have run here, for the record
                    version, path = await s.phase(local_cli_version())
                    if version is not None:
                        run.environment.update(claude=version, claude_path=path, claude_used=False)
            s.plan = [replace(p, skip=unmet_requirement(p, caps, model.label, claude_note))
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
                first_spec.url, first_spec.token, s.plan, s.report_dir,
                RunOptions(concurrency=ns.concurrency, fail_fast=ns.fail_fast, model_env=model.env,
                           claude_env=claude_env, halt=s.halt, steal=not ns.no_steal,
                           max_retries_per_test=ns.retries, retry_budget=ns.retry_budget),
                progress=progress, monitor=monitor, service=fleet)
            if s.interrupted:
                s.runner.interrupt(f"interrupted by {s.interrupted}")
            if multi:
                run.outcomes = await s.runner.run_dispatched(
                    [sp for sp, _ in fleet.live()], probe=health_probe,
                    probe_interval=PROBE_INTERVAL)
            else:
                run.outcomes = await s.runner.run()
    except Interrupted:
        pass
    finally:
        if progress is not None:
            progress.close()
        if monitor is not None:
            monitor.stop()
            run.resources = monitor.run_summary()
        if fleet is not None:
            infos = await fleet.stop()
            stops = [{"how": i.how, "exit_code": i.exit_code, "seconds": i.seconds,
                      "leftovers_killed": i.leftovers_killed,
                      **({"stderr_tail": i.stderr_tail} if i.stderr_tail is not None else {})}
                     for i in infos]
            for sv, info in zip(fleet.services, infos):
                if info.how == "sigkill":
                    print(f"{s.tool}: the service at {sv.url} did not stop within "
                          f"{sv.stop_timeout:g} s of SIGTERM and was killed; its stacks are in "
                          f"{sv.log_dir / 'service.stderr'}", file=sys.stderr, flush=True)
            if len(stops) == 1:
                run.service["stop"] = stops[0]
            for entry, stop in zip(run.service.get("servers") or [], stops):
                entry["stop"] = stop
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if s.runner is None or not run.outcomes:
        # Interrupted (or failed) before the tests ran: every planned test is "not run".
        dummy = Runner("", None, s.plan, s.report_dir)
        dummy.stop_reason = (f"interrupted by {s.interrupted}" if s.interrupted
                             else run.error or "not run")
        dummy.interrupted = bool(s.interrupted)
        run.outcomes = dummy.outcomes()
    if s.runner is not None:
        run.halted = s.runner.halted
        run.servers = s.runner.server_stats()
        if s.runner.claude_streams:
            totals = claude_mod.ClaudeTotals()
            for st in s.runner.claude_streams:
                totals.add(st)
            run.claude_totals = totals.to_json()
    if s.interrupted:
        return EXIT_SIGNAL.get(s.interrupted, 130)
    if run.error:
        return EXIT_PREFLIGHT if run.error.startswith("preflight:") else EXIT_FAILED
    t = Totals.of(run.outcomes)
    return EXIT_OK if t.failed == 0 and t.lost == 0 and t.passed > 0 else EXIT_FAILED


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
    state = " INTERRUPTED" if run.interrupted else " HALTED" if run.halted else ""
    dur = (run.finished_at or time.time()) - run.started_at
    lost = f", {t.lost} lost" if t.lost else ""
    return (f"{tool}{state}: {t.tests} tests: {t.passed} passed, {t.failed} failed, {t.skipped} skipped"
            f"{lost}; success ratio {ratio.text()} ({'graduates' if ratio.graduates else 'does not graduate'}"
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


def check_options(ns: argparse.Namespace) -> HaltRule:
    """Every option that can be wrong on its own; UsageError naming it. Returns the halt rule."""
    if ns.token and not ns.server:
        raise UsageError("--token is only used with --server")
    if ns.server_token and not ns.server:
        raise UsageError("--server-token is only used with --server")
    if ns.server and ns.servers:
        raise UsageError("give either --server (running services) or --servers N (start them), not both")
    if ns.weights is not None and not ns.servers:
        raise UsageError("--weights is only used with --servers N")
    if ns.servers is not None and ns.servers > MAX_LOCAL_SERVERS:
        raise UsageError(f"--servers: at most {MAX_LOCAL_SERVERS} local services, got {ns.servers}")
    if ns.server:
        server_specs(ns)
    if ns.servers:
        local_weights(ns)
    if ns.max_load is not None:
        try:
            if not parse_max_load(ns.max_load, os.cpu_count() or 1) >= 0:
                raise ValueError
        except ValueError:
            raise UsageError(f"--max-load: not a load: {ns.max_load!r} (expected e.g. 8 or 2/core)") from None
    try:
        halt = HaltRule.parse(ns.halt)
    except HaltRuleError as e:
        raise UsageError(f"--halt: {e}") from None
    if ns.no_history and (ns.baseline or ns.history_db or ns.learned_timeouts):
        raise UsageError("--no-history cannot be combined with --baseline, --history-db or "
                         "--learned-timeouts (they read the history)")
    parse_percent(ns.duration_threshold, "--duration-threshold")
    if ns.learned_timeouts is not None:
        parse_percent(ns.learned_timeouts, "--learned-timeouts")
    if not ns.duration_min >= 0:
        raise UsageError(f"--duration-min: must be >= 0 seconds, got {ns.duration_min:g}")
    if not ns.learned_floor >= 0:
        raise UsageError(f"--learned-floor: must be >= 0 seconds, got {ns.learned_floor:g}")
    return halt


def open_history(ns: argparse.Namespace) -> History | None:
    """The history database (created if missing), or None with --no-history; UsageError if the
    file cannot be used or --baseline names a run it does not hold."""
    if ns.no_history:
        return None
    path = Path(ns.history_db) if ns.history_db else Path(ns.out) / "history.sqlite3"
    try:
        history = History(path)
    except HistoryError as e:
        raise UsageError(f"--history-db: {e}") from None
    if ns.baseline:
        try:
            history.run(ns.baseline)
        except HistoryError as e:
            history.close()
            raise UsageError(f"--baseline: {e}") from None
    return history


def apply_history(plan: list[Planned], history: History | None, ns: argparse.Namespace) -> list[Planned]:
    """Each test's history median (for longest-first dealing) and, with --learned-timeouts, its
    learned limit: PCT% of the median, at least --learned-floor, never above the configured one."""
    if history is None:
        return plan
    medians: dict[tuple[str, str], float] = {}
    for suite in dict.fromkeys(p.suite for p in plan):
        ids = [p.test.id for p in plan if p.suite == suite]
        for tid, m in history.median_durations(ids, suite=suite).items():
            medians[(suite, tid)] = m
    percent = parse_percent(ns.learned_timeouts, "--learned-timeouts") if ns.learned_timeouts else None
    out = []
    for p in plan:
        median = medians.get((p.suite, p.test.id))
        p = replace(p, median=median)
        if percent is not None and median is not None:
            limit = learned_timeout([median], percent, p.test.timeout, ns.learned_floor)
            if limit is not None:
                info = {"percent": percent, "median": round(median, 4), "learned": round(limit, 4),
                        "configured": p.test.timeout, "floor": ns.learned_floor,
                        "capped": limit >= p.test.timeout}
                p = replace(p, test=replace(p.test, timeout=limit), learned_timeout=info)
        out.append(p)
    return out


def record_history(history: History, run: RunResult, suites: list[Suite], ns: argparse.Namespace
                   ) -> dict[str, Any]:
    """Store the run (every attempt, with its server) and compare it with the previous run of
    the same suites and with --baseline. An interrupted run is stored without an end time, so it
    is never anyone's baseline."""
    env = run.environment
    info: dict[str, Any] = {"path": str(history.path), "recorded": False, "error": None,
                            "comparisons": [], "suite_ratios": [], "learned_timeouts": None}
    servers = {(o.suite, o.id, a.attempt): a.server for o in run.outcomes for a in o.attempts}
    threshold = parse_percent(ns.duration_threshold, "--duration-threshold") / 100
    try:
        history.record_run(
            run.run_id, started=run.started_at, suites=[s.name for s in suites],
            ended=None if run.interrupted else run.finished_at, host=env.get("hostname"),
            cores=env.get("cores"), load_start=(env.get("load_start") or {}).get("load1"),
            load_end=(env.get("load_end") or {}).get("load1"), model_mode=env.get("model_mode"),
            versions={"cc_executor": env.get("cc_executor"), "service": env.get("cc_executor_service"),
                      "claude": env.get("claude"), "python": env.get("python")},
            argv=run.argv, exit_code=run.exit_code)
        history.record_outcomes(run.run_id, run.outcomes,
                                server_for=lambda suite, tid, n: servers.get((suite, tid, n)))
        info["recorded"] = True
        previous = history.baseline(run.run_id)
        chosen = history.run(ns.baseline) if ns.baseline else None
        against: list[tuple[str, Any]] = []
        if previous is not None:
            against.append(("previous", previous))
        if chosen is not None:
            if previous is not None and chosen.run_id == previous.run_id:
                against[0] = ("previous and baseline", previous)
            elif chosen.run_id != run.run_id:
                against.append(("baseline", chosen))
        for label, other in against:
            c = history.compare(run.run_id, other.run_id, threshold, ns.duration_min)
            info["comparisons"].append({"against": label, "started": other.started,
                                        "exit_code": other.exit_code, **c.to_json(),
                                        "lines": c.lines()})
        for name in dict.fromkeys([*(s.name for s in suites), None]):
            r = history.suite_ratio(name)
            info["suite_ratios"].append({
                "suite": name, "passes": r.passes, "failures": r.failures,
                "ratio": None if r.ratio == float("inf") else round(r.ratio, 4), "text": r.text(),
                "graduated": r.graduated})
    except Exception as e:  # noqa: BLE001 - a history problem must never cost the run its report
        info["error"] = f"{type(e).__name__}: {e}"
    if ns.learned_timeouts:
        info["learned_timeouts"] = {
            "percent": parse_percent(ns.learned_timeouts, "--learned-timeouts"),
            "floor": ns.learned_floor,
            "tests": sum(1 for o in run.outcomes if o.learned_timeout)}
    info["duration_threshold"] = threshold
    info["duration_min"] = ns.duration_min
    return info


def history_line(info: dict[str, Any]) -> str | None:
    if info.get("error"):
        return f"history: not recorded: {info['error']}"
    parts = []
    for c in info.get("comparisons") or []:
        extra = "".join(f", {len(c[k])} {what}" for k, what in (("lost", "lost or not run"),
                                                                   ("flaky", "flaky (passed)"))
                        if c.get(k))
        parts.append(f"against {c['against']} run {c['baseline_id']}: {len(c['new_failures'])} new "
                     f"failure(s){extra}, {len(c['fixed'])} fixed, {len(c['slower'])} slower, "
                     f"{len(c['faster'])} faster")
    if not parts:
        parts.append("no earlier run of these suites to compare with")
    return f"history ({info['path']}): " + "; ".join(parts)


def _main(ns: argparse.Namespace, argv: list[str] | None, *, prog: str, tool: str,
          default_suite: str, complex_mode: bool) -> int:
    history: History | None = None
    try:
        halt = check_options(ns)
        suites = load_suites(ns.suites or [default_suite], complex_mode=complex_mode)
        if ns.claude_template:
            template = parse_template(ns.claude_template)
            suites = [apply_template(s, template) for s in suites]
        plan = build_plan(suites, ns.filter, ns.repeat)
        if not plan:
            raise UsageError("no test matches --filter " + " ".join(map(repr, ns.filter))
                             if ns.filter else "the selected suites contain no tests")
        if ns.list:
            list_plan(suites, plan)
            return EXIT_OK
        history = open_history(ns)
        plan = apply_history(plan, history, ns)
    except UsageError as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        if history is not None:
            history.close()
        return EXIT_USAGE
    try:
        return _run(ns, argv, prog=prog, tool=tool, default_suite=default_suite,
                    complex_mode=complex_mode, suites=suites, plan=plan, halt=halt, history=history)
    finally:
        if history is not None:
            history.close()


def _run(ns: argparse.Namespace, argv: list[str] | None, *, prog: str, tool: str, default_suite: str,
         complex_mode: bool, suites: list[Suite], plan: list[Planned], halt: HaltRule,
         history: History | None) -> int:
    run_id = new_run_id()
    report_dir = Path(ns.out) / run_id
    report_dir.mkdir(parents=True, exist_ok=True)
    run = RunResult(run_id=run_id, tool=tool,
                    argv=redact_argv([prog, *(argv if argv is not None else sys.argv[1:])]),
                    started_at=time.time())
    run.environment = environment_info(ns.model)
    run.options = {
        "suites": ns.suites or [default_suite], "concurrency": ns.concurrency, "repeat": ns.repeat,
        "filter": ns.filter, "fail_fast": ns.fail_fast, "out": ns.out, "quiet": ns.quiet,
        "model": ns.model, "claude_template": ns.claude_template, "max_load": ns.max_load,
        "server": [split_server(t)[0] for t in ns.server] or None, "servers": ns.servers,
        "weights": ns.weights, "steal": not ns.no_steal, "retries": ns.retries,
        "retry_budget": ns.retry_budget,
        "halt": str(halt), "history_db": None if history is None else str(history.path),
        "baseline": ns.baseline, "duration_threshold": ns.duration_threshold,
        "duration_min": ns.duration_min, "learned_timeouts": ns.learned_timeouts,
        "learned_floor": ns.learned_floor, "resources": complex_mode,
    }
    run.suites = [{"name": s.name, "path": str(s.path), "format": s.format, "tests": len(s.tests),
                   "selected": sum(1 for p in plan if p.suite == s.name)} for s in suites]
    session = Session(ns, tool, complex_mode, suites, plan, run, report_dir, halt=halt)
    try:
        code = asyncio.run(run_session(session))
    except KeyboardInterrupt:  # a Ctrl-C in the instant before the handlers were installed
        session.interrupted = session.interrupted or "SIGINT"
        code = EXIT_SIGNAL["SIGINT"]
    # Recording and writing take milliseconds: a signal now must not lose them.
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    run.interrupted = session.interrupted is not None
    run.interrupt_signal = session.interrupted
    run.finished_at = time.time()
    run.environment["load_end"] = read_load().to_dict()
    run.exit_code = code
    try:
        if history is not None:
            run.history = record_history(history, run, suites, ns)
        paths = write_reports(run, report_dir)
        print(summary_line(tool, run))
        if run.history is not None and not ns.quiet:
            print(history_line(run.history))
        print(f"report: {paths['markdown']}", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
