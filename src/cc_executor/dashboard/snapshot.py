"""One feed snapshot, read from the service: its job table, host sample, admission state and the
recent events `observe.activity` kept. Read-only: building a snapshot changes nothing."""

from __future__ import annotations

import os
import time
from typing import Any

from .. import __version__
from ..protocol.feed import FeedCompletion, FeedDecision, FeedJob, FeedSnapshot

MAX_JOBS_SHOWN = 200  # a page need not draw thousands of rows; `counts` has the totals
ARGV_WORDS = 4
WORD_CHARS = 60


def argv_head(argv: list[str]) -> str:
    """The program's base name and its first few arguments, each shortened."""
    if not argv:
        return ""
    words = [os.path.basename(argv[0]), *argv[1:ARGV_WORDS]]
    shown = [w if len(w) <= WORD_CHARS else w[:WORD_CHARS - 1] + "…" for w in words]
    return " ".join(shown) + (" …" if len(argv) > ARGV_WORDS else "")


def _output_bytes(job: Any) -> int:
    return job.run.output_bytes() if job.run is not None else 0


def _job_row(job: Any, now: float, position: int | None) -> FeedJob:
    run = job.run
    state = job.state
    if run is not None and run.paused:
        state = "paused"
    elif state == "running" and job.owner is None:  # a resumable job whose client left
        state = "detached"
    since = job.started_at if job.started_at is not None else job.queued_at
    return FeedJob(job_id=job.job_id, state=state, argv_head=argv_head(job.argv),
                   elapsed=round(max(0.0, now - since), 3), bytes=_output_bytes(job),
                   position=position)


def _jobs(service: Any) -> tuple[list[FeedJob], dict[str, int]]:
    jobs = service.jobs
    table = list(jobs.jobs.values()) if jobs is not None else []
    now = time.monotonic()
    positions = {id(j): i + 1 for i, j in enumerate(jobs.queue)} if jobs is not None else {}
    live = [j for j in table if j.state != "ended"]
    rows = [_job_row(j, now, positions.get(id(j))) for j in live[:MAX_JOBS_SHOWN]]
    counts = {
        "running": jobs.running if jobs is not None else 0,
        "queued": len(jobs.queue) if jobs is not None else 0,
        "detached": jobs.resumer.count_detached() if jobs is not None else 0,
        "connections": len(service.connections),
    }
    return rows, counts


def _host(service: Any) -> dict[str, Any] | None:
    monitor = service.monitor
    reading = monitor.latest if monitor is not None else None
    if reading is None:
        return None
    keys = ("load1", "load5", "load15", "cores", "mem_available", "mem_total",
            "cpu_pressure", "memory_pressure", "io_pressure")
    return {k: getattr(reading, k, None) for k in keys}


def _completion(event: dict[str, Any]) -> FeedCompletion:
    size = sum(v for k in ("stdout_bytes", "stderr_bytes")
               if isinstance(v := event.get(k), int))
    duration = event.get("duration")
    return FeedCompletion(
        job_id=str(event.get("job_id")), argv_head=os.path.basename(event.get("argv0") or ""),
        reason=str(event.get("reason")), exit_code=event.get("exit_code"),
        duration=float(duration) if isinstance(duration, (int, float)) else None,
        wait=round(float(event.get("wait") or 0.0), 4), bytes=size, ended_at=event["ts"])


def build_snapshot(service: Any, completions: int = 20) -> FeedSnapshot:
    activity = service.observe.activity
    rows, counts = _jobs(service)
    decisions = [FeedDecision(job_id=d["job_id"], held=d["held"], reason=d["reason"],
                              signal=d["signal"], at=d["ts"])
                 for d in list(activity.decisions)[::-1]]
    return FeedSnapshot(
        time=time.time(), version=__version__, model=service.settings.model,
        uptime=round(time.time() - service.started, 3), counts=counts, jobs=rows,
        jobs_shown=len(rows), host=_host(service),
        admission=service.admission.describe() if service.settings.throttle else
        {"rule": "off (throttle disabled)"},
        decisions=decisions, completions=[_completion(e) for e in activity.recent(completions)])
