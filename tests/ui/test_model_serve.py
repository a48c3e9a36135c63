"""`./dev serve --model local` (the `stress.service.serve` launcher that `./dev serve` runs): the
loopback model beside the service, a banner, `model: simulated` in `connected` and /health, and
nothing left running after SIGTERM. And the client's hint when a claude job is not logged in."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request

import pytest
from conftest import REPO, wait_until
from service_fixture import PY, clean_env

from cc_executor.client import ExecutorClient

pytestmark = [pytest.mark.claude,
              pytest.mark.skipif(not os.access(REPO / "node_modules/.bin/claude", os.X_OK),
                                 reason="node_modules/.bin/claude is not installed")]
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}


def ask(url: str, prompt: str) -> tuple[dict, bytes]:
    async def go():
        async with await ExecutorClient.connect(url) as client:
            result = await client.execute(args=["claude", "-p", prompt], timeout=60)
            return client.session, result.stdout
    return asyncio.run(go())


def test_dev_serve_model_local_runs_a_simulated_model_beside_the_service(tmp_path):
    argv = [PY, "-m", "stress.service.serve", "--model", "local", "--port", "0",
            "--log-dir", str(tmp_path / "logs"), "--run-dir", str(tmp_path / "run"),
            "--env-file", str(tmp_path / "absent.env")]
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        launcher = subprocess.Popen(argv, cwd=tmp_path, stdout=o, stderr=e,
                                    stdin=subprocess.DEVNULL, env=clean_env(ENV))
    try:
        assert wait_until(lambda: out.read_text().endswith("\n") or launcher.poll() is not None,
                          30.0), err.read_text()
        url = out.read_text().splitlines()[0]
        assert url.startswith("ws://127.0.0.1:"), err.read_text()
        assert "model: SIMULATED" in err.read_text() and "--model real" in err.read_text()

        session, stdout = ask(url, "What is 2+2?")
        assert session.get("model") == "simulated", session
        assert b"4" in stdout
        with urllib.request.urlopen(url.replace("ws://", "http://")[:-3] + "/health",
                                    timeout=5) as r:
            assert json.loads(r.read())["model"] == "simulated"
    finally:
        launcher.send_signal(signal.SIGTERM)
        rc = launcher.wait(30)
    assert rc == 0, err.read_text()
    assert "Traceback" not in err.read_text()


def test_a_claude_job_that_is_not_logged_in_gets_a_hint(executor_service, tmp_path):
    config = tmp_path / "claude-config"  # no credentials in it, and no key in the environment
    config.mkdir()
    svc = executor_service(env={"ANTHROPIC_API_KEY": None, "ANTHROPIC_AUTH_TOKEN": None,
                                "CLAUDE_CODE_OAUTH_TOKEN": None, "ANTHROPIC_BASE_URL": None,
                                "CLAUDE_CONFIG_DIR": str(config)})
    done = subprocess.run([PY, "-m", "cc_executor.client", "--url", svc.url, "--", "claude",
                           "-p", "What is 2+2?"], capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, env=clean_env(ENV))
    assert done.returncode != 0
    assert "Not logged in" in done.stdout + done.stderr
    assert "./dev serve --model local" in done.stderr and "ANTHROPIC_API_KEY" in done.stderr

