"""Finding the cgroup hierarchies this process may use, by reading what the kernel says.

Why read and never assume: a pure v2 host mounts the unified hierarchy at /sys/fs/cgroup, a hybrid
one (like our CI) mounts v1 controllers there and v2 at /sys/fs/cgroup/unified, a systemd unit
may have a delegated subtree, a container may show a namespaced root. Two files say it all:

* /proc/self/cgroup     - where this process sits in each hierarchy (`0::/path` is v2);
* /proc/self/mountinfo  - where each hierarchy is mounted, and which part of it (the mount root).

The directory of our own cgroup in a hierarchy is the mount point plus our path relative to the
mount's root; if our path is not below that root the hierarchy is not reachable from here.
Whether we may create cgroups below it is then learnt by trying (`parent.py`), not guessed
from permission bits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import cgfs


@dataclass(frozen=True)
class Hierarchies:
    """Our own cgroup's directory in each usable hierarchy."""

    v2: str | None = None
    """The unified (v2) hierarchy: a pure v2 mount or the `unified` mount of a hybrid host."""
    v1: dict[str, str] = field(default_factory=dict)
    """v1 hierarchies we care about, by controller: `memory`, `pids`."""


V1_CONTROLLERS = ("memory", "pids")


def own_paths(text: str) -> dict[str, str]:
    """/proc/self/cgroup -> {"": v2 path, "memory": path, ...} (each v1 controller by name)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        if hid == "0" and controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def mounts(text: str) -> dict[str, tuple[str, str]]:
    """/proc/self/mountinfo -> {"": (root, mount point) of cgroup2, "memory": (...), ...}.

    The first mount of each hierarchy wins (a bind mount elsewhere shows the same cgroups)."""
    out: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, point = _unescape(fields[3]), _unescape(fields[4])
        fstype, options = rfields[0], rfields[2].split(",")
        if fstype == "cgroup2":
            out.setdefault("", (root, point))
        elif fstype == "cgroup":
            for c in options:
                if c in V1_CONTROLLERS:
                    out.setdefault(c, (root, point))
    return out


def _unescape(s: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040...)."""
    if "\\" not in s:
        return s
    return s.encode().decode("unicode_escape")


def _join(mount: tuple[str, str], path: str) -> str | None:
    root, point = mount
    root = root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None  # our cgroup is outside what this mount shows
    rel = path[len(root):].lstrip("/")
    return os.path.join(point, rel) if rel else point


def find(proc_cgroup: str = "/proc/self/cgroup",
         proc_mountinfo: str = "/proc/self/mountinfo") -> Hierarchies:
    """Our cgroup directories, in the hierarchies that are mounted and reachable."""
    paths = own_paths(cgfs.read(proc_cgroup))
    mnt = mounts(cgfs.read(proc_mountinfo))
    v2 = None
    if "" in paths and "" in mnt:
        d = _join(mnt[""], paths[""])
        if d and os.path.isfile(os.path.join(d, "cgroup.procs")):
            v2 = d
    v1 = {}
    for c in V1_CONTROLLERS:
        if c in paths and c in mnt:
            d = _join(mnt[c], paths[c])
            if d and os.path.isfile(os.path.join(d, "cgroup.procs")):
                v1[c] = d
    return Hierarchies(v2, v1)
