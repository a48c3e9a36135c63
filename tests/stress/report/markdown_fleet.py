"""report.md's Workers section for a `--cluster` run: one row per Dask worker.

Why its own section rather than the single-service Servers table: a fleet's questions are
different - how many slots each worker had and where that number came from (a flag or the
hardware rule), which GPUs it offered, whether the load was spread fairly, what Dask's work
stealing moved, and which tests had to be rerun after a worker died.

Imports `stress.report.results` and `stress.report.text` only; never another report module.
"""

from __future__ import annotations

from stress.report.results import RunResult
from stress.report.text import cell, fmt_bytes, fmt_seconds


def workers_section(run: RunResult) -> list[str]:
    """Per worker of a --cluster run; nothing for a run on one service (its Servers section)."""
    if not run.servers or run.servers.get("mode") != "cluster":
        return []
    sv = run.servers
    fair = sv.get("fairness_cv")
    lines = ["## Workers", "",
             f"Dask scheduler `{sv.get('scheduler')}`"
             + (f", dashboard {sv['dashboard']}" if sv.get("dashboard") else ", no dashboard")
             + f". Makespan {fmt_seconds(sv.get('makespan'))}; fairness (coefficient of variation "
             f"of the workers' completion times, 0 = all finished together): "
             f"{'-' if fair is None else f'{fair:.3f}'}; tests rerun after a lost worker: "
             f"{sv.get('retries_used', 0)}.", ""]
    retried = sv.get("retried") or []
    if retried:
        lines += ["Rerun after their worker was lost: " + ", ".join(f"`{r}`" for r in retried) + ".", ""]
    lines += ["| worker | slots (from) | GPUs (weight) | host | tests run | busy | idle | "
              "steals in/out | reruns taken | lost while running | finished at | state |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for x in sv.get("servers") or []:
        hw = x.get("hardware") or {}
        host = (f"{hw.get('cores', '?')} cores, {fmt_bytes(hw.get('memory_total'))}"
                if hw else "-")
        gpus = f"{x.get('gpus', 0)} ({x.get('gpu_weight') or 1:g})" if x.get("gpus") else "0"
        state = "alive" if x.get("alive") else f"LOST at {fmt_seconds(x.get('lost_at'))}"
        lines.append(
            f"| {cell(x['name'])} ({cell(x['url'])}) | {x['concurrency']} "
            f"({cell(x.get('slots_source', '-'))}) | {gpus} | {cell(host)} | **{x['tests_run']}** | "
            f"{fmt_seconds(x['busy'])} | {fmt_seconds(x['idle'])} | "
            f"{x['steals_in']}/{x['steals_out']} | {x['retries']} | {x['lost_items']} | "
            f"{fmt_seconds(x.get('completion'))} | {state} |")
    lines.append("")
    return lines
