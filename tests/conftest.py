"""Shared fixtures. The autouse `no_leftover_processes` fails any test that leaves a process alive.

How it knows which processes a test started: at session start we put a marker variable into our
own environment. Every process started from this pytest process inherits it, and so do the
service's children (the runner copies the service's environment). After each test, any live
process carrying the marker that did not exist before the test is a leftover. A leftover is
reported, then ended by pid so that it cannot spoil the next test.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from cc_executor import tree

SESSION_VAR = "CC_EXECUTOR_TEST_SESSION"
SESSION_ID = os.environ.setdefault(SESSION_VAR, uuid.uuid4().hex)
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def marked_pids() -> dict[int, str]:
    """Live processes carrying this session's marker, with their command lines."""
    return {pid: tree.command_line(pid) for pid in tree.with_env(SESSION_VAR, SESSION_ID)}


def wait_until(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until truthy or `timeout`; return its last value. Never sleeps blindly."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


@pytest.fixture(autouse=True)
def no_leftover_processes(request):
    before = set(marked_pids())
    yield
    # Processes get a bounded moment to finish exiting after the test body returns.
    def leftovers():
        return {p: c for p, c in marked_pids().items() if p not in before}

    left = wait_until(lambda: not leftovers(), timeout=5.0) or None
    if left is None:
        survivors = leftovers()
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pytest.fail(
            "processes started by this test are still alive: "
            + "; ".join(f"{p}: {c[:120]}" for p, c in sorted(survivors.items())),
            pytrace=False,
        )


@pytest.fixture
def anyio_backend():
    return "asyncio"


def pytest_report_header(config):
    return f"leftover-process marker: {SESSION_VAR}={SESSION_ID[:8]}..."


@pytest.fixture
def executor_service(tmp_path):
    """Factory: `executor_service(*flags, env=..., allow=[...], env_file=...)` starts the real
    server (`python -m cc_executor --port 0`) and returns a `service_fixture.ServiceProcess`.
    Every server still running at teardown gets SIGTERM and must exit 0 without a traceback."""
    from service_fixture import ServiceFactory  # noqa: PLC0415 - it imports this module

    factory = ServiceFactory(tmp_path)
    yield factory
    problems = factory.close()
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
