"""Run a command (usually the test suite) only when the host can take it, and never leave it behind.

    python -m cc_executor.safe_run [--max-load X] [--min-free-mem SIZE] [--timeout S]
                                   [--max-wait S] [--grace S] [--workers auto|N] -- CMD ...

Why: unthrottled pytest runs once drove a host to load 25 and it stopped answering, and a timed-out
run killed its parent but orphaned the children. So this runner

1. waits (at most `--max-wait`, then exits 75) until `load.decide` admits a new job;
2. for pytest with pytest-xdist available, adds `-n N` sized to the cores left free (see
   `pick_workers`), unless the command already chose;
3. runs CMD through `cc_executor.process` (own session and process group, output straight to the
   terminal), with a total timeout; on timeout or on SIGINT/SIGTERM/SIGHUP/SIGQUIT the whole
   tree is ended (SIGTERM, grace, SIGKILL, including descendants that left the group), and so is
   anything the command left running when it exits by itself;
4. exits with the command's status: 124 on timeout (as coreutils `timeout`), 128+N when signal N
   ended it (or ended us), 126/127 when it could not be started, 75 when the host stayed busy.

It is also a subreaper: orphans of the command are re-parented to it, so even a daemon that
double-forked and changed its environment is found and ended rather than keeping CI's pipe open.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from . import aio, defaults, tree
from .load import LoadMonitor, LoadReading, decide, limits_from_args, read_load
from .process import EndReason, RunSpec, SpawnError, start

EXIT_WAIT_EXCEEDED = 75  # EX_TEMPFAIL: try again later
EXIT_INTERNAL = 125  # as coreutils `timeout`: the runner itself failed
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
EXIT_TIMEOUT = 124

DEFAULT_TIMEOUT = 3600.0
DEFAULT_MAX_WAIT = 300.0
PROGRESS_EVERY = 15.0  # seconds between "still waiting" lines

_PYTHON_RE = re.compile(r"^python(\d+(\.\d+)?)?$")
# pytest short options that take no value (so a cluster like `-xvn` may continue after them).
_PYTEST_FLAGS = set("xvqslh")
# pytest short options whose value may be the next argument.
_PYTEST_VALUE_OPTS = {"-k", "-m", "-p", "-c", "-o", "-r", "-W"}
# xdist refuses these, so adding -n would turn a working command into an error.
_XDIST_INCOMPATIBLE = {"--pdb", "--trace"}


def log(message: str) -> None:
    print(f"safe_run: {message}", file=sys.stderr, flush=True)


# ---- worker count and pytest argument rewrite (pure functions) -----------------------------------


def pick_workers(cores: int, load1: float, max_load: float = math.inf) -> int:
    """xdist workers for a host with `cores` cores, current 1-minute `load1`, and a load ceiling.

    N = round(min(cores, max_load) - load1), clamped to [1, cores]: fill the cores that the
    current load leaves idle, without planning to push the load past `max_load`. Never more than
    `cores` (CPU-bound test workers gain nothing from oversubscription), never fewer than 1.
    """
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    if math.isnan(load1) or load1 < 0:
        raise ValueError(f"load1 must be >= 0, got {load1}")
    if math.isnan(max_load) or max_load < 0:
        raise ValueError(f"max_load must be >= 0, got {max_load}")
    room = min(float(cores), max_load) - load1
    return max(1, min(cores, math.floor(room + 0.5)))


def pytest_args_start(argv: Sequence[str]) -> int | None:
    """Index of pytest's first own argument when `argv` runs pytest, else None.

    Recognises `pytest ...`, `py.test ...` and `python[X[.Y]] [interpreter options] -m pytest ...`
    (any path before the executable name).
    """
    if not argv:
        return None
    exe = os.path.basename(argv[0])
    if exe in ("pytest", "py.test"):
        return 1
    if not _PYTHON_RE.match(exe):
        return None
    i = 1
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("-") or tok in ("-", "--"):
            return None  # a script, stdin, or end of options: not `-m pytest`
        j = 1
        while j < len(tok):
            ch = tok[j]
            if ch in "mcWX":
                rest = tok[j + 1 :]
                if rest:
                    value, nxt = rest, i + 1
                elif i + 1 < len(argv):
                    value, nxt = argv[i + 1], i + 2
                else:
                    return None
                if ch == "c":
                    return None
                if ch == "m":
                    return nxt if value in ("pytest", "py.test") else None
                i = nxt
                break
            j += 1
        else:
            i += 1
    return None


def chooses_workers(pytest_args: Sequence[str]) -> bool:
    """Whether these pytest arguments already decide about xdist (`-n`, `-p no:xdist`, `--pdb`)."""
    skip_next = False
    for k, tok in enumerate(pytest_args):
        if skip_next:
            skip_next = False
            if pytest_args[k - 1] == "-p" and tok == "no:xdist":
                return True
            continue
        if tok == "--":
            break
        if tok in _XDIST_INCOMPATIBLE or tok == "--dist=no":
            return True
        if tok == "--numprocesses" or tok.startswith("--numprocesses="):
            return True
        if tok.startswith("--") or not tok.startswith("-") or tok == "-":
            continue
        if tok in _PYTEST_VALUE_OPTS:
            skip_next = True
            continue
        if tok == "-pno:xdist":
            return True
        for ch in tok[1:]:
            if ch == "n":
                return True
            if ch not in _PYTEST_FLAGS:
                break  # a value-taking option: the rest of the token is its value
    return False


def with_workers(argv: Sequence[str], n: int) -> list[str]:
    """`argv` with `-n N` added right after `pytest` / `-m pytest`, when that makes sense.

    Unchanged when `argv` is not pytest or already decides about xdist. Inserted at the front of
    pytest's arguments rather than the end, so that a `--` among them cannot swallow it.
    """
    if n < 1:
        raise ValueError(f"worker count must be >= 1, got {n}")
    at = pytest_args_start(argv)
    if at is None or chooses_workers(argv[at:]):
        return list(argv)
    return [*argv[:at], "-n", str(n), *argv[at:]]


# ---- finding the interpreter that runs pytest ---------------------------------------------------


def pytest_python(argv: Sequence[str]) -> str | None:
    """The interpreter that will run this pytest command, or None when it cannot be told."""
    if pytest_args_start(argv) is None:
        return None
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    if _PYTHON_RE.match(os.path.basename(argv[0])):
        return exe
    try:
        with open(exe, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    try:
        words = shlex.split(first[2:].decode(errors="replace"))
    except ValueError:
        return None
    if not words:
        return None
    if os.path.basename(words[0]) == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        return shutil.which(rest[0]) if rest else None
    return words[0]


def module_importable(python: str, module: str, timeout: float = 20.0) -> bool:
    """Whether `python` can import `module` (asked of that interpreter, not of ours)."""
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    try:
        done = subprocess.run(
            [python, "-c", code],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _plan_workers(
    argv: list[str], workers: str, reading: LoadReading, max_load: float
) -> list[str]:
    at = pytest_args_start(argv)
    if at is None:
        if workers != "auto":
            log(f"--workers {workers} ignored: the command is not pytest")
        return argv
    addopts = shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    if chooses_workers(argv[at:]) or chooses_workers(addopts):
        log("pytest arguments already decide about xdist workers; leaving them as they are")
        return argv
    python = pytest_python(argv)
    if python is None:
        log("cannot tell which interpreter runs pytest; not adding -n")
        return argv
    if not module_importable(python, "xdist"):
        log(f"pytest-xdist is not importable by {python}; running pytest without -n")
        return argv
    if workers == "auto":
        n = pick_workers(reading.cores, reading.load1, max_load)
        why = (f"{reading.cores} cores, load {reading.load1:.2f}, max load {max_load:.2f}: "
               f"round(min(cores, max load) - load), between 1 and cores")
    else:
        n, why = int(workers), "--workers"
    log(f"pytest-xdist found; adding -n {n} ({why})")
    return with_workers(argv, n)


# ---- the run ------------------------------------------------------------------------------------


class _Signals:
    """SIGINT/SIGTERM/SIGHUP/SIGQUIT handled on the loop: remember the first, wake waiters."""

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.received: int | None = None
        self.event = asyncio.Event()
        self.on_signal = None
        for sig in self.HANDLED:
            loop.add_signal_handler(sig, self._got, sig)

    def _got(self, sig: int) -> None:
        if self.received is None:
            self.received = sig
            log(f"got {signal.Signals(sig).name}; ending the command's process tree")
        self.event.set()
        if self.on_signal is not None:
            self.on_signal()

    def close(self) -> None:
        for sig in self.HANDLED:
            self.loop.remove_signal_handler(sig)


def _reap_adopted(leader: int) -> None:
    """Collect zombies of orphans we adopted as subreaper (never the leader: Popen owns it)."""
    for pid in tree.children(os.getpid()):
        if pid == leader:
            continue
        st = tree.stat_fields(pid)
        if st is not None and st[0] == "Z":
            tree.reap_zombie(pid)


async def _end_adopted(grace: float) -> int:
    """End every process still re-parented to us once the command is over.

    We start nothing else while the command runs, so as subreaper each remaining child of ours
    is something the command left behind, even one the runner's own nets (group, marker) miss
    because it called setsid and cleared its environment.
    """
    if not tree.is_subreaper():
        return 0
    pids: set[int] = set()
    for child in tree.children(os.getpid()):
        if tree.is_alive(child):
            pids.add(child)
            pids |= tree.descendants(child)
    if pids:
        await tree.kill_tree(pids, None, grace)
    return len(pids)


async def _wait_for_room(
    max_load: float, min_free_mem: int, throttle: bool, max_wait: float, signals: _Signals
) -> int | None:
    """None when the command may start; else the exit status (75 when max_wait ran out)."""
    if not throttle:
        return None
    async with LoadMonitor(interval=1.0) as monitor:
        decision = decide(monitor.latest, max_load, min_free_mem)
        if decision.may_start:
            return None
        log(f"waiting up to {max_wait:g} s: {decision.reason}")
        deadline = time.monotonic() + max_wait
        stop = asyncio.ensure_future(signals.event.wait())
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    log(f"host still busy after waiting {max_wait:g} s ({decision.reason}); "
                        f"not running the command (exit {EXIT_WAIT_EXCEEDED})")
                    return EXIT_WAIT_EXCEEDED
                admit = asyncio.ensure_future(monitor.wait_for_admission(
                    max_load, min_free_mem, timeout=min(left, PROGRESS_EVERY)))
                await asyncio.wait({admit, stop}, return_when=asyncio.FIRST_COMPLETED)
                if signals.received is not None:
                    admit.cancel()
                    return 128 + signals.received
                decision = admit.result()
                if decision.may_start:
                    log(f"host has room now: {decision.reason}")
                    return None
                waited = max_wait - (deadline - time.monotonic())
                if waited >= max_wait:
                    continue
                log(f"still waiting ({waited:.0f} s of {max_wait:g} s): {decision.reason}")
        finally:
            stop.cancel()


async def run_command(
    argv: list[str], timeout: float | None, grace: float, signals: _Signals
) -> int:
    """Run `argv` to its end through `cc_executor.process`; returns the exit status to report."""
    spec = RunSpec(argv=argv, capture=False, inherit_stdin=True, timeout=timeout, kill_grace=grace)
    try:
        run = await start(spec)
    except SpawnError as exc:
        text = str(exc)
        log(f"cannot run {argv[0]}: {text}")
        return EXIT_NOT_FOUND if "not found" in text else EXIT_CANNOT_RUN
    loop = asyncio.get_running_loop()
    if tree.is_subreaper():
        loop.add_signal_handler(signal.SIGCHLD, _reap_adopted, run.pid)
    signals.on_signal = run.cancel
    if signals.received is not None:
        run.cancel()
    try:
        try:
            end = await run.wait()
        except BaseException:  # a bug or a cancel here must still not leave the tree running
            run.cancel()
            await aio.wait_for(run.wait(), grace + defaults.END_WAIT_MARGIN)
            raise
        adopted = await _end_adopted(grace)
    finally:
        signals.on_signal = None
        if tree.is_subreaper():
            loop.remove_signal_handler(signal.SIGCHLD)
            _reap_adopted(run.pid)
    if adopted:
        log(f"ended {adopted} orphaned processes of the command that had left its group "
            f"and its environment")
    if end.reason == EndReason.TIMEOUT:
        log(f"timed out after {timeout:g} s; ended the process tree "
            f"({end.killed} processes signalled)")
        return EXIT_TIMEOUT
    if end.reason == EndReason.CANCELLED:
        return 128 + (signals.received or signal.SIGTERM)
    if end.killed:
        log(f"the command left {end.killed} processes running; ended them")
    if end.reason == EndReason.SIGNALLED:
        return 128 + (end.signal or 0)
    if end.reason == EndReason.EXITED:
        return end.exit_code
    log(f"unexpected end of the command: {end.reason.value}")
    return EXIT_INTERNAL


def _parse_args(argv: list[str] | None):
    from .settings import Settings

    parser = argparse.ArgumentParser(
        prog="python -m cc_executor.safe_run",
        description="Wait for a quiet host, then run CMD with a timeout; never leave its "
        "processes behind. Exits with CMD's status (124 timeout, 128+N signal N, "
        "75 host stayed busy, 2 bad usage).",
    )
    parser.add_argument("--max-load", help="max 1-minute load: absolute (8) or per core (2/core); "
                        "default CC_EXECUTOR_MAX_LOAD")
    parser.add_argument("--min-free-mem", help="free-memory floor, e.g. 256M; "
                        "default CC_EXECUTOR_MIN_FREE_MEM")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"total seconds for CMD, 0 for no limit (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--max-wait", type=float, default=DEFAULT_MAX_WAIT,
                        help="longest wait for the host to calm down "
                        f"(default {DEFAULT_MAX_WAIT:g})")
    parser.add_argument("--grace", type=float, default=None,
                        help="seconds between SIGTERM and SIGKILL (default CC_EXECUTOR_KILL_GRACE)")
    parser.add_argument("--workers", default="auto",
                        help="pytest-xdist workers: auto (from cores and load) or a number >= 1")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    args = parser.parse_args(argv)
    cmd = args.command
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        parser.error("no command given (usage: ... -- CMD [ARG...])")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        parser.error(f"bad CC_EXECUTOR_* setting: {exc}")
    cores = os.cpu_count() or 1
    max_load, floor = limits_from_args(parser, settings, args, cores)
    if not (args.timeout >= 0) or math.isinf(args.timeout):
        parser.error(f"--timeout must be a number of seconds >= 0, got {args.timeout}")
    if not (args.max_wait >= 0) or math.isinf(args.max_wait):
        parser.error(f"--max-wait must be a number of seconds >= 0, got {args.max_wait}")
    grace = settings.kill_grace if args.grace is None else args.grace
    if not (grace > 0) or math.isinf(grace):
        parser.error(f"--grace must be a number of seconds > 0, got {grace}")
    if args.workers != "auto" and not (args.workers.isdigit() and int(args.workers) >= 1):
        parser.error(f"--workers must be 'auto' or a whole number >= 1, got {args.workers!r}")
    return cmd, max_load, floor, settings.throttle, args.timeout or None, args.max_wait, grace, \
        args.workers


async def _amain(argv: list[str] | None) -> int:
    cmd, max_load, floor, throttle, timeout, max_wait, grace, workers = _parse_args(argv)
    tree.become_subreaper()
    signals = _Signals(asyncio.get_running_loop())
    try:
        t0 = time.monotonic()
        log(f"load before: {read_load().summary()}")
        status = await _wait_for_room(max_load, floor, throttle, max_wait, signals)
        if status is not None:
            return status
        cmd = _plan_workers(cmd, workers, read_load(), max_load)
        if signals.received is not None:
            return 128 + signals.received
        status = await run_command(cmd, timeout, grace, signals)
        log(f"load after: {read_load().summary()}; exit {status} "
            f"after {time.monotonic() - t0:.1f} s")
        return status
    finally:
        signals.close()


def main(argv: list[str] | None = None) -> int:
    try:
        return asyncio.run(_amain(argv))
    except SystemExit:
        raise
    except KeyboardInterrupt:  # Ctrl-C before our handlers were installed: nothing started yet
        log("interrupted")
        return 128 + signal.SIGINT
    except BaseException as exc:  # never leave a traceback without a clear status
        log(f"internal error: {exc!r}")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
