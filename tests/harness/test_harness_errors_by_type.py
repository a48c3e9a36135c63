"""The harness decides its exit status by type, never by the text of a message.

A run that stops at the preflight (no --server accepted its token, or the Claude preflight
failed) exits 3, one whose service could not start exits 1. The session records which of the two
happened as a `stress.exits.EarlyStop`; `run.error` is only what the report says. These tests
reword that text (or make it lie) and check that the exit status does not move. No service, no
processes: the decision is reached directly.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
from pathlib import Path

import pytest

from stress import session as session_mod
from stress.exits import EXIT_FAILED, EXIT_OK, EXIT_PREFLIGHT, EXIT_SIGNAL, EarlyStop, exit_status
from stress.run.plan import build_plan
from stress.service.preflight import AccessCheck
from stress.report.results import PASSED, RunResult, Totals
from stress.session import Interrupted, PreflightFailed, ServiceFailed, Session, settle
from stress.suite import load_suite

HARNESS = Path(__file__).resolve().parents[1] / "stress"


def make_session(tmp_path: Path) -> Session:
    suite_path = tmp_path / "s.json"
    suite_path.write_text(json.dumps({"name": "s", "tests": [{"id": "t", "command": "true"}]}))
    suite = load_suite(str(suite_path))
    plan = build_plan([suite], [], None)
    run = RunResult(run_id="r", tool="stress.local", argv=[], started_at=0.0)
    ns = argparse.Namespace(quiet=True, model="local")
    return Session(ns, "stress.local", False, [suite], plan, run, tmp_path / "report")


def test_the_preflight_stop_exits_3_whatever_its_message_says(tmp_path):
    for text in ("preflight: the service at ws://h/ws refused the token (HTTP 401)",
                 "the token was refused", "", "service: reworded to look like the other one"):
        s = make_session(tmp_path)
        with pytest.raises(PreflightFailed):
            s.stop_early(EarlyStop.PREFLIGHT, text)
        assert s.run.error == text  # the report says exactly what the caller said
        assert settle(s) == EXIT_PREFLIGHT == 3


def test_a_service_stop_exits_1_even_when_its_message_starts_with_preflight(tmp_path):
    s = make_session(tmp_path)
    with pytest.raises(ServiceFailed):
        s.stop_early(EarlyStop.SERVICE, "preflight: not really")
    assert settle(s) == EXIT_FAILED


def test_an_error_text_without_a_stop_decides_nothing(tmp_path):
    s = make_session(tmp_path)
    s.run.error = "preflight: written by hand, no stop recorded"
    assert settle(s) == EXIT_FAILED  # nothing ran: 1, as for any run where nothing passed
    assert {o.status for o in s.run.outcomes} != {PASSED}


def test_every_stopped_test_is_reported_not_run_with_the_message(tmp_path):
    s = make_session(tmp_path)
    with pytest.raises(Interrupted):
        s.stop_early(EarlyStop.PREFLIGHT, "preflight: reworded")
    settle(s)
    [outcome] = s.run.outcomes
    [attempt] = outcome.attempts
    assert "not run: preflight: reworded" in attempt.message


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_wins_over_an_early_stop(signame, code):
    for stop in (None, *EarlyStop):
        assert exit_status(signame, stop, Totals()) == code == EXIT_SIGNAL[signame]


def test_without_a_stop_the_outcomes_decide():
    assert exit_status(None, None, Totals(tests=1, passed=1)) == EXIT_OK
    assert exit_status(None, None, Totals(tests=2, passed=1, failed=1)) == EXIT_FAILED
    assert exit_status(None, None, Totals(tests=1, lost=1)) == EXIT_FAILED
    assert exit_status(None, None, Totals()) == EXIT_FAILED  # nothing ran
    assert exit_status(None, EarlyStop.PREFLIGHT, Totals(tests=1, passed=1)) == EXIT_PREFLIGHT


class _RefusingFleet:
    """Stands in for ServiceFleet: one remote server that refused the token."""

    managed = False

    def __init__(self) -> None:
        svc = argparse.Namespace(managed=False, url="ws://h:1/ws", pid=None, health={},
                                 describe_argv=list)
        self.specs = [argparse.Namespace(name="ws://h:1/ws", url="ws://h:1/ws", token="x")]
        self.services = [svc]
        self.errors = [None]

    def live(self):
        return list(zip(self.specs, self.services))

    async def check_access(self):
        return [AccessCheck("ws://h:1/ws", False, 401, "HTTP 401")]


def test_a_refused_token_exits_3_when_the_message_is_reworded(tmp_path, monkeypatch, capsys):
    """Through the real call site: the access check's message is replaced by one that no longer
    starts with "preflight:"; the run still exits 3 and the report carries the new text."""
    monkeypatch.setattr(session_mod, "access_failure", lambda checks: "reworded")
    s = make_session(tmp_path)
    fleet = _RefusingFleet()
    s.service = fleet

    async def check() -> None:
        with pytest.raises(PreflightFailed):
            await session_mod.check_services(s, fleet)

    asyncio.run(check())
    assert s.run.error == "preflight: reworded"
    assert s.early_stop is EarlyStop.PREFLIGHT
    assert settle(s) == EXIT_PREFLIGHT
    assert "stress.local: preflight failed:" in capsys.readouterr().err  # what users see is unchanged


def test_no_harness_module_decides_on_the_text_of_an_error():
    """`<something>.error.startswith(...)` / `"..." in <something>.error` nowhere in the harness."""
    found = []
    for path in sorted(HARNESS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("startswith", "endswith")
                    and isinstance(node.func.value, ast.Attribute)
                    and node.func.value.attr == "error"):
                found.append(f"{path.name}:{node.lineno}")
            if (isinstance(node, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in node.ops)
                    and any(isinstance(c, ast.Attribute) and c.attr == "error" for c in node.comparators)):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, "decide by a type or an enum (stress.exits.EarlyStop), not by text:\n" + "\n".join(found)
