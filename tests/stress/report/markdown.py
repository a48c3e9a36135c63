"""report.md: the run for people, one function per section, in the order `SECTIONS` gives.

Why one function per section: each section reads its own part of the `RunResult` and is either
there or absent as a whole (no failures, no Failures section), so a section is a function from the
run to its lines, empty when it has nothing to say; `render_markdown` only joins them. The
sections about what the run used (Claude totals, Servers, Resources) are in
`stress.report.markdown_usage`, the comparison with earlier runs in
`stress.report.markdown_history`; how single values are written is `stress.report.text`.

Imports `stress.report.results`, `stress.report.text` and those two section modules; never
`stress.report` (the entry imports this) nor anything that runs tests or opens the history.
"""

from __future__ import annotations

from collections.abc import Callable

from stress.report.assertions import assertions_section
from stress.report.markdown_fleet import workers_section
from stress.report.markdown_history import history_section
from stress.report.markdown_load import banner_lines, load_section
from stress.report.markdown_usage import (
    claude_totals_section,
    resources_section,
    servers_section,
)
from stress.report.results import (
    FAILED,
    LOST,
    PASSED,
    SKIPPED,
    Attempt,
    Outcome,
    RunResult,
)
from stress.report.simulated import cost_text, is_simulated
from stress.report.text import (
    DURATION_BUCKETS,
    SIZE_BUCKETS,
    attempt_tag,
    attempts_that_ran,
    cell,
    clean,
    fence,
    fmt_bytes,
    fmt_seconds,
    histogram,
    limit_used,
    representative_attempt,
    utc,
)

MAX_LISTED = 20
"""Per test, report.md details at most this many attempts in a section (a load run may have
thousands); report.json keeps every one."""

RESULT_MARK = {"passed": "PASS", "failed": "**FAIL**", "skipped": "SKIP", "lost": "**LOST**"}
"""The Tests table's result column per outcome status; failures and losses in bold."""


# ---------------------------------------------------------------------------------------------
# Title, Summary, Environment


def title_section(run: RunResult) -> list[str]:
    """The run id, how the run ended early if it did, and the run-wide error if any."""
    title = f"# Stress run {run.run_id}"
    if run.interrupted:
        title += f" (INTERRUPTED by {run.interrupt_signal or 'a signal'}: partial report)"
    elif any(t.aborted for t in run.thresholds):
        title += " (ABORTED: a threshold was crossed)"
    elif run.halted:
        title += " (HALTED early by --halt)"
    lines = [title, "", *banner_lines(run)]
    if run.error:
        lines += [f"**Run error:** {run.error}", ""]
    return lines


def run_verdict(run: RunResult) -> str:
    """One word for the whole run: an interruption outranks failures, a failure outranks passes."""
    t = run.totals
    if run.interrupted:
        return "INTERRUPTED"
    if run.thresholds_crossed or (run.capacity is not None and run.capacity.crossed):
        return "THRESHOLD CROSSED"
    if t.failed or t.lost or run.error:
        return "FAILED"
    if t.passed:
        return "PASSED"
    return "NOTHING RAN"


def summary_section(run: RunResult) -> list[str]:
    """Counts of tests and attempts, success rate and ratio, graduation, timing and command."""
    t = run.totals
    rate = t.success_rate
    ratio = t.ratio
    grad = ("graduates (at least 10:1 over at least 10 passes)" if ratio.graduates
            else "does not graduate (needs 10:1 over at least 10 passes)")
    return [
        "## Summary", "",
        "| | |", "|---|---|",
        f"| Result | **{run_verdict(run)}** |",
        f"| Tests | {t.tests}: {t.passed} passed, {t.failed} failed, {t.skipped} skipped"
        + (f", {t.lost} lost" if t.lost else "") + " |",
        f"| Runs | {t.attempts}: {t.attempts_passed} passed, {t.attempts_failed} failed, "
        f"{t.attempts_skipped} skipped or not run" + (f", {t.attempts_lost} lost" if t.attempts_lost else "")
        + " |",
        "| Success rate | " + ("-" if rate is None else
                              f"{rate * 100:.1f}% ({t.passed} of {t.passed + t.failed} tests that ran)") + " |",
        f"| Success ratio | **{ratio.text()}** (runs passed : runs failed"
        + (", no failures" if ratio.failures == 0 else "") + f"); {grad} |",
        *([f"| Halted | {cell(run.halted)} |"] if run.halted else []),
        *_stability_summary_row(run),
        f"| Started | {utc(run.started_at)} |",
        f"| Duration | {fmt_seconds(None if run.finished_at is None else run.finished_at - run.started_at)} |",
        f"| Exit code | {run.exit_code if run.exit_code is not None else '-'} |",
        f"| Command | `{' '.join(run.argv)}` |",
        "",
    ]


