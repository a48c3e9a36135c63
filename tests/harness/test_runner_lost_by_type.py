"""Whether an attempt lost its connection is decided by the exception's type, never by its text.

A run drops a lost attempt's broken connection (and a fleet task reports it so); both read the typed flag (`Followed.lost`, `Observed.lost`, `Execution.lost`)
set where `ConnectionLost` is caught. So a `ConnectionLost` reworded to say nothing of "connection
lost" still counts as lost, and another error whose message happens to start "connection lost"
does not. The text people see keeps its "connection lost" prefix either way.

Unit level: fake client and job objects stand in for `cc_executor.client`; no service runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cc_executor.client import ConnectionLost, ExecutorError
from stress.run.execution import CaseExecutor, Followed, consumer_end, lost_text
from stress.run.planned import NoProgress, Planned, RunOptions
from stress.run.runner import Runner
from stress.suite import load_suite

pytestmark = pytest.mark.anyio


class RewordedLost(ConnectionLost):
    """A ConnectionLost whose message no longer says "connection lost" (a future rewording)."""

    def __init__(self, text: str) -> None:
        ExecutorError.__init__(self, -1, text)
        self.detail = text


LOOKALIKE = RuntimeError("connection lost: but this is not a lost connection")
"""Another error whose text reads like a lost connection."""


# ---- the classifier ------------------------------------------------------------------------------

def test_a_reworded_connection_lost_still_counts_as_lost():
    followed = consumer_end(RewordedLost("the peer went quiet"))
    assert followed.lost is True
    assert followed.detail == "connection lost: the peer went quiet (code -1)"  # the prefix stays


def test_an_error_that_only_reads_like_a_lost_connection_is_not_lost():
    followed = consumer_end(LOOKALIKE)
    assert followed.lost is False
    assert followed.detail == "RuntimeError: connection lost: but this is not a lost connection"


def test_a_consumer_that_ended_normally_adds_nothing():
    assert consumer_end(None) == Followed()


def test_the_text_people_see_of_a_lost_connection_is_unchanged():
    assert lost_text(ConnectionLost("socket closed")) == "connection lost: socket closed (code -1)"
    assert lost_text(RewordedLost("socket closed")) == "connection lost: socket closed (code -1)"


# ---- one run of a case, with a fake client ---------------------------------------------------

class FakeJob:
    """Accepted and started at once; its event stream ends with `failure`."""

    queued = False
    pid = pgid = None
    job_id = "job-1"
    timeout_factor = timeout = stall_timeout = None

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    def __aiter__(self):
        return self._events()

    async def _events(self):
        raise self.failure
        yield  # pragma: no cover - makes this an async generator

    async def cancel(self) -> dict:
        return {}


class FakeClient:
    def __init__(self, *, job_failure: BaseException | None = None,
                 start_failure: BaseException | None = None) -> None:
        self.job_failure, self.start_failure = job_failure, start_failure
        self.closed = False

    async def start(self, **_: Any) -> FakeJob:
        if self.start_failure is not None:
            raise self.start_failure
        assert self.job_failure is not None
        return FakeJob(self.job_failure)

    async def close(self) -> None:
        self.closed = True


class State:
    halted = None
    interrupted = False
    stop_reason = None


class Sink(NoProgress):
    def __init__(self) -> None:
        self.finished_calls: list[tuple] = []

    def finished(self, *a: Any, **k: Any) -> None:
        self.finished_calls.append(a)


def planned(tmp_path: Path) -> Planned:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"name": "one", "tests": [
        {"id": "t", "command": "echo hi", "timeout": 5}]}))
    t = load_suite(path).tests[0]
    return Planned("one", t, t.id, 1, t.pass_threshold, False)


def executor(tmp_path: Path, sink: Sink, state: State) -> CaseExecutor:
    return CaseExecutor(RunOptions(), tmp_path / "outputs", "report", sink, monitor=None,
                        service=None, state=state, claude_streams=[])


@pytest.mark.parametrize("where", ["events", "start"])
async def test_a_reworded_connection_lost_makes_the_attempt_lost(tmp_path, where):
    failure = RewordedLost("the peer went quiet")
    client = (FakeClient(job_failure=failure) if where == "events"
              else FakeClient(start_failure=failure))
    sink = Sink()
    ex = await executor(tmp_path, sink, State()).execute(client, planned(tmp_path), 1, None, "t")
    assert ex.lost == "connection lost: the peer went quiet (code -1)"
    assert ex.attempt.status == "failed" and ex.attempt.end_reason == "error"
    assert "connection lost: the peer went quiet" in ex.attempt.message
    assert [c[2] for c in sink.finished_calls] == ["failed"]


async def test_an_error_that_only_reads_like_a_lost_connection_does_not_lose_the_attempt(tmp_path):
    sink = Sink()
    ex = await executor(tmp_path, sink, State()).execute(
        FakeClient(job_failure=LOOKALIKE), planned(tmp_path), 1, None, "t")
    assert ex.lost is None
    assert ex.attempt.status == "failed" and ex.attempt.end_reason == "error"
    assert "RuntimeError: connection lost: but this is not" in ex.attempt.message


@pytest.mark.parametrize("failure,dropped", [(RewordedLost("gone"), True), (LOOKALIKE, False)])
async def test_a_single_service_worker_drops_its_connection_only_after_a_loss(
        tmp_path, failure, dropped):
    p = planned(tmp_path)
    runner = Runner("ws://unused", None, [p], tmp_path / "report")
    client = FakeClient(job_failure=failure)
    ex, kept = await runner._attempt(client, p, 1)
    assert (ex.lost is not None) is dropped
    assert (kept is None) is dropped and client.closed is dropped


@pytest.mark.parametrize("where", ["events", "start"])
async def test_rewording_the_text_people_see_cannot_change_what_counts_as_lost(
        tmp_path, monkeypatch, where):
    """The old runner decided "lost" with detail.startswith("connection lost"); a new wording of
    that detail must leave the decision alone."""
    from stress.run import execution as execution_module

    monkeypatch.setattr(execution_module, "lost_text", lambda e: f"the link broke ({e.detail})")
    failure = ConnectionLost("reset by peer")
    client = (FakeClient(job_failure=failure) if where == "events"
              else FakeClient(start_failure=failure))
    ex = await executor(tmp_path, Sink(), State()).execute(client, planned(tmp_path), 1, None, "t")
    assert ex.lost == "the link broke (reset by peer)"
    assert "the link broke (reset by peer)" in ex.attempt.message
    assert consumer_end(failure) == Followed("the link broke (reset by peer)", lost=True)
