"""The command line shared by `python -m stress.local` and `python -m stress.complex`.

Owns: the options (`build_parser`), the checks of options that can be wrong on their own
(`check_options`), and `main`: parse, load every suite and make the plan (`stress.run.plan`), open
the history (`stress.history.link`), then hand over to `stress.session.run_and_report`.

Order of work, and why: parse and load every suite first (a typo must fail before anything
starts, exit 2), plan and filter, then start the service, probe what it can run, run, stop the
service and write the reports (stress.session). Every phase after loading can be interrupted:
the first Ctrl-C or SIGTERM cancels the running tests (each keeps the output it had), stops the
service and still writes the reports, marked interrupted (exit 130 or 143); a second one kills
the service at once.

With `--cluster` (a Dask scheduler's address, or local:N) the plan runs on a Dask cluster of
`python -m stress.worker` processes (stress.cluster) instead of the one service; every run is recorded in the history
database (`stress.history`) and compared with the previous run of the same suites, unless
`--no-history`.

Exit status (stress.exits), in this order of precedence: 130 / 143 interrupted by SIGINT /
SIGTERM; 2 usage or suite errors; 3 a preflight failed (stress.service.preflight: no --server
accepted its token, or the Claude preflight; a --server that refuses while another accepts is
left out); 1 the service could not be started; 99 a --threshold was crossed (--find-capacity: not
even its first step held); 1 a test failed or was lost, or nothing ran; 0 every test that ran
passed (or met its pass threshold) and at least one ran, and none was lost.

Load runs (--stages, --arrival-rate, --find-capacity, --threshold) are checked and turned into a
`LoadPlan` by `stress.load_cli`, and driven by `stress.run.driver`.

Nothing imports this module but the entry points (`stress.local`, `stress.complex`) and tests:
it may import every harness module, and none of them may import it. The names it re-exports
(`__all__`) are the ones callers imported from here before the run machinery moved out.
"""

from __future__ import annotations

import argparse
import os
import sys

from cc_executor.settings import parse_max_load
from stress.argtypes import (
    UsageError,
    int_at_least,
    parse_percent,
    redact_argv,
    split_server,
)
from stress.cluster.options import add_cluster_options, check_cluster_options
from stress.exits import EXIT_FAILED, EXIT_OK, EXIT_PREFLIGHT, EXIT_SIGNAL, EXIT_USAGE
from stress.fleet import ServiceFleet, build_fleet, server_specs
from stress.history import History
from stress.history.link import (
    apply_history,
    history_line,
    open_history,
    record_history,
)
from stress.live.view import add_dashboard_option, check_dashboard
from stress.load_cli import add_load_options, check_load_options, check_plan_fits
from stress.run.flaky import HaltRule, HaltRuleError
from stress.run.plan import (
    COMPLEX_DEFAULT_MATCH,
    apply_template,
    build_plan,
    effective_threshold,
    executables,
    explain_or_usage,
    list_plan,
    load_suites,
    matches_filter,
    parse_template,
    unmet_requirement,
    uses_claude,
)
from stress.service.modelmode import MODES
from stress.session import (
    Interrupted,
    PreflightFailed,
    ServiceFailed,
    Session,
    claude_path_env,
    environment_info,
    new_run_id,
    run_and_report,
    run_session,
    summary_line,
)

# Defined here: LEARNED_FLOOR, build_parser, check_options, main. Everything
# else is kept importable from stress.cli for callers and tests; it lives in the modules above.
__all__ = [
    "COMPLEX_DEFAULT_MATCH", "EXIT_FAILED", "EXIT_OK", "EXIT_PREFLIGHT", "EXIT_SIGNAL", "EXIT_USAGE",
    "LEARNED_FLOOR", "Interrupted", "PreflightFailed",
    "ServiceFailed", "ServiceFleet", "Session", "UsageError", "apply_history", "apply_template",
    "build_fleet", "build_parser", "build_plan", "check_options", "claude_path_env",
    "effective_threshold", "environment_info", "executables",
    "history_line", "int_at_least", "list_plan", "load_suites", "main",
    "matches_filter", "new_run_id", "open_history", "parse_percent", "parse_template",
    "record_history", "redact_argv", "run_session", "server_specs",
    "split_server", "summary_line", "unmet_requirement", "uses_claude",
]

