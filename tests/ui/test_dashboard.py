"""/dashboard in a real headless chromium: the page loads with no console errors, a job started
through cc_executor.client shows up within 2 s and then in the completions with its end reason;
a page on a foreign origin cannot read the feed; with a token the page takes it from the URL
fragment, and without one asks for it."""

from __future__ import annotations

import asyncio
import http.server
import json
import queue
import threading
import time

import pytest
import websockets
from browser import browser_page  # noqa: F401 - the fixture

from cc_executor.client import ExecutorClient

APPEAR_WITHIN_MS = 2000


def feed_refused_status(url: str, **kw) -> int:
    """The HTTP status a refused feed upgrade gets, from a thread of its own (Playwright's sync
    API runs an event loop in the test's thread)."""
    async def go() -> int:
        with pytest.raises(websockets.InvalidStatus) as e:
            async with websockets.connect(url, open_timeout=10, **kw):
                pass
        return e.value.response.status_code
    out: list = []
    worker = threading.Thread(target=lambda: out.append(asyncio.run(go())))
    worker.start()
    worker.join(20)
    assert out, "the upgrade check did not finish"
    return out[0]


class BackgroundJob(threading.Thread):
    """Runs one job through the client in its own thread and loop (the browser's Playwright API
    is synchronous and owns the test's thread); `job_id` arrives on `ids`."""

    def __init__(self, url: str, args: list[str], token: str | None = None):
        super().__init__(daemon=True)
        self.url, self.args, self.token = url, args, token
        self.ids: queue.Queue[str] = queue.Queue()
        self.result = None
        self.error: BaseException | None = None

    def run(self) -> None:
        async def go():
            async with await ExecutorClient.connect(self.url, self.token) as client:
                job = await client.start(args=self.args, timeout=30)
                self.ids.put(job.job_id)
                return await job.result()
        try:
            self.result = asyncio.run(go())
        except BaseException as e:  # reported by the test
            self.error = e
            self.ids.put("")


def test_dashboard_shows_a_live_job_with_no_console_errors(executor_service, browser_page,  # noqa: F811
                                                           tmp_path):
    svc = executor_service(allow=["sleep"])
    page = browser_page.page
    page.goto(svc.http + "/dashboard")
    page.wait_for_selector("#status.live", timeout=10_000)

    job = BackgroundJob(svc.url, ["sleep", "3"])
    job.start()
    job_id = job.ids.get(timeout=20)
    assert job_id, job.error
    t0 = time.monotonic()
    row = page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"]', timeout=APPEAR_WITHIN_MS)
    seen_after = time.monotonic() - t0
    assert "sleep 3" in row.inner_text()
    assert "running" in row.inner_text()
    assert page.text_content("#count-running") == "1"
    browser_page.screenshot(tmp_path / "dashboard-running.png")

    job.join(20)
    assert not job.is_alive() and job.error is None and job.result.exit_code == 0
    done = page.wait_for_selector(f'#completions tr:has-text("{job_id}")', timeout=10_000)
    assert "exited" in done.inner_text()
    page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"]', state="detached", timeout=10_000)
    assert browser_page.errors == [], browser_page.errors
    print(f"job row visible {seen_after:.2f} s after the start reply")


class ForeignSite:
    """A page on another origin (another port on loopback) that tries to read the feed."""

    def __init__(self, feed_url: str, token: str):
        html = f"""<!doctype html><title>foreign</title><pre id=log></pre><script>
        const log = (t) => document.getElementById('log').textContent += t + '\\n';
        const ws = new WebSocket({json.dumps(feed_url)}, [{json.dumps("bearer." + token)}]);
        ws.onopen = () => log('open');
        ws.onmessage = (e) => log('message ' + e.data.length);
        ws.onclose = () => log('closed');
        </script>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the standard library's name
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_a_foreign_origin_cannot_read_the_feed_and_the_page_asks_for_the_token(
        executor_service, browser_page):  # noqa: F811
    svc = executor_service("--token", "dash-secret")
    feed = svc.ws("/dashboard/feed")
    page = browser_page.page
    # A page on another origin, even one holding the token, reads nothing: refused with 403.
    site = ForeignSite(feed, token="dash-secret")
    try:
        page.goto(site.url)
        page.wait_for_function("document.getElementById('log').textContent.includes('closed')",
                               timeout=10_000)
        log = page.text_content("#log")
        assert "open" not in log and "message" not in log, log
    finally:
        site.close()
    assert feed_refused_status(feed, origin=site.url.rstrip("/")) == 403
    assert feed_refused_status(feed, origin="http://evil.example") == 403
    assert feed_refused_status(feed) == 401  # right origin (none), no token

    # The service's own page without a token asks for one; a wrong one is refused.
    page.goto(svc.http + "/dashboard")
    page.wait_for_selector("#token-form:not([hidden])", timeout=10_000)
    assert page.text_content("#status") == "not connected"
    page.fill("#token", "wrong")
    page.click("#token-form button")
    page.wait_for_selector("#token-error:has-text('refused this token')", timeout=10_000)

    page.goto(svc.http + "/dashboard#token=dash-secret")  # pasted into the open page's address
    page.wait_for_selector("#status.live", timeout=10_000)
    assert page.is_hidden("#token-form")
    assert "token" not in page.url  # the fragment is taken out of the address bar and history
