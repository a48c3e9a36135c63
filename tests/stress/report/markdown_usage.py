"""report.md's sections on what the run used: Claude totals, Servers, and Resources.

Why apart from the per-test sections (stress.report.markdown): these read the run-wide
measurements (`run.claude_totals`, `run.servers`, `run.resources`) that only some runs carry,
each absent as a whole when the run did not measure it, and the resource timelines are their own
small drawing code.

Imports `stress.report.results`, `stress.report.text` and `stress.report.simulated` only.
"""

from __future__ import annotations

from stress.report.results import Attempt, Outcome, RunResult
from stress.report.simulated import LABEL, NOTE, is_simulated
from stress.report.text import attempt_tag, cell, fmt_bytes, fmt_seconds

TIMELINE_MIN_SECONDS = 60.0
"""report.md draws a job's resource timeline for runs at least this long (the long-form tests)."""
TIMELINE_ROWS = 20


def claude_totals_section(run: RunResult) -> list[str]:
    """Cost, tokens, turns and API time summed over every Claude CLI run, when any ran."""
    if not (run.claude_totals and run.claude_totals.get("runs")):
        return []
    c = run.claude_totals
    u = c["usage"]
    sim = is_simulated(run.environment)
    label = f" ({LABEL})" if sim else ""
    lines = ["## Claude totals" + label, "",
             f"| runs | cost (USD{', ' + LABEL if sim else ''}) | input tokens{label} | "
             f"output tokens{label} | cache creation | cache read | turns | API time |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {c['runs']} | {c['total_cost_usd']:.4f} | {u.get('input_tokens', 0):,} | "
             f"{u.get('output_tokens', 0):,} | {u.get('cache_creation_input_tokens', 0):,} | "
             f"{u.get('cache_read_input_tokens', 0):,} | {c['num_turns']} | "
             f"{fmt_seconds(c['duration_api_ms'] / 1000)} |", ""]
    if sim:
        lines += [f"Cost and tokens are {LABEL}: {NOTE}.", ""]
    return lines


# ---------------------------------------------------------------------------------------------
# Servers


def servers_section(run: RunResult) -> list[str]:
    """Per server: what it was dealt, ran, stole and lost; makespan and fairness of the run."""
    if run.servers is None:
        return []
    if run.servers.get("mode") == "cluster":
        return []  # stress.report.markdown_fleet's Workers section
    sv = run.servers or {}
    servers = sv.get("servers") or []
    lines = ["## Servers", ""]
    fair = sv.get("fairness_cv")
    lines += [f"Makespan {fmt_seconds(sv.get('makespan'))}; fairness (coefficient of variation of "
              f"the servers' completion times, 0 = all finished together): "
              f"{'-' if fair is None else f'{fair:.3f}'}; retries used: {sv.get('retries_used', 0)}"
              + ".", "",
              "| server | weight | concurrency | dealt | tests run | busy | idle | steals in/out | "
              "retries | lost items | state |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines += [_server_row(x) for x in servers]
    lines.append("")
    return lines


def _server_row(x: dict) -> str:
    """One server's row; its state says when and why it was lost, and how often it came back."""
    state = "alive" if x.get("alive") else f"LOST at {fmt_seconds(x.get('lost_at'))}: {x.get('lost_reason')}"
    if x.get("rejoins"):
        state += f" (rejoined {x['rejoins']}x)"
    name = x["name"] if x["name"] == x.get("url") else f"{x['name']} ({x.get('url')})"
    return (f"| {cell(name)} | {x['weight']:g} | {x['concurrency']} | {x['dealt']} | "
            f"**{x['tests_run']}** | {fmt_seconds(x['busy'])} | {fmt_seconds(x['idle'])} | "
            f"{x['steals_in']}/{x['steals_out']} | {x['retries']} | {x['lost_items']} | {cell(state)} |")


# ---------------------------------------------------------------------------------------------
# Resources


def resources_section(run: RunResult) -> list[str]:
    """The sampled CPU, memory, threads and processes, or a note saying this tool does not sample."""
    if run.resources is not None:
        return (_resources_intro(run.resources) + _resources_table(run)
                + _service_timeline(run.resources) + _job_timelines(run))
    if run.outcomes:
        return ["## Resources", "",
                f"Not measured by {run.tool}: CPU, memory, threads and process counts of the "
                "service and of each job tree (peaks and timelines) are sampled by `python -m "
                "stress.complex`. Output sizes are in the Tests table and under Distributions; "
                "stdout/stderr batch counts are in report.json.", ""]
    return []


def _resources_intro(r: dict) -> list[str]:
    """How the figures were sampled, and the service process's peaks."""
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
    return lines


def _attempt_name(o: Outcome, a: Attempt) -> str:
    return o.id + attempt_tag(o, a, " #{}")


def _resources_table(run: RunResult) -> list[str]:
    """One row per attempt that was sampled: the service's and its job tree's peaks."""
    lines = ["| id | samples | service CPU peak | service RSS peak | job CPU peak | job RSS peak | "
             "job threads peak | job processes peak | batches out/err | output |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for o in run.outcomes:
        for a in o.attempts:
            res = a.resources
            if not res:
                continue
            s, j = res.get("service") or {}, res.get("job") or {}
            lines.append(
                f"| {cell(_attempt_name(o, a))} | {res.get('samples', 0)} | {s.get('cpu_percent', 0):.1f}% | "
                f"{fmt_bytes(s.get('rss_bytes'))} | {j.get('cpu_percent', 0):.1f}% | "
                f"{fmt_bytes(j.get('rss_bytes'))} | {j.get('threads', 0)} | {j.get('processes', 0)} | "
                f"{a.stdout_batches}/{a.stderr_batches} | {fmt_bytes(a.stdout_bytes + a.stderr_bytes)} |")
    lines.append("")
    return lines


def _service_timeline(r: dict) -> list[str]:
    """The service process over the whole run, as a fixed-width text table."""
    tl = r.get("timeline") or []
    if not tl:
        return []
    lines = ["Service timeline (every few samples):", "", "```",
             f"{'t (s)':>8} {'CPU %':>7} {'RSS':>10} {'threads':>7} {'procs':>5}"]
    for t_, cpu, rss, thr, procs in _every_few(tl):
        lines.append(f"{t_:>8.1f} {cpu:>7.1f} {fmt_bytes(rss):>10} {thr:>7} {procs:>5}")
    return lines + ["```", ""]


def _job_timelines(run: RunResult) -> list[str]:
    """A timeline per long attempt (TIMELINE_MIN_SECONDS or more): its job tree and the service."""
    lines = []
    for o in run.outcomes:
        for a in o.attempts:
            jtl = (a.resources or {}).get("timeline") or []
            if a.duration < TIMELINE_MIN_SECONDS or len(jtl) < 2:
                continue
            lines += [f"Job timeline of {cell(_attempt_name(o, a))} ({fmt_seconds(a.duration)}; "
                      "every few samples; CPU summed over the job tree):", "", "```",
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
