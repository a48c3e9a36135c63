"""Each model-side fault on its own, through the real service and the real Claude CLI, plus the
preflight's failure messages.

One executor service (`python -m cc_executor`, started by `stress.service.managed.ManagedService`) and one
loopback model server (`stress.model.ModelServer`) serve the whole module, both on a private event
loop in a thread; every test opens its own client connection and sends its own prompt, so faults
(which the model server counts per prompt) never leak between tests. Prompts carry a fresh token so
the processes of one run can be found by command line afterwards.

Every test checks that no process it started survives: the conftest fixture (pytest's session
marker, inherited by the service, the CLI and the CLI's Bash children) and, for the runs that
leave a `sleep 60` behind on purpose, an explicit psutil scan for that sleep.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from conftest import REPO, SESSION_ID, SESSION_VAR, wait_until
from stress.suite import claude_stream as claude_mod
from stress.model import ModelServer, find_claude
from stress.service.modelmode import ModelEnvironment, local_env
from stress.service.preflight import EXIT_PREFLIGHT, run_preflight
from stress.service.managed import ManagedService

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(find_claude() is None, reason="node_modules/.bin/claude not installed (./dev setup)"),
]

PY = sys.executable
RUN_TIMEOUT = 60.0


class Stack:
    """The model server and the service on a private loop; `call(coro)` runs a coroutine there."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="claude-faults-loop", daemon=True)
        self.server: ModelServer | None = None
        self.service: ManagedService | None = None
        self.config = tmp / "claude-config"

    def call(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "Stack":
        self.thread.start()
        self.config.mkdir()
        (self.config / "tmp").mkdir()

        async def up() -> None:
            self.server = await ModelServer(keep_bodies=False).start()
            self.service = ManagedService(allow=["claude"], log_dir=self.tmp / "logs")
            await self.service.start()

        self.call(up())
        return self

    def stop(self) -> None:
        async def down() -> None:
            if self.service is not None:
                await self.service.stop()
            if self.server is not None:
                await self.server.stop()

        try:
            self.call(down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    @property
    def env(self) -> dict[str, str | None]:
        """What stress.service.modelmode gives every job in local mode."""
        return {**local_env(self.server.url, self.config), "CLAUDECODE": None}

    def requests(self, prompt: str) -> list:
        async def snap():
            return [r for r in self.server.requests if r.kind == "messages" and r.prompt == prompt]
        return self.call(snap())


@dataclass
class Run:
    result: object
    events: list[dict]
    stream: claude_mod.StreamSummary
    output_times: list[tuple[float, bytes]]

    @property
    def retries(self) -> list[tuple[int, int | None]]:
        return [(e["attempt"], e["error_status"]) for e in self.events if e.get("subtype") == "api_retry"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("claude_faults")).start()
    try:
        yield s
    finally:
        s.stop()


def run_claude_job(stack: Stack, prompt: str, *extra: str, stall: float | None = None,
                   timeout: float = RUN_TIMEOUT, env: dict | None = None) -> Run:
    from cc_executor.client import ExecutorClient

    times: list[tuple[float, bytes]] = []

    def on_event(ev) -> None:
        if ev.kind == "output" and ev.stream == "stdout":
            times.append((ev.received, ev.data))

    async def go():
        client = await ExecutorClient.connect(stack.service.url, stack.service.token)
        try:
            argv = ["claude", "-p", prompt, "--output-format", "stream-json", "--verbose", *extra]
            return await asyncio.wait_for(
                client.execute(args=argv, env={**stack.env, **(env or {})}, timeout=timeout,
                               stall_timeout=stall, on_event=on_event), timeout + 30)
        finally:
            await client.close()

    res = stack.call(go(), timeout + 40)
    events = []
    for line in res.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return Run(res, events, claude_mod.parse_stream(res.stdout), times)


def token() -> str:
    return uuid.uuid4().hex[:10]


def marked_sleepers(seconds: int = 60) -> list[psutil.Process]:
    """`sleep <seconds>` processes alive now that carry this pytest session's marker."""
    needle = f"{SESSION_VAR}={SESSION_ID}".encode()
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.info["cmdline"] != ["sleep", str(seconds)] or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (the CLI's argv holds its prompt)."""
    out = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(text in a for a in proc.info["cmdline"] or ()) and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except psutil.Error:
            continue
    return out


def assert_answered(run: Run, answer: str) -> None:
    res = run.result
    assert res.reason == "exited" and res.exit_code == 0, (res.reason, res.exit_code, res.stderr_text[-2000:])
    assert run.stream.has_result and run.stream.is_error is False, run.stream.result_text
    assert answer in run.stream.result_text


# --- faults the CLI rides through -------------------------------------------------------------


def test_latency_paces_the_stream_token_by_token(stack):
    words = "alpha bravo charlie delta echo foxtrot"
    prompt = f"Say it slowly ({token()}) [[echo: {words}]] [[latency: 250ms]]"
    run = run_claude_job(stack, prompt, "--include-partial-messages", stall=3)
    assert_answered(run, words)
    deltas = [t for t, data in run.output_times if b'"content_block_delta"' in data]
    assert len(deltas) >= 6, f"{len(deltas)} delta batches"
    # Six 250 ms gaps before six deltas; the first and last are five gaps apart.
    assert deltas[-1] - deltas[0] >= 5 * 0.25 * 0.8, deltas
    assert run.stream.duration_ms >= 6 * 250 * 0.8
    [req] = stack.requests(prompt)
    assert req.status == 200 and req.outcome == "ok"


def test_529_twice_then_success(stack):
    prompt = f"What is 83-46? ({token()}) [[error: 529 x2]]"
    run = run_claude_job(stack, prompt)
    assert_answered(run, "83 - 46 = 37")
    assert run.retries == [(1, 529), (2, 529)]
    assert [r.status for r in stack.requests(prompt)] == [529, 529, 200]


@pytest.mark.parametrize("directive, retries, server_outcomes", [
    ("[[error: 429 x1]]", [[(1, 429)]], ["error", "ok"]),
    ("[[error: 500 x1]]", [[(1, 500)]], ["error", "ok"]),
    # After a reset the CLI 2.1.197 mostly reports an api_retry (status null) and streams again,
    # but depending on timing it re-sends silently, with or without streaming.
    ("[[drop: x1]]", [[(1, None)], []], ["dropped", "ok"]),
], ids=["429", "500", "drop"])
def test_one_transient_fault_is_retried(stack, directive, retries, server_outcomes):
    prompt = f"What is 64+36? ({token()}) {directive}"
    run = run_claude_job(stack, prompt)
    assert_answered(run, "64 + 36 = 100")
    assert run.retries in retries
    got = wait_until(lambda: [r.outcome for r in stack.requests(prompt)] == server_outcomes, 5)
    assert got, [r.summary() for r in stack.requests(prompt)]


# --- faults that must be detected and cleaned up ----------------------------------------------


def test_stall_is_detected_and_the_tree_is_gone(stack):
    mark = token()
    prompt = f"What is 3*3? ({mark}) [[stall: forever]]"
    t0 = time.monotonic()
    run = run_claude_job(stack, prompt, stall=3, timeout=30)
    res = run.result
    assert res.reason == "stalled", (res.reason, res.exit_code)
    assert 3 <= time.monotonic() - t0 < 20
    assert run.stream.has_result is False and run.stream.event_types.get("system", 0) >= 1  # init came
    assert res.pid is not None and is_gone(res.pid)
    assert processes_mentioning(mark) == []
    # The CLI's connection to the model went with it.
    gone = wait_until(lambda: [r.outcome for r in stack.requests(prompt)] == ["client_gone"], 5)
    assert gone, [r.summary() for r in stack.requests(prompt)]


def test_tool_children_are_ended_with_the_job(stack):
    mark = token()
    prompt = f"Start a sleeper ({mark}) [[bash: nohup sleep 60 >/dev/null 2>&1 & echo sleeper-pid=$!]]"
    run = run_claude_job(stack, prompt, "--allowedTools", "Bash")
    assert_answered(run, "sleeper-pid=")
    assert run.stream.num_turns == 2 and [t.name for t in run.stream.tool_uses] == ["Bash"]
    pid = int(re.search(r"sleeper-pid=(\d+)", run.stream.result_text).group(1))
    # The CLI ran it in a new session, so only the service (subreaper + run marker) can end it;
    # the completion is sent after that sweep.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).cmdline() != ["sleep", "60"]
    assert marked_sleepers() == []
    assert processes_mentioning(mark) == []


def test_background_task_children_are_ended_with_the_job(stack):
    mark = token()
    prompt = f"Start a background task ({mark}) [[bash-bg: nohup sleep 60 >/dev/null 2>&1 &]]"
    run = run_claude_job(stack, prompt, "--allowedTools", "Bash")
    assert run.result.reason == "exited" and run.result.exit_code == 0, run.result.stderr_text[-2000:]
    assert [t.input.get("run_in_background") for t in run.stream.tool_uses] == [True]
    assert marked_sleepers() == []
    assert processes_mentioning(mark) == []


# --- preflight failures -----------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preflight_names_an_unreachable_local_model_server(stack):
    url = f"http://127.0.0.1:{closed_port()}"
    model = ModelEnvironment(local_env(url, stack.config), "local (test)", frozenset(), "local",
                             "local", "test", url)
    pre = stack.call(run_preflight(stack.service.url, stack.service.token, model))
    assert not pre.ok and pre.kind == "model_unreachable"
    assert [c.name for c in pre.checks] == ["cli", "model"] and pre.checks[0].ok
    assert pre.version and pre.version.startswith("2.") and pre.path
    text = pre.message("stress.local")
    assert text.startswith(f"stress.local: preflight failed: the loopback model server at {url} does not answer")
    assert "exit status 3" in text and "--no-preflight" in text


def harness(*args: str, env: dict[str, str | None], timeout: float = 90) -> subprocess.CompletedProcess:
    full = dict(os.environ)
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.run([PY, "-m", "stress.local", *args, "--max-load", "1000"], cwd=REPO, env=full, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def one_claude_test(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "one.json"
    path.write_text(json.dumps({"name": "one", "tests": [
        {"id": "add", "prompt": "What is 1+1?", "expected_patterns": ["2"]},
        {"id": "plain", "command": "echo plain"},
    ]}))
    return path


def report_of(out: Path) -> dict:
    [run_dir] = [p for p in out.iterdir() if p.is_dir()]
    return json.loads((run_dir / "report.json").read_text())


def assert_one_preflight_message(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == EXIT_PREFLIGHT, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("preflight failed") == 1, proc.stderr
    assert "START" not in proc.stderr and "FAIL" not in proc.stderr  # no test ran
    return proc.stderr


def test_missing_cli_stops_the_run_with_exit_3(one_claude_test, tmp_path):
    missing = tmp_path / "nowhere" / "claude"
    proc = harness(str(one_claude_test), "--model", "local", "--out", str(tmp_path / "out"),
                   env={"CC_EXECUTOR_CLAUDE_PATH": str(missing)})
    err = assert_one_preflight_message(proc)
    assert f"the Claude CLI was not found: looked in CC_EXECUTOR_CLAUDE_PATH={missing}" in err
    assert "./dev setup" in err and "npm ci" in err
    # --no-preflight would skip every Claude test here (the CLI is missing): the hint says so.
    assert "--no-preflight would not help" in err and "fails on its own" not in err
    report = report_of(tmp_path / "out")
    assert report["exit_code"] == 3 and report["error"].startswith("preflight: the Claude CLI was not found")
    assert report["environment"]["preflight"]["kind"] == "not_found"
    assert [t["status"] for t in report["tests"]] == ["skipped", "skipped"]
    assert all("not run: preflight" in t["message"] for t in report["tests"])


def test_unreachable_api_stops_the_run_with_the_clis_own_error(one_claude_test, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}"
    proc = harness(str(one_claude_test), "--model", "real", "--out", str(tmp_path / "out"),
                   env={"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-ant-test-dummy",
                        "CLAUDE_CODE_MAX_RETRIES": "0"})
    err = assert_one_preflight_message(proc)
    assert 'preflight failed: `claude -p "What is 2+2?"` (real mode) failed (exit 1' in err
    assert re.search(r"claude said: API Error: .*(connect|Connection)", err), err
    assert f"ANTHROPIC_BASE_URL={url}" in err and "--model local" in err
    assert "--no-preflight skips the model and canary checks: the Claude tests then run, and each " \
           "fails on its own" in err
    checks = report_of(tmp_path / "out")["environment"]["preflight"]["checks"]
    assert [(c["name"], c["ok"]) for c in checks] == [("cli", True), ("model", True), ("canary", False)]


def test_real_mode_without_credentials_stops_the_run(one_claude_test, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    proc = harness(str(one_claude_test), "--model", "real", "--out", str(tmp_path / "out"),
                   env={"HOME": str(home), "CLAUDE_CONFIG_DIR": None, "ANTHROPIC_API_KEY": None,
                        "ANTHROPIC_AUTH_TOKEN": None, "CLAUDE_CODE_OAUTH_TOKEN": None,
                        "CLAUDE_CODE_USE_BEDROCK": None, "CLAUDE_CODE_USE_VERTEX": None,
                        "CLAUDE_CODE_USE_FOUNDRY": None})
    err = assert_one_preflight_message(proc)
    assert "--model real needs the CLI's own credentials" in err
    assert str(home / ".claude" / ".credentials.json") in err and "--model local" in err


def test_preflight_line_is_printed_before_the_run(one_claude_test, tmp_path):
    """Issue 5: "CLI found and version printed": one line before the first test (not with --quiet)."""
    proc = harness(str(one_claude_test), "--model", "local", "--out", str(tmp_path / "out"),
                   "--no-history", env={})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("claude "))
    assert re.fullmatch(r"claude \d+\.\d+\.\d+ \(Claude Code\) at /\S+/claude; model: local \(asked "
                        r"for with --model local\); preflight passed in \d+\.\d s", lines[first]), lines
    assert first < min(i for i, ln in enumerate(lines) if ln.startswith("START"))
    env = report_of(tmp_path / "out")["environment"]
    assert lines[first].startswith(f"claude {env['claude']} at {env['claude_path']};")
    assert env["claude_used"] is True
    quiet = harness(str(one_claude_test), "--model", "local", "--quiet", "--no-history",
                    "--out", str(tmp_path / "quiet"), env={})
    assert quiet.returncode == 0 and len(quiet.stdout.splitlines()) == 2, quiet.stdout


def test_no_preflight_runs_the_tests_instead(one_claude_test, tmp_path):
    missing = tmp_path / "nowhere" / "claude"
    proc = harness(str(one_claude_test), "--model", "local", "--no-preflight", "--quiet",
                   "--out", str(tmp_path / "out"), env={"CC_EXECUTOR_CLAUDE_PATH": str(missing)})
    assert proc.returncode == 0, (proc.stdout, proc.stderr)  # the shell test ran and passed
    report = report_of(tmp_path / "out")
    assert "preflight" not in report["environment"]
    by_id = {t["id"]: t for t in report["tests"]}
    assert by_id["plain"]["status"] == "passed" and by_id["add"]["status"] == "skipped"
    assert "requires 'claude'" in by_id["add"]["message"]
