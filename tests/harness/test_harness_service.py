"""The harness's service handling and client-side guard, against the real service.

`ManagedService` is used in-process here (it is the harness's own code); the service is the real
`python -m cc_executor` subprocess. The guard test makes the service queue every job (a free-memory
floor no machine meets) so the harness's own queue deadline must end the wait.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO
from stress.run.runner import Planned, RunOptions, Runner
from stress.service.managed import ManagedService, ServiceError, fetch_json, health_url
from stress.suite import load_suite

pytestmark = pytest.mark.anyio


def one_test(tmp_path: Path, test: dict):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"name": "one", "tests": [test]}))
    t = load_suite(path).tests[0]
    return Planned("one", t, t.id, 1, t.pass_threshold, False)


async def test_managed_service_starts_answers_health_and_stops_cleanly(tmp_path):
    svc = ManagedService(allow=["sh"], log_dir=tmp_path / "logs")
    await svc.start()
    try:
        assert svc.url.startswith("ws://127.0.0.1:") and svc.health["status"] == "ok"
        status, body = await fetch_json(health_url(svc.url))
        assert status == 200 and body["status"] == "ok"
        assert svc.token not in " ".join(svc.describe_argv())
        pid = svc.pid
    finally:
        info = await svc.stop()
    assert info.how == "sigterm" and info.exit_code == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not svc.run_dir.exists()
    assert (await svc.stop()) is info  # idempotent


async def test_a_service_that_will_not_stop_in_time_leaves_its_stacks(tmp_path):
    """SIGTERM not enough within the harness's stop timeout: SIGUSR1 first (the service prints
    every thread's stack), then SIGKILL; the report keeps that stderr, and the job is ended."""
    from cc_executor.client import ExecutorClient

    # The job ignores SIGTERM, so the service's shutdown takes its whole 10 s kill grace:
    # longer than this harness waits (1 s).
    svc = ManagedService(allow=["sh"], log_dir=tmp_path / "logs",
                         extra_args=["--kill-grace", "10"], stop_timeout=1.0)
    await svc.start()
    try:
        async with await ExecutorClient.connect(svc.url, svc.token) as client:
            job = await client.start("sh -c 'trap \"\" TERM; echo ready; exec sleep 60'")
            async for ev in job:
                if ev.kind == "output" and b"ready" in ev.data:
                    break
            job_pid = job.pid
            svc.note_job(job_pid)
            info = await svc.stop()
    finally:
        await svc.stop()
    assert info.how == "sigkill", info
    assert "Thread 0x" in info.stderr_tail and "File " in info.stderr_tail, info.stderr_tail
    assert info.leftovers_killed >= 1
    assert not psutil.pid_exists(job_pid) or psutil.Process(job_pid).status() == psutil.STATUS_ZOMBIE


async def test_a_service_that_cannot_start_is_reported(tmp_path):
    svc = ManagedService(allow=["sh"], log_dir=tmp_path / "logs", extra_args=["--max-load", "abc"])
    with pytest.raises(ServiceError, match="(?s)exited with code 2 before listening: .*max_load"):
        await svc.start()
    assert svc.stop_info is not None


async def test_client_guard_gives_up_on_a_job_the_service_keeps_queued(tmp_path):
    svc = ManagedService(allow=["sh"], log_dir=tmp_path / "logs",
                         extra_args=["--min-free-mem", "1000000G"])
    await svc.start()
    try:
        planned = one_test(tmp_path, {"id": "queued", "command": "echo never", "timeout": 5})
        runner = Runner(svc.url, svc.token, [planned], tmp_path / "report",
                        RunOptions(queue_limit=1.0, cancel_wait=5.0))
        t0 = time.monotonic()
        outcomes = await runner.run()
        elapsed = time.monotonic() - t0
    finally:
        await svc.stop()
    a = outcomes[0].attempts[0]
    assert (a.status, a.reason, a.end_reason, a.guard, a.queued) == ("failed", "error", "error", "queue", True)
    assert "waited over 1 s in the service's queue" in a.message
    assert a.stdout_bytes == 0 and elapsed < 8


def test_harness_against_a_running_server(tmp_path):
    """--server/--token: the harness tests a service it did not start, and leaves it running."""
    token = "t0ken-for-test"
    log = tmp_path / "svc.out"
    with open(log, "wb") as out:
        svc = subprocess.Popen([sys.executable, "-m", "cc_executor", "--port", "0", "--token", token,
                                "--allow", "sh", "--run-dir", str(tmp_path / "run"),
                                "--log-dir", str(tmp_path / "logs"), "--max-load", "1000"],
                               stdout=out, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        from conftest import wait_until

        url = wait_until(lambda: log.read_text().strip(), timeout=30)
        assert url.startswith("ws://"), url
        proc = subprocess.run(
            [sys.executable, "-m", "stress.local", "configs/smoke.json", "--filter", "shell",
             "--server", url, "--token", token, "--out", str(tmp_path / "out"), "--quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads(next((tmp_path / "out").glob("*/report.json")).read_text())
        assert report["service"]["kind"] == "remote" and report["service"]["url"] == url
        assert report["service"]["stop"]["how"] == "remote"
        assert [t["status"] for t in report["tests"]] == ["passed"]
        assert svc.poll() is None  # not ours to stop
        # A wrong token: one message and exit 3 before any test, not one "HTTP 401" per test.
        bad = subprocess.run(
            [sys.executable, "-m", "stress.local", "configs/smoke.json", "--server", url,
             "--token", "wrong", "--out", str(tmp_path / "out2"), "--quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert bad.returncode == 3, bad.stdout + bad.stderr
        said = f"stress.local: preflight failed: the service at {url} refused the token (HTTP 401)"
        assert bad.stderr.count("HTTP 401") == 1 and said in bad.stderr, bad.stderr
        assert "--token T, or --server-token URL=T" in bad.stderr and "exit status 3" in bad.stderr
        r2 = json.loads(next((tmp_path / "out2").glob("*/report.json")).read_text())
        assert r2["exit_code"] == 3 and r2["error"].startswith(f"preflight: the service at {url} refused")
        assert len(r2["tests"]) == 6 and all(t["status"] == "skipped" for t in r2["tests"])
        assert all(t["message"].startswith("skipped: not run: preflight: ") for t in r2["tests"])
        assert not any(a["started_at"] for t in r2["tests"] for a in t["attempts"])
        assert svc.poll() is None
    finally:
        svc.terminate()
        svc.wait(20)
    # The service is gone now: the report lists every selected test as not run, not "0 tests".
    gone = subprocess.run(
        [sys.executable, "-m", "stress.local", "configs/smoke.json", "--server", url, "--token", token,
         "--out", str(tmp_path / "out3"), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert f"stress.local: service: {url}: " in gone.stderr and "not healthy after 10 s" in gone.stderr
    assert "6 tests: 0 passed, 0 failed, 6 skipped" in gone.stdout
    r3 = json.loads(next((tmp_path / "out3").glob("*/report.json")).read_text())
    assert r3["error"].startswith("service: ") and len(r3["tests"]) == 6
    assert all(t["message"].startswith("skipped: not run: service: ") for t in r3["tests"])
    md = next((tmp_path / "out3").glob("*/report.md")).read_text()
    assert "| Tests | 6: 0 passed, 0 failed, 6 skipped |" in md and "| Result | **FAILED** |" in md
