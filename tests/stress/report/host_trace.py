"""A light trace of the host and the service over every run: load, PSI, service CPU and memory.

Why every run, and not only `stress.complex` (which samples each job tree in detail) or load
runs (which sample /health): the HTML report's "service and host over time" chart should exist
for an ordinary run too, and a reading once a second costs a few /proc reads (a few ms on a
busy host, benchmarks/bench_report.py), done in a thread so the event loop receiving test
output never waits on it.

One point per second: `t` (seconds since the trace started), the 1-minute load, the share of
the last interval that some task stalled on CPU, memory and IO (Linux PSI totals, exact over the
interval; None without PSI), and for the services on this host (pids known) their summed CPU %
(100 = one core) and RSS, plus the RSS of their whole process trees (service + jobs).

Imports psutil, `cc_executor.load` and `cc_executor.pressure` (public helpers, not the service's
internals) and the standard library.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from cc_executor.load import read_load
from cc_executor.pressure import read_totals, window

INTERVAL = 1.0
MAX_POINTS = 900
MIN_PSI_WINDOW = 0.2
"""Seconds: a PSI share over a shorter window is noise, and is left out."""
COLUMNS = ["t", "load1", "cpu_pressure", "memory_pressure", "io_pressure", "service_cpu_percent",
           "service_rss_bytes", "tree_rss_bytes"]


def thin(points: list[list[Any]], limit: int) -> list[list[Any]]:
    """At most `limit` points, evenly picked, the first and last kept."""
    if len(points) <= limit or limit < 2:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


class HostTrace:
    """Samples every `interval` s in a daemon thread between `start` and `stop`."""

    def __init__(self, pids: Sequence[int | None] = (), interval: float = INTERVAL,
                 psi_dir: str = "/proc/pressure",
                 listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.pids = [p for p in pids if p]
        self.interval = interval
        self.psi_dir = psi_dir
        self.listener = listener
        """Called with each point as a dict (the live dashboard); exceptions are ignored."""
        self.points: list[list[Any]] = []
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self.started_at: float | None = None
        """Unix time of the first point's clock (t = 0)."""
        self._psi = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self.started_at = time.time()
        self._psi = read_totals(self.psi_dir, self._t0)
        self._thread = threading.Thread(target=self._loop, name="stress-host-trace", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop sampling (bounded wait), take a last reading (a run shorter than the interval
        still has two points), and return the trace for report.json's `trace`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
            self._tick()
        return {"interval": self.interval, "started_at": self.started_at, "columns": COLUMNS,
                "service_pids": self.pids, "points": thin(self.points, MAX_POINTS)}

    def _loop(self) -> None:
        self._tick()
        while not self._stop.wait(self.interval):
            self._tick()

    def _tick(self) -> None:
        try:
            point = self.sample()
        except Exception:  # noqa: BLE001 - a failed reading must not end the trace
            return
        if self.listener is not None:
            try:
                self.listener(dict(zip(COLUMNS, point)))
            except Exception:  # noqa: BLE001 - the dashboard must not end the trace
                pass

    def sample(self) -> list[Any]:
        now = time.monotonic()
        load1 = read_load().load1
        totals = read_totals(self.psi_dir, now)
        psi = window(self._psi, totals) if self._psi is not None and totals is not None else None
        if psi is not None and psi.seconds < MIN_PSI_WINDOW:
            psi = None  # too short to say anything (the reading right after the start)
        else:
            self._psi = totals
        cpu, rss, tree = self._services()
        point = [round(now - self._t0, 3), round(load1, 3),
                 *(None if psi is None else round(getattr(psi, r), 4)
                   for r in ("cpu", "memory", "io")),
                 cpu, rss, tree]
        self.points.append(point)
        if len(self.points) > 4 * MAX_POINTS:
            self.points = thin(self.points, 2 * MAX_POINTS)
        return point

    def _services(self) -> tuple[float | None, int | None, int | None]:
        if not self.pids:
            return None, None, None
        cpu = 0.0
        rss = tree = 0
        for pid in self.pids:
            p = self._procs.get(pid)
            try:
                if p is None:
                    p = self._procs[pid] = psutil.Process(pid)
                    p.cpu_percent(None)
                with p.oneshot():
                    cpu += p.cpu_percent(None)
                    r = p.memory_info().rss
                rss += r
                tree += r
                for c in p.children(recursive=True):
                    try:
                        tree += c.memory_info().rss
                    except psutil.Error:
                        continue
            except psutil.Error:
                self._procs.pop(pid, None)
        return round(cpu, 1), rss, tree


__all__ = ["COLUMNS", "HostTrace", "INTERVAL", "thin"]
