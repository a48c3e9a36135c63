"""history.html: trends over the recorded runs, one self-contained page (`python -m stress.history
html`).

Why a page of its own beside each run's report.html: a run's report shows where that run sits
among the recent runs of its suites; this page is the history itself, every suite set's pass
ratio and duration across runs and each suite's cumulative passes:failures, for the person
deciding whether a change made things better.

Drawn from plain rows (stress.history.trends.run_row, and the suite ratios as dicts), so it
needs no database to test. Imports the chart and style modules of this package and
`stress.report.simulated` / `stress.report.text`.
"""

from __future__ import annotations

from html import escape
from typing import Any

from stress.report.html.charts_host import trend_chart
from stress.report.html.style import CSS
from stress.report.simulated import LABEL, is_simulated
from stress.report.text import fmt_seconds, utc

MAX_SUITE_SETS = 8
"""Charts for at most this many suite sets (the most recently run ones)."""


def render_trends(runs: list[dict[str, Any]], ratios: list[dict[str, Any]], source: str) -> str:
    """The page: a trend chart per suite set (oldest run first), the suite ratios, the runs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(runs, key=lambda r: r["started"], reverse=True):
        groups.setdefault(", ".join(sorted(r["suites"])) or "-", []).append(r)
    charts = []
    for name, rows in list(groups.items())[:MAX_SUITE_SETS]:
        try:
            chart = trend_chart(list(reversed(rows)), f"Suites {name}: {len(rows)} runs")
        except Exception as e:  # noqa: BLE001 - one chart must not cost the page
            charts.append(f'<p class="note">Chart for {escape(name)} not drawn: {escape(str(e))}</p>')
            continue
        if chart is not None:
            charts.append(f'<figure id="trend-{len(charts) + 1}"><figcaption><b>'
                          f"{escape(chart.title)}</b><br>{escape(chart.caption)}</figcaption>"
                          f"{chart.svg}</figure>")
    body = [f"<header><h1>Stress history</h1><p class=\"note\">{len(runs)} recorded runs in "
            f"<code>{escape(source)}</code>.</p></header>",
            "<section><h2>Trends</h2>" + ("".join(charts) or "<p>No run with results yet.</p>")
            + "</section>", _ratios(ratios), _runs(runs)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>Stress history</title><meta name=\"viewport\" content=\"width=device-width, "
            f"initial-scale=1\"><style>{CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _ratios(ratios: list[dict[str, Any]]) -> str:
    if not ratios:
        return ""
    rows = "".join(
        f"<tr><td>{escape(str(r['suite'] or 'all suites'))}</td><td class=\"num\">{r['passes']}</td>"
        f"<td class=\"num\">{r['failures']}</td><td class=\"num\">{escape(r['text'])}</td>"
        f"<td>{'yes' if r['graduated'] else 'no'}</td></tr>" for r in ratios)
    return ("<section><h2>Cumulative success ratio</h2><p class=\"note\">Every recorded attempt "
            "(passes:failures); a suite graduates at 10:1 with at least 10 passes.</p><table>"
            "<thead><tr><th>suite</th><th>passes</th><th>failures</th><th>passes:failures</th>"
            "<th>graduated</th></tr></thead><tbody>" + rows + "</tbody></table></section>")


def _runs(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in sorted(runs, key=lambda r: r["started"], reverse=True):
        model = str(r.get("model_mode") or "-")
        if is_simulated(mode=r.get("model_mode")):
            model += f" ({LABEL})"
        cls = "failed" if r["failures"] else "passed"
        rows.append(f'<tr class="{cls}"><td>{escape(r["run_id"])}</td><td>{escape(utc(r["started"]))}'
                    f"</td><td>{escape(', '.join(r['suites']))}</td>"
                    f'<td class="num st">{r["passes"]}:{r["failures"]}</td>'
                    f'<td class="num">{escape(fmt_seconds(r.get("duration")))}'
                    + (" (interrupted)" if r.get("interrupted") else "") + "</td>"
                    f"<td>{escape(model)}</td><td class=\"num\">{r.get('exit_code', '-')}</td></tr>")
    return ("<section><h2>Runs (newest first)</h2><table><thead><tr><th>run id</th><th>started"
            "</th><th>suites</th><th>passes:failures</th><th>duration</th><th>model</th>"
            "<th>exit</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>")


__all__ = ["render_trends"]
