"""Who may connect and what may run: token, Origin, bind address, allow-list, shell, Claude.

Everything goes through a real server process; refusals are checked by their HTTP status at
the upgrade (401/403) or by their JSON-RPC code, and "nothing ran" by the files a command would
have touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess

import pytest
import websockets
from websockets.asyncio.client import connect

from cc_executor import protocol
from cc_executor.client import ExecutorClient, ExecutorError
from cc_executor.claude_cli import PROJECT_BIN, adapt_claude_argv
from service_fixture import PY, clean_env, http_status, port_listening

pytestmark = pytest.mark.anyio

REAL_CLAUDE = PROJECT_BIN / "claude"
needs_claude = pytest.mark.skipif(not os.access(REAL_CLAUDE, os.X_OK),
                                  reason="node_modules/.bin/claude is not installed")


async def upgrade_status(url: str, **kw) -> int:
    """The HTTP status of a refused upgrade (fails the test if the upgrade succeeds)."""
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(url, open_timeout=10, **kw):
            pass
    return e.value.response.status_code


# ---- token -------------------------------------------------------------------------------------

async def test_token_is_required_and_checked(executor_service):
    token = "s3cret-token-value"
    svc = executor_service("--token", token, allow=["echo"])
    assert await upgrade_status(svc.url) == 401
    assert await upgrade_status(svc.url, additional_headers={"Authorization": "Bearer nope"}) == 401
    assert await upgrade_status(svc.url, additional_headers={"Authorization": token}) == 401
    assert await upgrade_status(svc.url, subprotocols=["bearer.wrong"]) == 401
    assert await upgrade_status(svc.ws("/ws/mcp")) == 401
    assert await upgrade_status(svc.url, origin="http://evil.example") == 403
    # Refusals are logged at INFO by us; uvicorn's error line for each one is filtered, so
    # unauthenticated clients cannot fill the error log.
    assert "without completing handshake" not in svc.stderr(), svc.stderr()

    async with await ExecutorClient.connect(svc.url, token=token) as c:
        assert (await c.execute(args=["echo", "header"])).stdout == b"header\n"
    # Browsers cannot set headers: the token may come as a subprotocol. The server must pick
    # a subprotocol when any is offered, or browsers drop the connection.
    for offered, chosen in ((["bearer." + token], "bearer." + token),
                            (["cc-executor", "bearer." + token], "cc-executor")):
        async with connect(svc.url, subprotocols=offered) as ws:
            assert ws.subprotocol == chosen
            assert json.loads(await ws.recv())["method"] == "connected"
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
            assert json.loads(await ws.recv())["result"]["pong"] is True


# ---- Origin ------------------------------------------------------------------------------------

async def test_foreign_origins_are_refused(executor_service):
    svc = executor_service("--allow-origin", "https://ui.example", allow=["echo"])
    assert await upgrade_status(svc.url, origin="http://evil.example") == 403
    assert await upgrade_status(svc.url, origin="http://127.0.0.1:1") == 403
    assert await upgrade_status(svc.url, origin="http://localhost:3000") == 403
    assert await upgrade_status(svc.url, origin="null") == 403
    assert await upgrade_status(svc.url, origin="https://ui.example.evil.example") == 403
    async with await ExecutorClient.connect(svc.url) as c:  # no Origin: not a browser
        assert (await c.execute(args=["echo", "no origin"])).ok
    async with await ExecutorClient.connect(
            svc.url, headers={"Origin": "https://ui.example"}) as c:
        assert (await c.execute(args=["echo", "allowed origin"])).stdout == b"allowed origin\n"


async def test_origin_is_checked_before_the_token(executor_service):
    svc = executor_service("--token", "t0k")
    assert await upgrade_status(svc.url, origin="http://evil.example",
                                additional_headers={"Authorization": "Bearer t0k"}) == 403


# ---- bind address --------------------------------------------------------------------------

def test_the_listener_takes_every_address_of_its_host_on_one_port_and_listens_at_once():
    """The service binds its own sockets (not uvloop's resolver: its thread pool stays): one per
    address the host resolves to, all on one port, listening before start-up goes on, so a port
    that another socket took meanwhile is one clear line, not a traceback later."""
    from cc_executor.__main__ import bind_listener

    addresses = {info[4][0] for info in socket.getaddrinfo(
        "localhost", 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)}
    socks = bind_listener("localhost", 0)
    assert not isinstance(socks, str), socks
    try:
        assert {s.getsockname()[0] for s in socks} == addresses
        assert len({s.getsockname()[1] for s in socks}) == 1
        port = socks[0].getsockname()[1]
        assert port_listening(port)
        # SO_REUSEADDR lets a second socket bind a port nobody listens on; listening tells.
        taken = bind_listener("127.0.0.1", port)
        assert isinstance(taken, str) and "already in use" in taken and "--port" in taken
    finally:
        for s in socks:
            s.close()


def test_non_loopback_host_without_token_binds_nothing(tmp_path):
    # Hold a port ourselves: a server that tried to bind it would say "address already in use";
    # ours must refuse before binding anything, naming the cause.
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    port = holder.getsockname()[1]
    holder.close()
    assert not port_listening(port)
    for args, env in (
        (["--host", "0.0.0.0", "--port", "0"], {}),
        (["--host", "0.0.0.0", "--port", str(port)], {}),
        (["--port", "0"], {"CC_EXECUTOR_HOST": "0.0.0.0"}),
    ):
        p = subprocess.run([PY, "-m", "cc_executor", "--env-file", str(tmp_path / "none"),
                            *args], cwd=tmp_path, env=clean_env(env), capture_output=True,
                           text=True, timeout=30)
        assert p.returncode != 0
        assert p.stdout == ""  # no URL: nothing is served
        assert "non-loopback" in p.stderr and "token" in p.stderr, p.stderr
        assert "address already in use" not in p.stderr.lower()
        assert not port_listening(port)


def test_invalid_setting_is_named(tmp_path):
    p = subprocess.run([PY, "-m", "cc_executor", "--env-file", str(tmp_path / "none"),
                        "--port", "0"], cwd=tmp_path,
                       env=clean_env({"CC_EXECUTOR_MAX_FRAME": "lots"}),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and p.stdout == ""
    assert "max_frame" in p.stderr and "lots" in p.stderr, p.stderr


# ---- the allow-list ------------------------------------------------------------------------

@needs_claude
async def test_only_the_allowed_claude_runs(executor_service, tmp_path):
    svc = executor_service()  # default allow-list: claude only
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    shutil.copy("/bin/echo", fake)
    # An attacker-controlled tree that a relative path reaches from the job's cwd, while the
    # same relative path from the server's cwd reaches the real claude.
    rel = os.path.relpath(REAL_CLAUDE, svc.home)
    depth = rel.count("../")
    trap_root = tmp_path / "trap"
    trap_cwd = trap_root.joinpath(*[f"d{i}" for i in range(depth)])
    trap_cwd.mkdir(parents=True)
    trap = trap_root / rel.replace("../", "")
    trap.parent.mkdir(parents=True)
    shutil.copy("/bin/echo", trap)
    assert os.path.realpath(svc.home / rel) == os.path.realpath(REAL_CLAUDE)
    assert os.path.realpath(trap_cwd / rel) == str(trap)

    async with await ExecutorClient.connect(svc.url) as c:
        for kwargs in ({"args": [str(fake), "pwned"]},
                       {"command": f"{fake} pwned"},
                       {"args": ["echo", "pwned"]},
                       {"command": "sh -c 'echo pwned'"},
                       {"args": ["bash"]},
                       {"args": [rel, "pwned"], "cwd": str(trap_cwd)}):
            with pytest.raises(ExecutorError) as e:
                await c.execute(**kwargs)
            assert e.value.code == protocol.COMMAND_NOT_ALLOWED, kwargs
            assert "command not allowed" in e.value.message and "claude" in e.value.message

        r = await c.execute("claude --version")
        assert r.ok and r.stdout_text.strip().endswith("(Claude Code)"), r
        r = await c.execute(args=[str(REAL_CLAUDE), "--version"])
        assert r.ok and "(Claude Code)" in r.stdout_text
        # A claude invocation asking for stream-json gets the --verbose it needs, once.
        for argv in (["claude", "--version", "--output-format", "stream-json"],
                     ["claude", "--version", "--output-format=stream-json", "--verbose"]):
            events = []
            job = await c.start(args=argv)
            assert (await job.result(on_event=events.append)).ok
            (started,) = [e.params["argv"] for e in events if e.kind == "started"]
            assert started[0] == str(REAL_CLAUDE) and started.count("--verbose") == 1
            assert started[1:len(argv)] == argv[1:]


def test_adapt_claude_argv():
    base = ["/x/claude", "-p", "What is 2+2?"]
    assert adapt_claude_argv(base) == base
    assert adapt_claude_argv([*base, "--output-format", "stream-json"]) == [
        *base, "--output-format", "stream-json", "--verbose"]
    assert adapt_claude_argv([*base, "--output-format=stream-json"])[-1] == "--verbose"
    already = [*base, "--verbose", "--output-format", "stream-json"]
    assert adapt_claude_argv(already) == already
    assert adapt_claude_argv([*base, "--output-format", "json"]) == [
        *base, "--output-format", "json"]
    # The prompt text itself is never mistaken for a flag value.
    prompt = ["/x/claude", "-p", "--output-format stream-json"]
    assert adapt_claude_argv(prompt) == prompt


FAKE_CLAUDE = """#!/bin/sh
echo "fake claude: IS_SANDBOX=${IS_SANDBOX-absent} args=$*"
"""


async def test_configured_claude_path_and_is_sandbox(executor_service, tmp_path):
    # A `claude` outside PATH, named by CC_EXECUTOR_CLAUDE_PATH, while the project's real one
    # is on the search path: a bare `claude` must run the configured one. IS_SANDBOX reaches
    # it only when configured, whatever the server's environment or the client's `env` say.
    fake = tmp_path / "elsewhere" / "claude"
    fake.parent.mkdir()
    fake.write_text(FAKE_CLAUDE)
    fake.chmod(0o755)
    svc = executor_service(allow=["python3"], env={"CC_EXECUTOR_CLAUDE_PATH": str(fake),
                                                   "IS_SANDBOX": "1"})
    probe = "import os; print(os.environ.get('IS_SANDBOX', 'absent'))"
    async with await ExecutorClient.connect(svc.url) as c:
        r = await c.execute("claude -p hi")
        assert r.ok and r.stdout == b"fake claude: IS_SANDBOX=absent args=-p hi\n", r
        r = await c.execute(args=["claude", "-p", "x"], env={"IS_SANDBOX": "1"})
        assert r.stdout == b"fake claude: IS_SANDBOX=absent args=-p x\n"
        r = await c.execute(args=[str(fake)], env={"IS_SANDBOX": "1"})
        assert r.stdout == b"fake claude: IS_SANDBOX=absent args=\n"
        # Other programs are not Claude: their environment is left as it is.
        assert (await c.execute(args=["python3", "-c", probe])).stdout == b"1\n"
    svc = executor_service(env={"CC_EXECUTOR_CLAUDE_PATH": str(fake),
                                "CC_EXECUTOR_IS_SANDBOX": "1", "IS_SANDBOX": None})
    async with await ExecutorClient.connect(svc.url) as c:
        r = await c.execute(args=["claude"], env={"IS_SANDBOX": "0"})
        assert r.stdout == b"fake claude: IS_SANDBOX=1 args=\n"
        r = await c.execute(args=["claude"], env={"IS_SANDBOX": None})
        assert r.stdout == b"fake claude: IS_SANDBOX=1 args=\n"


async def test_claudecode_never_reaches_a_child(executor_service):
    svc = executor_service(allow=["python3"], env={"CLAUDECODE": "1"})
    probe = "import os; print(os.environ.get('CLAUDECODE', 'absent'))"
    async with await ExecutorClient.connect(svc.url) as c:
        assert (await c.execute(args=["python3", "-c", probe])).stdout == b"absent\n"
        r = await c.execute(args=["python3", "-c", probe], env={"CLAUDECODE": "1"})
        assert r.stdout == b"absent\n"
    server_env = open(f"/proc/{svc.pid}/environ", "rb").read().split(b"\0")
    assert b"CLAUDECODE=1" in server_env  # the premise: the server itself has it


# ---- no shell unless asked -----------------------------------------------------------------

async def test_shell_metacharacters_are_plain_arguments(executor_service, tmp_path):
    svc = executor_service(allow=["echo"])
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "keep").write_text("k")
    async with await ExecutorClient.connect(svc.url) as c:
        r = await c.execute("echo x; rm -rf y", cwd=str(tmp_path))
        assert r.stdout == b"x; rm -rf y\n"
        r = await c.execute("echo $(touch made1) `touch made2` > out && touch made3 | cat &",
                            cwd=str(tmp_path))
        assert r.stdout == b"$(touch made1) `touch made2` > out && touch made3 | cat &\n"
        with pytest.raises(ExecutorError) as e:
            await c.execute("rm -rf y; echo x", cwd=str(tmp_path))
        assert e.value.code == protocol.COMMAND_NOT_ALLOWED
    assert (tmp_path / "y" / "keep").read_text() == "k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y"]


async def test_shell_mode_runs_through_sh(executor_service, tmp_path):
    svc = executor_service("--shell", allow=["echo"])
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    (tmp_path / "y").mkdir()
    async with await ExecutorClient.connect(svc.url) as c:
        assert c.session["capabilities"]["shell"] is True
        r = await c.execute("echo x; rm -rf y; echo $((6*7))", cwd=str(tmp_path))
        assert r.stdout == b"x\n42\n" and r.ok
        # args are still exec'd directly and still allow-listed.
        with pytest.raises(ExecutorError) as e:
            await c.execute(args=["sh", "-c", "echo no"])
        assert e.value.code == protocol.COMMAND_NOT_ALLOWED
        # The env deny-list holds in shell mode too (BASH_ENV would run a file in every sh).
        with pytest.raises(ExecutorError) as e:
            await c.execute("echo no", env={"BASH_ENV": str(tmp_path / "rc")})
        assert (e.value.code, e.value.data) == (protocol.INVALID_PARAMS, {"field": "env"})
    assert not (tmp_path / "y").exists()


async def test_quoted_words_arrive_as_exact_argv(executor_service):
    svc = executor_service(allow=["python3"])
    command = ("python3 -c 'import sys,json;print(json.dumps(sys.argv))' "
               "\"two words\" 'it'\"'\"'s' \"say \\\"hi\\\"\" back\\ slash h\u00e9llo "
               "\u65e5\u672c\u8a9e '' '$HOME' \"*\" ';' '\U0001F600'")
    async with await ExecutorClient.connect(svc.url) as c:
        r = await c.execute(command)
        assert r.ok, r.stderr_text
        assert json.loads(r.stdout) == ["-c", "two words", "it's", 'say "hi"', "back slash",
                                        "h\u00e9llo", "\u65e5\u672c\u8a9e", "", "$HOME", "*",
                                        ";", "\U0001F600"]
        with pytest.raises(ExecutorError) as e:
            await c.execute("python3 -c 'unterminated")
        assert e.value.code == protocol.INVALID_PARAMS and e.value.data["field"] == "command"
        assert "closing quotation" in e.value.message.lower()


_ = (asyncio, http_status)
