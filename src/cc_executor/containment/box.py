"""`JobBox`: one job's cgroups - creation with its limits, placement, the kill, what it hit.

A job may have up to three cgroups: its v2 cgroup (membership and `cgroup.kill`, where the
service has a writable v2 hierarchy), and v1 `memory` and `pids` cgroups when its limits need
controllers the v2 tree does not offer (a hybrid host). They are created before the spawn and
the child joins all of them itself, before it execs the command (`wrap`), so nothing it forks
can start outside. They are removed at the job's end, once empty.

A job with no limit needs only its v2 cgroup (membership and the kill), and then the wrapper's
extra exec (~0.5 ms, a third of an `echo hi` end to end) is avoidable: the service steps into
the job's cgroup for the spawn and back out right after it (`enter` / `leave`), so the child is
born a member, as `clone3(CLONE_INTO_CGROUP)` would make it (which Python cannot call). The
spawn is synchronous (vfork: the service is suspended until the child execs), so nothing else
of the service runs meanwhile; a kill never writes `cgroup.kill` while the service is inside.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass, field

from . import cgfs
from .limits import Limits
from .slots import Slots

_MB = 1024 * 1024
log = logging.getLogger("cc_executor.containment")


@dataclass
class JobBox:
    limits: Limits
    v2: str | None = None
    """The job's v2 cgroup (membership, kill, cpu.stat; memory/pids too when delegated)."""
    v2_controllers: frozenset[str] = frozenset()
    v1: dict[str, str] = field(default_factory=dict)
    """v1 cgroups by controller, made only for the limits that need them."""
    cpu_base: int = 0
    home: str | None = None
    """The service's own v2 cgroup, where it returns after spawning from inside (`leave`)."""
    slots: Slots | None = None
    """Where `v2` came from and goes back to (`recycle`), for a job without limits."""
    inside: bool = False
    """The service is in `v2` now: between `enter` and a successful `leave`."""

    # ---- creation -----------------------------------------------------------------------------

    def create(self) -> None:
        """mkdir each cgroup and write its limits. Raises OSError (then removes what it made)."""
        made = []
        try:
            for d in self.dirs():
                os.mkdir(d)
                made.append(d)
            lim = self.limits
            if lim.memory_mb is not None:
                self._memory(lim.memory_mb * _MB)
            if lim.processes is not None:
                d, _ = self._where("pids")
                cgfs.write(os.path.join(d, "pids.max"), str(lim.processes))
        except OSError:
            for d in reversed(made):
                cgfs.remove(d, d == self.v2, timeout=0.5)
            raise

    def _memory(self, limit: int) -> None:
        d, v2 = self._where("memory")
        if v2:
            cgfs.write(os.path.join(d, "memory.max"), str(limit))
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                cgfs.write(os.path.join(d, "memory.swap.max"), "0")
            return
        cgfs.write(os.path.join(d, "memory.limit_in_bytes"), str(limit))
        memsw = os.path.join(d, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # swap accounting: no escaping the limit into swap
            cgfs.write(memsw, str(limit))

    def _where(self, controller: str) -> tuple[str, bool]:
        if self.v2 is not None and controller in self.v2_controllers:
            return self.v2, True
        return self.v1[controller], False

    def dirs(self) -> list[str]:
        return ([self.v2] if self.v2 else []) + list(self.v1.values())

    # ---- placement ----------------------------------------------------------------------------

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` behind a `/bin/sh -c` that joins every cgroup of the job, sets the per-process
        rlimits, then execs `argv` (same pid). Measured against a Python `preexec_fn` (which
        forces fork instead of vfork): ~0.6 ms more per job instead of ~5 ms (docs/process.md).
        `argv[0]` must be a path: spawn resolves it first, so a missing program is still a
        SpawnError rather than the shell's exit 127."""
        steps = [f"echo 0 >{shlex.quote(os.path.join(d, 'cgroup.procs'))}" for d in self.dirs()]
        lim = self.limits
        if lim.cpu_seconds is not None:
            # Soft limit: SIGXCPU (the reason then says cpu_limit); hard, a second later: SIGKILL.
            # (Soft first: a hard limit below the current soft one is refused.)
            steps += [f"ulimit -S -t {lim.cpu_seconds}", f"ulimit -H -t {lim.cpu_seconds + 1}"]
        if lim.open_files is not None:
            steps.append(f"ulimit -n {lim.open_files}")
        script = " && ".join([*steps, 'exec "$0" "$@"'])
        return ["/bin/sh", "-c", script, *argv]

    @property
    def bare(self) -> bool:
        """Membership only: a v2 cgroup and no limit anywhere (no v1 cgroup, no rlimit), so
        the service may spawn from inside it (`enter`) instead of wrapping the command."""
        lim = self.limits
        return (self.v2 is not None and self.home is not None and not self.v1
                and lim.memory_mb is None and lim.processes is None
                and lim.cpu_seconds is None and lim.open_files is None)

    def enter(self) -> None:
        """Move the service into the job's v2 cgroup (for one spawn). Raises OSError."""
        cgfs.write(os.path.join(self.v2, "cgroup.procs"), "0")
        self.inside = True

    def leave(self) -> bool:
        """Move the service back home; True when it is. Tried twice: staying inside would put
        the service in the way of the job's kill (`kill` checks)."""
        for _ in range(2):
            try:
                if self.slots is not None and self.slots.home_fd >= 0:
                    os.write(self.slots.home_fd, b"0")
                else:
                    cgfs.write(os.path.join(self.home, "cgroup.procs"), "0")
                self.inside = False
                return True
            except OSError as e:
                err = e
        log.error("could not leave job cgroup %s for %s: %s", self.v2, self.home, err)
        return False

    @property
    def needs_wrap(self) -> bool:
        lim = self.limits
        return bool(self.dirs()) or lim.cpu_seconds is not None or lim.open_files is not None

    # ---- while it runs ------------------------------------------------------------------------

    def members(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs():
            out |= cgfs.procs(d)
        return out

    def populated(self) -> bool:
        if self.v2 is not None:
            return cgfs.populated(self.v2, True)
        return any(cgfs.populated(d, False) for d in self.v1.values())

    def _service_inside(self) -> bool:
        """Whether the service is (still) in this job's v2 cgroup: only after a failed `leave`."""
        return self.home is not None and self.v2 is not None and \
            os.getpid() in cgfs.procs(self.v2)

    def kill(self) -> None:
        if self._service_inside():
            # Never kill ourselves: a spawn from inside could not `leave`. Try again; if the
            # service is still inside, signal the job's other members one by one instead.
            if not self.leave():
                for pid in cgfs.procs(self.v2) - {os.getpid()}:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
                return
        for d in self.dirs():
            cgfs.kill(d, d == self.v2)

    @property
    def watched(self) -> bool:
        """Whether a limit here can be hit without the leader knowing (polled by the run)."""
        lim = self.limits
        return (lim.memory_mb is not None or lim.processes is not None
                or (lim.cpu_seconds is not None and self.v2 is not None))

    def hit(self) -> str | None:
        """The limit the job has hit, as its end reason, or None."""
        lim = self.limits
        if lim.memory_mb is not None:
            d, v2 = self._where("memory")
            oom = cgfs.keyed(os.path.join(d, "memory.events"), "oom_kill") if v2 else \
                cgfs.keyed(os.path.join(d, "memory.oom_control"), "oom_kill")
            if oom > 0:
                return "memory_limit"
        if lim.processes is not None:
            d, _ = self._where("pids")
            if cgfs.keyed(os.path.join(d, "pids.events"), "max") > 0:
                return "process_limit"
        if lim.cpu_seconds is not None and self.v2 is not None:
            used = cgfs.keyed(os.path.join(self.v2, "cpu.stat"), "usage_usec")
            if used > lim.cpu_seconds * 1_000_000:
                return "cpu_limit"
        return None

    # ---- the end ------------------------------------------------------------------------------

    def recycle(self) -> bool:
        """Hand a slot back for the next job without limits, on the loop (a few small reads:
        is it as it was made?). False when this box has no slot, or the slot cannot be kept:
        `remove` it."""
        if self.slots is None or self.v2 is None or self.inside:
            return False
        return self.slots.give(self.v2)

    def remove(self) -> bool:
        """rmdir every cgroup of the job (killing stragglers). Returns whether all are gone.
        Never while the service itself is inside (the stragglers' kill would take it too)."""
        if self._service_inside() and not self.leave():
            log.error("not removing job cgroup %s: the service could not leave it", self.v2)
            return False
        ok = True
        for d in self.dirs():
            ok = cgfs.remove(d, d == self.v2) and ok
        return ok
