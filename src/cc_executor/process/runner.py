"""Starting runs: `start` for one, `ProcessRunner` for an owner of many (shared registry,
shutdown of them all)."""

from __future__ import annotations

import asyncio
import os

from ..containment import AdoptionReaper, Containment
from ..registry import Registry
from .run import Run
from .spec import RunSpec


async def start(spec: RunSpec, registry: Registry | None = None) -> Run:
    """Start `spec` and return its `Run`. Raises SpawnError when it cannot start."""
    run = Run(spec, registry)
    run._spawn()
    if registry is not None:
        await asyncio.sleep(0)  # the registry record is written on the next loop turn
    return run


class ProcessRunner:
    """All runs of one owner (the service, a harness), with a shared registry and shutdown."""

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, reap_stale: bool = True,
                 containment: Containment | None = None, reaper: AdoptionReaper | None = None):
        self.registry = Registry(run_dir) if run_dir else None
        self.containment = containment
        self.reaper = reaper
        """Told of each run's start and end; sweeps adopted processes after each end."""
        self._sweeps: set[asyncio.Task] = set()
        self.runs: dict[str, Run] = {}
        self.reaped: list[dict] = []
        if self.registry is not None and reap_stale:
            self.reaped = self.registry.reap_stale()

    async def start(self, spec: RunSpec) -> Run:
        run = self.start_nowait(spec)
        await asyncio.sleep(0)  # let the registry record be written before returning
        return run

    def start_nowait(self, spec: RunSpec) -> Run:
        """Spawn now (the spawn itself is synchronous); must be called with a running loop."""
        run = Run(spec, self.registry, self.containment)
        if self.reaper is not None:
            self.reaper.job_started(run.run_id)
        try:
            run._spawn()
        except BaseException:
            if self.reaper is not None:
                self.reaper.job_ended(run.run_id)
            raise
        self.runs[run.run_id] = run
        run._end_fut.add_done_callback(lambda _f, rid=run.run_id: self._ended(rid))
        return run

    def _ended(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        if self.reaper is not None:
            self.reaper.job_ended(run_id)
            task = asyncio.get_running_loop().create_task(self.reaper.sweep())
            self._sweeps.add(task)
            task.add_done_callback(self._sweeps.discard)

    async def shutdown(self, timeout: float | None = None) -> None:
        """End every live run (reason shutdown) and wait for their ends."""
        runs = list(self.runs.values())
        for run in runs:
            run.shutdown()
        if runs:
            await asyncio.wait([asyncio.ensure_future(r.wait()) for r in runs], timeout=timeout)
        if self._sweeps:
            await asyncio.wait(set(self._sweeps), timeout=timeout)
        if self.reaper is not None:
            await self.reaper.end_all()
        if self.registry is not None and not self.runs:
            await asyncio.sleep(0)  # the ended runs' removals (queued by their ends) first
            self.registry.close()
