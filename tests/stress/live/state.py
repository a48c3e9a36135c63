"""What the live dashboard shows: the run's progress as events arrive, bounded, thread-safe.

Fed by stress.report.progress (started, finished, instance_finished, skipped, note), the load
driver's capacity steps (`step`) and the host trace (`host`, from its thread), read by the
dashboard server as JSON snapshots. Every list is bounded (a load run may start thousands of
tests): the timeline keeps the newest MAX_BARS executions, notes and host readings likewise.

Imports only the standard library.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

MAX_BARS = 600
MAX_NOTES = 40
MAX_HOST_POINTS = 600
MAX_RUNNING_SHOWN = 50


class LiveState:
    """The run as the dashboard sees it; every method may be called from any thread."""

    def __init__(self, title: str, total: int | None = None) -> None:
        self.title = title
        self.total = total
        self.phase = "starting"
        self.counts = {"passed": 0, "failed": 0, "skipped": 0, "lost": 0}
        self.version = 0
        self._t0 = time.time()
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, float]] = {}
        self._bars: deque[dict[str, Any]] = deque(maxlen=MAX_BARS)
        self._notes: deque[str] = deque(maxlen=MAX_NOTES)
        self._host: deque[dict[str, Any]] = deque(maxlen=MAX_HOST_POINTS)
        self._steps: list[dict[str, Any]] = []
        self._capacity: dict[str, Any] | None = None

    def _changed(self) -> None:
        self.version += 1

    # ---- events (the progress display's, and the run's) -----------------------------------------

    def set_phase(self, phase: str, total: int | None = None) -> None:
        with self._lock:
            self.phase = phase
            if total is not None:
                self.total = total
            self._changed()

    def started(self, key: str, label: str) -> None:
        with self._lock:
            self._running[key] = (label, time.time())
            self._changed()

    def _end(self, key: str, label: str, status: str, duration: float, counted: bool) -> None:
        with self._lock:
            began = self._running.pop(key, (label, time.time() - duration))[1]
            end = time.time()
            self._bars.append({"label": label, "start": round(began - self._t0, 3),
                               "end": round(end - self._t0, 3), "status": status})
            if counted:
                self.counts[status] = self.counts.get(status, 0) + 1
            self._changed()

    def finished(self, key: str, label: str, status: str, reason: str, duration: float,
                 message: str) -> None:
        if key not in self._running and duration <= 0:
            with self._lock:  # never started (could not connect, lost): counted, not drawn
                self.counts[status] = self.counts.get(status, 0) + 1
                self._changed()
            return
        self._end(key, label, status, duration, counted=True)

    def instance_finished(self, key: str, label: str, status: str, reason: str, duration: float,
                          message: str) -> None:
        self._end(key, label, status, duration, counted=False)

    def skipped(self, label: str, reason: str, runs: int = 1) -> None:
        with self._lock:
            self.counts["skipped"] += runs
            self._notes.append(f"SKIP {label}: {reason}")
            self._changed()

    def note(self, text: str) -> None:
        with self._lock:
            self._notes.append(text)
            self._changed()

    def step(self, step: dict[str, Any]) -> None:
        """One finished --find-capacity step (stress.run.capacity StepResult.to_json())."""
        keep = ("step", "concurrency", "held", "p95_duration", "error_rate", "attempts")
        with self._lock:
            self._steps.append({k: step.get(k) for k in keep})
            self._changed()

    def capacity(self, found: int | None, limited_by: str) -> None:
        with self._lock:
            self._capacity = {"max_sustainable_concurrency": found, "limited_by": limited_by}
            self._changed()

    def host(self, point: dict[str, Any]) -> None:
        """One host trace reading (stress.report.host_trace COLUMNS as a dict)."""
        with self._lock:
            self._host.append({"t": round(time.time() - self._t0, 3), "load1": point.get("load1"),
                               "cpu_pressure": point.get("cpu_pressure"),
                               "service_cpu_percent": point.get("service_cpu_percent"),
                               "service_rss_bytes": point.get("service_rss_bytes")})
            self._changed()

    # ---- reading --------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Some test is running (its bar grows even when no event arrives)."""
        return bool(self._running)

    def snapshot(self) -> dict[str, Any]:
        """Everything the page draws, as plain JSON values; times are seconds since the start."""
        now = time.time()
        with self._lock:
            running = sorted(self._running.values(), key=lambda r: r[1])
            bars = list(self._bars) + [
                {"label": label, "start": round(t - self._t0, 3), "end": round(now - self._t0, 3),
                 "status": "running"} for label, t in running]
            return {
                "title": self.title, "phase": self.phase, "total": self.total,
                "done": sum(self.counts.values()), "counts": dict(self.counts),
                "elapsed": round(now - self._t0, 2),
                "running": [{"label": label, "elapsed": round(now - t, 1)}
                            for label, t in running[:MAX_RUNNING_SHOWN]],
                "running_count": len(running), "bars": bars, "notes": list(self._notes),
                "steps": list(self._steps), "capacity": self._capacity,
                "host": list(self._host), "version": self.version,
            }


__all__ = ["LiveState", "MAX_BARS"]
