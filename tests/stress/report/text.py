"""How report.md shows one value: sizes, durations, times, table cells, code fences, bar charts.

Why a module of its own: every report.md section formats the same kinds of values, and a byte
count or a duration must read the same in the Tests table, the Failures list and the History
section. It also holds the attempt picks those sections share (the attempts that ran, the attempt
a one-row summary stands for).

Imports only `stress.report.results` (for the status names and types); never another report module, so
every report_markdown* module can use it without an import circle.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from stress.report.results import FAILED, PASSED, Attempt, Outcome

DURATION_BUCKETS = ((1, "< 1 s"), (5, "1-5 s"), (30, "5-30 s"), (120, "30 s-2 min"),
                    (300, "2-5 min"), (math.inf, ">= 5 min"))
SIZE_BUCKETS = ((1024, "< 1 KiB"), (64 * 1024, "1-64 KiB"), (1024**2, "64 KiB-1 MiB"),
                (10 * 1024**2, "1-10 MiB"), (math.inf, ">= 10 MiB"))

_MD_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def fmt_bytes(n: int | None) -> str:
    """`512 B`, `1.5 KiB`, `3.2 MiB`, `1.0 GiB`; `-` when unknown."""
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    for unit, size in (("KiB", 1024), ("MiB", 1024**2), ("GiB", 1024**3)):
        if n < size * 1024 or unit == "GiB":
            return f"{n / size:.1f} {unit}"
    return f"{n} B"  # pragma: no cover


def fmt_seconds(s: float | None) -> str:
    """`1.25 s` under a minute, `2 min 5 s` from there; `-` when unknown."""
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.2f} s"
    return f"{int(s // 60)} min {s % 60:.0f} s"


def fmt_metric(unit: str, value: float | None) -> str:
    """A load metric for people by its unit (stress.run.thresholds): seconds `301 ms` / `1.25 s`,
    ratio `1.5%`, bytes `1.2 GiB`, load and count as numbers; `-` when there is no value."""
    if value is None:
        return "-"
    if unit == "seconds":
        return f"{value * 1000:.3g} ms" if value < 1 else fmt_seconds(value)
    if unit == "ratio":
        return f"{value * 100:.3g}%"
    if unit == "bytes":
        return fmt_bytes(int(value))
    return f"{value:.4g}"


def utc(ts: float | None) -> str:
    """A Unix time as `2025-01-31 12:00:00 UTC` (the report is read on other hosts)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


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


def attempts_that_ran(outcomes: Sequence[Outcome]) -> list[Attempt]:
    """Every attempt that passed or failed (skipped and lost ones say nothing about durations)."""
    return [a for o in outcomes for a in o.attempts if a.status in (PASSED, FAILED)]


def representative_attempt(o: Outcome) -> Attempt | None:
    """The attempt a one-row summary shows: the first failure, else the last that ran."""
    ran = [a for a in o.attempts if a.status in (PASSED, FAILED)]
    bad = [a for a in ran if a.status == FAILED]
    if bad:
        return bad[0]
    if ran:
        return ran[-1]
    started = [a for a in o.attempts if a.started_at is not None]
    return started[0] if started else (o.attempts[0] if o.attempts else None)


def attempt_tag(o: Outcome, a: Attempt, template: str) -> str:
    """`template` filled with the attempt number when the test repeats, else empty: an unrepeated
    test has one attempt, and numbering it would only add noise."""
    return template.format(a.attempt) if o.repeat > 1 else ""
