"""The few cgroup file operations we need, each one syscall or a short bounded loop.

Kept apart so that `box` and `parent` read as policy (what to create, when to kill) and every
filesystem detail (v1 and v2 spell things differently) sits here.
"""

from __future__ import annotations

import os
import signal
import time

from ..tree import read_small


def read(path: str) -> str:
    """The file's text ("" when it cannot be read: a cgroup removed meanwhile). Raw reads, not
    a text file object: `cgroup.events` is read on the way to every job's completion."""
    raw = read_small(path)
    return raw.decode("utf-8", "replace") if raw else ""


def write(path: str, text: str) -> None:
    """Write a control file. Raises OSError (the caller decides what a refusal means)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def fields(path: str) -> dict[str, str]:
    """A `key value` file (cgroup.events, cgroup.stat, memory.events...) as a dict."""
    out = {}
    for line in read(path).splitlines():
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    return out


def keyed(path: str, key: str) -> int:
    """A counter from a `key value` file (memory.events, pids.events, cpu.stat...); 0 if absent."""
    try:
        return int(fields(path).get(key, 0))
    except ValueError:
        return 0


def procs(d: str) -> set[int]:
    """The processes in cgroup `d` (zombies are not listed)."""
    out = set()
    for tok in read(os.path.join(d, "cgroup.procs")).split():
        try:
            out.add(int(tok))
        except ValueError:
            pass
    return out


def populated(d: str, v2: bool) -> bool:
    if v2:
        return keyed(os.path.join(d, "cgroup.events"), "populated") > 0
    return bool(procs(d))


def kill(d: str, v2: bool) -> None:
    """Kill every process in `d`: `cgroup.kill` in v2 (no fork can outrun it); in v1, SIGKILL
    each listed member (a few passes catch children forked in between)."""
    if v2:
        try:
            write(os.path.join(d, "cgroup.kill"), "1")
            return
        except OSError:
            pass  # no cgroup.kill (kernel < 5.14): the member loop below
    for _ in range(5):
        members = procs(d)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def remove(d: str, v2: bool, timeout: float = 2.0) -> bool:
    """rmdir `d` (children first), killing what is left in it; bounded in time. Returns
    whether it is gone."""
    try:
        subdirs = [e.path for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return True
    except OSError:
        subdirs = []
    for sub in subdirs:
        remove(sub, v2, timeout)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
        kill(d, v2)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