def _stability_summary_row(run: RunResult) -> list[str]:
    """The Summary's Stability row, only when some test repeats (else every test is one try)."""
    if not any(o.repeat > 1 for o in run.outcomes):
        return []
    c = run.stability_counts()
    return [f"| Stability | {c['stable_pass']} stable passes, {c['stable_fail']} stable failures, "
            f"{c['flaky']} flaky, {c['not_run']} not run |"]


def environment_section(run: RunResult) -> list[str]:
    """Where the run happened: host, load, versions, model mode, the service(s), the suites."""
    env = run.environment
    load_s, load_e = env.get("load_start") or {}, env.get("load_end") or {}
    return [
        "## Environment", "",
        "| | |", "|---|---|",
        f"| Host | {cell(env.get('hostname'))} |",
        f"| Cores | {env.get('cores')} |",
        f"| Load at start | {_load_text(load_s)} |",
        f"| Load at end | {_load_text(load_e)} |",
        f"| Python | {cell(env.get('python'))} |",
        f"| cc_executor | {cell(env.get('cc_executor'))} |",
        f"| claude | {cell(_claude_text(env))} |",
        f"| Model mode | {cell(_model_mode_text(env))} |",
        f"| Service | {_service_cell(run.service)} |",
        "| Suites | " + cell(", ".join(f"{s['name']} ({s['format']}, {s['tests']} tests, {s['path']})"
                                      for s in run.suites)) + " |",
        "",
    ]


def _service_cell(svc: dict) -> str:
    """The one service (kind, URL, pid, how it stopped), or a cluster's scheduler and dashboard."""
    if svc.get("kind") == "cluster":
        return (f"Dask cluster {cell(svc.get('cluster') or svc.get('url') or '')}, scheduler "
                f"{cell(svc.get('scheduler') or '-')}"
                + (f", dashboard {cell(svc['dashboard'])}" if svc.get("dashboard") else "")
                + "; see Workers")
    return (f"{cell(svc.get('kind'))} {cell(svc.get('url', ''))}"
            + (f", pid {svc['pid']}" if svc.get("pid") else "")
            + (f", stopped by {svc['stop']['how']} in {svc['stop']['seconds']} s"
               if svc.get("stop") else ""))


def _load_text(d: dict) -> str:
    """Load averages with the 1-minute one per core (what stretched the limits)."""
    if not d:
        return "-"
    return (f"{d.get('load1', 0):.2f} {d.get('load5', 0):.2f} {d.get('load15', 0):.2f} "
            f"({d.get('load1', 0) / max(d.get('cores', 1), 1):.2f} per core)")


def _claude_text(env: dict) -> str:
    """The Environment row: the version, and where it is when no selected test used it."""
    text = str(env.get("claude"))
    if env.get("claude_used") is False and env.get("claude_path"):
        text += f" at {env['claude_path']} (not used by the selected tests)"
    return text


def _model_mode_text(env: dict) -> str:
    """`local: loopback model server ...`: the description already names the mode when it can."""
    mode, description = str(env.get("model_mode")), str(env.get("model_description"))
    return description if description.startswith(f"{mode}:") else f"{mode}: {description}"


# ---------------------------------------------------------------------------------------------
# Tests: one row per test


def tests_section(run: RunResult) -> list[str]:
    """One row per test: its result, the attempt that stands for it, the limits it ran under."""
    multi = bool(run.servers and run.servers.get("mode") == "cluster")
    srv_head, srv_rule = (" server |", "---|") if multi else ("", "")
    lines = ["## Tests", "",
             "Limits are the configured ones stretched by the host's load when the test started "
             "(`used (configured x factor)`, docs/harness.md \"Timing rules\").", "",
             f"| id | suite | result | reason | duration | timeout used | stall used | exit | output |{srv_head}",
             f"|---|---|---|---|---:|---|---|---:|---:|{srv_rule}"]
    lines += [_test_row(o, multi) for o in run.outcomes]
    lines.append("")
    return lines


def _was_cut(o: Outcome) -> bool:
    """Whether an attempt had started when the run was interrupted or halted."""
    return any(x.interrupted and x.started_at is not None for x in o.attempts)


