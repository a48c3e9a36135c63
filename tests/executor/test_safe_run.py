"""The safe test runner, end to end with real process trees, plus its pure helpers.

Every tree writes its own pids to a file; the test takes psutil handles on them while they live
and checks afterwards that none survived (a zombie counts as dead: it runs nothing).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cc_executor.safe_run import (
    chooses_workers,
    module_importable,
    pick_workers,
    pytest_args_start,
    pytest_python,
    with_workers,
)
from conftest import wait_until

PY = sys.executable




def env_for_tests(**extra: str) -> dict[str, str]:
    """No CC_EXECUTOR_* settings from outside, and no load throttling unless a test asks:
    these tests must not wait on whatever else the host is doing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_EXECUTOR_")
           or k == "CC_EXECUTOR_TEST_SESSION"}
    env["CC_EXECUTOR_MAX_LOAD"] = "1000000"
    env["CC_EXECUTOR_MIN_FREE_MEM"] = "0"
    env.update(extra)
    return env


def start_safe_run(*args: str, env=None, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "cc_executor.safe_run", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or env_for_tests(), cwd=cwd)


def safe_run(*args: str, timeout: float = 30, env=None, cwd=None) -> tuple[int, str, str]:
    proc = start_safe_run(*args, env=env, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def handles_from(pid_file: Path, count: int, timeout: float = 10.0) -> list[psutil.Process]:
    """psutil handles on the `count` pids a tree wrote, taken while they are alive."""
    def ready():
        try:
            pids = [int(x) for x in pid_file.read_text().split()]
        except FileNotFoundError:
            return None
        return pids if len(pids) >= count else None

    pids = wait_until(ready, timeout)
    assert pids, f"the tree did not write {count} pids to {pid_file}"
    return [psutil.Process(p) for p in pids]


def assert_gone(procs: list[psutil.Process], timeout: float = 5.0) -> None:
    def alive():
        left = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p.pid)
            except psutil.NoSuchProcess:
                pass
        return left

    wait_until(lambda: not alive(), timeout)
    assert not alive(), f"survivors: {alive()}"


def stubborn_tree(pid_file: Path) -> str:
    """A shell that ignores SIGTERM (its children inherit that) with four kinds of descendant:
    a plain background child, one that left the group with setsid, an orphan whose parent exited
    at once, and a shell that left the group and cleared its environment, with its own child.
6 pids in all."""
    f = str(pid_file)
    return (
        "trap '' TERM\n"
        f"sleep 60 & echo $! >> {f}\n"
        f"setsid sleep 60 & echo $! >> {f}\n"
        f"sh -c 'sleep 60 & echo $! >> {f}'\n"
        f"env -i setsid sh -c 'sleep 60 & echo $! >> {f}; echo $$ >> {f}; wait' &\n"
        f"echo $$ >> {f}\n"
        "wait\n"
    )


# ---- exit status --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_code_is_passed_through(code):
    rc, out, err = safe_run("--", PY, "-c", f"import sys; print('out'); sys.exit({code})")
    assert rc == code, err
    assert out == "out\n"  # passed through, not swallowed
    lines = [line for line in err.splitlines() if line.startswith("safe_run:")]
    assert lines[0].startswith("safe_run: load before: load ")
    assert lines[-1].startswith("safe_run: load after: load ") and f"exit {code} " in lines[-1]


def test_death_by_signal_is_128_plus_n():
    rc, _, _ = safe_run("--", "sh", "-c", "kill -KILL $$")
    assert rc == 128 + signal.SIGKILL


def test_command_that_cannot_start(tmp_path):
    rc, _, err = safe_run("--", str(tmp_path / "no-such-program"))
    assert rc == 127 and "not found" in err
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    rc, _, err = safe_run("--", str(script))
    assert rc == 126 and "permission denied" in err


@pytest.mark.parametrize("args, needle", [
    ([], "no command given"),
    (["--"], "no command given"),
    (["--workers", "0", "--", "true"], "--workers must be 'auto' or a whole number >= 1"),
    (["--max-load", "lots", "--", "true"], "--max-load: not a load: 'lots'"),
    (["--timeout", "-1", "--", "true"], "--timeout must be a number of seconds >= 0"),
    (["--grace", "0", "--", "true"], "--grace must be a number of seconds > 0"),
])
def test_bad_usage_exits_2(args, needle):
    rc, _, err = safe_run(*args)
    assert rc == 2 and needle in err


# ---- ending trees -------------------------------------------------------------------------------


def test_timeout_ends_a_tree_that_ignores_sigterm(tmp_path):
    pid_file = tmp_path / "pids"
    t = time.monotonic()
    proc = start_safe_run("--timeout", "2", "--grace", "0.3", "--", "sh", "-c",
                          stubborn_tree(pid_file))
    try:
        procs = handles_from(pid_file, 6)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 124, err
    assert "timed out after 2 s" in err
    assert time.monotonic() - t < 12
    assert_gone(procs)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_safe_run_ends_the_tree(tmp_path, sig):
    pid_file = tmp_path / "pids"
    proc = start_safe_run("--grace", "0.3", "--", "sh", "-c", stubborn_tree(pid_file))
    try:
        procs = handles_from(pid_file, 6)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, err
    assert f"got {signal.Signals(sig).name}" in err
    assert_gone(procs)


def test_leftovers_are_ended_when_the_command_exits_by_itself(tmp_path):
    """A command that exits while its descendants still hold our stdout must not hang us."""
    pid_file = tmp_path / "pids"
    script = stubborn_tree(pid_file).replace("wait\n", "sleep 1; exit 3\n")
    proc = start_safe_run("--grace", "0.3", "--", "sh", "-c", script)
    try:
        procs = handles_from(pid_file, 6)
        out, err = proc.communicate(timeout=20)  # EOF on stdout: nobody holds the pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err
    assert "left" in err and "ended" in err
    assert_gone(procs)


