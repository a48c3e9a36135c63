"""Write a run's report.md (for people), report.json (for tools) and junit.xml (for CI).

Why three files from one `RunResult`: each audience reads a different format, and deriving all
three from the same value keeps them from disagreeing. report.json follows
tests/stress/report.schema.json; junit.xml follows the common JUnit XML shape (testsuites >
testsuite > testcase with failure/error/skipped and system-out) that CI systems read.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .results import FAILED, LOST, PASSED, SKIPPED, Attempt, RunResult, TestOutcome

_XML_BAD = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
JUNIT_OUT_CHARS = 4000

DURATION_BUCKETS = ((1, "< 1 s"), (5, "1-5 s"), (30, "5-30 s"), (120, "30 s-2 min"),
                    (300, "2-5 min"), (math.inf, ">= 5 min"))
SIZE_BUCKETS = ((1024, "< 1 KiB"), (64 * 1024, "1-64 KiB"), (1024**2, "64 KiB-1 MiB"),
                (10 * 1024**2, "1-10 MiB"), (math.inf, ">= 10 MiB"))
TIMELINE_MIN_SECONDS = 60.0
"""report.md draws a job's resource timeline for runs at least this long (the long-form tests)."""
TIMELINE_ROWS = 20


# ---------------------------------------------------------------------------------------------
# Small formatting helpers


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    for unit, size in (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3)):
        if n < size * 1024 or unit == "GiB":
            return f"{n / size:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.2f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


_MD_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean(text: Any) -> str:
    """Text for report.md: control characters (not newline, tab, CR) shown as U+FFFD."""
    return _MD_CONTROL.sub("\ufffd", str(text))


def cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(clean(text).split()).replace("|", "\\|") or " "


