"""report.md's History section: where the run was recorded and how it compares with earlier runs.

Why apart from the other sections: it reads `run.history`, the plain-dict summary the CLI built
from `stress.history` (comparisons, cumulative suite ratios, learned timeouts), and its row order
must follow `stress.history.compare.Comparison.lines()`, so the two are kept side by side in
mind, not in one long renderer.

Imports `stress.report.results` and `stress.report.text` only. It must not import `stress.history` or
its modules: the report is drawn from the dict in the `RunResult`, so a report can be rendered
without the SQLite file.
"""

from __future__ import annotations

from stress.report.results import RunResult
from stress.report.text import cell, utc


def history_section(run: RunResult) -> list[str]:
    """The History section; absent when the run was not recorded at all (`--no-history`)."""
    if run.history is None:
        return []
    h = run.history or {}
    lines = ["## History", "", f"Recorded in `{h.get('path')}`"
             + ("." if h.get("recorded") else f": **not recorded** ({cell(h.get('error'))}).")
             + (" Interrupted runs are stored without an end, so they are never a baseline."
                if run.interrupted else ""), ""]
    comps = h.get("comparisons") or []
    if not comps and h.get("recorded"):
        lines += ["No earlier finished run of these suites to compare with.", ""]
    for c in comps:
        lines += _comparison_lines(c, h)
    return lines + _suite_ratio_lines(h) + _learned_timeout_lines(h)


def _comparison_lines(c: dict, h: dict) -> list[str]:
    """One comparison (against the previous run, or a chosen baseline): changed tests, durations."""
    lines = [f"### Against the {c['against']} run {c['baseline_id']} ({utc(c.get('started'))})", ""]
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
    thr = h.get("duration_threshold")
    if thr is not None:
        lines.append(f"- durations compared: median of passed attempts, reported at "
                     f"{thr * 100:g}% and {h.get('duration_min', 0):g} s or more")
    lines.append("")
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


def _suite_ratio_lines(h: dict) -> list[str]:
    """Each suite's passes : failures over every recorded attempt, and whether it graduated."""
    ratios = h.get("suite_ratios") or []
    if not ratios:
        return []
    lines = ["### Cumulative success ratio", "",
             "Every recorded attempt of the suite (passes : failures); a suite graduates at "
             "10:1 with at least 10 passes.", "",
             "| suite | passes | failures | ratio | graduated |", "|---|---:|---:|---:|---|"]
    for r in ratios:
        lines.append(f"| {cell(r['suite'] or 'all suites')} | {r['passes']} | {r['failures']} | "
                     f"{r['text']} | {'yes' if r['graduated'] else 'no'} |")
    lines.append("")
    return lines


def _learned_timeout_lines(h: dict) -> list[str]:
    """How --learned-timeouts set limits from the history, when it did."""
    lt = h.get("learned_timeouts")
    if not lt:
        return []
    return [f"Learned timeouts: {lt['percent']:g}% of each test's history median, at least "
            f"{lt['floor']:g} s, never above the configured timeout; applied to {lt['tests']} "
            "test(s) (see the Tests table).", ""]
