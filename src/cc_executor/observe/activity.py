"""What the service did lately, for the views that show it: /metrics and /dashboard.

Why observe the event log instead of calling out from the job code: every job event (queued,
started, completed with its end reason, sizes and duration; pause/resume/cancel; refused upgrades;
reloads) is already recorded through the `cc_executor.events` logger, on the loop turn after the
reply it follows. A handler on that logger sees each event once, costs the request path nothing,
and keeps the job code free of calls to the views. The handler keeps what the views need and
nothing per job once the job has ended, except a short ring of recent completions.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

EVENTS_LOGGER = "cc_executor.events"
RECENT_COMPLETIONS = 50
RECENT_DECISIONS = 20
# A job's queued/started times are kept while it lives; this bounds the table if an event of
# a job's end were ever missed (a job's events always end with `completed`).
MAX_TRACKED = 100_000

Observer = Callable[[dict[str, Any]], None]


class Activity(logging.Handler):
    """Watches the job events; tells each observer; remembers recent completions and
    admission decisions, and when each live job was queued and started (for wait times)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.observers: list[Observer] = []
        self.completions: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=RECENT_COMPLETIONS)
        self.decisions: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=RECENT_DECISIONS)
        self.queued_at: dict[str, float] = {}
        self.started_at: dict[str, float] = {}
        self.programs: dict[str, str] = {}  # job id -> its executable, while it lives

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "job_event", None)
        if not isinstance(event, dict):
            return
        event = {"ts": record.created, **event}
        try:
            self._remember(event)
            for observer in self.observers:
                observer(event)
        except Exception:  # a view's bug must never reach the job code that logged
            self.handleError(record)

    def _remember(self, event: dict[str, Any]) -> None:
        kind, job_id, ts = event.get("event"), event.get("job_id"), event["ts"]
        if kind == "queued" and job_id and len(self.queued_at) < MAX_TRACKED:
            self.queued_at[job_id] = ts
            self.decisions.append({"ts": ts, "job_id": job_id, "held": True,
                                   "reason": event.get("reason", ""),
                                   "signal": event.get("signal")})
        elif kind == "started" and job_id and len(self.started_at) < MAX_TRACKED:
            self.started_at[job_id] = ts
            self.programs[job_id] = str(event.get("argv0") or "")
            if job_id in self.queued_at:
                self.decisions.append({"ts": ts, "job_id": job_id, "held": False,
                                       "reason": "admitted after waiting", "signal": None})
        elif kind == "completed" and job_id:
            queued, started = self.queued_at.pop(job_id, None), self.started_at.pop(job_id, None)
            wait = (started if started is not None else ts) - queued if queued else 0.0
            event["wait"] = max(0.0, wait)
            event["ran"] = started is not None
            event["argv0"] = self.programs.pop(job_id, "")
            self.completions.append(event)

    def recent(self, limit: int = RECENT_COMPLETIONS) -> list[dict[str, Any]]:
        """The latest completions, newest first."""
        return list(self.completions)[::-1][:limit]


def attach(activity: Activity) -> Activity:
    """Hang `activity` on the events logger (INFO and up, whether or not the file log could be
    opened). Call after the event log is set up: setting it up replaces the logger's handlers."""
    logger = logging.getLogger(EVENTS_LOGGER)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.propagate = False  # job events are not console lines, even without the file log
    logger.addHandler(activity)
    return activity


def detach(activity: Activity) -> None:
    logging.getLogger(EVENTS_LOGGER).removeHandler(activity)
