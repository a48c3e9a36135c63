"""The loopback model server (stress.model): real HTTP against the real server, and the real CLI.

Server tests talk HTTP with the standard library, so they check the wire format the CLI parses, not
our own client. CLI tests (marker `claude`) run node_modules/.bin/claude against the server and are
skipped when it is not installed. Every test checks that no process it started is still alive.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stress.model import (
    DirectiveError, ModelServer, ModelServerProcess, ModelServerThread, check_block, claude_env,
    claude_process_env, find_claude, parse_plan, run_claude,
)
from stress.model.arithmetic import find_calculations
from stress.model.directives import FOREVER, parse_duration, parse_size

REPO = Path(__file__).resolve().parents[2]


# --- helpers --------------------------------------------------------------------------------------

def messages_body(prompt: str, *, stream: bool = False, tools=("Bash",), messages=None, **extra) -> dict:
    body = {
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": messages or [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
        "tools": [{"name": t, "input_schema": {"type": "object"}} for t in tools],
        "stream": stream,
    }
    body.update(extra)
    return body


def connect(url: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def post(url: str, body: dict | bytes, path: str = "/v1/messages?beta=true", timeout: float = 10.0):
    """POST and read the whole response: (status, headers, parsed JSON or raw bytes)."""
    conn = connect(url, timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"content-type": "application/json", "x-api-key": "k"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, dict(resp.getheaders()), json.loads(raw)
    except ValueError:
        return resp.status, dict(resp.getheaders()), raw


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for frame in raw.decode().split("\n\n"):
        if not frame.strip():
            continue
        name = re.search(r"^event: (.*)$", frame, re.M).group(1)
        data = json.loads(re.search(r"^data: (.*)$", frame, re.M).group(1))
        assert data["type"] == name
        events.append((name, data))
    return events


def streamed_text(events) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


@pytest.fixture
def server():
    with ModelServerThread() as srv:
        yield srv


# --- directives and arithmetic (no server) --------------------------------------------------------

def test_arithmetic_finds_each_calculation():
    found = find_calculations("Compute 15+27, 83-46, 12*9, 144/12 and 2^8. Also (2+3)*4 and 7/2.")
    assert [c.value for c in found] == ["42", "37", "108", "12", "256", "20", "3.5"]
    assert find_calculations("What is 2+2?")[0].sentence() == "2 + 2 = 4"
    assert find_calculations("no numbers to add, version 1.2.3") == []
    assert find_calculations("5/0")[0].value == "undefined (division by zero)"


@settings(max_examples=50, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(0, 10**6), st.sampled_from("+-*"))
def test_arithmetic_agrees_with_python(a, b, op):
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    assert find_calculations(f"what is {a} {op} {b}?")[0].value == str(value)


def test_directive_values_parse_and_bad_ones_are_named():
    assert parse_size("1MiB") == 1048576 and parse_size("2KB") == 2000 and parse_size("100") == 100
    assert parse_duration("20ms") == 0.02 and parse_duration("1.5s") == 1.5 and parse_duration("2m") == 120
    plan = parse_plan("[[error: 529 x2 retry-after=1]] [[stall: 3s after=2]] [[drop: x1]] [[echo: a b]] [[echo: c]]")
    assert (plan.error.status, plan.error.repeat.times, plan.error.retry_after) == (529, 2, 1.0)
    assert (plan.stall.seconds, plan.stall.after, plan.drop.repeat.times) == (3.0, 2, 1)
    assert plan.echoes == ("a b", "c")
    assert parse_plan("[[stall]]").stall.seconds == FOREVER
    assert parse_plan("if [[ -f x ]]; then echo; fi").error is None  # shell tests are prose
    for bad, named in [("[[sise: 1MiB]]", "sise"), ("[[size: lots]]", "lots"), ("[[error: 999]]", "999"),
                       ("[[error]]", "error"), ("[[size: 1GiB]]", "limit"), ("[[drop: later]]", "later")]:
        with pytest.raises(DirectiveError, match=named):
            parse_plan(bad)


# --- replies over HTTP ----------------------------------------------------------------------------

def test_plain_reply_answers_arithmetic_and_echo(server):
    status, headers, msg = post(server.url, messages_body("What is 2+2? Then 12*9. [[echo: hello, world]]"))
    assert status == 200 and headers["content-type"] == "application/json"
    assert msg["type"] == "message" and msg["role"] == "assistant" and msg["stop_reason"] == "end_turn"
    assert msg["model"] == "claude-test" and msg["id"].startswith("msg_")
    assert msg["content"][0]["text"] == "2 + 2 = 4.\n12 * 9 = 108.\nhello, world"
    assert msg["usage"]["output_tokens"] > 0
    again = post(server.url, messages_body("What is 2+2? Then 12*9. [[echo: hello, world]]"))[2]
    assert again == msg  # deterministic
    generic = post(server.url, messages_body("Tell me a story"))[2]["content"][0]["text"]
    assert "15 characters" in generic
    record = server.requests[0]
    assert (record.kind, record.path, record.query, record.status, record.outcome) == (
        "messages", "/v1/messages", {"beta": "true"}, 200, "ok")


def test_stream_has_the_event_sequence_the_cli_parses(server):
    prompt = "<system-reminder>Today is 2026-11-23.</system-reminder>What is 15+27?"
    status, headers, raw = post(server.url, messages_body(prompt, stream=True))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = parse_sse(raw)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert events[0][1]["message"]["content"] == [] and events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert streamed_text(events) == "15 + 27 = 42."  # the system reminder's date is not arithmetic


def test_sized_reply_is_intact_streamed_and_whole(server):
    events = parse_sse(post(server.url, messages_body("[[size: 1MiB]]", stream=True))[2])
    check = check_block(streamed_text(events))
    assert check.ok and check.actual_bytes == 1048576
    whole = post(server.url, messages_body("[[size: 3000]]"))[2]["content"][0]["text"]
    assert check_block(whole).ok and check_block(whole).actual_bytes == 3000
    header, payload = whole.split("\n", 1)
    tampered = payload[:10] + ("x" if payload[10] != "x" else "y") + payload[11:]
    assert not check_block(header + "\n" + tampered).ok


def test_title_request_gets_a_short_json_title_and_no_faults(server):
    body = messages_body("", tools=(), messages=[{"role": "user", "content": [{"type": "text", "text":
           "<session>\nWhat is 2+2? [[error: 529 x5]]\n</session>\n\nWrite the title."}]}],
           system=[{"type": "text", "text": "Generate a concise, sentence-case title"}],
           output_config={"format": {"type": "json_schema", "schema": {"type": "object",
                          "properties": {"title": {"type": "string"}}, "required": ["title"]}}})
    status, _, msg = post(server.url, body)
    assert status == 200
    assert json.loads(msg["content"][0]["text"]) == {"title": "What is 2+2?"}
    assert server.requests[-1].kind == "title"


def test_count_tokens_probe_models_and_unknown_paths(server):
    status, _, payload = post(server.url, messages_body("hi"), path="/v1/messages/count_tokens?beta=true")
    assert status == 200 and payload["input_tokens"] > 0
    conn = connect(server.url)
    for method, path, want in [("HEAD", "/", 200), ("GET", "/v1/models", 200), ("GET", "/v2/nothing", 404),
                               ("GET", "/v1/messages", 405)]:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == want, (method, path)
        if want >= 400:
            err = json.loads(body)
            assert err["type"] == "error" and err["error"]["type"] in ("not_found_error", "invalid_request_error")
            assert path in err["error"]["message"]
    conn.close()  # one keep-alive connection served all four
    assert [r.kind for r in server.requests] == ["count_tokens", "probe", "models", "not_found", "bad_request"]


def test_bad_requests_get_errors_naming_the_problem(server):
    status, _, err = post(server.url, b"{not json")
    assert status == 400 and "not valid JSON" in err["error"]["message"]
    status, _, err = post(server.url, {"model": "m", "messages": []})
    assert status == 400 and "messages" in err["error"]["message"]
    status, _, err = post(server.url, messages_body("[[latency: soon]]"))
    assert status == 400 and "soon" in err["error"]["message"] and err["error"]["type"] == "invalid_request_error"


# --- faults ---------------------------------------------------------------------------------------

def test_error_fault_counts_attempts_per_prompt(server):
    prompt = "What is 3*3? [[error: 529 x2]]"
    results = [post(server.url, messages_body(prompt)) for _ in range(3)]
    assert [r[0] for r in results] == [529, 529, 200]
    assert results[0][2]["error"]["type"] == "overloaded_error"
    assert results[2][2]["content"][0]["text"] == "3 * 3 = 9."
    assert post(server.url, messages_body(prompt + " again"))[0] == 529  # its own counter
    status, headers, err = post(server.url, messages_body("[[error: 429 always retry-after=2]] other"))
    assert status == 429 and headers["retry-after"] == "2" and err["error"]["type"] == "rate_limit_error"
    assert server.attempts("[[error: 429 always retry-after=2]] other") == 1
    server.reset()
    assert post(server.url, messages_body(prompt))[0] == 529


def test_server_wide_faults_apply_unless_the_prompt_overrides():
    with ModelServerThread(faults="[[error: 500 x1]]", keep_bodies=False) as srv:
        assert post(srv.url, messages_body("a"))[0] == 500
        assert post(srv.url, messages_body("a"))[0] == 200
        assert post(srv.url, messages_body("b [[error: 503 x1]]"))[0] == 503
        last = srv.wait_for(lambda log: log[-1].finished_at is not None, 5)[-1]
        assert (last.prompt, last.body) == ("b [[error: 503 x1]]", None)


def test_latency_spaces_out_deltas(server):
    started = time.monotonic()
    events = parse_sse(post(server.url, messages_body("[[latency: 20ms]] one two three four five", stream=True))[2])
    elapsed = time.monotonic() - started
    deltas = sum(1 for n, _ in events if n == "content_block_delta")
    assert deltas >= 10 and elapsed >= deltas * 0.02


class RawStream:
    """A raw-socket HTTP client: sees silence and resets exactly, with no client library buffering."""

    def __init__(self, url: str, body: dict):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        data = json.dumps(body).encode()
        self.sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n%s" % (len(data), data))

    def read_until_quiet(self, quiet: float, limit: float = 10) -> bytes:
        """Bytes until none arrives for `quiet` s (or EOF); fails if the stream never goes quiet."""
        got, deadline = b"", time.monotonic() + limit
        while time.monotonic() < deadline:
            if not select.select([self.sock], [], [], quiet)[0]:
                return got
            data = self.sock.recv(65536)
            if not data:
                return got
            got += data
        raise AssertionError(f"stream did not go quiet within {limit} s")

    def read_until(self, suffix: bytes, limit: float = 10) -> bytes:
        got, deadline = b"", time.monotonic() + limit
        while not got.endswith(suffix):
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {suffix!r} within {limit} s; got {got[-200:]!r}")
            if select.select([self.sock], [], [], deadline - time.monotonic())[0]:
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError(f"EOF before {suffix!r}")
                got += data
        return got

    def read_to_eof(self, limit: float = 10) -> bytes:
        got, deadline = b"", time.monotonic() + limit
        while time.monotonic() < deadline:
            if select.select([self.sock], [], [], deadline - time.monotonic())[0]:
                data = self.sock.recv(65536)
                if not data:
                    return got
                got += data
        raise AssertionError(f"no EOF within {limit} s")

    def close(self) -> None:
        self.sock.close()


def test_stall_holds_the_stream_silent_then_resumes(server):
    stream = RawStream(server.url, messages_body("What is 1+1? [[stall: 1s]]", stream=True))
    started = time.monotonic()
    first = stream.read_until_quiet(0.4)
    assert b"message_start" in first and b"text_delta" in first and b"message_stop" not in first
    assert server.requests[-1].outcome == "stalling"
    rest = stream.read_until(b"\r\n0\r\n\r\n", limit=5)
    assert b"message_stop" in rest
    assert time.monotonic() - started >= 1.0
    stream.close()
    server.wait_for(lambda log: log[-1].outcome == "ok", 5)
    assert server.requests[-1].faults == ["stall 1s"]


def test_forever_stall_ends_when_the_client_leaves_or_the_server_stops():
    with ModelServerThread() as srv:
        stream = RawStream(srv.url, messages_body("[[stall]] a", stream=True))
        assert b"message_start" in stream.read_until_quiet(0.3)
        assert srv.requests[-1].outcome == "stalling"
        stream.close()
        srv.wait_for(lambda log: log[-1].outcome == "client_gone", 5)

        stream = RawStream(srv.url, messages_body("[[stall: forever after=0]] b", stream=True))
        head = stream.read_until_quiet(0.3)
        assert head.startswith(b"HTTP/1.1 200") and b"message_start" not in head
        started = time.monotonic()
        srv.stop()
        assert b"message_stop" not in stream.read_to_eof(limit=5)
        assert time.monotonic() - started < 5
        assert srv.requests[-1].outcome == "shutdown"
        stream.close()


def test_drop_resets_the_connection_mid_stream(server):
    conn = connect(server.url)
    conn.request("POST", "/v1/messages", body=json.dumps(messages_body("What is 4+4? [[drop: x1 after=2]]", stream=True)))
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        resp.read()
    conn.close()
    assert server.requests[-1].outcome == "dropped"
    retry = parse_sse(post(server.url, messages_body("What is 4+4? [[drop: x1 after=2]]", stream=True))[2])
    assert streamed_text(retry) == "4 + 4 = 8."


def test_non_streaming_drop_cuts_the_body(server):
    conn = connect(server.url)
    conn.request("POST", "/v1/messages", body=json.dumps(messages_body("[[drop]] [[size: 200KiB]]")))
    resp = conn.getresponse()
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
        resp.read()
    conn.close()


# --- tool use -------------------------------------------------------------------------------------

def test_bash_directive_scripts_tool_rounds_then_a_final_answer(server):
    prompt = "What is 6*7? [[bash: echo first]] [[bash-bg: sleep 1]]"
    events = parse_sse(post(server.url, messages_body(prompt, stream=True))[2])
    start = [d for n, d in events if n == "content_block_start"][1]["content_block"]
    assert start["type"] == "tool_use" and start["name"] == "Bash"
    partial = "".join(d["delta"].get("partial_json", "") for n, d in events if n == "content_block_delta")
    assert json.loads(partial) == {"command": "echo first", "description": "Run scripted command 1"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    tool_id = start["id"]

    history = [
        {"role": "user", "content": [{"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "Bash",
                                           "input": {"command": "echo first"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "first"}]},
    ]
    second = post(server.url, messages_body("", messages=history))[2]
    assert second["stop_reason"] == "tool_use"
    assert second["content"][1]["input"] == {"command": "sleep 1", "description": "Run scripted command 2",
                                             "run_in_background": True}
    history += [
        {"role": "assistant", "content": second["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": second["content"][1]["id"],
                                      "content": [{"type": "text", "text": "started"}], "is_error": False}]},
    ]
    final = post(server.url, messages_body("", messages=history))[2]
    assert final["stop_reason"] == "end_turn"
    text = final["content"][0]["text"]
    assert "finished. Output:\nstarted" in text and "6 * 7 = 42." in text
    no_tool = post(server.url, messages_body(prompt, tools=()))[2]
    assert "not offered" in no_tool["content"][0]["text"] and no_tool["stop_reason"] == "end_turn"


# --- in-process async API and the command line ----------------------------------------------------

@pytest.mark.anyio
async def test_async_context_manager_serves_in_the_callers_loop():
    import anyio

    async with ModelServer(faults="[[latency: 1ms]]") as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        status, _, msg = await anyio.to_thread.run_sync(post, srv.url, messages_body("What is 10-3?"))
        assert status == 200 and msg["content"][0]["text"] == "10 - 3 = 7."
        assert [r.kind for r in srv.requests] == ["messages"]
    assert srv.open_connections == 0
    with pytest.raises(ValueError, match="loopback"):
        ModelServer("0.0.0.0")


def test_command_line_prints_url_serves_and_exits_on_sigterm():
    with ModelServerProcess(["--error", "529 x1", "--quiet"]) as srv:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", srv.url)
        assert post(srv.url, messages_body("hi"))[0] == 529
        assert post(srv.url, messages_body("hi"))[0] == 200
        pid = srv.pid
    assert srv.proc.returncode == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_command_line_rejects_a_bad_fault_option():
    proc = subprocess.run([sys.executable, "-m", "stress.model", "--stall", "soon"], capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "soon" in proc.stderr and proc.stdout == ""


def test_claude_env_points_at_loopback_only():
    env = claude_env("http://127.0.0.1:5000", max_retries=0, api_timeout_ms=3000, config_dir="/tmp/x")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:5000" and env["ANTHROPIC_API_KEY"]
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "0" and env["API_TIMEOUT_MS"] == "3000"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    full = claude_process_env("http://127.0.0.1:5000", {"CLAUDECODE": "1", "PATH": "/bin"})
    assert "CLAUDECODE" not in full and full["PATH"] == "/bin"
    with pytest.raises(ValueError, match="loopback"):
        claude_env("https://api.anthropic.com")


# --- the real CLI ---------------------------------------------------------------------------------

claude_missing = pytest.mark.skipif(find_claude() is None, reason="node_modules/.bin/claude not installed")


def run_cli(srv, tmp_path: Path, prompt: str, *extra: str, timeout: float = 45, **env_options):
    env = claude_process_env(srv.url, config_dir=tmp_path / "claude-config", **env_options)
    env["CLAUDE_CODE_TMPDIR"] = str(tmp_path)  # its task files, instead of /tmp/claude-<uid>
    run = run_claude(["-p", prompt, "--output-format", "stream-json", "--verbose", *extra],
                     env=env, timeout=timeout, cwd=tmp_path)
    assert not run.timed_out, f"CLI timed out; stderr: {run.stderr[-2000:]}"
    return run


def assert_tree_gone(run):
    survivors = run.survivors()
    killed = run.kill_survivors()
    assert not survivors, f"CLI processes outlived the run: {killed}"


@pytest.mark.claude
@claude_missing
def test_cli_answers_arithmetic_in_stream_json(server, tmp_path):
    run = run_cli(server, tmp_path, "What is 15+27? And 144/12?")
    assert run.returncode == 0, run.stderr
    events = run.events()
    assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
    result = run.result()
    assert result["subtype"] == "success" and not result["is_error"]
    assert "15 + 27 = 42." in result["result"] and "144 / 12 = 12." in result["result"]
    kinds = [r.kind for r in server.requests]
    assert kinds.count("messages") == 1 and "title" not in kinds
    real = [r for r in server.requests if r.kind == "messages"][0]
    assert real.stream and real.headers["x-api-key"] and real.query == {"beta": "true"}
    assert_tree_gone(run)


@pytest.mark.claude
@claude_missing
def test_cli_receives_a_1mib_reply_intact(server, tmp_path):
    run = run_cli(server, tmp_path, "Send bulk [[size: 1MiB]]")
    assert run.returncode == 0, run.stderr
    check = check_block(run.result()["result"])
    assert check.ok and check.actual_bytes == 1048576
    assert_tree_gone(run)


@pytest.mark.claude
@claude_missing
def test_cli_retries_529_twice_then_succeeds(server, tmp_path):
    prompt = "What is 83-46? [[error: 529 x2]]"
    run = run_cli(server, tmp_path, prompt)
    assert run.returncode == 0, run.stderr
    retries = [e for e in run.events() if e.get("subtype") == "api_retry"]
    assert [(e["attempt"], e["error_status"]) for e in retries] == [(1, 529), (2, 529)]
    assert "83 - 46 = 37." in run.result()["result"]
    assert [r.status for r in server.requests if r.kind == "messages"] == [529, 529, 200]
    assert_tree_gone(run)


@pytest.mark.claude
@claude_missing
def test_cli_runs_the_bash_tool_and_its_background_child_outlives_it(server, tmp_path):
    command = "echo marker-$((6*7)); nohup sleep 30 >/dev/null 2>&1 & echo bgpid=$!"
    run = run_cli(server, tmp_path, f"Run it [[bash: {command}]]", "--allowedTools", "Bash")
    background = None
    try:
        assert run.returncode == 0, run.stderr
        tool_results = [b for e in run.events() if e["type"] == "user"
                        for b in e["message"]["content"] if b.get("type") == "tool_result"]
        assert len(tool_results) == 1 and not tool_results[0]["is_error"]
        assert "marker-42" in tool_results[0]["content"]
        sent_back = [r for r in server.requests if r.kind == "messages"][-1].body["messages"][-1]["content"]
        assert any(b.get("type") == "tool_result" and "marker-42" in str(b.get("content")) for b in sent_back)
        assert "marker-42" in run.result()["result"] and run.result()["num_turns"] == 2
        pid = int(re.search(r"bgpid=(\d+)", tool_results[0]["content"]).group(1))
        # CLI 2.1.197 behaviour the executor must handle: the job outlives the CLI, re-parented
        # away from it, in its own process group (the CLI's shell runs in a new session).
        assert psutil.pid_exists(pid), "background child did not outlive the CLI"
        background = psutil.Process(pid)
        assert background.cmdline()[-2:] == ["sleep", "30"]
        assert background.ppid() != run.pid and os.getpgid(pid) == pid and os.getsid(pid) != run.pid
    finally:
        if background is not None:
            background.kill()
            background.wait(5)
    assert_tree_gone(run)


@pytest.mark.claude
@claude_missing
def test_cli_loses_piped_stdout_past_64kib_when_the_reader_lags(server, tmp_path):
    """Pinned CLI 2.1.197 behaviour (anthropics/claude-code#77112) that decides how the executor
    must capture output: the CLI exits without draining pipe writes, exit code 0. run_claude and
    the executor therefore hand it a regular file, which test_cli_receives_a_1mib_reply_intact uses."""
    env = claude_process_env(server.url, config_dir=tmp_path / "claude-config")
    proc = subprocess.Popen([str(find_claude()), "-p", "bulk [[size: 1MiB]]", "--output-format", "text"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=tmp_path, start_new_session=True)
    try:
        returncode = proc.wait(timeout=45)  # nothing reads the pipe until the CLI has exited
        data = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        proc.stdout.close()
    assert returncode == 0
    assert len(data) < 1048576 and len(data) <= 65536, f"got {len(data)} bytes: the CLI may have fixed this"
    last = server.wait_for(lambda log: log[-1].finished_at is not None, 5)[-1]
    assert last.outcome == "ok" and last.bytes_sent > 1048576
