"""`--dashboard`: the harness's live page, opened in Debian's chromium while a real run goes on.

The run is real (the service, a capacity search over a test that sleeps); the page must show the
running test within 2 s of loading, fill in the counts and the timeline as tests end, say when
the run finished, and log no console error. The server answers only its own Host name.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
from browser import browser_page  # noqa: F401 - the fixture
from conftest import REPO, wait_until

PY = sys.executable

SUITE = {"name": "dash", "defaults": {"timeout": 30}, "tests": [
    {"id": "nap", "command": "sleep 2; echo done", "expected_patterns": ["done"]},
    {"id": "needs_real", "command": "true", "requires": ["real-model"]},
]}


def start(tmp_path, suite_doc: dict, *args: str):
    """The harness with --dashboard in the background: (url, process, its stdout lines so far)."""
    suite = tmp_path / "dash.json"
    suite.write_text(json.dumps(suite_doc))
    proc = subprocess.Popen(
        [PY, "-m", "stress.local", str(suite), *args, "--out", str(tmp_path / "out"),
         "--max-load", "1000", "--no-history", "--dashboard"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    return proc, lines, reader


@contextlib.contextmanager
def dashboard_run(tmp_path, suite_doc: dict, *args: str):
    proc, lines, reader = start(tmp_path, suite_doc, *args)
    try:
        found = wait_until(lambda: next((m for ln in list(lines)
                                         if (m := re.search(r"dashboard: (http://\S+)", ln))), None),
                           timeout=30, interval=0.05)
        assert found, (lines, proc.poll())
        yield found.group(1), proc, lines
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:  # a failed test: let the harness stop its service, then insist
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        reader.join(timeout=10)


def assert_refuses_foreign_host(url: str) -> None:
    """A request naming another host (DNS rebinding) gets 403; the feed has no CORS header."""
    req = urllib.request.Request(url + "state", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    with urllib.request.urlopen(url + "state", timeout=10) as resp:
        state = json.loads(resp.read())
        assert resp.headers.get("Access-Control-Allow-Origin") is None
    assert state["title"].startswith("stress.local ") and state["running_count"] >= 1


def test_dashboard_follows_a_capacity_run(tmp_path, browser_page):  # noqa: F811
    """One real --find-capacity run: the running test within 2 s of loading, the counts, the
    timeline, each capacity step as it ends, "finished" at the end, no console error."""
    with dashboard_run(tmp_path, SUITE, "--find-capacity", "--step", "1", "--step-duration", "1s",
                       "--max-steps", "2") as (url, proc, lines):
        page = browser_page.page
        page.goto(url)
        # Within 2 s of the harness starting the test, the open page lists it as running (the
        # service's start-up before that takes what the host gives it: a generous bound).
        assert wait_until(lambda: any(ln.startswith("START nap") for ln in list(lines)), 60,
                          interval=0.02), lines
        page.locator("#running td", has_text="nap").first.wait_for(timeout=2_000)
        page.locator("#timeline rect").first.wait_for(state="attached", timeout=2_000)
        assert page.locator("#link").inner_text() == "feed: live"
        assert page.locator("#skipped").inner_text() == "skipped 1"  # counted as the summary does
        assert_refuses_foreign_host(url)
        page.locator("#capacity circle").nth(1).wait_for(state="attached", timeout=20_000)
        page.locator("#phase", has_text="finished").wait_for(timeout=30_000)
        labels = page.locator("#capacity text").all_text_contents()
        assert "1" in labels and "2" in labels, labels  # each step's concurrency on the axis
        assert "errors 100 %" in labels, labels  # both curves' scales are written
        assert "closed" in page.locator("#link").inner_text()
        shown = {k: int(page.locator(f"#{k}").inner_text().split()[1]) for k in ("passed", "failed")}
        bars = page.locator("#timeline rect").count()
        assert browser_page.errors == []
    summary = next(ln for ln in lines if " tests: " in ln and "runs: " in ln)
    runs = re.search(r"\((\d+) runs: (\d+) passed, (\d+) failed, 1 skipped\)", summary)
    assert runs, summary
    assert (shown["passed"], shown["failed"]) == (int(runs[2]), int(runs[3]))
    assert bars == int(runs[2]) + int(runs[3])


def test_dashboard_port_in_use_is_a_usage_error(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = subprocess.run([PY, "-m", "stress.local", "examples/basic", "--dashboard", str(port),
                               "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    assert proc.returncode == 2
    assert f"--dashboard: port {port} on 127.0.0.1 is not free" in proc.stderr
