"""Reading the services' host while a load run goes: their /health, their process trees, OOM kills.

Owns `HostSampler`: one `sample(at)` gathers, from every service of the run, /health's
`jobs.queued` / `jobs.running`, its `load` reading (1-minute load, cores, free memory, and the PSI
shares `cpu_pressure` / `memory_pressure` / `io_pressure` when the service reports them) and
`throttle.max_load`; for a service on this host also the resident memory of its whole process tree
(psutil) and the host's OOM-kill counter (/proc/vmstat `oom_kill`). The result is a plain dict
with the fields of `stress.run.metrics.Sample` (the load driver builds the Sample, so this layer
needs nothing of the runner); the driver calls it about once a second.

Why defensive: /health is the service's, and its `load` section grows (PSI arrived after the
harness first read it). Every field may be missing, null, a number, or for pressure a nested
`{"some": {"avg10": ...}}`; what cannot be read is None, which reports show as "-". A /health
that does not answer within 2 s gives a sample of what this host can tell.

Imports `stress.service.managed` (the bounded HTTP GET), `cc_executor.load.read_load` and
psutil; nothing that runs tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psutil

from cc_executor.load import read_load
from stress.service.managed import fetch_json, health_url

HEALTH_TIMEOUT = 2.0
VMSTAT = "/proc/vmstat"
PRESSURES = ("cpu", "memory", "io")


def oom_kill_count(path: str = VMSTAT) -> int | None:
    """The host's cumulative OOM kills (Linux 4.13+), None where unreadable."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_rss(pid: int | None) -> int | None:
    """Resident bytes of `pid` and all its descendants; None when it is gone."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _pressure(load: dict[str, Any], resource: str) -> float | None:
    """A PSI share from /health `load`, in whichever form the service writes it."""
    nested = load.get("pressure")
    candidates = [load.get(f"{resource}_pressure"), load.get(f"psi_{resource}"),
                  nested.get(resource) if isinstance(nested, dict) else None]
    for c in candidates:
        if isinstance(c, dict):
            some = c.get("some")
            avg10 = some.get("avg10") if isinstance(some, dict) else c.get("avg10")
            # The kernel's avg10 is always a percentage; a `share` is already 0..1.
            c = avg10 / 100 if _number(avg10) is not None else c.get("share")
        if (v := _number(c)) is not None:
            return v
    return None


def read_health(body: Any) -> dict[str, Any]:
    """The fields a Sample takes from one /health body (missing ones None)."""
    body = body if isinstance(body, dict) else {}
    jobs = body.get("jobs") if isinstance(body.get("jobs"), dict) else {}
    load = body.get("load") if isinstance(body.get("load"), dict) else {}
    throttle = body.get("throttle") if isinstance(body.get("throttle"), dict) else {}
    cores = _number(load.get("cores"))
    free = _number(load.get("mem_available"))
    queued = _number(jobs.get("queued"))
    running = _number(jobs.get("running"))
    return {
        "service_queue": None if queued is None else int(queued),
        "running": None if running is None else int(running),
        "load1": _number(load.get("load1")), "cores": None if cores is None else int(cores),
        "mem_available": None if free is None else int(free),
        "max_load": _number(throttle.get("max_load")),
        **{f"{r}_pressure": _pressure(load, r) for r in PRESSURES},
    }


def _combine(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several services: queues and running jobs add up, the rest is the worst one's."""
    out: dict[str, Any] = {}
    for key in ("service_queue", "running"):
        got = [p[key] for p in parts if p.get(key) is not None]
        out[key] = sum(got) if got else None
    for key in ("load1", "cores", "max_load", *(f"{r}_pressure" for r in PRESSURES)):
        got = [p[key] for p in parts if p.get(key) is not None]
        out[key] = max(got) if got else None
    got = [p["mem_available"] for p in parts if p.get("mem_available") is not None]
    out["mem_available"] = min(got) if got else None
    return out


class HostSampler:
    """Samples the run's services; `pids` are known for services on this host (else None)."""

    def __init__(self, urls: Sequence[str], pids: Sequence[int | None], *, local: bool) -> None:
        self.urls = list(urls)
        self.pids = list(pids)
        self.local = local
        self.oom_base = oom_kill_count() if local else None

    async def _health(self, url: str) -> dict[str, Any]:
        try:
            status, body = await fetch_json(health_url(url), timeout=HEALTH_TIMEOUT)
        except Exception:  # noqa: BLE001 - an unreadable /health is a sample without it
            return read_health(None)
        return read_health(body if status == 200 else None)

    def _local(self) -> dict[str, Any]:
        rss = [tree_rss(p) for p in self.pids]
        known = [r for r in rss if r is not None]
        oom = oom_kill_count() if self.local else None
        reading = read_load() if self.local else None
        return {"rss": sum(known) if known else None,
                "oom_kills": None if oom is None or self.oom_base is None else oom - self.oom_base,
                "reading": reading}

    async def sample(self) -> dict[str, Any]:
        """One reading: the fields of `stress.run.metrics.Sample` but `at`."""
        parts, local = await asyncio.gather(
            asyncio.gather(*(self._health(u) for u in self.urls)),
            asyncio.to_thread(self._local))
        h = _combine(parts)
        reading = local.pop("reading")
        if reading is not None and h["load1"] is None:  # a service without a load section
            h.update(load1=reading.load1, cores=reading.cores, mem_available=reading.mem_available)
        return {**h, **local}


__all__ = ["HEALTH_TIMEOUT", "HostSampler", "oom_kill_count", "read_health", "tree_rss"]