def _test_row(o: Outcome, multi: bool) -> str:
    """The Tests table row of `o`; dashes for the figures of a test that never started."""
    a = representative_attempt(o)
    cut = _was_cut(o) and o.status == SKIPPED
    res = _result_cell(o, cut)
    srv = f" {cell(_servers_text(o))} |" if multi else ""
    if a is None or a.started_at is None:
        return f"| {cell(o.id)} | {cell(o.suite)} | {res} | {cell(o.message)} | - | - | - | - | - |{srv}"
    out = fmt_bytes(a.stdout_bytes) + (f" + {fmt_bytes(a.stderr_bytes)} err" if a.stderr_bytes else "")
    reason = ("cancelled" if o.reason == "cancelled" else "interrupted") if cut else o.reason
    stall = limit_used(a.stall_timeout, o.stall_timeout, a.factor, "off")
    return (f"| {cell(o.id)} | {cell(o.suite)} | {res} | {cell(reason)} | {_duration_text(o)} | "
            f"{cell(_timeout_text(o, a))} | {cell(stall)} | "
            f"{a.exit_code if a.exit_code is not None else '-'} | "
            f"{out} |{srv}")


def _result_cell(o: Outcome, cut: bool) -> str:
    """PASS / **FAIL** / SKIP / **LOST**, CANCELLED or INTERRUPTED for a skipped test that had
    started, and for a repeated test its passes of runs and how flaky it was."""
    res = RESULT_MARK[o.status]
    if cut:
        res = "CANCELLED" if o.reason == "cancelled" else "INTERRUPTED"
    if o.repeat > 1:
        res += f" {o.passes}/{o.runs} (needed {o.required})"
        if o.stability and o.stability["stability"] == "flaky":
            res += f", flaky {o.stability['pass_rate'] * 100:.0f}%"
    return res


def _servers_text(o: Outcome) -> str:
    """The servers the test's attempts ran on; `a -> b` for an attempt retried elsewhere."""
    return ", ".join(dict.fromkeys(
        " -> ".join(x.tries) if x.tries and len(x.tries) > 1 else x.server
        for x in o.attempts if x.server)) or "-"


def _duration_text(o: Outcome) -> str:
    """The time its attempts ran, and apart from it the time they waited in the service's queue."""
    dur = fmt_seconds(o.duration)
    waited = sum(x.queue_wait or 0.0 for x in o.attempts)
    if waited:
        dur += f" (+{fmt_seconds(waited)} queued)"
    return dur


def _timeout_text(o: Outcome, a: Attempt) -> str:
    """The total limit used, and how a learned timeout (from the history) arrived at it."""
    used = limit_used(a.timeout, o.timeout, a.factor, "-")
    if o.learned_timeout:
        lt = o.learned_timeout
        used += (f", learned: {lt['percent']:g}% of median {fmt_seconds(lt['median'])}"
                 f"{' (capped at the configured limit)' if lt['capped'] else ''}, "
                 f"configured {lt['configured']:g} s")
    return used


# ---------------------------------------------------------------------------------------------
# Stability and Instances: tests that ran more than once


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


STABILITY_GROUPS = (("Flaky", "flaky"), ("Stable failures", "stable_fail"),
                    ("Stable passes", "stable_pass"), ("Not run", "not_run"))
"""The Stability section's groups, in the order shown: the flaky ones need attention first."""


def stability_section(run: RunResult) -> list[str]:
    """Repeated tests in three groups; the pass rate says how flaky a flaky one is."""
    repeated = [o for o in run.outcomes if o.repeat > 1 and o.stability]
    if not repeated:
        return []
    lines = ["## Stability", "",
             "Each repeated test by the spread of its attempts (attempts that did not run are not "
             "counted); the verdict is still the test's pass threshold.", ""]
    for title, key in STABILITY_GROUPS:
        group = [o for o in repeated if o.stability["stability"] == key]
        if not group:
            continue
        lines += [f"### {title} ({len(group)})", "",
                  "| id | suite | pass rate | passed / ran | needed | verdict | attempts |",
                  "|---|---|---:|---:|---:|---|---|"]
        for o in group:
            st = o.stability
            marks = " ".join({"passed": "P", "failed": "F", "lost": "L"}.get(a.status, "-")
                             for a in o.attempts[:3 * MAX_LISTED])
            if len(o.attempts) > 3 * MAX_LISTED:
                marks += f" ... ({len(o.attempts) - 3 * MAX_LISTED} more)"
            lines.append(f"| {cell(o.id)} | {cell(o.suite)} | {_pct(st['pass_rate'])} | "
                         f"{st['passes']}/{st['runs']} | {st['required']} | "
                         f"{'PASS' if o.status == PASSED else o.status.upper()} | `{marks}` |")
        lines.append("")
    return lines


