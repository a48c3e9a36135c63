"""The charts about the host and the run as a whole: service and host over time, the capacity
curve, and the trends across recorded runs.

Sources, best first, so that every kind of run draws what it measured: `run.trace` (every run:
load, PSI, the service's CPU and memory once a second, stress.report.host_trace), then the
complex tool's `run.resources` timeline (service CPU and RSS) and a load run's `/health`
samples (`run.profile.samples`: load, PSI, tree RSS). The capacity curve reads `run.capacity`,
the trends `run.history["trend"]` (recent runs of the same suites, written by the history link).

Imports `stress.report.results` and `stress.report.html.{svg,charts}` only.
"""

from __future__ import annotations

from stress.report.html.charts import Chart
from stress.report.html.svg import PALETTE, figure_svg, new_figure
from stress.report.results import RunResult

MIB = 1024 * 1024

Series = dict[str, tuple[list[float], list[float]]]


def _columns(points: list[list], columns: list[str], x: str, shift: float = 0.0) -> Series:
    out: Series = {}
    if not points:
        return out
    ix = columns.index(x)
    for name in columns:
        if name == x:
            continue
        i = columns.index(name)
        pairs = [(p[ix] + shift, p[i]) for p in points if i < len(p) and p[i] is not None]
        if pairs:
            out[name] = ([a for a, _ in pairs], [float(b) for _, b in pairs])
    return out


def _offset(run: RunResult, started_at: float | None) -> float:
    """Seconds from the run's start to a clock that started at `started_at` (Unix time)."""
    return 0.0 if started_at is None else max(0.0, started_at - run.started_at)


def host_series(run: RunResult) -> Series:
    """Every series the run measured, by one set of names (seconds since the run started)."""
    found: Series = {}
    trace = run.trace or {}
    shift = _offset(run, trace.get("started_at"))
    found.update(_columns(trace.get("points") or [], trace.get("columns") or [], "t", shift))
    res = run.resources or {}
    rs = _columns(res.get("timeline") or [], res.get("timeline_columns") or [], "t", shift)
    for src, dst in (("service_cpu_percent", "service_cpu_percent"),
                     ("service_rss_bytes", "service_rss_bytes")):
        if dst not in found and src in rs:
            found[dst] = rs[src]
    samples = (run.profile or {}).get("samples") or []
    if samples:
        cols = sorted({k for s in samples for k in s})
        ps = _columns([[s.get(k) for k in cols] for s in samples], cols, "at",
                      _offset(run, (run.profile or {}).get("started_at")))
        for src, dst in (("load1", "load1"), ("cpu_pressure", "cpu_pressure"),
                         ("memory_pressure", "memory_pressure"), ("io_pressure", "io_pressure"),
                         ("rss", "tree_rss_bytes")):
            if dst not in found and src in ps:
                found[dst] = ps[src]
    return found


def host_chart(run: RunResult) -> Chart | None:
    """Two panels on the run's clock: the service (CPU, memory), the host (load, PSI)."""
    s = host_series(run)
    has_service = any(k in s for k in ("service_cpu_percent", "service_rss_bytes", "tree_rss_bytes"))
    has_host = any(k in s for k in ("load1", "cpu_pressure", "memory_pressure", "io_pressure"))
    if not (has_service or has_host):
        return None
    fig, (top, bottom) = new_figure(9.0, 5.0, rows=2)
    _service_panel(top, s)
    _host_panel(bottom, s, run)
    bottom.set_xlabel("seconds since the run started (s)")
    _step_spans((top, bottom), run)
    title = "Service CPU and memory, host load and pressure over the run"
    caption = ("The service's CPU (100% = one core) and memory above, the host's load and PSI "
               "stall shares below: pressure rising as tests slow down points at the host.")
    return Chart("host", title, caption, figure_svg(fig, title))


def _step_spans(axes, run: RunResult) -> None:
    """Shade each capacity step, alternately, on the run's clock. A step's `started` in
    report.json is its count of starts (the figures' key), so a step is drawn from the end of
    the one before it."""
    shift = _offset(run, (run.profile or {}).get("started_at"))
    begin = 0.0
    for i, step in enumerate(run.capacity.steps if run.capacity else []):
        end = step.get("ended")
        if not isinstance(end, int | float):
            continue
        for ax in axes:
            ax.axvspan(shift + begin, shift + end, alpha=0.05 + 0.05 * (i % 2), lw=0,
                       color=PALETTE["accent" if step.get("held") else "failed"])
        begin = end


def _service_panel(ax, s: Series) -> None:
    if "service_cpu_percent" in s:
        ax.plot(*s["service_cpu_percent"], color=PALETTE["accent"], lw=1.2, label="service CPU %")
    ax.set_ylabel("service CPU (%)")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    for key, label, style in (("service_rss_bytes", "service RSS", "-"),
                              ("tree_rss_bytes", "service + jobs RSS", "--")):
        if key in s:
            xs, ys = s[key]
            twin.plot(xs, [y / MIB for y in ys], style, color=PALETTE["passed"], lw=1.0, label=label)
    twin.set_ylabel("memory (MiB)")
    twin.set_ylim(bottom=0)
    twin.grid(False)
    _merge_legends(ax, twin)
    ax.set_title("Service", loc="left")


