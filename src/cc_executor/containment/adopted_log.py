"""A file naming the processes the service has adopted, so a restarted service ends what a
crashed (SIGKILLed) one had adopted.

A job's daemon that left its process group, cleared its environment and double-forked is
adopted by the service (the subreaper) and ended by the sweep. If the service itself dies
without its shutdown, that daemon is re-parented to init and no other net sees it: no group,
no marker, no registry record (which names the job's leader), and without cgroups no cgroup
either. So the service keeps `<run_dir>/adopted/<pid>-<start ticks>.json`, a list of
`[pid, start ticks]` of its live adopted children, rewritten (atomically) when that set
changes, checked once a second with the reaper. At start, a file whose owner is gone is read:
each process still alive with the same start time (a recycled pid is not ours) is ended with
its descendants, and the file removed. A process adopted less than a second before the crash
may not be in the file yet: the window is the reaper's tick.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import tree


def _ticks(pid: int) -> int | None:
    st = tree.stat_fields(pid)
    return st[3] if st is not None else None


class AdoptedLog:
    def __init__(self, run_dir: str | os.PathLike[str] | None):
        self.dir = Path(run_dir) / "adopted" if run_dir else None
        self.path = None
        self._last: frozenset[int] = frozenset()
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.path = self.dir / f"{os.getpid()}-{_ticks(os.getpid())}.json"

    def write(self, pids: list[int]) -> None:
        """Record the live adopted children `pids` (a no-op when the set did not change)."""
        if self.path is None or frozenset(pids) == self._last:
            return
        rows = [[p, t] for p in pids if (t := _ticks(p)) is not None]
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(rows))
            os.replace(tmp, self.path)
        except OSError:
            return  # tried again at the next change
        self._last = frozenset(pids)

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def end_stale(run_dir: str | os.PathLike[str] | None, grace: float) -> int:
    """End what services that died without shutting down had adopted. Returns how many."""
    d = Path(run_dir) / "adopted" if run_dir else None
    if d is None or not d.is_dir():
        return 0
    pids: set[int] = set()
    for f in d.glob("*.json"):
        try:
            owner, ticks = (int(x) for x in f.stem.split("-"))
            if _ticks(owner) == ticks:
                continue  # a live service's (maybe a sibling's)
            rows = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for pid, started in rows:
            if isinstance(pid, int) and pid > 1 and pid != os.getpid() \
                    and _ticks(pid) == started and tree.is_alive(pid):
                pids |= {pid} | tree.descendants(pid)
        f.unlink(missing_ok=True)
    if pids:
        tree.kill_tree_sync(pids, None, grace)
    return len(pids)
