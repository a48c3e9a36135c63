"""The first hour, tried as a newcomer would: the README's commands and Python snippet as written
(only the service's URL swapped for the ephemeral port the test's service got), a taken port,
refused upgrades that show up, the client's messages and help, and `./dev`'s own help."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import subprocess
import urllib.request

import pytest
import websockets
from conftest import REPO, wait_until
from prometheus_client.parser import text_string_to_metric_families
from service_fixture import PY, clean_env, launch

from cc_executor.client.__main__ import main as client_main

README = (REPO / "README.md").read_text()
README_URL = "ws://127.0.0.1:8005/ws"
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}


def run(argv: list[str], cwd=None, timeout: float = 60, **env: str | None):
    return subprocess.run(argv, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=clean_env({**ENV, **env}))


def readme_python_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 1, "README has no Python snippet"
    return blocks[0]


def readme_line(start: str) -> list[str]:
    """The README's command line that starts with `start`, as argv (comments dropped)."""
    for line in README.splitlines():
        if line.startswith(start):
            return shlex.split(line.split("  #")[0])
    raise AssertionError(f"README has no line starting with {start!r}")


def venv_python(argv: list[str]) -> list[str]:
    assert argv[0] == ".venv/bin/python", argv
    return [PY, *argv[1:]]


def test_readme_service_commands_and_snippet_run_as_written(executor_service, tmp_path, capfd):
    serve = readme_line(".venv/bin/python -m cc_executor --port 8005")
    assert serve[serve.index("--token") + 1] == "s3cret" and "echo" in serve
    flags = [a for a in serve[3:] if a not in ("--port", "8005")]  # an ephemeral port instead
    svc = executor_service(*flags)

    snippet = readme_python_snippet()
    assert README_URL in snippet and 'token="s3cret"' in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace(README_URL, svc.url))
    done = run([PY, str(script)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 hello\n\n"

    cli = readme_line(".venv/bin/python -m cc_executor.client --url")
    assert venv_python(cli)[1:3] == ["-m", "cc_executor.client"]
    argv = [svc.url if a == README_URL else a for a in cli[3:]]
    code, out, err = client_cli(capfd, *argv)
    assert (code, out) == (0, "hello\n"), err


@pytest.mark.slow
def test_readme_stress_local_example_runs(tmp_path):
    argv = venv_python(readme_line(".venv/bin/python -m stress.local examples/basic"))
    done = run(argv, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"\d+ tests: \d+ passed, 0 failed", done.stdout), done.stdout[-2000:]


def test_a_taken_port_is_one_line_naming_the_flag(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = launch(tmp_path, "--port", str(port))
        assert svc.proc.wait(30) == 2
    err = svc.stderr().strip()
    assert err == (f"cc_executor: port {port} on 127.0.0.1 is already in use: choose another "
                   f"with --port N (or CC_EXECUTOR_PORT); --port 0 picks a free one")


async def _refuse(url: str, n: int, **kw) -> None:
    for _ in range(n):
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(url, open_timeout=10, **kw):
                pass


def test_refused_upgrades_are_logged_at_a_bounded_rate(executor_service):
    svc = executor_service("--token", "t0ken")
    asyncio.run(_refuse(svc.url, 14))
    asyncio.run(_refuse(svc.url, 1, additional_headers={"Authorization": "Bearer nope"}))

    def logged():
        return [e for e in svc.event_log() if e.get("event") == "refused"]
    wait_until(lambda: len(logged()) >= 10, 10.0)
    events = logged()
    assert len(events) == 10  # the burst; the other 5 were counted, not logged
    assert events[0]["reason"] == "missing_token" and events[0]["status"] == 401
    lines = [ln for ln in svc.stderr().splitlines() if "refused upgrade" in ln]
    assert len(lines) == 10 and "missing token" in lines[0], svc.stderr()

    # A service token guards the WebSocket; /metrics stays open like /health (counts only).
    with urllib.request.urlopen(svc.http + "/metrics", timeout=5) as r:
        counted = {tuple(s.labels.items()): s.value
                   for f in text_string_to_metric_families(r.read().decode())
                   if f.name == "cc_executor_upgrades_refused" for s in f.samples}
    assert counted == {(("reason", "missing_token"),): 14.0, (("reason", "invalid_token"),): 1.0}


def client_cli(capfd, *argv: str) -> tuple[int, str, str]:
    """`python -m cc_executor.client ARGV`, run in this process (its `main`)."""
    try:
        code = client_main(list(argv))
    except SystemExit as e:  # --help, usage errors
        code = e.code
    out, err = capfd.readouterr()
    return code, out, err


def test_client_prints_which_token_problem_the_server_names(executor_service, capfd,
                                                           monkeypatch):
    monkeypatch.delenv("CC_EXECUTOR_TOKEN", raising=False)
    svc = executor_service("--token", "right", "--log-level", "warning", allow=["echo"])
    missing = client_cli(capfd, "--url", svc.url, "--", "echo", "x")
    wrong = client_cli(capfd, "--url", svc.url, "--token", "wrong", "--", "echo", "x")
    assert missing[0] == wrong[0] == 2
    assert "HTTP 401: missing token" in missing[2], missing
    assert "HTTP 401: invalid token" in wrong[2], wrong
    assert "--token" in missing[2]
    # --log-level warning: the refusals are in the event log, not on the console.
    assert wait_until(lambda: len([e for e in svc.event_log()
                                   if e.get("event") == "refused"]) == 2, 10.0)
    assert "refused upgrade" not in svc.stderr()


def test_client_help_says_what_each_option_is(capfd):
    code, out, _ = client_cli(capfd, "--help")
    assert code == 0
    text = " ".join(out.split())
    for expected in ("--timeout SECONDS", "--stall-timeout SECONDS", "default ws://127.0.0.1:8004/ws",
                     "env CC_EXECUTOR_TOKEN", "after --", "allow-list", "Exit status"):
        assert expected in text, (expected, out)


def test_dev_names_a_bad_subcommand_and_help_exits_0():
    bad = run(["./dev", "frobnicate"])
    assert bad.returncode == 2
    assert bad.stderr.startswith("dev: unknown subcommand 'frobnicate'")
    for flag in ("--help", "-h", "help"):
        ok = run(["./dev", flag])
        assert ok.returncode == 0 and "./dev serve" in ok.stdout and "--browser" in ok.stdout


def test_the_service_never_imports_the_harness():
    """The simulated model is the launcher's business (`./dev serve`); `cc_executor` itself
    imports nothing of `stress`, so `python -m cc_executor` can never fake answers."""
    import ast  # noqa: PLC0415

    found = []
    for path in sorted((REPO / "src" / "cc_executor").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "stress"]
    assert found == []
