"""Finding and ending whole process trees, by pid and process group only.

Why a module of its own: a command's children outlive it in many ways (background jobs in its
group, MCP servers the CLI spawned, a grandchild that called `setsid` and left the group). Each way
needs a different net, and the runner, the safe test runner and the stale-run reaper all need the
same nets. Everything here reads `/proc` directly: it is much cheaper than a psutil full scan on the
hot path, and it never signals a process by name.

Three nets, cast before the first signal so that a child re-parented mid-kill is still caught:
  1. the leader's descendants, walked through `/proc/<pid>/task/<tid>/children`;
  2. the members of the run's process group;
  3. every process whose environment carries the run's marker variable (`CC_EXECUTOR_RUN=<id>`),
     which catches descendants that escaped both the group and the parent chain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import signal
import time
from collections.abc import Collection, Iterable

MARKER_VAR = "CC_EXECUTOR_RUN"

_PR_SET_CHILD_SUBREAPER = 36
_subreaper = False


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants instead of init.

    With this on, a grandchild whose parent died is re-parented to us, so the runner can still
    find it (by its marker) and end it. Returns whether the kernel accepted it.
    """
    global _subreaper
    if _subreaper:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        _subreaper = False
    return _subreaper


def is_subreaper() -> bool:
    return _subreaper


def read_small(path: str) -> bytes | None:
    """A /proc (or cgroup) file's content with the fewest syscalls (open, read until empty,
    close), or None: the end of every run reads a few of these, on the path to
    `process.completed`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parts = []
        while chunk := os.read(fd, 65536):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def stat_fields(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) from /proc/<pid>/stat, or None when gone."""
    raw = read_small(f"/proc/{pid}/stat")
    if raw is None:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        return rest[0].decode(), int(rest[1]), int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie runs nothing)."""
    st = stat_fields(pid)
    return st is not None and st[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        raw = read_small(f"/proc/{pid}/task/{tid}/children")
        if raw:
            out.extend(int(x) for x in raw.split())
    return out


def own_children() -> list[int]:
    """This process's children as the kernel re-parents orphans to a subreaper: they go to
    its first live thread, the main one, so one /proc file is enough (`children(os.getpid())`
    reads one per thread)."""
    pid = os.getpid()
    raw = read_small(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in raw.split()] if raw else []


def descendants(pid: int) -> set[int]:
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def _all_pids() -> Iterable[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def group_members(pgid: int) -> set[int]:
    found = set()
    for pid in _all_pids():
        st = stat_fields(pid)
        if st is not None and st[2] == pgid and st[0] not in ("Z", "X"):
            found.add(pid)
    return found


def with_env(var: str, value: str, pids: Iterable[int] | None = None) -> set[int]:
    """Live processes (not us) whose environment holds `var=value`."""
    needle = f"{var}={value}".encode()
    me = os.getpid()
    found = set()
    for pid in _all_pids() if pids is None else pids:
        if pid == me:
            continue
        env = read_small(f"/proc/{pid}/environ")
        if env and needle in env.split(b"\0") and is_alive(pid):
            found.add(pid)
    return found


def marked_any(markers: Collection[str]) -> set[int]:
    """Live processes carrying any of `markers`: one /proc pass for many runs (the service's
    process count on /health). Costs ~10 us per process on the host: keep it off the loop."""
    if not markers:
        return set()
    prefix = f"{MARKER_VAR}=".encode()
    wanted = {prefix + m.encode() for m in markers}
    me = os.getpid()
    found = set()
    for pid in _all_pids():
        if pid == me:
            continue
        env = read_small(f"/proc/{pid}/environ")
        if env and prefix in env and not wanted.isdisjoint(env.split(b"\0")) and is_alive(pid):
            found.add(pid)
    return found


def marked(marker: str, pids: Iterable[int] | None = None) -> set[int]:
    """Processes whose environment holds CC_EXECUTOR_RUN=<marker> (live ones only)."""
    return with_env(MARKER_VAR, marker, pids)


def run_markers(pid: int) -> list[str]:
    """The run markers (`CC_EXECUTOR_RUN` values) in a process's environment: none when it
    cleared its environment, or we may not read it."""
    prefix = f"{MARKER_VAR}=".encode()
    env = read_small(f"/proc/{pid}/environ") or b""
    return [v[len(prefix):].decode(errors="replace") for v in env.split(b"\0")
            if v.startswith(prefix)]


def command_line(pid: int) -> str:
    raw = read_small(f"/proc/{pid}/cmdline") or b""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def group_alive(pgid: int) -> bool:
    """Whether any process (zombies included) is still in the group. One syscall."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def snapshot(pid: int | None, pgid: int | None, marker: str | None) -> set[int]:
    """Every live process that belongs to a run, taken before any signal is sent."""
    pids: set[int] = set()
    if pid is not None:
        pids |= descendants(pid)
        if is_alive(pid):
            pids.add(pid)
    if pgid is not None:
        pids |= group_members(pgid)
    if marker is not None:
        pids |= marked(marker)
    # Include the descendants of escaped members too (their own children may not be marked
    # if they rewrote their environment).
    for p in list(pids):
        pids |= descendants(p)
    pids.discard(os.getpid())
    return {p for p in pids if is_alive(p)}


