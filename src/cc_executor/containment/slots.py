"""`Slots`: empty v2 cgroups kept for the next job that has no limit.

A job with no limit needs a cgroup for membership and the kill only. Making one for each job
(`mkdir`) and removing it after (`rmdir` waits ~0.3 ms for the kernel to retire the cgroup, so
it ran on a thread) put a directory operation before every spawn and a thread hop after every
end, both on the way of a short job's reply and completion. An empty cgroup serves the next job
as well as a new one, *if it is as it was made*: so such cgroups are named `slot-<n>`, handed
back at their job's end, and kept (up to `keep`) for the next job only when they are pristine:

* empty (`populated 0`) and not frozen (`frozen 0`): the service steps into a slot to spawn
  from it, and a slot a job left frozen would freeze the service itself;
* no cgroup below it (`cgroup.stat`: no descendants, none dying) and no controller enabled for
  one (`cgroup.subtree_control` empty), and still a plain `domain` (`cgroup.type`).

A job runs as the service's user and may write its cgroup's files; anything it changed makes
the slot fail one of these, and the slot is removed as a job's own cgroup would be. Slots are
only used where no controller is delegated to jobs (`Containment`): then a slot has no limit
files (`memory.max`, `pids.max`...) a job could have left set. Just before a kept slot is handed
out it is read once more (empty, not frozen): other jobs could write it while it waited.

Jobs with limits keep a cgroup of their own (`job-<run id>`), made and removed per job: their
limits and the counters that tell a hit (`memory.events`, `pids.events`) must start fresh.
"""

from __future__ import annotations

import os

from . import cgfs

KEEP = 64
"""Slots kept at most: the peak of concurrent jobs without limits, up to this."""


def _idle(d: str) -> bool:
    """Empty and not frozen (a `cgroup.events` that cannot be read is neither)."""
    events = cgfs.fields(os.path.join(d, "cgroup.events"))
    return events.get("populated") == "0" and events.get("frozen", "0") == "0"


def pristine(d: str) -> bool:
    """Whether slot `d` is as it was made (see the module's docstring)."""
    if not _idle(d):
        return False
    stat = cgfs.fields(os.path.join(d, "cgroup.stat"))
    if stat.get("nr_descendants", "0") != "0" or stat.get("nr_dying_descendants", "0") != "0":
        return False
    if cgfs.read(os.path.join(d, "cgroup.subtree_control")).strip():
        return False
    return cgfs.read(os.path.join(d, "cgroup.type")).strip() in ("domain", "")


class Slots:
    def __init__(self, parent: str, home: str, keep: int = KEEP):
        self.parent = parent
        self.keep = keep
        self._idle: list[str] = []
        self._made = 0
        self.home_fd = -1
        """`home`'s `cgroup.procs`, opened once: a job's `leave` is then one write (-1: none,
        or closed; `leave` then writes by path)."""
        try:
            self.home_fd = os.open(os.path.join(home, "cgroup.procs"),
                                   os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            pass

    def take(self) -> str:
        """An empty slot: a kept one still idle, or a new one. Raises OSError when it cannot be
        made. A kept slot found busy or frozen is left for `close` (never handed out)."""
        while self._idle:
            d = self._idle.pop()
            if _idle(d):
                return d
        self._made += 1  # numbers are never reused: a slot that was not given back keeps its own
        d = os.path.join(self.parent, f"slot-{self._made}")
        os.mkdir(d)
        return d

    def give(self, d: str) -> bool:
        """Keep slot `d` for a later job if it is pristine and there is room; False otherwise
        (the caller removes it)."""
        if len(self._idle) >= self.keep or not pristine(d):
            return False
        self._idle.append(d)
        return True

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """The service is stopping (its cgroups are removed next, slots with them)."""
        if self.home_fd >= 0:
            os.close(self.home_fd)
            self.home_fd = -1
