"""The charts about the tests themselves: the timeline, durations against limits, distributions.

Each function takes the `RunResult` and returns a `Chart` (title, one-line caption, inline SVG),
or None when the run has nothing to draw (no attempt ran). Titles name the quantity, axes carry
their units, captions say what to read from the chart: a report is read by someone who did not
run it.

The timeline's rows are the run's connections: each worker holds one connection and runs one
execution at a time, so packing executions into the first free row in start order rebuilds an
assignment with no more rows than workers (with several servers, per server). Queue wait is
drawn before the run, hatched; each instance of an instances attempt gets its own row, so K
instances show as K bars side by side in time.

Imports `stress.report.results`, `stress.report.text` and `stress.report.html.svg` only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stress.report.html.svg import PALETTE, figure_svg, new_figure
from stress.report.results import Attempt, Outcome, RunResult
from stress.report.text import attempts_that_ran

MAX_LABELLED_BARS = 60
"""The timeline writes test ids on bars up to this many bars; beyond, colour only."""
CHARS_ACROSS = 130
"""About how many 6.5 pt characters the timeline's plot area holds across (a 9 in figure)."""
MAX_TESTS_SHOWN = 60
"""Durations against limits: at most this many tests (those closest to their limit)."""


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    caption: str
    svg: str


@dataclass(frozen=True)
class Bar:
    """One execution on the run's clock: its queue wait, its run, and what it was."""

    label: str
    start: float
    queued: float
    run: float
    status: str
    group: str
    instance: int | None = None
    chosen: bool = False


def _bars(run: RunResult) -> list[Bar]:
    t0 = run.started_at
    bars: list[Bar] = []
    for o in run.outcomes:
        for a in o.attempts:
            if a.started_at is None:
                continue
            label = o.id + (f" #{a.attempt}" if o.repeat > 1 else "")
            group = a.server or ""
            qw = a.queue_wait or 0.0
            if a.instances:
                bars += _instance_bars(a, label, a.started_at - t0, qw, group, t0)
            else:
                bars.append(Bar(label, a.started_at - t0, qw, max(a.duration, 0.0), a.status, group))
    return bars


def _instance_bars(a: Attempt, label: str, start: float, qw: float, group: str,
                   t0: float) -> list[Bar]:
    """Each instance from its own start when recorded (else the attempt's); its queue wait is
    what its wall time holds beyond its run."""
    out = []
    for i in a.instances or []:
        n = int(i.get("instance") or len(out) + 1)
        run = float(i.get("duration") or 0.0)
        began = i.get("started_at")
        wait = max(0.0, float(i.get("wall") or 0.0) - run) if i.get("wall") else qw
        out.append(Bar(f"{label} i{n}", start if began is None else began - t0, wait, run,
                       str(i.get("status") or a.status), group, n, bool(i.get("chosen"))))
    return out


def pack_rows(bars: list[Bar]) -> list[tuple[str, list[Bar]]]:
    """Rows of non-overlapping bars: per group (server), each bar in the first row free at its
    start, in start order. Returns (row label, bars) in display order."""
    rows: list[tuple[str, list[Bar]]] = []
    for group in dict.fromkeys(b.group for b in sorted(bars, key=lambda b: b.group)):
        ends: list[float] = []
        mine: list[list[Bar]] = []
        for b in sorted((b for b in bars if b.group == group), key=lambda b: b.start):
            end = b.start + b.queued + b.run
            k = next((i for i, e in enumerate(ends) if e <= b.start + 1e-6), None)
            if k is None:
                ends.append(end)
                mine.append([b])
            else:
                ends[k] = end
                mine[k].append(b)
        prefix = f"{group} " if group and len({b.group for b in bars}) > 1 else ""
        rows += [(f"{prefix}conn {i + 1}", r) for i, r in enumerate(mine)]
    return rows


def timeline_chart(run: RunResult) -> Chart | None:
    """Gantt chart: every execution on its connection's row, queue wait hatched before it."""
    bars = _bars(run)
    if not bars:
        return None
    rows = pack_rows(bars)
    fig, ax = new_figure(9.0, min(1.4 + 0.32 * len(rows), 12.0))
    label_bars = len(bars) <= MAX_LABELLED_BARS
    first = min(b.start for b in bars)
    span = max(b.start + b.queued + b.run for b in bars) - first or 1.0
    for y, (_, row) in enumerate(rows):
        _draw_row(ax, y, row)
        if label_bars:
            for b in row:
                fits = int(b.run / span * CHARS_ACROSS) - 1  # what fits inside the bar
                if fits >= 6:
                    label = b.label if len(b.label) <= fits else b.label[: fits - 1] + "…"
                    ax.text(b.start + b.queued + 0.005 * span, y, label, fontsize=6.5,
                            va="center", color="white", clip_on=True)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started (s)")
    ax.set_ylabel("connection (one execution at a time)")
    ax.set_xlim(left=max(0.0, first - 0.03 * span))
    _legend(ax, [("passed", "passed"), ("failed", "failed"), ("lost", "lost"),
                 ("queued", "queued (hatched)")], hatch_key="queued")
    title = f"Timeline of {len(bars)} executions on {len(rows)} connections"
    caption = ("Each bar is one execution on the connection that ran it (hatched: queued in the "
               "service, outlined: the chosen instance); gaps are idle connections, long bars "
               "slow tests.")
    return Chart("timeline", title, caption, figure_svg(fig, title))


