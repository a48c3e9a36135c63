"""The service's Prometheus metrics: counters and histograms fed by job events, and gauges read
from the service at scrape time.

Why two kinds: what happened (jobs ended by reason, their waits and durations, bytes, holds,
refusals) can only be counted as it happens, from the events `observe.activity` sees; what is
(jobs running and queued, connections, host load and pressure) is read fresh at each scrape, so
a gauge can never drift from the job table. Each service has its own registry (never the
process-global one), so two services in one process do not mix their counts.

Naming follows Prometheus conventions: the `cc_executor_` prefix, base units (seconds, bytes,
ratios 0-1), `_total` on counters, and no label that grows with the jobs (no job ids or argv):
labels are end reasons, admission signals, streams, refusal reasons and PSI resources, each a
short fixed set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

disable_created_metrics()  # `_created` series double every counter; scrapers rarely use them
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
                    3600)
STREAMS = ("stdout", "stderr")
# Event names another part of the service may log when it ends processes nobody owns any more
# (a previous server's runs at start, a periodic sweep): `ended` says how many.
ORPHAN_EVENTS = frozenset({"orphans_ended", "sweep"})


class Metrics:
    """One service's registry. `on_event` is an `observe.activity` observer."""

    def __init__(self, service: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.completed = Counter("cc_executor_jobs_completed", "Jobs ended, by end reason",
                                 ["reason"], registry=r)
        self.started = Counter("cc_executor_jobs_started", "Jobs whose process started",
                               registry=r)
        self.wait = Histogram("cc_executor_job_wait_seconds", "Time a job waited in the queue "
                              "before it started (or ended unstarted), by end reason",
                              ["reason"], buckets=WAIT_BUCKETS, registry=r)
        self.duration = Histogram("cc_executor_job_duration_seconds", "Run time of a started "
                                  "job, by end reason", ["reason"], buckets=DURATION_BUCKETS,
                                  registry=r)
        self.output = Counter("cc_executor_job_output_bytes", "Output bytes the jobs wrote, "
                              "by stream", ["stream"], registry=r)
        self.held = Counter("cc_executor_admission_held", "Jobs queued instead of started, by "
                            "the signal that held them (queue: behind earlier jobs)",
                            ["signal"], registry=r)
        self.stalls = Counter("cc_executor_job_stalls", "Jobs ended for silence "
                              "(stall_timeout)", registry=r)
        self.timeouts = Counter("cc_executor_job_timeouts", "Jobs ended by their total "
                                "timeout, or unstarted by queue_timeout", ["kind"], registry=r)
        self.cancels = Counter("cc_executor_job_cancels", "Jobs cancelled (a CANCEL, or the "
                               "client left)", registry=r)
        self.orphans = Counter("cc_executor_orphans_ended", "Processes of runs nobody owned "
                               "any more, ended by the service's sweep", registry=r)
        self.refusals = Counter("cc_executor_upgrades_refused", "WebSocket upgrades refused, "
                                "by reason", ["reason"], registry=r)
        r.register(LiveCollector(service))

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "completed":
            self._completed(event)
        elif kind == "started":
            self.started.inc()
        elif kind == "queued":
            self.held.labels(event.get("signal") or "queue").inc()
        elif kind in ORPHAN_EVENTS:
            self.orphans_ended(event.get("ended", 1))

    def _completed(self, event: dict[str, Any]) -> None:
        reason = str(event.get("reason") or "unknown")
        self.completed.labels(reason).inc()
        self.wait.labels(reason).observe(float(event.get("wait") or 0.0))
        if event.get("ran"):
            self.duration.labels(reason).observe(float(event.get("duration") or 0.0))
        for stream in STREAMS:
            size = event.get(f"{stream}_bytes")
            if isinstance(size, int) and size > 0:
                self.output.labels(stream).inc(size)
        if reason == "stalled":
            self.stalls.inc()
        elif reason == "timeout":
            self.timeouts.labels("run").inc()
        elif reason == "queue_timeout":
            self.timeouts.labels("queue").inc()
        elif reason == "cancelled":
            self.cancels.inc()

    def orphans_ended(self, count: int) -> None:
        if isinstance(count, int) and count > 0:
            self.orphans.inc(count)

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None
           ) -> GaugeMetricFamily | None:
    if value is None:
        return None
    if labels:
        g = GaugeMetricFamily(name, doc, labels=list(labels))
        g.add_metric(list(labels.values()), value)
        return g
    return GaugeMetricFamily(name, doc, value=value)


class LiveCollector(Collector):
    """Gauges read from the service at each scrape: jobs, connections, host load, pressure."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def describe(self) -> list:
        return []  # read fresh at each scrape; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for family in (*self._jobs(), *self._host()):
            if family is not None:
                yield family

    def _jobs(self) -> list[GaugeMetricFamily | None]:
        s = self.service
        jobs = s.jobs
        detached = jobs.resumer.count_detached() if jobs is not None else 0
        info = GaugeMetricFamily("cc_executor_build_info", "Version, and what answers claude "
                                 "jobs (real or simulated); always 1", labels=["version", "model"])
        info.add_metric([__version__, s.settings.model], 1)
        return [
            info,
            _gauge("cc_executor_start_time_seconds", "When the service started, Unix time",
                   s.started),
            _gauge("cc_executor_jobs_running", "Jobs running now", jobs.running if jobs else 0),
            _gauge("cc_executor_jobs_queued", "Jobs waiting to start",
                   len(jobs.queue) if jobs else 0),
            _gauge("cc_executor_jobs_detached", "Jobs running with no client attached",
                   detached),
            _gauge("cc_executor_connections", "Open WebSocket connections",
                   len(s.connections)),
            _gauge("cc_executor_jobs_cpu_cores", "CPU the running jobs use, measured, in cores",
                   sum(s.usage.rates.values())),
            _gauge("cc_executor_jobs_rss_bytes", "Resident memory of the running jobs",
                   s.usage.total_rss()),
            _gauge("cc_executor_admission_window_jobs", "Young jobs the slow-start window "
                   "admits at once", getattr(s.admission, "window", None)),
        ]

    def _host(self) -> list[GaugeMetricFamily | None]:
        monitor = self.service.monitor
        reading = monitor.latest if monitor is not None else None
        if reading is None:
            return []
        out = [
            _gauge("cc_executor_host_load1", "Host 1-minute load average", reading.load1),
            _gauge("cc_executor_host_load5", "Host 5-minute load average", reading.load5),
            _gauge("cc_executor_host_load15", "Host 15-minute load average", reading.load15),
            _gauge("cc_executor_host_cpu_cores", "Host CPU cores", reading.cores),
            _gauge("cc_executor_host_memory_available_bytes", "Host memory available",
                   reading.mem_available),
            _gauge("cc_executor_host_memory_total_bytes", "Host memory", reading.mem_total),
        ]
        pressure = GaugeMetricFamily("cc_executor_host_pressure_ratio", "Share of the last "
                                     "sample window some task stalled on a resource (PSI)",
                                     labels=["resource"])
        found = False
        for resource in ("cpu", "memory", "io"):
            value = getattr(reading, f"{resource}_pressure", None)
            if value is not None:
                pressure.add_metric([resource], value)
                found = True
        if found:
            out.append(pressure)
        return out
