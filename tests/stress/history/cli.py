"""`python -m stress.history [--db PATH] list|show|trend|ratio|compare|html`: read the run history
(`html` writes a trends page, history.html beside the database unless --out).

Read-only: it never creates a database (a typo in --db must not leave an empty file behind),
though opening a file written by older code upgrades its schema in place (data kept).
Exit status: 0 done; 1 `compare` found a regression (new failure, a test that ran before and did
not run now, or a slower test; a flaky test that met its pass threshold is none); 2 usage error,
unknown run or test, or an unusable database. Without --baseline, `compare` and `show` use the
automatic baseline: the newest earlier run that ran the tests this one ran.

Owns the `python -m stress.history` command line only; the database is `stress.history`'s.
Must not import `stress.cli` or anything that runs tests (reading the history must not load the
run machinery, and `stress.cli` reaches `stress.history`, which would close an import circle);
shared option helpers come from `stress.argtypes`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.table import Table

from stress.argtypes import int_at_least
from stress.history import (
    DEFAULT_PATH,
    MIN_GRADUATION_PASSES,
    History,
    HistoryError,
    SuiteRatio,
)
from stress.history.trends import run_row
from stress.report.html.trends_page import render_trends
from stress.report.results import GRADUATION_RATIO
from stress.report.simulated import NOTE, is_simulated
from stress.run.flaky import classify, pass_rate_text

EXIT_OK, EXIT_REGRESSED, EXIT_USAGE = 0, 1, 2


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _passed(v: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "not run"}[v]


def _ratio_text(r: SuiteRatio) -> str:
    return r.text()


def cmd_list(h: History, ns: argparse.Namespace, con: Console) -> int:
    runs = h.runs(ns.limit)
    if not runs:
        con.print(f"no runs recorded in {h.path}")
        return EXIT_OK
    t = Table(title=f"runs in {h.path} (newest first)")
    for col in ("run id", "started", "seconds", "suites", "passed", "failed", "exit", "model", "host"):
        t.add_column(col)
    for r in runs:
        t.add_row(r.run_id, _when(r.started), _num(r.duration, "{:.1f}"), ",".join(r.suites),
                  str(r.passed), str(r.failed), _num(r.exit_code, "{}"),
                  (r.model_mode or "-") + (" (simulated)" if is_simulated(mode=r.model_mode) else ""),
                  r.host or "-")
    con.print(t)
    return EXIT_OK


def cmd_show(h: History, ns: argparse.Namespace, con: Console) -> int:
    run = h.run(ns.run_id)
    con.print(f"run {run.run_id}: suites {', '.join(run.suites)}")
    con.print(f"  started {_when(run.started)}, ended {_when(run.ended)}, "
              f"{_num(run.duration, '{:.1f}')} s, exit {_num(run.exit_code, '{}')}")
    con.print(f"  host {run.host or '-'} ({run.cores or '?'} cores), load {_num(run.load_start)} -> "
              f"{_num(run.load_end)}, model {run.model_mode or '-'}")
    if run.versions:
        con.print("  versions: " + ", ".join(f"{k} {v}" for k, v in sorted(run.versions.items())))
    if run.argv:
        con.print("  argv: " + " ".join(run.argv))
    t = Table(title=f"{run.attempts} attempts: {run.passed} passed, {run.failed} failed")
    cost = "cost $ (simulated)" if is_simulated(mode=run.model_mode) else "cost $"
    for col in ("suite", "test", "try", "result", "reason", "needed", "seconds", "server", "bytes",
                cost, "load1", "timeout"):
        t.add_column(col)
    for r in h.results(run.run_id):
        t.add_row(r.suite, r.test_id, str(r.attempt), _passed(r.passed), r.reason or "-",
                  _num(r.required, "{}"), _secs(r.duration), r.server or "-",
                  _num(r.output_bytes, "{:,}"), _num(r.cost_usd, "{:.4f}"), _num(r.load1),
                  _num(r.timeout_used, "{:g}"))
    con.print(t)
    if is_simulated(mode=run.model_mode):
        con.print(f"costs and tokens are simulated: {NOTE}", markup=False)
    base = h.baseline(run.run_id)
    if base is not None:
        for line in h.compare(run.run_id, base.run_id).lines():
            con.print(line, markup=False, highlight=False)
    return EXIT_OK


def cmd_trend(h: History, ns: argparse.Namespace, con: Console) -> int:
    rows = h.trend(ns.test_id, ns.limit, suite=ns.suite)
    if not rows:
        con.print(f"no results for test {ns.test_id!r} in {h.path}", markup=False)
        return EXIT_USAGE
    t = Table(title=f"{ns.test_id}: last {len(rows)} attempts (oldest first)")
    for col in ("run id", "started", "suite", "try", "result", "reason", "seconds", "server", "load1"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.run_id, _when(r.started), r.suite, str(r.attempt), _passed(r.passed),
                  r.reason or "-", _secs(r.duration), r.server or "-", _num(r.load1))
    con.print(t)
    f = classify([r.passed for r in rows])
    durs = [r.duration for r in rows if r.passed and r.duration is not None]
    med = f"median {statistics.median(durs):.3f} s over {len(durs)} passes" if durs else "no passes"
    con.print(f"{f.stability.value}: {f.passes}/{f.runs} passed ({pass_rate_text(f)}); {med}",
              markup=False)
    return EXIT_OK


def cmd_ratio(h: History, ns: argparse.Namespace, con: Console) -> int:
    table = h.suite_ratios()
    if ns.suite is not None:
        if ns.suite not in table:
            con.print(f"no results for suite {ns.suite!r} in {h.path}", markup=False)
            return EXIT_USAGE
        table = {ns.suite: table[ns.suite]}
    if not table:
        con.print(f"no results recorded in {h.path}")
        return EXIT_OK
    t = Table(title=f"success ratio per suite (graduates at {GRADUATION_RATIO:g}:1 with at least "
                    f"{MIN_GRADUATION_PASSES} passes)")
    for col in ("suite", "runs", "passes", "failures", "ratio", "graduated"):
        t.add_column(col)
    for suite, (r, runs) in table.items():
        t.add_row(suite, str(runs), str(r.passes), str(r.failures), _ratio_text(r),
                  "yes" if r.graduated else "no")
    if ns.suite is None and len(table) > 1:
        r = h.suite_ratio(None)
        t.add_row("(all)", "-", str(r.passes), str(r.failures), _ratio_text(r),
                  "yes" if r.graduated else "no")
    con.print(t)
    return EXIT_OK


def cmd_compare(h: History, ns: argparse.Namespace, con: Console) -> int:
    other = ns.baseline
    if other is None:
        base = h.baseline(ns.run_id)
        if base is None:
            con.print(f"no earlier finished run of the same suites to compare {ns.run_id} with; "
                      "give --baseline RUN_ID", markup=False)
            return EXIT_USAGE
        other = base.run_id
    c = h.compare(ns.run_id, other, duration_threshold=ns.threshold, min_seconds=ns.min_seconds)
    for line in c.lines():
        con.print(line, markup=False, highlight=False)
    return EXIT_REGRESSED if c.regressed else EXIT_OK


def cmd_html(h: History, ns: argparse.Namespace, con: Console) -> int:
    """Write the trends page (stress.report.html.trends_page) and print its path."""
    runs = [run_row(r) for r in h.runs(ns.limit)]
    ratios = [{"suite": s, "passes": r.passes, "failures": r.failures, "text": r.text(),
               "graduated": r.graduated} for s, (r, _) in h.suite_ratios().items()]
    out = Path(ns.out) if ns.out else Path(h.path).with_name("history.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_trends(runs, ratios, str(h.path)), encoding="utf-8")
    tmp.replace(out)
    print(f"history: {len(runs)} runs -> {out}", file=con.file, flush=True)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stress.history",
                                description="Read the stress harness's run history (SQLite).")
    p.add_argument("--db", default=os.environ.get("STRESS_HISTORY_DB", str(DEFAULT_PATH)),
                   metavar="PATH", help=f"history database (STRESS_HISTORY_DB, default {DEFAULT_PATH})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("list", help="recorded runs, newest first")
    s.add_argument("--limit", type=int_at_least(1), default=20, metavar="N")
    s = sub.add_parser("show", help="one run's results, and its comparison with its baseline")
    s.add_argument("run_id", metavar="RUN_ID")
    s = sub.add_parser("trend", help="one test's recent attempts: pass/fail and durations")
    s.add_argument("test_id", metavar="TEST_ID")
    s.add_argument("--suite", help="only this suite's test of that id")
    s.add_argument("--limit", type=int_at_least(1), default=20, metavar="N")
    s = sub.add_parser("ratio", help="cumulative passes:failures per suite and graduation")
    s.add_argument("suite", nargs="?", metavar="SUITE")
    s = sub.add_parser("compare", help="a run against its baseline (exit 1 when it regressed)")
    s.add_argument("run_id", metavar="RUN_ID")
    s.add_argument("--baseline", metavar="RUN_ID",
                   help="default: the newest earlier run of the same suites that ran its tests")
    s.add_argument("--threshold", type=float, default=0.25,
                   help="relative duration change to report (default 0.25 = 25%%)")
    s.add_argument("--min-seconds", type=float, default=0.1,
                   help="and at least this many seconds of change (default 0.1)")
    s = sub.add_parser("html", help="write a trends page (pass ratio, durations) over the runs")
    s.add_argument("--out", metavar="FILE", help="where (default history.html beside the database)")
    s.add_argument("--limit", type=int_at_least(1), default=200, metavar="N",
                   help="the newest N runs (default 200)")
    return p


COMMANDS = {"list": cmd_list, "show": cmd_show, "trend": cmd_trend, "ratio": cmd_ratio,
            "compare": cmd_compare, "html": cmd_html}


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    ns = build_parser().parse_args(argv)
    stream = out or sys.stdout
    # Piped output (CI logs, tests) gets a wide table instead of rich's 80-column default.
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or 160)
    con = Console(file=stream, soft_wrap=False, width=width)
    try:
        with History(ns.db, create=False) as h:
            return COMMANDS[ns.command](h, ns, con)
    except (HistoryError, ValueError) as e:
        print(f"stress.history: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