def _signal_all(pgid: int | None, pids: Iterable[int], sig: int) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap_zombie(pid: int) -> None:
    """Collect a zombie we adopted as subreaper, so it does not linger in the table."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def reap_adopted(exclude: set[int] | frozenset[int]) -> int:
    """Collect zombies among our children, except `exclude` (live Popen leaders, whose exit
    status belongs to their Run). Needed as subreaper: adopted orphans that exit on their own
    would otherwise stay in the process table. Returns how many were reaped."""
    n = 0
    for pid in children(os.getpid()):
        if pid in exclude:
            continue
        st = stat_fields(pid)
        if st is not None and st[0] == "Z":
            reap_zombie(pid)
            n += 1
    return n


def _remaining(pgid: int | None, pids: set[int], keep: frozenset[int]) -> set[int]:
    left = set()
    me = os.getpid()
    for p in pids:
        st = stat_fields(p)
        if st is None:
            continue
        if st[0] in ("Z", "X"):
            if st[1] == me and p not in keep:
                reap_zombie(p)
            continue
        left.add(p)
    if pgid is not None and not left and group_members(pgid):
        left |= group_members(pgid)
    return left


async def kill_tree(
    pids: set[int],
    pgid: int | None,
    grace: float,
    *,
    kill_timeout: float = 5.0,
    keep: frozenset[int] = frozenset(),
) -> dict[str, int]:
    """SIGTERM everything, wait up to `grace`, SIGKILL what is left, wait until gone.

    `pids` is a snapshot taken before this call (see `snapshot`). SIGCONT follows SIGTERM so that
    a paused tree can act on it. Our own children that became zombies are reaped as we go (the
    leader is reaped by its owner). `keep` names our own children whose exit status belongs to
    someone else (a Popen leader): those are never reaped here. Returns counts for logs: signalled, killed, survivors.
    """
    pids = set(pids)
    _signal_all(pgid, pids, signal.SIGTERM)
    _signal_all(pgid, pids, signal.SIGCONT)
    left = await _wait_gone(pgid, pids, grace, keep)
    killed = len(left)
    if left:
        # New members may have joined the group or been forked since: SIGKILL the group again.
        more = snapshot(None, pgid, None) if pgid is not None else set()
        for p in list(left):
            more |= descendants(p)
        left |= more
        _signal_all(pgid, left, signal.SIGKILL)
        left = await _wait_gone(pgid, left, kill_timeout, keep)
    return {"signalled": len(pids), "killed": killed, "survivors": len(left)}


async def _wait_gone(pgid: int | None, pids: set[int], limit: float,
                     keep: frozenset[int]) -> set[int]:
    deadline = time.monotonic() + limit
    delay = 0.002
    while True:
        left = _remaining(pgid, pids, keep)
        if not left or time.monotonic() >= deadline:
            return left
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def kill_tree_sync(pids: set[int], pgid: int | None, grace: float) -> dict[str, int]:
    """Blocking variant for code without an event loop (start-up reaper, signal handlers).

    Also callable from inside a running loop (a `ProcessRunner` built in async code reaps stale
    runs): asyncio.run refuses to nest, so the kill then runs on its own loop in a worker thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(kill_tree(pids, pgid, grace))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(kill_tree(pids, pgid, grace))).result()