# ---- waiting for the host -----------------------------------------------------------------------


def test_gives_up_with_75_when_the_host_stays_busy(tmp_path):
    marker = tmp_path / "ran"
    t = time.monotonic()
    rc, _, err = safe_run("--min-free-mem", "1000T", "--max-wait", "1", "--",
                          "touch", str(marker))
    assert rc == 75, err
    assert "waiting up to 1 s: free memory" in err and "host still busy" in err
    assert not marker.exists()
    assert time.monotonic() - t < 10


def test_sigint_while_waiting_exits_without_running(tmp_path):
    marker = tmp_path / "ran"
    proc = start_safe_run("--min-free-mem", "1000T", "--max-wait", "30", "--", "touch", str(marker))
    try:
        # Wait until it is waiting (its stderr says so), then interrupt.
        line = proc.stderr.readline()
        while line and "waiting up to" not in line:
            line = proc.stderr.readline()
        assert "waiting up to 30 s" in line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert not marker.exists()


def test_throttle_opt_out_runs_at_once():
    rc, _, err = safe_run("--min-free-mem", "1000T", "--max-wait", "0", "--", "true",
                          env=env_for_tests(CC_EXECUTOR_THROTTLE="0"))
    assert rc == 0, err
    assert "waiting" not in err


# ---- pytest -------------------------------------------------------------------------------


def test_runs_pytest_and_forwards_its_status(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_ok():\n    pass\n\n"
                                          "def test_bad():\n    assert 1 == 2\n")
    rc, out, err = safe_run("--", PY, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            str(tmp_path), cwd=tmp_path)
    assert rc == 1, out + err
    assert "1 failed, 1 passed" in out
    assert "pytest-xdist is not importable" in err or "adding -n" in err


def test_pick_workers_follows_load():
    assert [pick_workers(2, load) for load in (0.0, 0.4, 0.6, 1.0, 1.6, 8.0)] == [2, 2, 1, 1, 1, 1]
    assert [pick_workers(8, load) for load in (0.0, 2.2, 5.5, 7.6, 30.0)] == [8, 6, 3, 1, 1]
    assert pick_workers(64, 0.0, max_load=8) == 8  # never plan past the load ceiling
    assert pick_workers(64, 3.0, max_load=8) == 5
    assert pick_workers(4, 0.0, max_load=0) == 1
    with pytest.raises(ValueError):
        pick_workers(0, 1.0)
    with pytest.raises(ValueError):
        pick_workers(2, math.nan)


@given(st.integers(1, 256), st.floats(0, 1e4, allow_nan=False),
       st.floats(0, 1e4, allow_nan=False), st.floats(0, 1e4, allow_nan=False))
def test_pick_workers_bounds_and_monotonic(cores, a, b, max_load):
    lo, hi = sorted((a, b))
    n_lo, n_hi = pick_workers(cores, lo, max_load), pick_workers(cores, hi, max_load)
    assert 1 <= n_hi <= n_lo <= cores


def test_recognises_pytest_commands():
    assert pytest_args_start(["pytest", "-q"]) == 1
    assert pytest_args_start(["/x/bin/py.test"]) == 1
    assert pytest_args_start(["python", "-m", "pytest", "-q"]) == 3
    assert pytest_args_start(["/v/bin/python3.11", "-u", "-X", "dev", "-W", "error", "-m",
                              "pytest"]) == 8
    assert pytest_args_start(["python3", "-mpytest", "-x"]) == 2
    assert pytest_args_start(["python", "-Bum", "pytest"]) == 3
    for argv in (["python", "-m", "pip"], ["python", "-c", "import pytest"], ["python", "t.py"],
                 ["python"], ["python", "-m"], ["make", "pytest"], [], ["pytestish"]):
        assert pytest_args_start(argv) is None, argv


def test_rewrites_pytest_argv_with_workers():
    assert with_workers(["pytest"], 2) == ["pytest", "-n", "2"]
    assert with_workers(["python", "-m", "pytest", "-q", "--", "-weird-name.py"], 3) == [
        "python", "-m", "pytest", "-n", "3", "-q", "--", "-weird-name.py"]
    for already in (["-n", "4"], ["-n4"], ["-nauto"], ["-xvn", "2"], ["--numprocesses=2"],
                    ["--numprocesses", "2"], ["-p", "no:xdist"], ["-pno:xdist"], ["--pdb"],
                    ["--dist=no"]):
        argv = ["pytest", "-q", *already]
        assert with_workers(argv, 2) == argv, already
    # Look-alikes that do not choose workers: values of other options, and after `--`.
    for not_chosen in (["-k", "-n"], ["-knot_slow"], ["-m", "net"], ["--", "-n"],
                       ["--maxfail", "2"], ["-vx"]):
        assert chooses_workers(not_chosen) is False, not_chosen
    assert with_workers(["make", "test"], 2) == ["make", "test"]
    with pytest.raises(ValueError):
        with_workers(["pytest"], 0)


def test_finds_the_interpreter_that_runs_pytest(tmp_path):
    assert pytest_python([PY, "-m", "pytest"]) == PY
    script = Path(PY).with_name("pytest")
    if script.exists():  # the venv's console script names its interpreter in the shebang
        interp = pytest_python([str(script)])
        assert interp and os.path.samefile(interp, PY)
    assert pytest_python(["make", "test"]) is None
    assert module_importable(PY, "json") is True
    assert module_importable(PY, "cc_executor_no_such_module") is False
    assert module_importable(str(tmp_path / "no-python"), "json") is False
