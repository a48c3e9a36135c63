"""The subreaper done right: reap every adopted child, end adopted processes that outlive
their job.

As `PR_SET_CHILD_SUBREAPER`, the service adopts every orphan of its jobs (a daemon that
double-forked, an MCP server whose CLI exited). Two duties follow:

1. Reap: an adopted child that exits is our zombie until we wait for it. `reap` waits for every
   zombie child that is not a run's leader (a leader's status belongs to its run). It runs on
   SIGCHLD (the kernel sends it for adopted children too) and, as a safety net, every second.
2. End what outlived its job: `sweep` looks at our live adopted children after each job end.
   One carrying a run's marker belongs to that run. One without (it cleared its environment)
   is attributed by its start time: only a job running when it started can have made it. Once
   every such job has ended, it has outlived its job and is ended with its descendants. One
   that no known job can explain is ended when the service shuts down (`end_all`).

In cgroup mode a job's orphans die with its cgroup; reaping is still needed, and the sweep
then finds nothing.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable

from .. import tree

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_MAX_SPANS = 4096


def now_ticks() -> int:
    """Now, in the unit and clock of a process's start time in /proc/<pid>/stat."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS)


class AdoptionReaper:
    def __init__(self, leaders: Callable[[], set[int]], grace: float):
        self._leaders = leaders
        self.grace = grace
        self.live: dict[str, int] = {}
        """run id -> start tick of each running job."""
        self.ended: collections.deque[tuple[str, int, int]] = collections.deque(maxlen=_MAX_SPANS)
        self.reaped = 0
        self.ended_adopted = 0

    # ---- job spans ----------------------------------------------------------------------------

    def job_started(self, run_id: str) -> None:
        self.live[run_id] = now_ticks() - 1

    def job_ended(self, run_id: str) -> None:
        start = self.live.pop(run_id, None)
        if start is not None:
            self.ended.append((run_id, start, now_ticks() + 1))

    # ---- reaping ------------------------------------------------------------------------------

    def reap(self) -> int:
        """Wait for every zombie child that is not a run's leader. Returns how many."""
        leaders = self._leaders()
        n = 0
        # Orphans are re-parented to the subreaper's main thread: its one children file.
        for pid in tree.own_children():
            if pid not in leaders:
                st = tree.stat_fields(pid)
                if st is not None and st[0] == "Z":
                    tree.reap_zombie(pid)
                    n += 1
        self.reaped += n
        return n

    # ---- sweeping -----------------------------------------------------------------------------

    def adopted(self) -> list[int]:
        """Our live children that are not run leaders: adopted orphans."""
        leaders = self._leaders()
        return [p for p in tree.own_children() if p not in leaders and tree.is_alive(p)]

    def outlived(self) -> set[int]:
        """Adopted processes whose job has ended (see the module's rule)."""
        out = set()
        for pid in self.adopted():
            marks = tree.run_markers(pid)
            if marks:
                if not any(m in self.live for m in marks):
                    out.add(pid)
                continue
            st = tree.stat_fields(pid)
            if st is None:
                continue
            born = st[3]
            if any(start <= born for start in self.live.values()):
                continue  # a running job may have made it
            if any(start <= born <= end for _, start, end in self.ended):
                out.add(pid)
        return out

    async def sweep(self) -> int:
        """End adopted processes that outlived their job, with their descendants."""
        self.reap()
        pids = self.outlived()
        if not pids:
            return 0
        for p in list(pids):
            pids |= tree.descendants(p)
        await tree.kill_tree(pids, None, self.grace)
        self.ended_adopted += len(pids)
        self.reap()
        return len(pids)

    async def end_all(self) -> int:
        """At shutdown: every adopted process, whoever made it."""
        pids = set(self.adopted())
        for p in list(pids):
            pids |= tree.descendants(p)
        if pids:
            await tree.kill_tree(pids, None, self.grace)
            self.ended_adopted += len(pids)
        self.reap()
        return len(pids)

    def describe(self) -> dict:
        return {"reaped": self.reaped, "ended": self.ended_adopted}