def instances_section(run: RunResult) -> list[str]:
    """Every instance of every attempt that had instances: what each did, which won and why."""
    rows = [(o, a) for o in run.outcomes for a in [x for x in o.attempts if x.instances][:MAX_LISTED]]
    if not rows:
        return []
    lines = ["## Instances", ""]
    cut = sum(max(0, sum(1 for a in o.attempts if a.instances) - MAX_LISTED) for o in run.outcomes)
    if cut:
        lines += [f"The first {MAX_LISTED} attempts of each test; {cut} more are in report.json.", ""]
    for o, a in rows:
        sel = a.instance_selection or {}
        lines += [f"### {cell(o.id)}{attempt_tag(o, a, ' attempt {}')}: {len(a.instances)} instances, "
                  f"criterion {sel.get('criterion', '-')}", "",
                  f"**Winner:** {('#' + str(sel['winner'])) if sel.get('winner') else 'none'}: "
                  f"{cell(sel.get('why', '-'))}", "",
                  "| # | label | result | exit | ended | time | size | cost | patterns | eligible | chosen |",
                  "|---:|---|---|---:|---|---:|---:|---:|---:|---|---|"]
        sim = is_simulated(run.environment)
        lines += [_instance_row(i, sim) for i in a.instances]
        lines.append("")
    return lines


def _instance_row(i: dict, simulated: bool = False) -> str:
    """One instance of an instances test: its result, figures, and why it could (not) win."""
    cost = cost_text(i.get("cost_usd"), simulated)
    pats = f"{i.get('patterns_found', 0)}/{i.get('patterns_total', 0)}"
    elig = "yes" if i.get("eligible") else f"no: {i.get('why_not') or '-'}"
    return (f"| {i['instance']} | {cell(i.get('label') or '-')} | {i['status']} ({i['reason']}) | "
            f"{i.get('exit_code') if i.get('exit_code') is not None else '-'} | "
            f"{i.get('end_reason') or '-'} | {fmt_seconds(i['duration'])} | "
            f"{fmt_bytes(i['stdout_bytes'])} | {cost} | {pats} | {cell(elig)} | "
            f"{'**yes**' if i['chosen'] else ''} |")


# ---------------------------------------------------------------------------------------------
# Failures, Lost, Skipped, Output previews


def failures_section(run: RunResult) -> list[str]:
    """Each failed test: why, where it is defined, how it was run, and each failed attempt."""
    failed = [o for o in run.outcomes if o.status == FAILED]
    if not failed:
        return []
    lines = ["## Failures", ""]
    for o in failed:
        lines += [f"### {o.id}: {o.reason}", "", f"- **Why:** {o.message}",
                  f"- **Defined at:** `{o.source}`",
                  f"- **Runs:** `{o.invocation}`"]
        bad = [a for a in o.attempts if a.status == FAILED]
        for a in bad[:MAX_LISTED]:
            lines += _failed_attempt_lines(o, a)
        if len(bad) > MAX_LISTED:
            lines.append(f"- ... and {len(bad) - MAX_LISTED} more failed attempts (report.json)")
        lines.append("")
    return lines


def _failed_attempt_lines(o: Outcome, a: Attempt) -> list[str]:
    """What one failed attempt missed or saw, where its output is, and a preview of it."""
    tag = attempt_tag(o, a, "attempt {}: ")
    lines = []
    if a.patterns_missing:
        lines.append(f"- {tag}**Missing patterns:** "
                     + ", ".join(f"`{p}`" for p in a.patterns_missing))
    if a.forbidden_seen:
        lines.append(f"- {tag}**Forbidden seen:** " + ", ".join(f"`{p}`" for p in a.forbidden_seen))
    if a.cli_failure:
        lines.append(f"- {tag}**Claude CLI:** {a.cli_failure['kind']}: {a.cli_failure['message']}")
    if a.stdout_path:
        lines.append(f"- {tag}**Output:** [stdout]({a.stdout_path}) ({fmt_bytes(a.stdout_bytes)}), "
                     f"[stderr]({a.stderr_path}) ({fmt_bytes(a.stderr_bytes)}); "
                     f"exit {a.exit_code}, ended {a.end_reason}, {fmt_seconds(a.duration)}")
    if a.preview:
        text = evidence_preview(a.preview)
        f = fence(text)
        lines += ["", f"<details><summary>{tag}output preview</summary>", "", f,
                  text, f, "", "</details>", ""]
    return lines


