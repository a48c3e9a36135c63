"""A file per live run, so that whatever a crashed server left running can be found and ended.

Format (documented in docs/process.md): `<run_dir>/runs/<run_id>.json`, one JSON object:

    {"run_id": "...", "pid": 1234, "pgid": 1234, "started_at": 1700000000.123,
     "argv": ["claude", "-p", "..."], "cwd": "/...", "owner_pid": 999,
     "owner_start_ticks": 12345, "marker": "..."}

A recycled pid is never mistaken for ours: the leader counts as ours only while its environment
still carries `CC_EXECUTOR_RUN=<marker>`, and the owner only while its start time (field 22 of
/proc/<pid>/stat, read once per runner) matches. Writing a record reads nothing from /proc, so it
costs the spawn path only a small file write. The file is written atomically (temp file +
rename) when a run starts and removed when it ends.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import tree


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    pid: int
    pgid: int
    started_at: float
    argv: list[str]
    cwd: str | None
    owner_pid: int
    owner_start_ticks: int
    marker: str


def _ticks(pid: int) -> int:
    st = tree.stat_fields(pid)
    return st[3] if st else -1


class Registry:
    """The live-run directory of one runner. Cheap: one small file write per run start."""

    def __init__(self, run_dir: str | os.PathLike[str] | None):
        self.dir = Path(run_dir) / "runs" if run_dir else None
        self._owner_pid = os.getpid()
        self._owner_ticks = _ticks(self._owner_pid)
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def add(self, run_id: str, pid: int, argv: list[str], cwd: str | None, marker: str) -> None:
        if self.dir is None:
            return
        rec = {"run_id": run_id, "pid": pid, "pgid": pid, "started_at": time.time(),
               "argv": list(argv), "cwd": cwd, "owner_pid": self._owner_pid,
               "owner_start_ticks": self._owner_ticks, "marker": marker}
        tmp = f"{self.dir}/.{run_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(rec).encode())
        finally:
            os.close(fd)
        os.replace(tmp, f"{self.dir}/{run_id}.json")

    def remove(self, run_id: str) -> None:
        if self.dir is None:
            return
        try:
            (self.dir / f"{run_id}.json").unlink()
        except FileNotFoundError:
            pass

    def records(self) -> list[RunRecord]:
        out = []
        if self.dir is None:
            return out
        for path in self.dir.glob("*.json"):
            try:
                out.append(RunRecord(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return out

    def stale(self) -> list[RunRecord]:
        """Records whose owner is gone: their runs were never ended properly."""
        return [r for r in self.records()
                if not (tree.is_alive(r.owner_pid) and _ticks(r.owner_pid) == r.owner_start_ticks)]

    def reap_stale(self, grace: float = 1.0) -> list[dict]:
        """End what dead owners left behind and drop their records. Returns what was done."""
        done = []
        for rec in self.stale():
            leader_ours = rec.pid in tree.marked(rec.marker, [rec.pid])
            pids = tree.snapshot(rec.pid if leader_ours else None,
                                 rec.pgid if leader_ours else None, rec.marker)
            counts = tree.kill_tree_sync(pids, rec.pgid if leader_ours else None, grace) \
                if pids else {"signalled": 0, "killed": 0, "survivors": 0}
            self.remove(rec.run_id)
            done.append({"run_id": rec.run_id, "pid": rec.pid, "argv": rec.argv, **counts})
        return done