LEARNED_FLOOR = 2.0
"""Seconds: a learned timeout is never shorter (a 0.1 s test must not be killed at 0.3 s)."""


def build_parser(prog: str, default_suite: str, what: str) -> argparse.ArgumentParser:
    """The options of `prog` (stress.local and stress.complex differ only in name, default
    suite and description); argparse's own errors exit 2 like every other usage error."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"{what} Starts `python -m cc_executor` on a free loopback port (or uses "
                    "--server), runs the suites through the WebSocket client, and writes "
                    "report.md, report.json and junit.xml under --out/<run-id>/.",
        epilog="Exit status: 0 all passed; 1 a test failed or nothing ran; 2 usage or suite "
               "error; 3 preflight failed (no --server accepted its token, or Claude); 99 a "
               "--threshold was crossed (--find-capacity: not even the first step held); "
               "130/143 interrupted (SIGINT/SIGTERM). See docs/harness.md.",
    )
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help=f"suite names (configs/<name>.json) or paths; default: {default_suite}")
    p.add_argument("--list", action="store_true", help="print the tests that would run, then exit 0")
    p.add_argument("--explain", metavar="ID",
                   help="show how a test (or case, or glob) was read: as written, as run, its "
                        "assertions; then exit 0")
    p.add_argument("--concurrency", type=int_at_least(1), default=None, metavar="N",
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
    p.add_argument("--server", action="append", default=[], metavar="URL",
                   help="test this running service (ws://...) instead of starting one")
    p.add_argument("--token", help="bearer token for --server")
    p.add_argument("--server-token", action="append", default=[], metavar="URL=TOKEN",
                   help="bearer token for the --server URL (same as --token)")
    # The multi-server modes are a Dask cluster now: kept only to say so (stress.cluster.options).
    p.add_argument("--servers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--retry-budget", help=argparse.SUPPRESS)
    p.add_argument("--no-steal", action="store_true",
                   help="--cluster local:N: turn Dask's work stealing off (to compare)")
    p.add_argument("--retries", type=int_at_least(0), default=None, metavar="N",
                   help="--cluster local:N: rerun a test whose worker died up to N times "
                        "(the scheduler's allowed-failures; default 2, from dask.yaml)")
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
    add_load_options(p)
    add_cluster_options(p)
    add_dashboard_option(p)
    return p


def check_options(ns: argparse.Namespace) -> HaltRule:
    """Every option that can be wrong on its own; UsageError naming it. Returns the halt rule."""
    check_cluster_options(ns)
    if ns.token and not ns.server:
        raise UsageError("--token is only used with --server")
    if ns.server_token and not ns.server:
        raise UsageError("--server-token is only used with --server")
    if ns.server:
        server_specs(ns)
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


def main(argv: list[str] | None = None, *, prog: str = "python -m stress.local",
         default_suite: str = "local", complex_mode: bool = False,
         what: str = "Run stress suites against cc_executor.") -> int:
    """The whole command: returns the exit status instead of exiting, so tests and the entry
    points (`stress.local`, `stress.complex`) call it alike."""
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
    """Everything that can fail as a usage error (exit 2) before a report folder exists, then
    the run. The history is closed however the run ends."""
    history: History | None = None
    try:
        load = check_load_options(ns)
        halt = check_options(ns)
        check_dashboard(ns)
        suites = load_suites(ns.suites or [default_suite], complex_mode=complex_mode)
        if ns.claude_template:
            template = parse_template(ns.claude_template)
            suites = [apply_template(s, template) for s in suites]
        if ns.explain is not None:
            return explain_or_usage(suites, ns.explain)
        plan = build_plan(suites, ns.filter, ns.repeat)
        if not plan:
            raise UsageError("no test matches --filter " + " ".join(map(repr, ns.filter))
                             if ns.filter else "the selected suites contain no tests")
        check_plan_fits(load, plan)
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
        return run_and_report(ns, argv, prog=prog, tool=tool, default_suite=default_suite,
                              complex_mode=complex_mode, suites=suites, plan=plan, halt=halt,
                              history=history, load=load)
    finally:
        if history is not None:
            history.close()