FAILURE_PREVIEW_LINES = 25
"""A failure's preview in report.md keeps at most this many lines (whole output in outputs/)."""


def evidence_preview(preview: str, max_lines: int = FAILURE_PREVIEW_LINES) -> str:
    """The failure's preview, its lines capped, with a note of how many were left out."""
    lines = preview.splitlines()
    if len(lines) <= max_lines:
        return preview
    return "\n".join(lines[:max_lines] + [f"... ({len(lines) - max_lines} more lines in outputs/)"])


def lost_section(run: RunResult) -> list[str]:
    """Attempts lost with their server: neither a pass nor a failure, so listed apart."""
    lost = [o for o in run.outcomes if o.status == LOST or any(a.status == LOST for a in o.attempts)]
    if not lost:
        return []
    lines = ["## Lost", "", "Attempts whose server was lost and that no other server could "
             "finish (not counted as passes or failures):", ""]
    for o in lost:
        for a in o.attempts:
            if a.status == LOST:
                tried = f" (tried on {', '.join(a.tries)})" if a.tries else ""
                lines.append(f"- **{cell(o.id)}**{attempt_tag(o, a, ' attempt {}')}: "
                             f"{cell(a.message)}{tried}")
    lines.append("")
    return lines


def skipped_section(run: RunResult) -> list[str]:
    """Why each skipped test did not run, with the partial output of an attempt cut short."""
    skipped = [o for o in run.outcomes if o.status == SKIPPED]
    if not skipped:
        return []
    lines = ["## Skipped", ""]
    for o in skipped:
        line = f"- **{o.id}**: {o.message}"
        for a in o.attempts:
            if a.interrupted and a.started_at is not None and a.stdout_path:
                line += (f"; partial output of attempt {a.attempt}: [stdout]({a.stdout_path}) "
                         f"({fmt_bytes(a.stdout_bytes)}), [stderr]({a.stderr_path})")
        lines.append(line)
    lines.append("")
    return lines


def previews_section(run: RunResult) -> list[str]:
    """Where passed tests' output is: folded previews in report.html, everything in outputs/.
    report.md no longer carries them (a Claude run's previews are raw stream-json lines that
    buried the summary); failures keep theirs, as evidence, under Failures."""
    passed = sum(1 for o in run.outcomes for a in o.attempts if a.status == PASSED and a.preview)
    if not passed:
        return []
    return ["## Passed tests' output", "",
            f"Previews of passed runs (the first few of each test; {passed} in all) are folded in "
            "[report.html](report.html); "
            "every run's full stdout and stderr is in [outputs/](outputs/) (linked per test in "
            "report.json).", ""]


# ---------------------------------------------------------------------------------------------
# Distributions and the footer


def distributions_section(run: RunResult) -> list[str]:
    """Histograms of the durations and output sizes of the attempts that ran."""
    ran = attempts_that_ran(run.outcomes)
    if not ran:
        return []
    ds = sorted(a.duration for a in ran)
    return ["## Distributions", "", f"Durations of {len(ran)} runs:", "", "```",
            histogram([a.duration for a in ran], DURATION_BUCKETS), "```", "",
            f"Output sizes (stdout + stderr) of {len(ran)} runs:", "", "```",
            histogram([a.stdout_bytes + a.stderr_bytes for a in ran], SIZE_BUCKETS), "```", "",
            f"Duration min {fmt_seconds(ds[0])}, median {fmt_seconds(ds[len(ds) // 2])}, "
            f"max {fmt_seconds(ds[-1])}.", ""]


def footer_section(run: RunResult) -> list[str]:
    """Links to the machine-readable files written next to report.md."""
    return ["---", "", "Charts and previews: [report.html](report.html). "
            "Machine-readable: [report.json](report.json) (schema_version "
            f"{run.to_json()['schema_version']}), [junit.xml](junit.xml); full outputs in "
            "[outputs/](outputs/).", ""]


SECTIONS: tuple[Callable[[RunResult], list[str]], ...] = (
    title_section, summary_section, load_section, environment_section, tests_section,
    stability_section,
    instances_section, failures_section, assertions_section, lost_section, skipped_section,
    previews_section, claude_totals_section, servers_section, workers_section,
    history_section, resources_section,
    distributions_section, footer_section)
"""report.md from top to bottom; a section with nothing to say returns no lines."""


def render_markdown(run: RunResult) -> str:
    """The whole report.md (control characters shown as U+FFFD, so it stays valid text)."""
    lines: list[str] = []
    for section in SECTIONS:
        lines += section(run)
    return clean("\n".join(lines))
