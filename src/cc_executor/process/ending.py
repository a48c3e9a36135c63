"""Ending a run's processes: which nets of `tree` to cast, and counting what they caught.

With a `JobBox` (the run has its own cgroups), the cgroup is the net that nothing escapes: its
members are signalled with the rest, and what is left after the grace dies by `cgroup.kill`
(v2) or by SIGKILL to each member (v1); the end waits until the cgroup is empty."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

from .. import tree
from ..containment import JobBox

_EMPTY_TIMEOUT = 5.0


class TreeEnder:
    """Ends the processes of one run; `killed` counts every process signalled, for `RunEnd`.

    The count grows before each kill is awaited, so a run ended while a kill is under way still
    reports the processes that kill went after."""

    def __init__(self, leader: subprocess.Popen, run_id: str, grace: float,
                 box: JobBox | None = None):
        self._leader = leader
        self.pid = self.pgid = leader.pid  # a session leader: its group is the run's
        self.run_id = run_id
        self.grace = grace
        self.box = box if box is not None and box.dirs() else None
        self.killed = 0

    def leftovers(self) -> bool:
        """Whether anything of the run is still alive (the leader aside, when it is gone)."""
        return tree.group_alive(self.pgid) or (self.box is not None and self.box.populated())

    async def end_tree(self, *, with_leader: bool) -> None:
        """All nets (descendants, group, marker, cgroup); the leader too if `with_leader` (and
        not reaped yet: a reaped pid may be somebody else's by now)."""
        pids = tree.snapshot(self.pid if with_leader else None, self.pgid, self.run_id)
        box = self.box
        if box is not None:
            pids |= box.members()
        if with_leader and self._leader.returncode is None:
            pids.add(self.pid)
        if not pids and not self.leftovers():
            return
        self.killed += len(pids)
        keep = frozenset({self.pid})
        if box is None:
            await tree.kill_tree(pids, self.pgid, self.grace, keep=keep)
            return
        await self._end_box(box, pids, keep)

    async def _end_box(self, box: JobBox, pids: set[int], keep: frozenset[int]) -> None:
        """SIGTERM (and SIGCONT) to everything, the grace, then the cgroup's kill; wait until
        the cgroup is empty (bounded)."""
        tree._signal_all(self.pgid, pids, signal.SIGTERM)
        tree._signal_all(self.pgid, pids, signal.SIGCONT)
        if not await self._wait_empty(box, pids, keep, self.grace):
            box.kill()
            tree._signal_all(self.pgid, pids, signal.SIGKILL)
            await self._wait_empty(box, pids, keep, _EMPTY_TIMEOUT, kill=box)

    async def _wait_empty(self, box: JobBox, pids: set[int], keep: frozenset[int],
                          limit: float, kill: JobBox | None = None) -> bool:
        deadline = time.monotonic() + limit
        delay = 0.002
        while True:
            left = tree._remaining(self.pgid, pids, keep)
            if not left and not box.populated():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            if kill is not None:  # v1 cgroups: members forked since the last pass
                kill.kill()

    async def end_marked(self) -> bool:
        """End the run's processes that left both its group and its parent chain (found by the
        marker in their environment). Returns whether there were any."""
        # A full /proc scan (environ of every process): in a thread, never on the loop.
        pids = await asyncio.to_thread(tree.marked, self.run_id)
        if pids:
            self.killed += len(pids)
            await tree.kill_tree(pids, None, self.grace)
        return bool(pids)

    async def sweep_adopted(self) -> None:
        """As subreaper we inherit orphans: end the ones that belong to this run."""
        mine = tree.marked(self.run_id, tree.own_children())
        if mine:
            self.killed += len(mine)
            await tree.kill_tree(mine, None, self.grace)
