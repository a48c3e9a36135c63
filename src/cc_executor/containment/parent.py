"""`Containment`: the service's own cgroups, what they can enforce, and a `JobBox` per job.

At start the service creates one cgroup of its own below the cgroup it runs in, in each usable
hierarchy (`cc_executor-<pid>-<start ticks>`: unique, and recognisable as stale once that
process is gone). Creating it is the test of whether we may: no permission bits are guessed.
Jobs' cgroups go below it. Nothing else is written anywhere: not our own cgroup, not its
`subtree_control` (only our own cgroup's, to pass delegated v2 controllers to our jobs).

Mechanism in force (`mechanism`, on /health and in the log):
* `cgroup_v2`: each job in its own v2 cgroup, ended with `cgroup.kill`.
* `fallback`: process group + environment marker + the subreaper's sweep (`reaper`).
The setting `containment` forces one (`fallback`) or requires the cgroup one (`cgroup`).
"""

from __future__ import annotations

import logging
import os
import re

from .. import tree
from . import cgfs
from .box import JobBox
from .detect import Hierarchies, find
from .limits import Limits
from .slots import Slots

log = logging.getLogger("cc_executor.containment")

_NAME = re.compile(r"^cc_executor-(\d+)-(\d+)$")


class ContainmentError(RuntimeError):
    """`containment=cgroup` was asked for and the host offers no usable cgroup v2 tree."""


def _own_name() -> str:
    pid = os.getpid()
    st = tree.stat_fields(pid)
    return f"cc_executor-{pid}-{st[3] if st else 0}"


class Containment:
    def __init__(self, mode: str = "auto", hierarchies: Hierarchies | None = None):
        self.mode = mode
        self.v2: str | None = None
        self.home: str | None = None  # the service's own v2 cgroup (`JobBox.leave` goes back)
        self.v2_controllers: frozenset[str] = frozenset()
        self.v1: dict[str, str] = {}
        self.cleaned = 0
        self.slots: Slots | None = None
        if mode != "fallback":
            self._setup(hierarchies if hierarchies is not None else find())
        if mode == "cgroup" and self.v2 is None:
            raise ContainmentError("containment=cgroup: no writable cgroup v2 hierarchy with "
                                   "cgroup.kill below this service's cgroup")

    @property
    def mechanism(self) -> str:
        return "cgroup_v2" if self.v2 is not None else "fallback"

    # ---- set-up -------------------------------------------------------------------------------

    def _setup(self, h: Hierarchies) -> None:
        name = _own_name()
        if h.v2 is not None:
            self.cleaned += _clean_stale(h.v2, True)
            d = _make(os.path.join(h.v2, name))
            if d is not None and not os.path.exists(os.path.join(d, "cgroup.kill")):
                cgfs.remove(d, True)
                d = None
            if d is not None:
                self.v2, self.home = d, h.v2
                self.v2_controllers = _delegate(d)
                if not self.v2_controllers:  # no limit files a job could leave set in one
                    self.slots = Slots(d, h.v2)
        for c, own in h.v1.items():
            if c in self.v2_controllers:
                continue  # v2 enforces it: no v1 cgroup needed
            self.cleaned += _clean_stale(own, False)
            d = _make(os.path.join(own, name))
            if d is not None:
                self.v1[c] = d

    def enforcers(self) -> dict[str, str]:
        """Limit name -> what enforces it here (see `limits`)."""
        out = {"open_files": "rlimit_nofile", "output_mb": "runner",
               "cpu_seconds": "rlimit_cpu+cgroup_v2_cpu_stat" if self.v2 else "rlimit_cpu"}
        for limit, c in (("memory_mb", "memory"), ("processes", "pids")):
            if c in self.v2_controllers:
                out[limit] = f"cgroup_v2_{c}"
            elif c in self.v1:
                out[limit] = f"cgroup_v1_{c}"
        return out

    def box(self, run_id: str, limits: Limits | None) -> JobBox | None:
        """A job's cgroups, created (raises OSError), or None when it needs none."""
        limits = limits or Limits()
        v1 = {}
        for limit, c in (("memory_mb", "memory"), ("processes", "pids")):
            if getattr(limits, limit) is not None and c not in self.v2_controllers:
                if c not in self.v1:  # `limits.plan` refuses these first; a direct caller may not
                    raise OSError(0, f"no {c} controller for {limit}")
                v1[c] = os.path.join(self.v1[c], f"job-{run_id}")
        box = JobBox(limits, os.path.join(self.v2, f"job-{run_id}") if self.v2 else None,
                     self.v2_controllers, v1, home=self.home)
        if not box.needs_wrap:
            return None
        if box.bare and self.slots is not None:
            box.v2, box.slots = self.slots.take(), self.slots
            return box
        box.create()
        return box

    def describe(self) -> dict:
        """For /health: the mechanism, where the cgroups are, what enforces each limit."""
        return {"mechanism": self.mechanism, "cgroup_v2": self.v2,
                "v2_controllers": sorted(self.v2_controllers), "cgroup_v1": dict(self.v1),
                "limits": self.enforcers()}

    def close(self) -> None:
        """Remove our cgroups (jobs' first). Called once every job has ended."""
        if self.slots is not None:
            self.slots.close()
        for d, v2 in [(self.v2, True)] + [(d, False) for d in self.v1.values()]:
            if d is not None and not cgfs.remove(d, v2):
                log.warning("could not remove cgroup %s", d)


def _make(d: str) -> str | None:
    try:
        os.mkdir(d)
        return d
    except FileExistsError:
        return d
    except OSError as e:
        log.info("cannot create cgroup %s: %s", d, e)
        return None


def _delegate(d: str) -> frozenset[str]:
    """Pass the memory and pids controllers our cgroup `d` was given on to its children (ours
    to change: we created `d`, and it holds no process). What it was given is what was
    delegated to us; we never touch the cgroup above."""
    offered = set(cgfs.read(os.path.join(d, "cgroup.controllers")).split())
    got = set()
    for c in ("memory", "pids"):
        if c in offered:
            try:
                cgfs.write(os.path.join(d, "cgroup.subtree_control"), f"+{c}")
                got.add(c)
            except OSError as e:
                log.info("cannot enable %s for job cgroups: %s", c, e)
    return frozenset(got)


def _clean_stale(own: str, v2: bool) -> int:
    """Remove what a previous service that died left below our cgroup (its name says which
    process made it; only when that process is gone, so a live sibling service is left be)."""
    n = 0
    try:
        entries = list(os.scandir(own))
    except OSError:
        return 0
    for e in entries:
        m = _NAME.match(e.name)
        if not m or not e.is_dir(follow_symlinks=False):
            continue
        pid, ticks = int(m.group(1)), int(m.group(2))
        st = tree.stat_fields(pid)
        if st is not None and st[3] == ticks:
            continue
        if cgfs.remove(e.path, v2):
            n += 1
    return n
