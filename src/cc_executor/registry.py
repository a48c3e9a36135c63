"""A journal of live runs, so that whatever a crashed server left running can be found and ended.

Format (documented in docs/process.md): one file per runner, `<run_dir>/runs/<owner_pid>-
<owner_start_ticks>-<n>.jsonl`, one JSON object a line, appended as runs start and end:

    {"run_id": "...", "pid": 1234, "pgid": 1234, "started_at": 1700000000.123,
     "argv": ["claude", "-p", "..."], "cwd": "/...", "owner_pid": 999,
     "owner_start_ticks": 12345, "marker": "..."}
    {"ended": "..."}

The live runs of a journal are the started ones not ended since. Why a journal and not a file
per run (as before): a run then cost four filesystem operations (create, write, rename, and an
unlink at its end: ~0.1 ms of CPU a run); an append is one `write`. The journal is rewritten
with only the live runs past `COMPACT_AT` bytes, and removed at a clean shutdown. A torn last
line (a crash mid-write) is skipped. Files `<run_id>.json` of the earlier format are still
read and reaped.

A recycled pid is never mistaken for ours: the leader counts as ours only while its environment
still carries `CC_EXECUTOR_RUN=<marker>`, and the owner only while its start time (field 22 of
/proc/<pid>/stat, read once per runner) matches. Writing a record reads nothing from /proc.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import tree

_instances = itertools.count(1)

COMPACT_AT = 1 << 20
"""Journal bytes past which it is rewritten with the live runs only (~3,500 runs' lines), once
it is also more than twice their size (long prompts in many live runs)."""


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


def _replay(path: Path) -> dict[str, dict]:
    """The live runs of one journal (or of one earlier-format file), by run id."""
    live: dict[str, dict] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return live
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if not isinstance(entry, dict):
            continue
        if "ended" in entry:
            live.pop(entry["ended"], None)
        elif "run_id" in entry:
            live[entry["run_id"]] = entry
    return live


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Registry:
    """The live-run journal of one runner. Cheap: one append per run start and one per end."""

    def __init__(self, run_dir: str | os.PathLike[str] | None):
        self.dir = Path(run_dir) / "runs" if run_dir else None
        self._owner_pid = os.getpid()
        self._owner_ticks = _ticks(self._owner_pid)
        self._live: dict[str, bytes] = {}
        self._fd = -1
        self._size = 0
        self._live_bytes = 0
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            # One journal per runner, also when a process has several (a harness, tests):
            # one runner's compaction or clean shutdown must never touch another's lines.
            self.path = self.dir / (f"{self._owner_pid}-{self._owner_ticks}-"
                                    f"{next(_instances)}.jsonl")

    def _append(self, line: bytes) -> None:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o600)
            self._size = os.fstat(self._fd).st_size
        _write_all(self._fd, line)
        self._size += len(line)
        if self._size > COMPACT_AT and self._size > 2 * self._live_bytes:
            self._compact()  # at most every time the journal doubles: O(1) a line, amortised

    def _compact(self) -> None:
        """Rewrite the journal with the live runs only (temp file + rename: a crash leaves the
        old journal or the new one, whole)."""
        tmp = self.path.with_suffix(".tmp")
        data = b"".join(self._live.values())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        old, self._fd = self._fd, -1  # the next append reopens, should this close fail
        os.close(old)
        self._size = len(data)

    def add(self, run_id: str, pid: int, argv: list[str], cwd: str | None, marker: str) -> None:
        if self.dir is None:
            return
        rec = {"run_id": run_id, "pid": pid, "pgid": pid, "started_at": time.time(),
               "argv": list(argv), "cwd": cwd, "owner_pid": self._owner_pid,
               "owner_start_ticks": self._owner_ticks, "marker": marker}
        line = json.dumps(rec).encode() + b"\n"
        self._live[run_id] = line
        self._live_bytes += len(line)
        self._append(line)

    def remove(self, run_id: str) -> None:
        line = self._live.pop(run_id, None) if self.dir is not None else None
        if line is None:
            return
        self._live_bytes -= len(line)
        self._append(json.dumps({"ended": run_id}).encode() + b"\n")
        if not self._live and self._size > COMPACT_AT // 16:
            self._compact()  # nothing live: start the journal over, cheaply

    def close(self) -> None:
        """No run is live: the journal goes (the runner's shutdown)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.dir is not None and not self._live:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def _files(self) -> list[Path]:
        """Journals, earlier-format records, and compactions a crash left half done."""
        if self.dir is None:
            return []
        return sorted([*self.dir.glob("*.jsonl"), *self.dir.glob("*.json"),
                       *self.dir.glob("*.tmp")])

    def records(self) -> list[RunRecord]:
        """Every live run of every journal in the directory (ours and other runners')."""
        out = []
        for path in self._files():
            for entry in _replay(path).values():
                try:
                    out.append(RunRecord(**entry))
                except TypeError:
                    continue
        return out

    def reap_stale(self, grace: float = 1.0) -> list[dict]:
        """End what dead runners left running and drop their journals (a live runner's are
        left alone). Returns what was done, a dict per run."""
        done = []
        for path in self._files():
            if path == getattr(self, "path", None) or _owner_alive(path):
                continue
            live = {} if path.suffix == ".tmp" else _replay(path)  # its journal holds it all
            for entry in live.values():
                try:
                    done.append(self._reap(RunRecord(**entry), grace))
                except TypeError:
                    continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return done

    @staticmethod
    def _reap(rec: RunRecord, grace: float) -> dict:
        leader_ours = rec.pid in tree.marked(rec.marker, [rec.pid])
        pids = tree.snapshot(rec.pid if leader_ours else None,
                             rec.pgid if leader_ours else None, rec.marker)
        counts = tree.kill_tree_sync(pids, rec.pgid if leader_ours else None, grace) \
            if pids else {"signalled": 0, "killed": 0, "survivors": 0}
        return {"run_id": rec.run_id, "pid": rec.pid, "argv": rec.argv, **counts}


def _owner_alive(path: Path) -> bool:
    """Whether the runner that wrote `path` still runs: named by a journal's file name
    (`<pid>-<ticks>-<n>.jsonl`, or its compaction's `.tmp`), or inside an earlier-format
    record."""
    if path.suffix in (".jsonl", ".tmp"):
        pid_text, ticks_text = (path.stem.split("-") + ["", ""])[:2]
        try:
            pid, ticks = int(pid_text), int(ticks_text)
        except ValueError:
            return False
    else:
        entry = next(iter(_replay(path).values()), None)
        if entry is None:
            return False
        pid, ticks = entry.get("owner_pid", -1), entry.get("owner_start_ticks")
    return tree.is_alive(pid) and _ticks(pid) == ticks
