"""The shared browser fixture itself: a real page loads, its console errors are collected, and
nothing of the browser outlives the test (the autouse leftover check would fail it)."""

from __future__ import annotations

from browser import browser_page  # noqa: F401 - the fixture


def test_page_renders_and_console_errors_are_collected(browser_page, tmp_path):  # noqa: F811
    page_file = tmp_path / "p.html"
    page_file.write_text("<!doctype html><title>t</title><p id=x>hello</p>"
                         "<script>console.error('boom-1'); undefinedCall();</script>")
    browser_page.page.goto(page_file.as_uri())
    assert browser_page.page.text_content("#x") == "hello"
    assert any("boom-1" in e for e in browser_page.errors), browser_page.errors
    assert any("undefinedCall" in e for e in browser_page.errors), browser_page.errors
    shot = browser_page.screenshot(tmp_path / "shot.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
