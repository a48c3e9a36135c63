"""`Slots`: empty v2 cgroups kept for the next job that has no limit.

A job with no limit needs a cgroup for membership and the kill only. Making one for each job
(`mkdir`) and removing it after (`rmdir` waits ~0.3 ms for the kernel to retire the cgroup, so
it ran on a thread) put a directory operation before every spawn and a thread hop after every
end, both on the way of a short job's reply and completion. An empty cgroup serves the next job
as well as a new one: membership is all it gives, and a job without limits reads none of its
counters. So such cgroups are named `slot-<n>`, handed back once empty, and kept (up to `keep`)
for the next job; the rest are removed as before. A cgroup that is not empty when its job ends
(something survived the kill) is never handed out again.

Jobs with limits keep a cgroup of their own (`job-<run id>`), made and removed per job: their
limits and the counters that tell a hit (`memory.events`, `pids.events`) must start fresh.
"""

from __future__ import annotations

import os

KEEP = 64
"""Empty slots kept at most: the peak of concurrent jobs without limits, up to this."""


class Slots:
    def __init__(self, parent: str, keep: int = KEEP):
        self.parent = parent
        self.keep = keep
        self._idle: list[str] = []
        self._made = 0

    def take(self) -> str:
        """An empty slot: a kept one, or a new one. Raises OSError when it cannot be made."""
        if self._idle:
            return self._idle.pop()
        self._made += 1  # numbers are never reused: a slot that was not given back keeps its own
        d = os.path.join(self.parent, f"slot-{self._made}")
        os.mkdir(d)
        return d

    def give(self, d: str) -> bool:
        """Keep the empty slot `d` for a later job if there is room; False otherwise (the
        caller removes it). The caller has seen it empty (`JobBox.populated`)."""
        if len(self._idle) >= self.keep:
            return False
        self._idle.append(d)
        return True

    @property
    def idle(self) -> int:
        return len(self._idle)
