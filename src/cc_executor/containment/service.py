"""The service's side of containment, in one object: the cgroups (`Containment`), the subreaper
(`AdoptionReaper`) woken by SIGCHLD and once a second, the start-up checks and /health's
section. The server only builds it, hands its parts to the runner, and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from .. import tree
from .adopted_log import AdoptedLog, end_stale
from .parent import Containment
from .reaper import AdoptionReaper

log = logging.getLogger("cc_executor.containment")

REAP_INTERVAL = 1.0  # the safety net under SIGCHLD (a signal can be coalesced or missed)
MAX_WATCHED = 1024  # pidfds held for adopted children when SIGCHLD is not ours


class ServiceContainment:
    def __init__(self, mode: str, leaders: Callable[[], set[int]], grace: float,
                 run_dir: str | os.PathLike[str] | None = None):
        self.subreaper = tree.become_subreaper()
        self.stale_adopted = end_stale(run_dir, grace)  # a crashed predecessor's
        self.adopted_log = AdoptedLog(run_dir)
        self.cgroups = Containment(mode)  # raises ContainmentError for an impossible `cgroup`
        self.reaper = AdoptionReaper(leaders, grace)
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sigchld = False
        self._watched: dict[int, int] = {}  # adopted pid -> its pidfd (when no SIGCHLD)

    def start(self) -> None:
        """SIGCHLD and a 1 s timer both wake the reaper (on the loop; cheap: one /proc file)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGCHLD, self._reap_soon)
            self._sigchld = True
        except (RuntimeError, ValueError, NotImplementedError):
            # Not the main thread, or uvloop, which keeps SIGCHLD for its own subprocesses:
            # the timer alone then, so an adopted child is a zombie for 1 s at most.
            self._sigchld = False
        self._task = self._loop.create_task(self._every_second())
        c = self.cgroups
        log.info("containment: %s (cgroup v2 %s, v1 %s, subreaper %s, reaping on %s, stale "
                 "cgroups removed %d, stale adopted processes ended %d)", c.mechanism, c.v2, c.v1,
                 self.subreaper, "SIGCHLD and a 1 s timer" if self._sigchld else "a 1 s timer",
                 c.cleaned, self.stale_adopted)
        logging.getLogger("cc_executor.events").info("containment", extra={"job_event": {
            "event": "containment", **c.describe(), "subreaper": self.subreaper}})

    def _reap_soon(self) -> None:
        self.reaper.reap()

    async def _every_second(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            self.reaper.reap()
            self.adopted_log.write(self.reaper.adopted())
            if not self._sigchld:
                self._watch_adopted()

    def _watch_adopted(self) -> None:
        """Without SIGCHLD: a pidfd per live adopted child, so its exit is reaped at once
        rather than at the next tick (bounded: `MAX_WATCHED` descriptors)."""
        live = set(self.reaper.adopted())
        for pid in [p for p in self._watched if p not in live]:
            self._unwatch(pid)
        for pid in live - self._watched.keys():
            if len(self._watched) >= MAX_WATCHED:
                break
            try:
                fd = os.pidfd_open(pid)
            except (AttributeError, OSError):
                continue
            self._watched[pid] = fd
            self._loop.add_reader(fd, self._adopted_exited, pid)

    def _adopted_exited(self, pid: int) -> None:
        self._unwatch(pid)
        self.reaper.reap()

    def _unwatch(self, pid: int) -> None:
        fd = self._watched.pop(pid, None)
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)

    async def close(self) -> None:
        """After every job ended: stop reaping on signal, end what was adopted, drop cgroups."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pid in list(self._watched):
            self._unwatch(pid)
        await self.reaper.end_all()
        self.adopted_log.close()
        if self._sigchld and self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
        self.cgroups.close()

    def describe(self) -> dict:
        return {**self.cgroups.describe(), "subreaper": self.subreaper,
                "reaping": "sigchld+1s" if self._sigchld else "1s+pidfd",
                "adopted": self.reaper.describe()}