def _host_panel(ax, s: Series, run: RunResult) -> None:
    if "load1" in s:
        ax.plot(*s["load1"], color=PALETTE["limit"], lw=1.2, label="load (1 min)")
    cores = (run.environment or {}).get("cores")
    if cores:
        ax.axhline(cores, color=PALETTE["limit"], lw=0.8, ls=":", label=f"{cores} cores")
    ax.set_ylabel("load (runnable tasks)")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    for key, colour in (("cpu_pressure", PALETTE["failed"]), ("memory_pressure", PALETTE["lost"]),
                        ("io_pressure", PALETTE["queued"])):
        if key in s:
            xs, ys = s[key]
            twin.plot(xs, [y * 100 for y in ys], color=colour, lw=0.9,
                      label=f"PSI {key.split('_')[0]} (%)")
    twin.set_ylabel("stalled share (%)")
    twin.set_ylim(0, 100)
    twin.grid(False)
    _merge_legends(ax, twin)
    remote = (run.service or {}).get("kind") == "remote" and not (run.profile or {}).get("samples")
    ax.set_title("Host running the harness (the service is remote)" if remote else "Host", loc="left")


def _merge_legends(ax, twin) -> None:
    """One legend for both y axes, in a row above the plot: inside it covered the lines and
    points it names (the first capacity step sits in the top-left corner)."""
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    if h1 or h2:
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0),
                  ncol=len(h1 + h2), frameon=False, borderaxespad=0.2)


def capacity_chart(run: RunResult) -> Chart | None:
    """Concurrency of each step against its p95 duration and error rate; the limit marked."""
    c = run.capacity
    steps = [st for st in (c.steps if c else []) if st.get("concurrency") is not None]
    if not steps:
        return None
    xs = [st["concurrency"] for st in steps]
    fig, ax = new_figure(8.0, 3.6)
    p95 = [st.get("p95_duration") for st in steps]
    ax.plot([x for x, v in zip(xs, p95) if v is not None], [v for v in p95 if v is not None],
            "o-", color=PALETTE["accent"], label="p95 duration (s)")
    for x, st, v in zip(xs, steps, p95):
        if v is not None and not st.get("held"):
            ax.plot([x], [v], "X", ms=10, color=PALETTE["failed"])
    ax.set_xlabel("tests in flight (concurrency of the step)")
    ax.set_xticks(sorted(set(xs)))
    ax.margins(x=0.08)  # the first and last steps off the frame, where they can be seen
    ax.set_ylabel("p95 duration (s)")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot(xs, [(st.get("error_rate") or 0) * 100 for st in steps], "s--",
              color=PALETTE["failed"], label="error rate (%)")
    twin.set_ylabel("error rate (%)")
    twin.set_ylim(bottom=0, top=max(5.0, max((st.get("error_rate") or 0) * 100 for st in steps) * 1.2))
    twin.grid(False)
    assert c is not None
    if c.max_sustainable_concurrency is not None:
        ax.axvline(c.max_sustainable_concurrency, color=PALETTE["passed"], lw=1.5,
                   label=f"sustains {c.max_sustainable_concurrency}")
    _merge_legends(ax, twin)
    found = ("no step held" if c.max_sustainable_concurrency is None
             else f"sustains {c.max_sustainable_concurrency} in flight")
    title = f"Capacity search: {found}, limited by {c.limited_by}"
    caption = ("Each point is one --find-capacity step (X: it crossed its criteria, green line: "
               f"the highest that held); the search stopped because {c.reason}")
    return Chart("capacity", title, caption, figure_svg(fig, title))


def trend_chart(trend: list[dict], title: str, *, current: str | None = None) -> Chart | None:
    """Pass ratio and duration of recorded runs, oldest first (the run `current` highlighted)."""
    rows = [r for r in trend if (r.get("passes") or 0) + (r.get("failures") or 0) > 0]
    if len(rows) < 1:
        return None
    fig, (top, bottom) = new_figure(9.0, 4.4, rows=2)
    xs = list(range(1, len(rows) + 1))
    ratio = [100 * r["passes"] / (r["passes"] + r["failures"]) for r in rows]
    top.plot(xs, ratio, "o-", color=PALETTE["passed"])
    top.set_ylabel("runs passed (%)")
    top.set_ylim(-5, 105)
    top.set_title("Pass ratio per run")
    durs = [r.get("duration") for r in rows]
    bottom.bar([x for x, d in zip(xs, durs) if d is not None], [d for d in durs if d is not None],
               color=[PALETTE["accent"] if r.get("run_id") != current else PALETTE["queued"]
                      for r, d in zip(rows, durs) if d is not None])
    bottom.set_ylabel("run duration (s)")
    step = max(1, len(xs) // 15)
    bottom.set_xticks(xs[::step])
    bottom.set_xlabel("recorded run, oldest to newest (#)")
    bottom.set_title("Duration per run")
    if current is not None:
        for x, r in zip(xs, rows):
            if r.get("run_id") == current:
                top.plot([x], [ratio[x - 1]], "o", ms=9, mfc="none", color=PALETTE["queued"])
    caption = ("The share of runs (attempts) that passed and the duration of each recorded run"
               + (", this one highlighted" if current else "") + ": a dip or a step after a "
               "change is where to look.")
    return Chart("trend", title, caption, figure_svg(fig, title))


__all__ = ["capacity_chart", "host_chart", "host_series", "trend_chart"]
