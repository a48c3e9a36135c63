"""Errors by code, never by text: every condition a client must tell apart has a code or a
`data.reason` on the wire, the harness decides on those, and rewording a message changes nothing."""

from __future__ import annotations

import ast
import signal
import sys
from pathlib import Path

import pytest

from cc_executor import protocol
from cc_executor.client import ExecutorClient, ExecutorError
from cc_executor.protocol import ErrorReason
from service_fixture import ServiceFactory

from conftest import wait_until

pytestmark = pytest.mark.anyio

STRESS = Path(__file__).resolve().parents[1] / "stress"
REWORDED = "something else entirely"


# ---- the harness decides on code and reason --------------------------------------------------

def test_a_claude_run_refused_for_a_missing_cli_is_not_found_whatever_its_words():
    from stress.run.attempt_record import _refusal_failure

    reworded = ExecutorError(protocol.SPAWN_FAILED, REWORDED,
                             {"reason": "executable_not_found", "executable": "claude"})
    assert _refusal_failure(reworded).kind == "not_found"
    old_words = ExecutorError(protocol.SPAWN_FAILED, "executable not found: claude",
                              {"reason": "cannot_start"})
    assert _refusal_failure(old_words) is None  # its words decide nothing
    assert _refusal_failure(None) is None


def test_the_client_error_exposes_the_reason():
    assert ExecutorError(1, "m", {"reason": "queue_full"}).reason == ErrorReason.QUEUE_FULL
    assert ExecutorError(1, "m", None).reason is None
    assert ExecutorError(1, "m", ["not", "a", "dict"]).reason is None


_SERVICE_WORDS = ("executable not found", "command not allowed", "shutting down", "not allowed")


def _text_branches(tree: ast.AST) -> list[ast.AST]:
    """Comparisons and string tests that decide on an error's words: `x in e.message`,
    `e.message.startswith(...)`, `SHUTTING_DOWN_MESSAGE`, or a service phrase in a condition."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(isinstance(x, ast.Attribute) and x.attr == "message" for x in parts) and any(
                    isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                found.append(node)
            elif any(isinstance(x, ast.Constant) and isinstance(x.value, str)
                     and x.value.lower() in _SERVICE_WORDS for x in parts):
                found.append(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if node.func.attr in ("startswith", "endswith") and (
                    isinstance(target, ast.Attribute) and target.attr == "message"
                    or any(isinstance(a, ast.Constant) and isinstance(a.value, str)
                           and a.value.lower() in _SERVICE_WORDS for a in node.args)):
                found.append(node)
        elif isinstance(node, (ast.Name, ast.Attribute)) and "SHUTTING_DOWN_MESSAGE" in (
                getattr(node, "id", None), getattr(node, "attr", None)):
            found.append(node)
    return found


def test_the_harness_never_branches_on_the_services_error_text():
    found = []
    for path in sorted(STRESS.rglob("*.py")):
        for node in _text_branches(ast.parse(path.read_text())):
            found.append(f"{path.relative_to(STRESS)}:{node.lineno}: {ast.unparse(node)[:100]}")
    assert not found, "branch on code / data.reason instead:\n" + "\n".join(found)


def test_the_text_branch_finder_finds_what_it_looks_for():
    code = ("a = 'x' in e.message\nb = e.message.startswith('y')\nc = SHUTTING_DOWN_MESSAGE\n"
            "d = m.startswith('executable not found')\nok = e.code == 3\n")
    assert [n.lineno for n in _text_branches(ast.parse(code))] == [1, 2, 3, 4]


# ---- the service puts the reason on the wire ---------------------------------------------------

@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    factory = ServiceFactory(tmp_path_factory.mktemp("errors"))
    server = factory(allow=["echo", "sleep", "cc-test-not-installed"],
                     env={"CC_EXECUTOR_MAX_JOBS_PER_CONNECTION": "1"})
    yield server
    problems = factory.close()
    assert not problems, problems


async def refusal(client: ExecutorClient, method: str, params: dict) -> ExecutorError:
    with pytest.raises(ExecutorError) as info:
        await client.request(method, params)
    return info.value


async def test_each_refusal_names_its_reason(svc):
    async with await ExecutorClient.connect(svc.url) as client:
        e = await refusal(client, "execute", {"args": ["rm", "-rf", "/nope"]})
        assert (e.code, e.reason, e.data["executable"]) == (
            protocol.COMMAND_NOT_ALLOWED, "not_allowed", "rm")
        e = await refusal(client, "execute", {"args": ["cc-test-not-installed"]})
        assert (e.code, e.reason) == (protocol.SPAWN_FAILED, "executable_not_found")
        e = await refusal(client, "execute", {"args": ["echo"], "cwd": "/no/such/dir"})
        assert (e.code, e.reason) == (protocol.SPAWN_FAILED, "cwd_not_found")
        e = await refusal(client, "control", {"type": "PAUSE"})
        assert (e.code, e.reason) == (protocol.NO_SUCH_JOB, "no_live_job")
        e = await refusal(client, "control", {"type": "PAUSE", "job_id": "nope"})
        assert (e.code, e.reason) == (protocol.NO_SUCH_JOB, "unknown_job")
        job = await client.start(args=["sleep", "30"])
        e = await refusal(client, "control", {"type": "RESUME", "job_id": job.job_id})
        assert (e.code, e.reason, e.data["state"]) == (
            protocol.JOB_NOT_RUNNING, "wrong_state", "running")
        e = await refusal(client, "execute", {"args": ["echo"]})
        assert (e.code, e.reason, e.data["limit"]) == (
            protocol.TOO_MANY_JOBS, "connection_limit", 1)
        await job.cancel()
        assert (await job.result()).reason == "cancelled"
        # Finished and completed: the job is gone (-32004), as docs/protocol.md says.
        e = await refusal(client, "control", {"type": "CANCEL", "job_id": job.job_id})
        assert (e.code, e.reason) == (protocol.NO_SUCH_JOB, "unknown_job")


async def test_a_stopping_service_refuses_new_jobs_with_reason_shutting_down(tmp_path):
    factory = ServiceFactory(tmp_path)
    svc = factory(allow=["echo", sys.executable], env={"CC_EXECUTOR_KILL_GRACE": "3"})
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    try:
        async with await ExecutorClient.connect(svc.url) as client:
            job = await client.start(args=[sys.executable, "-c", stubborn])
            async for ev in job:
                if ev.kind == "output" and b"ready" in ev.data:
                    break
            svc.signal(signal.SIGTERM)  # the job ignores it: shutdown waits its kill grace
            refused = None
            for _ in range(200):  # bounded: each try is one round trip
                try:
                    done = await client.execute(args=["echo", "x"])
                    assert done.ok or done.reason == "shutdown"  # started just before it
                except ExecutorError as e:
                    refused = e
                    break
            assert refused is not None
            assert (refused.code, refused.reason) == (protocol.TOO_MANY_JOBS, "shutting_down")
            assert (await job.result()).reason == "shutdown"
        wait_until(lambda: not svc.alive(), 20, what="the service to exit")
    finally:
        problems = factory.close()
    assert not problems, problems
