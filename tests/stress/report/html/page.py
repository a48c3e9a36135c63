"""report.html: the run as one self-contained page (inline CSS and SVG, no script, no URL).

Why no script and no external resource: the file is attached to tickets and opened offline,
years later, in whatever browser; a page that needs nothing but itself renders the same
everywhere and prints. Links point only at files beside it (report.json, outputs/...).

What is here and not in report.md: the charts (stress.report.html.charts, charts_host) and the
output previews of passed tests, folded in `<details>`; report.md keeps the text of record
(summary, failures with their evidence, tables). A chart that fails to draw becomes a note in
its place: a drawing bug must never cost a run its report.

Imports `stress.report.results`, `stress.report.text`, `stress.report.simulated` and the chart
modules; never `stress.report` (its entry imports this).
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

from stress.report.html.charts import (
    Chart,
    distributions_chart,
    durations_chart,
    timeline_chart,
)
from stress.report.html.charts_host import capacity_chart, host_chart, trend_chart
from stress.report.html.style import CSS
from stress.report.results import FAILED, PASSED, RunResult
from stress.report.simulated import NOTE, cost_text, is_simulated
from stress.report.text import (
    attempt_tag,
    fmt_bytes,
    fmt_seconds,
    limit_used,
    representative_attempt,
    utc,
)

MAX_PREVIEWS = 200
"""At most this many passed attempts get a folded preview (a load run may have thousands)."""
PREVIEWS_PER_TEST = 3
"""...and at most this many per test, so one test repeated 400 times cannot crowd out the rest."""


def _trend(run: RunResult) -> Chart | None:
    trend = (run.history or {}).get("trend") or []
    if len(trend) < 2:
        return None
    return trend_chart(trend, f"History: the last {len(trend)} runs of these suites",
                       current=run.run_id)


CHARTS: tuple[Callable[[RunResult], Chart | None], ...] = (
    timeline_chart, durations_chart, distributions_chart, host_chart, capacity_chart, _trend)
"""The charts in page order; each returns None when the run has nothing for it."""


def render_html(run: RunResult) -> str:
    """The whole page."""
    body = [_header(run), _summary(run), _charts(run), _tests(run), _failures(run),
            _previews(run), _claude(run), _footer(run)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Stress run {escape(run.run_id)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b)
            + "\n</body></html>\n")


def verdict(run: RunResult) -> tuple[str, str]:
    """(word, css class) for the whole run, as report.md's Result row decides it."""
    t = run.totals
    if run.interrupted:
        return "INTERRUPTED", "lost"
    if run.thresholds_crossed or (run.capacity is not None and run.capacity.crossed):
        return "THRESHOLD CROSSED", "failed"
    if t.failed or t.lost or run.error:
        return "FAILED", "failed"
    return ("PASSED", "passed") if t.passed else ("NOTHING RAN", "skipped")


def _header(run: RunResult) -> str:
    word, cls = verdict(run)
    sim = (f'<p class="banner">Model: {escape(str(run.environment.get("model_description")))}. '
           "Answers, costs and tokens are simulated.</p>"
           if is_simulated(run.environment) and _claude_ran(run) else "")
    err = f'<p class="banner failed">Run error: {escape(run.error)}</p>' if run.error else ""
    return (f'<header><h1>Stress run {escape(run.run_id)} <span class="badge {cls}">{word}</span>'
            f"</h1>{sim}{err}</header>")


def _claude_ran(run: RunResult) -> bool:
    return bool(run.environment.get("claude_used") or (run.claude_totals or {}).get("runs"))


def _row(k: str, v: str) -> str:
    return f"<tr><th>{escape(k)}</th><td>{v}</td></tr>"


def _summary(run: RunResult) -> str:
    t = run.totals
    dur = None if run.finished_at is None else run.finished_at - run.started_at
    rows = [
        _row("Tests", f"{t.tests}: {t.passed} passed, {t.failed} failed, {t.skipped} skipped"
             + (f", {t.lost} lost" if t.lost else "")),
        _row("Runs", f"{t.attempts}: {t.attempts_passed} passed, {t.attempts_failed} failed, "
             f"{t.attempts_skipped} skipped or not run"
             + (f", {t.attempts_lost} lost" if t.attempts_lost else "")),
        _row("Success ratio", f"<b>{t.ratio.text()}</b> (runs passed : runs failed); "
             + ("graduates" if t.ratio.graduates else "does not graduate") + " at 10:1"),
        _row("Started", escape(utc(run.started_at))),
        _row("Duration", escape(fmt_seconds(dur))),
        _row("Host", escape(f"{run.environment.get('hostname')} "
                            f"({run.environment.get('cores')} cores)")),
        _row("Model", escape(str(run.environment.get("model_description") or "-"))),
        _row("Exit code", escape(str(run.exit_code if run.exit_code is not None else "-"))),
        _row("Command", f"<code>{escape(' '.join(run.argv))}</code>"),
    ]
    if run.capacity is not None:
        c = run.capacity
        found = ("no step held" if c.max_sustainable_concurrency is None
                 else f"sustains {c.max_sustainable_concurrency} tests in flight")
        rows.append(_row("Capacity", escape(f"{found}; limited by {c.limited_by}: {c.reason}")))
    for th in run.thresholds:
        rows.append(_row("Threshold", escape(f"{th.expr}: {'held' if th.passed else 'CROSSED'}")))
    return "<section><h2>Summary</h2><table class=\"kv\">" + "".join(rows) + "</table></section>"


