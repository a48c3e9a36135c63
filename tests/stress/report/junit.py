"""junit.xml: the run for CI, in the common JUnit XML shape CI systems read.

Shape: testsuites > testsuite (one per suite) > testcase (one per attempt) with failure, error or
skipped, and system-out for the output preview; a run with --threshold has a first testsuite
"thresholds", one testcase per threshold, failed when crossed, and a --find-capacity search a
testcase "capacity: ..." there too, failed when no step held (exit 99). Why one testcase per
attempt, not per test: CI
dashboards count and time test cases, and a repeated test's attempts are separate runs with
separate outcomes. A lost attempt is an `error` (the harness could not judge it), a failed one a
`failure` (an `error` when the verdict reason is "error").

Imports `stress.report.results` only; never another report module. Text goes through `_xml_text`:
characters XML cannot carry become U+FFFD, and long texts are cut at JUNIT_OUT_CHARS.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from stress.report.assertions import failure_lines, junit_properties
from stress.report.results import FAILED, LOST, SKIPPED, Attempt, Outcome, RunResult

_XML_BAD = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
JUNIT_OUT_CHARS = 4000
COUNTS = ("tests", "failures", "errors", "skipped")
"""The counters every testsuite (and the testsuites root) carries, besides `time`."""


def _xml_text(text: str, limit: int = JUNIT_OUT_CHARS) -> str:
    text = _XML_BAD.sub("\ufffd", text)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


def _junit_history(run: RunResult, suite: str) -> list[tuple[str, str]]:
    """Per suite: its tests the history comparisons list as lost or as flaky passes (a lost
    test is only "skipped" in junit.xml, and a flaky pass only passed attempts and failures)."""
    out = []
    for c in (run.history or {}).get("comparisons") or []:
        against = f"against the {c['against']} run {c['baseline_id']}"
        for key, name in (("lost", "history_lost"), ("flaky", "history_flaky")):
            ids = [k[len(suite) + 1:] for k in c.get(key) or [] if k.startswith(suite + "/")]
            if ids:
                out.append((name, f"{', '.join(ids)} ({against})"))
    return out


def render_junit(run: RunResult) -> bytes:
    """The whole junit.xml, UTF-8 with its XML declaration."""
    root = ET.Element("testsuites", name=f"cc_executor stress {run.run_id}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    by_suite: dict[str, list[Outcome]] = {}
    for o in run.outcomes:
        by_suite.setdefault(o.suite, []).append(o)
    counted = [_add_thresholds(root, run)] if run.thresholds or run.capacity else []
    for suite_name, outcomes in by_suite.items():
        counted.append(_add_testsuite(root, run, suite_name, outcomes))
    for n in counted:
        for k in COUNTS:
            totals[k] += n[k]
        totals["time"] += n["time"]
    for k in COUNTS:
        root.set(k, str(totals[k]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _add_thresholds(root: ET.Element, run: RunResult) -> dict[str, float]:
    """The run's --thresholds as a testsuite of their own, first (as k6's JUnit summary has
    them): a crossed one is a failure with what was observed."""
    ts = ET.SubElement(root, "testsuite", name="thresholds",
                       hostname=str(run.environment.get("hostname", "")),
                       timestamp=datetime.fromtimestamp(run.started_at, timezone.utc)
                       .strftime("%Y-%m-%dT%H:%M:%S"))
    n: dict[str, float] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for t in run.thresholds:
        case = ET.SubElement(ts, "testcase", classname="thresholds", name=_xml_text(t.expr, 500),
                             time="0.000")
        n["tests"] += 1
        if not t.passed:
            n["failures"] += 1
            text = (f"{t.expr}: observed {t.observed} ({t.unit}), limit {t.limit}"
                    + (f"; {t.note}" if t.note else "") + ("; aborted the run" if t.aborted else ""))
            ET.SubElement(case, "failure", message=_xml_text(text, 1000), type="threshold")
    cap = run.capacity
    if cap is not None:  # the search's answer: failed when no step held (the exit status 99)
        case = ET.SubElement(ts, "testcase", classname="thresholds",
                             name=f"capacity: {', '.join(cap.criteria)}", time="0.000")
        n["tests"] += 1
        if cap.crossed:
            n["failures"] += 1
            ET.SubElement(case, "failure", type="threshold", message=_xml_text(
                f"no step held (limited by {cap.limited_by}): {cap.reason}", 1000))
        else:
            ET.SubElement(case, "system-out").text = _xml_text(
                f"max sustainable concurrency {cap.max_sustainable_concurrency}, limited by "
                f"{cap.limited_by}: {cap.reason}", 1000)
    for k in COUNTS:
        ts.set(k, str(n[k]))
    ts.set("time", "0.000")
    return n


def _add_testsuite(root: ET.Element, run: RunResult, suite_name: str,
                   outcomes: list[Outcome]) -> dict[str, float]:
    """One suite's testsuite element with its properties and testcases; returns its counts."""
    ts = ET.SubElement(root, "testsuite", name=suite_name,
                       hostname=str(run.environment.get("hostname", "")),
                       timestamp=datetime.fromtimestamp(run.started_at, timezone.utc)
                       .strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(ts, "properties")
    for k, v in (("run_id", run.run_id), ("model_mode", run.environment.get("model_mode")),
                 ("interrupted", str(run.interrupted).lower())):
        ET.SubElement(props, "property", name=k, value=_xml_text(str(v)))
    for name, value in _junit_history(run, suite_name):
        ET.SubElement(props, "property", name=name, value=_xml_text(value))
    n: dict[str, float] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for o in outcomes:
        for a in o.attempts:
            kind = _add_testcase(ts, suite_name, o, a)
            n["tests"] += 1
            n["time"] += a.duration
            if kind:
                n[kind] += 1
    for k in COUNTS:
        ts.set(k, str(n[k]))
    ts.set("time", f"{n['time']:.3f}")
    return n


def _add_testcase(ts: ET.Element, suite_name: str, o: Outcome, a: Attempt) -> str | None:
    """One attempt as a testcase; returns the counter it adds to (skipped, errors, failures)."""
    name = o.id if o.repeat == 1 else f"{o.id} [attempt {a.attempt}]"
    case = ET.SubElement(ts, "testcase", classname=suite_name, name=name,
                         time=f"{a.duration:.3f}", file=o.source.split(":$", 1)[0])
    if a.assertions:
        props = ET.SubElement(case, "properties")
        for name, value in junit_properties(a):
            ET.SubElement(props, "property", name=_xml_text(name, 200), value=_xml_text(value, 500))
    counted = None
    if a.status == SKIPPED:
        counted = "skipped"
        ET.SubElement(case, "skipped", message=_xml_text(a.message, 500))
    elif a.status == LOST:
        counted = "errors"
        el = ET.SubElement(case, "error", message=_xml_text(a.message, 1000), type="lost")
        el.text = _xml_text(f"{a.message}\ntried on: {', '.join(a.tries or [])}")
    elif a.status == FAILED:
        kind = "error" if a.reason == "error" else "failure"
        counted = "errors" if kind == "error" else "failures"
        el = ET.SubElement(case, kind, message=_xml_text(f"{a.reason}: {a.message}", 1000),
                           type=a.reason)
        el.text = _xml_text("\n".join(_failure_details(o, a)))
    if a.preview:
        ET.SubElement(case, "system-out").text = _xml_text(a.preview)
    return counted


def _failure_details(o: Outcome, a: Attempt) -> list[str]:
    """The failure element's text: why, how it ended, where defined, what patterns and output."""
    details = [a.message, f"end: {a.end_reason}, exit code: {a.exit_code}",
               f"defined at: {o.source}"]
    if a.patterns_missing:
        details.append("missing patterns: " + ", ".join(a.patterns_missing))
    if a.forbidden_seen:
        details.append("forbidden seen: " + ", ".join(a.forbidden_seen))
    details += failure_lines(a)
    if a.stdout_path:
        details.append(f"output: {a.stdout_path}, {a.stderr_path}")
    return details
