"""Resource use of the service and of each test's job tree, sampled in a background thread.

Why a thread: psutil reads /proc synchronously; a few hundred small reads every half second are
cheap, but they must never delay the event loop that is receiving a test's output (a late read
there would look like a stall). The thread wakes at once when a job starts, so even a test shorter
than the interval gets a sample.

What a job tree is: the job's process and its descendants, plus any of the service's descendants in
the job's process group (the service is a subreaper, so a daemonised grandchild is re-parented to
it but keeps its group). CPU % is psutil's per-process figure (100 = one core) summed over the tree.

Imports psutil and the standard library only, nothing of the harness: the CLI starts it and the
runner tells it when each job begins and ends; the summaries it returns are plain dicts, which
stress.report.markdown_usage draws.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

INTERVAL = 0.5
MAX_RUN_POINTS = 600
MAX_TEST_POINTS = 120


def downsample(points: list[list[float]], limit: int) -> list[list[float]]:
    """At most `limit` points, evenly picked, always keeping the first and last."""
    if len(points) <= limit or limit < 2:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


@dataclass
class _Peaks:
    cpu: float = 0.0
    rss: int = 0
    threads: int = 0
    procs: int = 0

    def update(self, cpu: float, rss: int, threads: int, procs: int) -> None:
        self.cpu = max(self.cpu, cpu)
        self.rss = max(self.rss, rss)
        self.threads = max(self.threads, threads)
        self.procs = max(self.procs, procs)

    def to_json(self) -> dict[str, Any]:
        return {"cpu_percent": round(self.cpu, 1), "rss_bytes": self.rss, "threads": self.threads,
                "processes": self.procs}


@dataclass
class _Watch:
    started: float
    pid: int | None = None
    pgid: int | None = None
    samples: int = 0
    service: _Peaks = field(default_factory=_Peaks)
    job: _Peaks = field(default_factory=_Peaks)
    timeline: list[list[float]] = field(default_factory=list)


class ResourceMonitor:
    """Samples every `interval` s: the service process (if known) and each watched job tree."""

    def __init__(self, service_pid: int | None, interval: float = INTERVAL) -> None:
        self.service_pid = service_pid
        self.interval = interval
        self._procs: dict[int, psutil.Process] = {}
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self.run_peaks = _Peaks()
        self.run_timeline: list[list[float]] = []
        self.samples = 0
        self.errors = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="stress-resources", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    # ---- per test --------------------------------------------------------------------------

    def begin(self, key: str) -> None:
        with self._lock:
            self._watches[key] = _Watch(started=time.monotonic())

    def set_job(self, key: str, pid: int | None, pgid: int | None) -> None:
        with self._lock:
            w = self._watches.get(key)
            if w is not None and pid is not None:
                w.pid, w.pgid = pid, pgid if pgid is not None else pid
        self._wake.set()

    def end(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            w = self._watches.pop(key, None)
        if w is None:
            return None
        return {
            "samples": w.samples,
            "service": w.service.to_json() if self.service_pid else None,
            "job": w.job.to_json(),
            "timeline_columns": ["t", "service_cpu_percent", "service_rss_bytes",
                                 "job_cpu_percent", "job_rss_bytes", "job_processes"],
            "timeline": downsample(w.timeline, MAX_TEST_POINTS),
        }

    def run_summary(self) -> dict[str, Any]:
        return {
            "service_pid": self.service_pid,
            "interval": self.interval,
            "samples": self.samples,
            "errors": self.errors,
            "peak": self.run_peaks.to_json(),
            "timeline_columns": ["t", "service_cpu_percent", "service_rss_bytes", "service_threads",
                                 "processes"],
            "timeline": downsample(self.run_timeline, MAX_RUN_POINTS),
        }

    # ---- sampling (thread) -----------------------------------------------------------------

    def _proc(self, pid: int) -> psutil.Process | None:
        p = self._procs.get(pid)
        if p is not None and p.is_running():
            return p
        try:
            p = psutil.Process(pid)
            p.cpu_percent(None)  # first call primes the counter
        except psutil.Error:
            self._procs.pop(pid, None)
            return None
        self._procs[pid] = p
        return p

    def _read(self, p: psutil.Process) -> tuple[float, int, int]:
        with p.oneshot():
            return p.cpu_percent(None), p.memory_info().rss, p.num_threads()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a failed sample must not end monitoring
                self.errors += 1
            self._wake.wait(self.interval)
            self._wake.clear()

    def sample(self) -> None:
        now = time.monotonic()
        svc = (0.0, 0, 0)
        descendants: list[psutil.Process] = []
        if self.service_pid is not None:
            sp = self._proc(self.service_pid)
            if sp is not None:
                try:
                    svc = self._read(sp)
                    descendants = sp.children(recursive=True)
                except psutil.Error:
                    pass
        seen = {self.service_pid}
        with self._lock:
            watches = [(k, w) for k, w in self._watches.items()]
        job_reads: dict[str, tuple[float, int, int, int]] = {}
        for key, w in watches:
            if w.pid is None:
                continue
            tree: dict[int, None] = {w.pid: None}
            root = self._proc(w.pid)
            if root is not None:
                try:
                    for c in root.children(recursive=True):
                        tree[c.pid] = None
                except psutil.Error:
                    pass
            for d in descendants:
                if d.pid not in tree:
                    try:
                        if os.getpgid(d.pid) == w.pgid:
                            tree[d.pid] = None
                    except OSError:
                        pass
            cpu = 0.0
            rss = threads = count = 0
            for pid in tree:
                p = self._proc(pid)
                if p is None:
                    continue
                try:
                    c, r, t = self._read(p)
                except psutil.Error:
                    continue
                cpu, rss, threads, count = cpu + c, rss + r, threads + t, count + 1
                seen.add(pid)
            job_reads[key] = (cpu, rss, threads, count)
        for d in descendants:
            seen.add(d.pid)
        for pid in [p for p in self._procs if p not in seen]:
            self._procs.pop(pid, None)
        procs = len(descendants) + (1 if self.service_pid is not None else 0)
        with self._lock:
            for key, w in self._watches.items():
                w.samples += 1
                w.service.update(svc[0], svc[1], svc[2], procs)
                j = job_reads.get(key, (0.0, 0, 0, 0))
                w.job.update(*j)
                w.timeline.append([round(now - w.started, 3), round(svc[0], 1), svc[1],
                                   round(j[0], 1), j[1], j[3]])
                if len(w.timeline) > 4 * MAX_TEST_POINTS:
                    w.timeline = downsample(w.timeline, 2 * MAX_TEST_POINTS)
        self.samples += 1
        self.run_peaks.update(svc[0], svc[1], svc[2], procs)
        self.run_timeline.append([round(now - self._t0, 3), round(svc[0], 1), svc[1], svc[2], procs])
        if len(self.run_timeline) > 4 * MAX_RUN_POINTS:
            self.run_timeline = downsample(self.run_timeline, 2 * MAX_RUN_POINTS)
