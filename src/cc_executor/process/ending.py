"""Ending a run's processes: which nets of `tree` to cast, and counting what they caught."""

from __future__ import annotations

import asyncio
import subprocess

from .. import tree


class TreeEnder:
    """Ends the processes of one run; `killed` counts every process signalled, for `RunEnd`.

    The count grows before each kill is awaited, so a run ended while a kill is under way still
    reports the processes that kill went after."""

    def __init__(self, leader: subprocess.Popen, run_id: str, grace: float):
        self._leader = leader
        self.pid = self.pgid = leader.pid  # a session leader: its group is the run's
        self.run_id = run_id
        self.grace = grace
        self.killed = 0

    async def end_tree(self, *, with_leader: bool) -> None:
        """All three nets (descendants, group, marker); the leader too if `with_leader` (and
        not reaped yet: a reaped pid may be somebody else's by now)."""
        pids = tree.snapshot(self.pid if with_leader else None, self.pgid, self.run_id)
        if with_leader and self._leader.returncode is None:
            pids.add(self.pid)
        if not pids and not tree.group_alive(self.pgid):
            return
        self.killed += len(pids)
        await tree.kill_tree(pids, self.pgid, self.grace, keep=frozenset({self.pid}))

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
