"""A real browser for tests of web pages: Playwright for Python driving Debian's chromium.

Why this shape: the pages this project serves (the service's /dashboard, the harness's live view,
report.html) are only worth testing the way a person sees them, in a real browser. We never
download a browser build (this machine reaches package registries only): `./dev setup --browser`
installs Debian's `chromium` with apt, and Playwright (pinned in the `test` extra) is pointed at
`/usr/bin/chromium`.

Use it from a test module with `from browser import browser_page  # noqa: F401` (the fixture must
be imported into the module, or into a conftest.py, for pytest to find it). `browser_page` gives a
`BrowsedPage`: `.page` is a Playwright sync `Page`, `.errors` collects every console error and
uncaught page exception as text, `.screenshot(path)` saves a PNG. Each test gets a fresh browser
with a fresh profile directory; at teardown the browser and Playwright's driver are closed and the
fixture fails the test if either process is still alive (the autouse leftover check in conftest.py
watches them too, since they inherit the session marker).

Where chromium is missing the fixture skips with the reason `./dev setup --browser` recorded (for
example: not root, or apt-get failed); under CI (`CI=true`) a missing browser without such a
recorded reason is a failure, since `.ci/run` runs that setup step first.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO, wait_until

CHROMIUM = os.environ.get("CC_EXECUTOR_CHROMIUM", "/usr/bin/chromium")
# Why these flags: headless on a machine without a display or GPU, as root (no sandbox), and
# nothing that reaches the network on its own (QUIC, component updates, sync, background fetches).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# Written by `./dev setup --browser` when it could not install chromium: one line saying why.
SKIP_REASON_FILE = Path(os.environ.get("CC_EXECUTOR_VENV", REPO / ".venv")) / ".cc-executor-browser-missing"
CLOSE_TIMEOUT = 10.0


def chromium_missing_reason() -> str | None:
    """None when the browser can run; otherwise why not, in words a reader can act on."""
    if os.access(CHROMIUM, os.X_OK):
        try:
            import playwright.sync_api  # noqa: F401, PLC0415 - only needed when a browser runs
        except ImportError:
            return "Playwright for Python is not installed: run `./dev setup` (the test extra pins it)"
        return None
    recorded = SKIP_REASON_FILE.read_text().strip() if SKIP_REASON_FILE.exists() else ""
    if recorded:
        return f"chromium cannot be installed here: {recorded}"
    return (f"{CHROMIUM} not found: run `./dev setup --browser` (installs Debian's chromium with "
            f"apt-get; needs root)")


@dataclass
class BrowsedPage:
    """A page in a fresh headless chromium, and what went wrong on it."""

    page: object  # playwright.sync_api.Page
    errors: list[str] = field(default_factory=list)

    def screenshot(self, path: str | Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return Path(path)


def _record_errors(page, errors: list[str]) -> None:
    def on_console(msg) -> None:
        if msg.type == "error":
            errors.append(f"console: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))


def _browser_pids(roots: set[int]) -> set[int]:
    """`roots` (Playwright's driver and the browser it launched) and every descendant."""
    from cc_executor import tree  # noqa: PLC0415

    found = set(roots)
    for pid in roots:
        found |= set(tree.descendants(pid))
    return found


@pytest.fixture
def browser_page(tmp_path):
    reason = chromium_missing_reason()
    if reason:
        if os.environ.get("CI") == "true" and not SKIP_REASON_FILE.exists():
            pytest.fail(f"browser missing under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    from cc_executor import tree  # noqa: PLC0415

    before = set(tree.descendants(os.getpid()))
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    pw = sync_playwright().start()
    started: set[int] = set()
    try:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, chromium_sandbox=False,
            args=CHROMIUM_ARGS, timeout=30_000)
        # What Playwright started, taken before the test body starts anything else.
        started = _browser_pids(set(tree.descendants(os.getpid())) - before)
        page = context.pages[0] if context.pages else context.new_page()
        browsed = BrowsedPage(page)
        _record_errors(page, browsed.errors)
        yield browsed
        started = _browser_pids(started)  # with the renderers the pages started since
        context.close()
    finally:
        started = _browser_pids(started)
        pw.stop()
        shutil.rmtree(profile, ignore_errors=True)
    left = wait_until(lambda: not [p for p in started if tree.is_alive(p)], CLOSE_TIMEOUT) or None
    if left is None:
        alive = sorted(p for p in started if tree.is_alive(p))
        pytest.fail(f"browser processes still alive after closing: {alive}", pytrace=False)


__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "BrowsedPage", "browser_page", "chromium_missing_reason"]