def fence(text: str) -> str:
    """A code fence longer than any backtick run inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def limit_used(used: float | None, configured: float | None, factor: float, none: str) -> str:
    """A limit the service enforced, with how it came about: `19.7 s (10 s x 1.97)`."""
    if used is None:
        return none
    if configured is None:
        return f"{used:.3g} s"
    return f"{used:.3g} s ({configured:g} s x {factor:.2f})"


def _claude_text(env: dict) -> str:
    """The Environment row: the version, and where it is when no selected test used it."""
    text = str(env.get("claude"))
    if env.get("claude_used") is False and env.get("claude_path"):
        text += f" at {env['claude_path']} (not used by the selected tests)"
    return text


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def histogram(values: Sequence[float], buckets: Sequence[tuple[float, str]], width: int = 30) -> str:
    """A text bar chart: one line per bucket, count and bar."""
    counts = [0] * len(buckets)
    for v in values:
        for i, (upper, _) in enumerate(buckets):
            if v < upper:
                counts[i] += 1
                break
    top = max(counts) if counts else 0
    label_w = max(len(label) for _, label in buckets)
    lines = []
    for (_, label), n in zip(buckets, counts):
        bar = "#" * (round(n / top * width) if top else 0)
        if n and not bar:
            bar = "#"
        lines.append(f"{label.rjust(label_w)} | {str(n).rjust(4)} {bar}")
    return "\n".join(lines)


def _ran(outcomes: Sequence[TestOutcome]) -> list[Attempt]:
    return [a for o in outcomes for a in o.attempts if a.status in (PASSED, FAILED)]


def _representative(o: TestOutcome) -> Attempt | None:
    """The attempt a one-row summary shows: the first failure, else the last that ran."""
    ran = [a for a in o.attempts if a.status in (PASSED, FAILED)]
    bad = [a for a in ran if a.status == FAILED]
    if bad:
        return bad[0]
    if ran:
        return ran[-1]
    started = [a for a in o.attempts if a.started_at is not None]
    return started[0] if started else (o.attempts[0] if o.attempts else None)


# ---------------------------------------------------------------------------------------------
# report.md


def render_markdown(run: RunResult) -> str:
    t = run.totals
    env = run.environment
    lines: list[str] = []
    title = f"# Stress run {run.run_id}"
    if run.interrupted:
        title += f" (INTERRUPTED by {run.interrupt_signal or 'a signal'}: partial report)"
    elif run.halted:
        title += " (HALTED early by --halt)"
    lines += [title, ""]
    if run.error:
        lines += [f"**Run error:** {run.error}", ""]

    # Summary
    if run.interrupted:
        verdict = "INTERRUPTED"
    elif t.failed or t.lost or run.error:
        verdict = "FAILED"
    elif t.passed:
        verdict = "PASSED"
    else:
        verdict = "NOTHING RAN"
    rate = t.success_rate
    ratio = t.ratio
    grad = ("graduates (at least 10:1 over at least 10 passes)" if ratio.graduates
            else "does not graduate (needs 10:1 over at least 10 passes)")
    lines += [
        "## Summary", "",
        "| | |", "|---|---|",
        f"| Result | **{verdict}** |",
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
        *_stability_summary(run),
        f"| Started | {_utc(run.started_at)} |",
        f"| Duration | {fmt_seconds(None if run.finished_at is None else run.finished_at - run.started_at)} |",
        f"| Exit code | {run.exit_code if run.exit_code is not None else '-'} |",
        f"| Command | `{' '.join(run.argv)}` |",
        "",
    ]

    # Environment
    load_s, load_e = env.get("load_start") or {}, env.get("load_end") or {}
    svc = run.service
    if svc.get("servers"):
        service_cell = (f"{len(svc['servers'])} {cell(svc.get('kind'))} services: "
                        + cell(", ".join(f"{x['name']} (weight {x['weight']:g}, concurrency "
                                         f"{x['concurrency']}{', left out: ' + x['error'] if x.get('error') else ''})"
                                         for x in svc["servers"])) + "; see Servers")
    else:
        service_cell = (f"{cell(svc.get('kind'))} {cell(svc.get('url', ''))}"
                        + (f", pid {svc['pid']}" if svc.get("pid") else "")
                        + (f", stopped by {svc['stop']['how']} in {svc['stop']['seconds']} s"
                           if svc.get("stop") else ""))
    lines += [
        "## Environment", "",
        "| | |", "|---|---|",
        f"| Host | {cell(env.get('hostname'))} |",
        f"| Cores | {env.get('cores')} |",
        f"| Load at start | {_load(load_s)} |",
        f"| Load at end | {_load(load_e)} |",
        f"| Python | {cell(env.get('python'))} |",
        f"| cc_executor | {cell(env.get('cc_executor'))} |",
        f"| claude | {cell(_claude_text(env))} |",
        f"| Model mode | {cell(_model_mode_text(env))} |",
        f"| Service | {service_cell} |",
        "| Suites | " + cell(", ".join(f"{s['name']} ({s['format']}, {s['tests']} tests, {s['path']})"
                                      for s in run.suites)) + " |",
        "",
    ]

    # Per test
    multi = bool(run.servers and run.servers.get("mode") == "dispatch")
    srv_head, srv_rule = (" server |", "---|") if multi else ("", "")
    lines += ["## Tests", "",
              "Limits are the configured ones stretched by the host's load when the test started "
              "(`used (configured x factor)`, docs/harness.md \"Timing rules\").", "",
              f"| id | suite | result | reason | duration | timeout used | stall used | exit | output |{srv_head}",
              f"|---|---|---|---|---:|---|---|---:|---:|{srv_rule}"]
    for o in run.outcomes:
        a = _representative(o)
        res = {"passed": "PASS", "failed": "**FAIL**", "skipped": "SKIP", "lost": "**LOST**"}[o.status]
        cut = any(x.interrupted and x.started_at is not None for x in o.attempts)
        if cut and o.status == SKIPPED:
            res = "CANCELLED" if o.reason == "cancelled" else "INTERRUPTED"
        if o.repeat > 1:
            res += f" {o.passes}/{o.runs} (needed {o.required})"
            if o.stability and o.stability["stability"] == "flaky":
                res += f", flaky {o.stability['pass_rate'] * 100:.0f}%"
        servers = ", ".join(dict.fromkeys(
            " -> ".join(x.tries) if x.tries and len(x.tries) > 1 else x.server
            for x in o.attempts if x.server)) or "-"
        srv = f" {cell(servers)} |" if multi else ""
        if a is None or a.started_at is None:
            lines.append(f"| {cell(o.id)} | {cell(o.suite)} | {res} | {cell(o.message)} | - | - | - | - | - |{srv}")
            continue
        out = fmt_bytes(a.stdout_bytes) + (f" + {fmt_bytes(a.stderr_bytes)} err" if a.stderr_bytes else "")
        reason = ("cancelled" if o.reason == "cancelled" else "interrupted") if cut and o.status == SKIPPED \
            else o.reason
        dur = fmt_seconds(o.duration)
        waited = sum(x.queue_wait or 0.0 for x in o.attempts)
        if waited:
            dur += f" (+{fmt_seconds(waited)} queued)"
        used = limit_used(a.timeout, o.timeout, a.factor, "-")
        if o.learned_timeout:
            lt = o.learned_timeout
            used += (f", learned: {lt['percent']:g}% of median {fmt_seconds(lt['median'])}"
                     f"{' (capped at the configured limit)' if lt['capped'] else ''}, "
                     f"configured {lt['configured']:g} s")
        lines.append(
            f"| {cell(o.id)} | {cell(o.suite)} | {res} | {cell(reason)} | {dur} | "
            f"{cell(used)} | {cell(limit_used(a.stall_timeout, o.stall_timeout, a.factor, 'off'))} | "
            f"{a.exit_code if a.exit_code is not None else '-'} | "
            f"{out} |{srv}")
    lines.append("")

    lines += _stability_md(run)
    lines += _instances_md(run)

    failed = [o for o in run.outcomes if o.status == FAILED]
    if failed:
        lines += ["## Failures", ""]
        for o in failed:
            lines += [f"### {o.id}: {o.reason}", "", f"- **Why:** {o.message}",
                      f"- **Defined at:** `{o.source}`",
                      f"- **Runs:** `{o.invocation}`"]
            for a in o.attempts:
                if a.status != FAILED:
                    continue
                tag = f"attempt {a.attempt}: " if o.repeat > 1 else ""
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
                    f = fence(a.preview)
                    lines += ["", f"<details><summary>{tag}output preview</summary>", "", f,
                              a.preview, f, "", "</details>", ""]
            lines.append("")

    lost = [o for o in run.outcomes if o.status == LOST or any(a.status == LOST for a in o.attempts)]
    if lost:
        lines += ["## Lost", "", "Attempts whose server was lost and that no other server could "
                  "finish (not counted as passes or failures):", ""]
        for o in lost:
            for a in o.attempts:
                if a.status == LOST:
                    tag = f" attempt {a.attempt}" if o.repeat > 1 else ""
                    tried = f" (tried on {', '.join(a.tries)})" if a.tries else ""
                    lines.append(f"- **{cell(o.id)}**{tag}: {cell(a.message)}{tried}")
        lines.append("")

    skipped = [o for o in run.outcomes if o.status == SKIPPED]
    if skipped:
        lines += ["## Skipped", ""]
        for o in skipped:
            line = f"- **{o.id}**: {o.message}"
            for a in o.attempts:
                if a.interrupted and a.started_at is not None and a.stdout_path:
                    line += (f"; partial output of attempt {a.attempt}: [stdout]({a.stdout_path}) "
                             f"({fmt_bytes(a.stdout_bytes)}), [stderr]({a.stderr_path})")
            lines.append(line)
        lines.append("")

    previews = [(o, a) for o in run.outcomes if o.status == PASSED for a in o.attempts
                if a.status == PASSED and a.preview]
    if previews:
        lines += ["## Output previews (passed tests)", ""]
        for o, a in previews:
            tag = f" attempt {a.attempt}" if o.repeat > 1 else ""
            f = fence(a.preview)
            lines += [f"<details><summary>{o.id}{tag}: {fmt_bytes(a.stdout_bytes)}, "
                      f"<a href=\"{a.stdout_path}\">stdout</a></summary>", "", f, a.preview, f, "",
                      "</details>", ""]

    if run.claude_totals and run.claude_totals.get("runs"):
        c = run.claude_totals
        u = c["usage"]
        lines += ["## Claude totals", "",
                  "| runs | cost (USD) | input tokens | output tokens | cache creation | cache read | turns | API time |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {c['runs']} | {c['total_cost_usd']:.4f} | {u.get('input_tokens', 0):,} | "
                  f"{u.get('output_tokens', 0):,} | {u.get('cache_creation_input_tokens', 0):,} | "
                  f"{u.get('cache_read_input_tokens', 0):,} | {c['num_turns']} | "
                  f"{fmt_seconds(c['duration_api_ms'] / 1000)} |", ""]
        if run.environment.get("model_mode") == "local":
            lines += ["Cost is the CLI's own estimate from token counts; with the loopback model "
                      "nothing is billed.", ""]

    if run.servers is not None:
        lines += _servers_md(run)

    if run.history is not None:
        lines += _history_md(run)

    if run.resources is not None:
        lines += _resources_md(run)
    elif run.outcomes:
        lines += ["## Resources", "",
                  f"Not measured by {run.tool}: CPU, memory, threads and process counts of the "
                  "service and of each job tree (peaks and timelines) are sampled by `python -m "
                  "stress.complex`. Output sizes are in the Tests table and under Distributions; "
                  "stdout/stderr batch counts are in report.json.", ""]

    ran = _ran(run.outcomes)
    if ran:
        lines += ["## Distributions", "", f"Durations of {len(ran)} runs:", "", "```",
                  histogram([a.duration for a in ran], DURATION_BUCKETS), "```", "",
                  f"Output sizes (stdout + stderr) of {len(ran)} runs:", "", "```",
                  histogram([a.stdout_bytes + a.stderr_bytes for a in ran], SIZE_BUCKETS), "```", ""]
        ds = sorted(a.duration for a in ran)
        lines += [f"Duration min {fmt_seconds(ds[0])}, median {fmt_seconds(ds[len(ds) // 2])}, "
                  f"max {fmt_seconds(ds[-1])}.", ""]

    lines += ["---", "", "Machine-readable: [report.json](report.json) (schema_version "
              f"{run.to_json()['schema_version']}), [junit.xml](junit.xml); full outputs in "
              "[outputs/](outputs/).", ""]
    return clean("\n".join(lines))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def _stability_summary(run: RunResult) -> list[str]:
    if not any(o.repeat > 1 for o in run.outcomes):
        return []
    c = run.stability_counts()
    return [f"| Stability | {c['stable_pass']} stable passes, {c['stable_fail']} stable failures, "
            f"{c['flaky']} flaky, {c['not_run']} not run |"]


def _stability_md(run: RunResult) -> list[str]:
    """Repeated tests in three groups; the pass rate says how flaky a flaky one is."""
    repeated = [o for o in run.outcomes if o.repeat > 1 and o.stability]
    if not repeated:
        return []
    lines = ["## Stability", "",
             "Each repeated test by the spread of its attempts (attempts that did not run are not "
             "counted); the verdict is still the test's pass threshold.", ""]
    for title, key in (("Flaky", "flaky"), ("Stable failures", "stable_fail"),
                       ("Stable passes", "stable_pass"), ("Not run", "not_run")):
        group = [o for o in repeated if o.stability["stability"] == key]
        if not group:
            continue
        lines += [f"### {title} ({len(group)})", "",
                  "| id | suite | pass rate | passed / ran | needed | verdict | attempts |",
                  "|---|---|---:|---:|---:|---|---|"]
        for o in group:
            st = o.stability
            marks = " ".join({"passed": "P", "failed": "F", "lost": "L"}.get(a.status, "-")
                             for a in o.attempts)
            lines.append(f"| {cell(o.id)} | {cell(o.suite)} | {_pct(st['pass_rate'])} | "
                         f"{st['passes']}/{st['runs']} | {st['required']} | "
                         f"{'PASS' if o.status == PASSED else o.status.upper()} | `{marks}` |")
        lines.append("")
    return lines


def _instances_md(run: RunResult) -> list[str]:
    """Every instance of every attempt that had instances: what each did, which won and why."""
    rows = [(o, a) for o in run.outcomes for a in o.attempts if a.instances]
    if not rows:
        return []
    lines = ["## Instances", ""]
    for o, a in rows:
        sel = a.instance_selection or {}
        tag = f" attempt {a.attempt}" if o.repeat > 1 else ""
        lines += [f"### {cell(o.id)}{tag}: {len(a.instances)} instances, criterion "
                  f"{sel.get('criterion', '-')}", "",
                  f"**Winner:** {('#' + str(sel['winner'])) if sel.get('winner') else 'none'}: "
                  f"{cell(sel.get('why', '-'))}", "",
                  "| # | label | result | exit | ended | time | size | cost | patterns | eligible | chosen |",
                  "|---:|---|---|---:|---|---:|---:|---:|---:|---|---|"]
        for i in a.instances:
            cost = "-" if i.get("cost_usd") is None else f"${i['cost_usd']:.4f}"
            pats = f"{i.get('patterns_found', 0)}/{i.get('patterns_total', 0)}"
            elig = "yes" if i.get("eligible") else f"no: {i.get('why_not') or '-'}"
            lines.append(
                f"| {i['instance']} | {cell(i.get('label') or '-')} | {i['status']} ({i['reason']}) | "
                f"{i.get('exit_code') if i.get('exit_code') is not None else '-'} | "
                f"{i.get('end_reason') or '-'} | {fmt_seconds(i['duration'])} | "
                f"{fmt_bytes(i['stdout_bytes'])} | {cost} | {pats} | {cell(elig)} | "
                f"{'**yes**' if i['chosen'] else ''} |")
        lines.append("")
    return lines


def _servers_md(run: RunResult) -> list[str]:
    sv = run.servers or {}
    servers = sv.get("servers") or []
    lines = ["## Servers", ""]
    if sv.get("mode") == "dispatch":
        lines += ["Tests were dealt longest expected first (history median, else the timeout) by "
                  "weight; an idle server steals half of the most loaded queue; a lost server's "
                  "tests are retried elsewhere.", ""]
    fair = sv.get("fairness_cv")
    budget = (run.options or {}).get("retry_budget") if sv.get("mode") == "dispatch" else None
    lines += [f"Makespan {fmt_seconds(sv.get('makespan'))}; fairness (coefficient of variation of "
              f"the servers' completion times, 0 = all finished together): "
              f"{'-' if fair is None else f'{fair:.3f}'}; retries used: {sv.get('retries_used', 0)}"
              + ("" if budget is None else f" (run-wide budget {budget})") + ".", "",
              "| server | weight | concurrency | dealt | tests run | busy | idle | steals in/out | "
              "retries | lost items | state |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for x in servers:
        state = "alive" if x.get("alive") else f"LOST at {fmt_seconds(x.get('lost_at'))}: {x.get('lost_reason')}"
        if x.get("rejoins"):
            state += f" (rejoined {x['rejoins']}x)"
        name = x["name"] if x["name"] == x.get("url") else f"{x['name']} ({x.get('url')})"
        lines.append(
            f"| {cell(name)} | {x['weight']:g} | {x['concurrency']} | {x['dealt']} | "
            f"**{x['tests_run']}** | {fmt_seconds(x['busy'])} | {fmt_seconds(x['idle'])} | "
            f"{x['steals_in']}/{x['steals_out']} | {x['retries']} | {x['lost_items']} | {cell(state)} |")
    lines.append("")
    return lines


def _history_md(run: RunResult) -> list[str]:
    h = run.history or {}
    lines = ["## History", "", f"Recorded in `{h.get('path')}`"
             + ("." if h.get("recorded") else f": **not recorded** ({cell(h.get('error'))}).")
             + (" Interrupted runs are stored without an end, so they are never a baseline."
                if run.interrupted else ""), ""]
    comps = h.get("comparisons") or []
    if not comps and h.get("recorded"):
        lines += ["No earlier finished run of these suites to compare with.", ""]
    thr = h.get("duration_threshold")
    for c in comps:
        lines += [f"### Against the {c['against']} run {c['baseline_id']} ({_utc(c.get('started'))})", ""]
        # The order of `Comparison.lines()`: regressions first (lost tests are one: the run no
        # longer vouches for them), flaky passes apart from the failures.
        rows = [("New failures", c["new_failures"]), ("Lost or not run", c.get("lost") or []),
                ("Fixed", c["fixed"]), ("Still failing", c["still_failing"]),
                ("Flaky, passed their threshold", c.get("flaky") or []), ("Added", c["added"]),
                ("Removed", c["removed"])]
        notes = _comparison_notes(c)
        for title, keys in rows:
            if keys:
                lines.append(f"- **{title} ({len(keys)}):** "
                             + ", ".join(f"`{k}`" + notes.get((title, k), "") for k in keys))
        for title, changes in (("Slower", c["slower"]), ("Faster", c["faster"])):
            for ch in changes:
                rel = "-" if ch["relative"] is None else f"{ch['relative'] * 100:+.0f}%"
                lines.append(f"- **{title}:** `{ch['suite']}/{ch['test_id']}` "
                             f"{ch['before']:.3g} s -> {ch['after']:.3g} s ({ch['delta']:+.3g} s, {rel})")
        if not any(keys for _, keys in rows) and not c["slower"] and not c["faster"]:
            lines.append("- no changes in outcomes or durations")
        if thr is not None:
            lines.append(f"- durations compared: median of passed attempts, reported at "
                         f"{thr * 100:g}% and {h.get('duration_min', 0):g} s or more")
        lines.append("")
    ratios = h.get("suite_ratios") or []
    if ratios:
        lines += ["### Cumulative success ratio", "",
                  "Every recorded attempt of the suite (passes : failures); a suite graduates at "
                  "10:1 with at least 10 passes.", "",
                  "| suite | passes | failures | ratio | graduated |", "|---|---:|---:|---:|---|"]
        for r in ratios:
            lines.append(f"| {cell(r['suite'] or 'all suites')} | {r['passes']} | {r['failures']} | "
                         f"{r['text']} | {'yes' if r['graduated'] else 'no'} |")
        lines.append("")
    lt = h.get("learned_timeouts")
    if lt:
        lines += [f"Learned timeouts: {lt['percent']:g}% of each test's history median, at least "
                  f"{lt['floor']:g} s, never above the configured timeout; applied to {lt['tests']} "
                  "test(s) (see the Tests table).", ""]
    return lines


def _comparison_notes(c: dict) -> dict[tuple[str, str], str]:
    """` (lost; passed before)` for a lost test, ` (2/3 passed, needed 2)` for a flaky pass."""
    notes = {}
    for d in c.get("lost_detail") or []:
        notes[("Lost or not run", d["test"])] = (
            f" ({cell(d.get('now') or 'not run')}; {'passed' if d.get('passed_before') else 'failed'} before)")
    for d in c.get("flaky_detail") or []:
        if d.get("runs"):
            notes[("Flaky, passed their threshold", d["test"])] = (
                f" ({d['passes']}/{d['runs']} passed, needed {d['required']})")
    return notes


def _load(d: dict) -> str:
    if not d:
        return "-"
    return (f"{d.get('load1', 0):.2f} {d.get('load5', 0):.2f} {d.get('load15', 0):.2f} "
            f"({d.get('load1', 0) / max(d.get('cores', 1), 1):.2f} per core)")


def _resources_md(run: RunResult) -> list[str]:
    r = run.resources or {}
    peak = r.get("peak") or {}
    lines = ["## Resources", "",
             f"Sampled every {r.get('interval', 0):g} s in a background thread "
             f"({r.get('samples', 0)} samples, {r.get('errors', 0)} errors). "
             "CPU % is per process (100 = one core), summed over the job tree.", ""]
    if r.get("service_pid"):
        lines += [f"Service process {r['service_pid']}: peak CPU {peak.get('cpu_percent', 0):.1f}%, "
                  f"peak RSS {fmt_bytes(peak.get('rss_bytes'))}, peak threads {peak.get('threads', 0)}, "
                  f"peak processes (service + jobs) {peak.get('processes', 0)}.", ""]
    else:
        lines += ["The service process was not visible to the harness; job trees only.", ""]
    lines += ["| id | samples | service CPU peak | service RSS peak | job CPU peak | job RSS peak | "
              "job threads peak | job processes peak | batches out/err | output |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for o in run.outcomes:
        for a in o.attempts:
            res = a.resources
            if not res:
                continue
            s, j = res.get("service") or {}, res.get("job") or {}
            name = o.id + (f" #{a.attempt}" if o.repeat > 1 else "")
            lines.append(
                f"| {cell(name)} | {res.get('samples', 0)} | {s.get('cpu_percent', 0):.1f}% | "
                f"{fmt_bytes(s.get('rss_bytes'))} | {j.get('cpu_percent', 0):.1f}% | "
                f"{fmt_bytes(j.get('rss_bytes'))} | {j.get('threads', 0)} | {j.get('processes', 0)} | "
                f"{a.stdout_batches}/{a.stderr_batches} | {fmt_bytes(a.stdout_bytes + a.stderr_bytes)} |")
    lines.append("")
    tl = r.get("timeline") or []
    if tl:
        lines += ["Service timeline (every few samples):", "", "```",
                  f"{'t (s)':>8} {'CPU %':>7} {'RSS':>10} {'threads':>7} {'procs':>5}"]
        for t_, cpu, rss, thr, procs in _every_few(tl):
            lines.append(f"{t_:>8.1f} {cpu:>7.1f} {fmt_bytes(rss):>10} {thr:>7} {procs:>5}")
        lines += ["```", ""]
    for o in run.outcomes:
        for a in o.attempts:
            jtl = (a.resources or {}).get("timeline") or []
            if a.duration < TIMELINE_MIN_SECONDS or len(jtl) < 2:
                continue
            name = o.id + (f" #{a.attempt}" if o.repeat > 1 else "")
            lines += [f"Job timeline of {cell(name)} ({fmt_seconds(a.duration)}; every few samples; "
                      "CPU summed over the job tree):", "", "```",
                      f"{'t (s)':>8} {'job CPU %':>9} {'job RSS':>10} {'procs':>5} "
                      f"{'svc CPU %':>9} {'svc RSS':>10}"]
            for t_, s_cpu, s_rss, j_cpu, j_rss, j_procs in _every_few(jtl):
                lines.append(f"{t_:>8.1f} {j_cpu:>9.1f} {fmt_bytes(int(j_rss)):>10} {int(j_procs):>5} "
                             f"{s_cpu:>9.1f} {fmt_bytes(int(s_rss)):>10}")
            lines += ["```", ""]
    return lines


def _every_few(points: list, rows: int = TIMELINE_ROWS) -> list:
    """About `rows` evenly spaced points of a timeline, the last one always included."""
    step = max(1, len(points) // rows)
    picked = points[::step]
    if picked[-1] is not points[-1]:
        picked.append(points[-1])
    return picked


# ---------------------------------------------------------------------------------------------
# junit.xml


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
    root = ET.Element("testsuites", name=f"cc_executor stress {run.run_id}")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    by_suite: dict[str, list[TestOutcome]] = {}
    for o in run.outcomes:
        by_suite.setdefault(o.suite, []).append(o)
    host = str(run.environment.get("hostname", ""))
    for suite_name, outcomes in by_suite.items():
        ts = ET.SubElement(root, "testsuite", name=suite_name, hostname=host,
                           timestamp=datetime.fromtimestamp(run.started_at, timezone.utc)
                           .strftime("%Y-%m-%dT%H:%M:%S"))
        props = ET.SubElement(ts, "properties")
        for k, v in (("run_id", run.run_id), ("model_mode", run.environment.get("model_mode")),
                     ("interrupted", str(run.interrupted).lower())):
            ET.SubElement(props, "property", name=k, value=_xml_text(str(v)))
        for name, value in _junit_history(run, suite_name):
            ET.SubElement(props, "property", name=name, value=_xml_text(value))
        n = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
        for o in outcomes:
            for a in o.attempts:
                name = o.id if o.repeat == 1 else f"{o.id} [attempt {a.attempt}]"
                case = ET.SubElement(ts, "testcase", classname=suite_name, name=name,
                                     time=f"{a.duration:.3f}", file=o.source.split(":$", 1)[0])
                n["tests"] += 1
                n["time"] += a.duration
                if a.status == SKIPPED:
                    n["skipped"] += 1
                    ET.SubElement(case, "skipped", message=_xml_text(a.message, 500))
                elif a.status == LOST:
                    n["errors"] += 1
                    el = ET.SubElement(case, "error", message=_xml_text(a.message, 1000), type="lost")
                    el.text = _xml_text(f"{a.message}\ntried on: {', '.join(a.tries or [])}")
                elif a.status == FAILED:
                    kind = "error" if a.reason == "error" else "failure"
                    n["errors" if kind == "error" else "failures"] += 1
                    el = ET.SubElement(case, kind, message=_xml_text(f"{a.reason}: {a.message}", 1000),
                                       type=a.reason)
                    details = [a.message, f"end: {a.end_reason}, exit code: {a.exit_code}",
                               f"defined at: {o.source}"]
                    if a.patterns_missing:
                        details.append("missing patterns: " + ", ".join(a.patterns_missing))
                    if a.forbidden_seen:
                        details.append("forbidden seen: " + ", ".join(a.forbidden_seen))
                    if a.stdout_path:
                        details.append(f"output: {a.stdout_path}, {a.stderr_path}")
                    el.text = _xml_text("\n".join(details))
                if a.preview:
                    ET.SubElement(case, "system-out").text = _xml_text(a.preview)
        for k in ("tests", "failures", "errors", "skipped"):
            ts.set(k, str(n[k]))
            totals[k] += n[k]
        ts.set("time", f"{n['time']:.3f}")
        totals["time"] += n["time"]
    for k in ("tests", "failures", "errors", "skipped"):
        root.set(k, str(totals[k]))
    root.set("time", f"{totals['time']:.3f}")
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


# ---------------------------------------------------------------------------------------------


def _model_mode_text(env: dict) -> str:
    """`local: loopback model server ...`: the description already names the mode when it can."""
    mode, description = str(env.get("model_mode")), str(env.get("model_description"))
    return description if description.startswith(f"{mode}:") else f"{mode}: {description}"


def write_reports(run: RunResult, report_dir: Path) -> dict[str, Path]:
    """Write all three files (each atomically: temp file, then rename). Returns their paths."""
    report_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": (report_dir / "report.md", render_markdown(run).encode("utf-8")),
        "json": (report_dir / "report.json",
                 (json.dumps(run.to_json(), indent=2, ensure_ascii=False, default=str) + "\n").encode()),
        "junit": (report_dir / "junit.xml", render_junit(run)),
    }
    out = {}
    for key, (path, data) in files.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        out[key] = path
    return out
