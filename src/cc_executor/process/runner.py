"""Starting runs: `start` for one, `ProcessRunner` for an owner of many (shared registry,
shutdown of them all)."""

from __future__ import annotations

import asyncio
import os

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

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, reap_stale: bool = True):
        self.registry = Registry(run_dir) if run_dir else None
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
        run = Run(spec, self.registry)
        run._spawn()
        self.runs[run.run_id] = run
        run._end_fut.add_done_callback(lambda _f, rid=run.run_id: self.runs.pop(rid, None))
        return run

    async def shutdown(self, timeout: float | None = None) -> None:
        """End every live run (reason shutdown) and wait for their ends."""
        runs = list(self.runs.values())
        for run in runs:
            run.shutdown()
        if runs:
            await asyncio.wait([asyncio.ensure_future(r.wait()) for r in runs], timeout=timeout)