def _draw_row(ax, y: int, row: list[Bar]) -> None:
    """One row as a few collections (queue waits; runs per status; chosen instances outlined):
    thousands of bars of a load run draw in well under a second this way."""
    queued = [(b.start, b.queued) for b in row if b.queued > 0]
    if queued:
        ax.broken_barh(queued, (y - 0.3, 0.6), facecolors="none", edgecolors=PALETTE["queued"],
                       hatch="///", linewidth=0.6)
    for status in dict.fromkeys(b.status for b in row):
        spans = [(b.start + b.queued, max(b.run, 0.002)) for b in row if b.status == status]
        ax.broken_barh(spans, (y - 0.3, 0.6), facecolors=PALETTE.get(status, PALETTE["accent"]),
                       edgecolors="white", linewidth=0.5)  # a hairline between back-to-back runs
    chosen = [(b.start + b.queued, max(b.run, 0.002)) for b in row if b.chosen]
    if chosen:
        ax.broken_barh(chosen, (y - 0.3, 0.6), facecolors="none", edgecolors="black",
                       linewidth=1.2)


def _legend(ax, items: list[tuple[str, str]], hatch_key: str | None = None) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor="none" if k == hatch_key else PALETTE[k],
                     edgecolor=PALETTE[k], hatch="///" if k == hatch_key else None, label=text)
               for k, text in items]
    ax.legend(handles=handles, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0),
              ncol=len(handles), frameon=False)


def _worst_attempt(o: Outcome) -> Attempt | None:
    ran = [a for a in o.attempts if a.started_at is not None and a.ran]
    return max(ran, key=lambda a: a.duration, default=None)


def durations_chart(run: RunResult) -> Chart | None:
    """Per test: its longest run against the limit it ran under (log scale)."""
    rows = [(o, a) for o in run.outcomes if (a := _worst_attempt(o)) is not None]
    if not rows:
        return None
    def closeness(r):
        o, a = r
        return a.duration / (a.timeout or o.timeout or math.inf)
    rows = sorted(rows, key=closeness, reverse=True)[:MAX_TESTS_SHOWN]
    rows.reverse()
    fig, ax = new_figure(9.0, min(1.2 + 0.26 * len(rows), 14.0))
    ys = range(len(rows))
    ax.barh(list(ys), [max(a.duration, 1e-3) for _, a in rows], height=0.6,
            color=[PALETTE.get(a.status, PALETTE["accent"]) for _, a in rows])
    limits = [a.timeout or o.timeout for o, a in rows]
    ax.scatter(limits, list(ys), marker="|", s=160, color=PALETTE["limit"], zorder=3,
               label="timeout used")
    configured = [o.timeout for o, _ in rows]
    ax.scatter(configured, list(ys), marker="x", s=18, color=PALETTE["limit"], zorder=3,
               label="configured timeout")
    ax.set_yticks(list(ys), [o.id for o, _ in rows], fontsize=7)
    log_axis(ax, seconds=True)
    ax.set_xlabel("seconds (log scale)")
    ax.legend(fontsize=7, loc="lower right")
    more = len([1 for o in run.outcomes if _worst_attempt(o)]) - len(rows)
    title = "Duration per test against its timeout"
    caption = ("Each test's longest run (colour: its result) against the limit it ran under "
               "(|: stretched by load, x: configured): a bar near its mark nearly timed out."
               + (f" The {len(rows)} closest to their limit; {more} more in report.json."
                  if more > 0 else ""))
    return Chart("durations", title, caption, figure_svg(fig, title))


def _log_bins(values: list[float], floor: float) -> list[float]:
    lo = max(min(values), floor)
    hi = max(max(values), lo * 10)
    n = 20
    return [lo * (hi / lo) ** (i / n) for i in range(n + 1)]


def distributions_chart(run: RunResult) -> Chart | None:
    """Histograms of run durations and output sizes (log bins)."""
    ran = attempts_that_ran(run.outcomes)
    if not ran:
        return None
    fig, (left, right) = _pair()
    durs = [max(a.duration, 1e-3) for a in ran]
    sizes = [max(a.stdout_bytes + a.stderr_bytes, 1) for a in ran]
    left.hist(durs, bins=_log_bins(durs, 1e-3), color=PALETTE["accent"])
    log_axis(left, seconds=True)
    left.set_xlabel("duration (s, log scale)")
    left.set_ylabel("runs")
    count_axis(left)
    left.set_title("Run durations")
    right.hist(sizes, bins=_log_bins(sizes, 1), color=PALETTE["passed"])
    log_axis(right, seconds=False)
    right.set_xlabel("stdout + stderr (bytes, log scale)")
    right.set_ylabel("runs")
    count_axis(right)
    right.set_title("Output sizes")
    title = f"Distributions of durations and output sizes ({len(ran)} runs)"
    caption = ("How run times and output sizes spread; a second hump on the right of either is "
               "a group of slow or chatty tests worth a look.")
    return Chart("distributions", title, caption, figure_svg(fig, title))


def _pair():
    from stress.report.html.svg import pyplot

    return pyplot().subplots(1, 2, figsize=(9.0, 3.0))


def _decimal(v: float) -> str:
    """A decade of bytes as people read it on a log axis: `10 B`, `1 kB`, `100 MB`."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:g} {unit}"
    return f"{v:g} B"


def log_axis(ax, *, seconds: bool) -> None:
    """A log x axis labelled in plain numbers (`0.01`, `10`; `1 kB` for bytes) at decades only:
    matplotlib's default `10^-2` labels go through its TeX parser, which cost more than the rest
    of the page together."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    # Decades alone leave a span under two decades (0.3 s to 7 s) with one label or none:
    # there 2 and 5 are labelled too. Call this after the data is drawn, so the span is known.
    subs = (1.0, 2.0, 5.0) if hi < 100 * max(lo, 1e-12) else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if seconds else _decimal(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def count_axis(ax) -> None:
    """A y axis of counts (runs) ticks whole numbers only: no `2.5 runs`."""
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


__all__ = ["Bar", "Chart", "distributions_chart", "durations_chart", "pack_rows",
           "timeline_chart"]