def _charts(run: RunResult) -> str:
    parts = []
    for make in CHARTS:
        try:
            chart = make(run)
        except Exception as e:  # noqa: BLE001 - a drawing bug must not cost the run its report
            parts.append(f'<p class="note">A chart ({escape(make.__name__)}) could not be drawn: '
                         f"{escape(type(e).__name__)}: {escape(str(e))}</p>")
            continue
        if chart is not None:
            parts.append(f'<figure id="chart-{chart.key}"><figcaption><b>{escape(chart.title)}'
                         f"</b><br>{escape(chart.caption)}</figcaption>{chart.svg}</figure>")
    if not parts:
        return ""
    return "<section><h2>Charts</h2>" + "\n".join(parts) + "</section>"


def _tests(run: RunResult) -> str:
    rows = []
    for o in run.outcomes:
        a = representative_attempt(o)
        started = a is not None and a.started_at is not None
        out = (f'<a href="{escape(a.stdout_path)}">{fmt_bytes(a.stdout_bytes)}</a>'
               if started and a.stdout_path else "-")
        rows.append(
            f'<tr class="{o.status}"><td>{escape(o.id)}</td><td>{escape(o.suite)}</td>'
            f'<td class="st">{o.status.upper()}'
            + (f" {o.passes}/{o.runs}" if o.repeat > 1 else "") + "</td>"
            f"<td>{escape(o.reason)}</td>"
            f'<td class="num">{fmt_seconds(o.duration) if started else "-"}</td>'
            f"<td>{escape(limit_used(a.timeout, o.timeout, a.factor, '-')) if started else '-'}</td>"
            f'<td class="num">{a.exit_code if started and a.exit_code is not None else "-"}</td>'
            f'<td class="num">{out}</td></tr>')
    return ("<section><h2>Tests</h2><table><thead><tr><th>id</th><th>suite</th><th>result</th>"
            "<th>reason</th><th>duration</th><th>timeout used</th><th>exit</th><th>output</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>")


def _failures(run: RunResult) -> str:
    failed = [o for o in run.outcomes if o.status == FAILED]
    if not failed:
        return ""
    parts = ["<section><h2>Failures</h2>"]
    for o in failed:
        parts.append(f'<article class="failure"><h3>{escape(o.id)}: {escape(o.reason)}</h3>'
                     f"<p><b>Why:</b> {escape(o.message)}</p>"
                     f"<p><b>Runs:</b> <code>{escape(o.invocation)}</code></p>")
        for a in [x for x in o.attempts if x.status == FAILED][:20]:
            tag = attempt_tag(o, a, "attempt {}: ")
            if a.patterns_missing:
                parts.append(f"<p>{tag}<b>Missing patterns:</b> "
                             + ", ".join(f"<code>{escape(p)}</code>" for p in a.patterns_missing)
                             + "</p>")
            if a.stdout_path:
                parts.append(f'<p>{tag}<a href="{escape(a.stdout_path)}">stdout</a> '
                             f'({fmt_bytes(a.stdout_bytes)}), <a href="{escape(a.stderr_path or "")}">'
                             f"stderr</a> ({fmt_bytes(a.stderr_bytes)}); exit {a.exit_code}, ended "
                             f"{escape(a.end_reason)}, {fmt_seconds(a.duration)}</p>")
            if a.preview:
                parts.append(f"<pre>{escape(a.preview)}</pre>")
        parts.append("</article>")
    return "".join(parts) + "</section>"


def _previews(run: RunResult) -> str:
    items, left_out = [], 0
    for o in run.outcomes:
        shown = [a for a in o.attempts if a.status == PASSED and a.preview] if o.status == PASSED else []
        room = max(0, min(PREVIEWS_PER_TEST, MAX_PREVIEWS - len(items)))
        items += [(o, a) for a in shown[:room]]
        left_out += len(shown) - min(len(shown), room)
    if not items:
        return ""
    more = (f" {left_out} more passed run(s) are not previewed here (at most {PREVIEWS_PER_TEST} "
            f"per test, {MAX_PREVIEWS} in all)." if left_out else "")
    parts = ["<section><h2>Output previews (passed tests)</h2>"
             "<p class=\"note\">The start of each passed run's output; full outputs are in "
             f'<a href="outputs/">outputs/</a>.{more}</p>']
    for o, a in items:
        parts.append(f"<details><summary>{escape(o.id)}{attempt_tag(o, a, ' attempt {}')}: "
                     f"{fmt_bytes(a.stdout_bytes)}, "
                     f'<a href="{escape(a.stdout_path or "")}">stdout</a></summary>'
                     f"<pre>{escape(a.preview)}</pre></details>")
    return "".join(parts) + "</section>"


def _claude(run: RunResult) -> str:
    c = run.claude_totals
    if not (c and c.get("runs")):
        return ""
    sim = is_simulated(run.environment)
    u = c.get("usage") or {}
    label = " (simulated)" if sim else ""
    return ("<section><h2>Claude totals</h2><table class=\"kv\">"
            + _row("Runs", str(c["runs"]))
            + _row("Cost", escape(cost_text(c.get("total_cost_usd"), sim)))
            + _row("Input tokens" + label, f"{u.get('input_tokens', 0):,}")
            + _row("Output tokens" + label, f"{u.get('output_tokens', 0):,}")
            + _row("Turns", str(c.get("num_turns", 0))) + "</table>"
            + (f'<p class="note">Simulated: {escape(NOTE)}.</p>' if sim else "") + "</section>")


def _footer(run: RunResult) -> str:
    return ('<footer>Text version: <a href="report.md">report.md</a>; machine-readable: '
            '<a href="report.json">report.json</a>, <a href="junit.xml">junit.xml</a>; full '
            'outputs: <a href="outputs/">outputs/</a>.</footer>')


__all__ = ["CHARTS", "render_html", "verdict"]
