"""report.html, report.md's new shape, simulated cost labels and the history page, checked the
way people meet them: a real harness run (real service, real `claude` on the loopback model),
the page opened in Debian's chromium (tests/browser.py).

One module-scoped run feeds the browser tests: a pass, a failure, an instances test, a Claude
prompt and a skipped test. The charts only some runs have (capacity, history trend) are checked
from records rendered in-process, which is what the run would hand the page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import browser_page  # noqa: F401 - the fixture
from conftest import REPO
from stress.report.progress import Progress

PY = sys.executable
PASSED_MARK = "hello-preview-marker"
FAILED_MARK = "failing-output-evidence"
CHARTS = ("timeline", "durations", "distributions", "host")

SUITE = {
    "name": "htmlcheck", "defaults": {"timeout": 30, "stall_timeout": 20},
    "tests": [
        {"id": "hello", "command": f"echo {PASSED_MARK}", "expected_patterns": [PASSED_MARK]},
        {"id": "fails", "command": f"echo {FAILED_MARK}; exit 3"},
        {"id": "pair", "command": "echo pair", "instances": {"count": 2, "criterion": "fastest"}},
        {"id": "prompt", "prompt": "What is 15+27?", "expected_patterns": ["42"]},
        {"id": "needs_real", "command": "true", "requires": ["real-model"]},
    ],
}


def harness(*args: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "stress.local", *args, "--out", str(out), "--max-load", "1000",
                           "--model", "local"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("html")
    suite = base / "htmlcheck.json"
    suite.write_text(json.dumps(SUITE))
    out = base / "out"
    proc = harness(str(suite), "--concurrency", "2", out=out)
    assert proc.returncode == 1, proc.stderr  # `fails` fails
    folder = Path(proc.stdout.split("report: ")[-1].strip()).parent
    return proc, folder, out


class Resources(HTMLParser):
    """Every tag and attribute value that could make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "xlink:href", "action") and v]


def test_report_html_opens_in_chromium_with_every_chart(run, browser_page, tmp_path):  # noqa: F811
    _, folder, _ = run
    requests: list[str] = []
    page = browser_page.page
    page.on("request", lambda r: requests.append(r.url))
    page.goto((folder / "report.html").as_uri())
    assert browser_page.errors == []
    titles = page.eval_on_selector_all("figure svg > title", "els => els.map(e => e.textContent)")
    assert len(titles) >= len(CHARTS) and all(titles), titles
    for key in CHARTS:
        fig = page.locator(f"#chart-{key}")
        assert fig.count() == 1, key
        caption = fig.locator("figcaption").inner_text()
        assert len(caption.splitlines()) == 2 and caption.split("\n")[1].strip(), (key, caption)
        box = fig.locator("svg").bounding_box()
        assert box and box["width"] > 300 and box["height"] > 100, (key, box)
    # Axis units are written on the charts (matplotlib keeps text as <text>).
    svg_text = page.locator("#chart-timeline svg").text_content()
    assert "seconds since the run started (s)" in svg_text
    # The passed test's preview is folded, the failure's evidence shown.
    preview = page.locator("details", has_text="hello")
    assert preview.count() == 1 and not preview.locator("pre").is_visible()
    preview.locator("summary").click()
    assert PASSED_MARK in preview.locator("pre").inner_text()
    assert FAILED_MARK in page.locator("article.failure").inner_text()
    assert "(simulated)" in page.locator("body").inner_text()
    assert all(u.startswith("file://") for u in requests), requests
    browser_page.screenshot(tmp_path / "report.png")
    # Printable: the print layout keeps every chart (a PDF of a few pages, the charts in it).
    page.emulate_media(media="print")
    assert all(page.locator(f"#chart-{key} svg").is_visible() for key in CHARTS)
    pdf = page.pdf(path=str(tmp_path / "report.pdf"))
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
    assert pdf.startswith(b"%PDF") and pages >= 2, pages


def test_report_html_is_self_contained(run):
    _, folder, _ = run
    text = (folder / "report.html").read_text()
    found = Resources()
    found.feed(text)
    assert not found.tags & {"script", "link", "img", "iframe", "object", "embed"}, found.tags
    remote = [u for u in found.urls if re.match(r"^(https?:)?//", u)]
    assert remote == [] and "@import" not in text and not re.search(r"url\(\s*['\"]?https?:", text)
    assert all(not u.startswith("/") for u in found.urls)  # links only to files beside it


def test_report_md_keeps_evidence_not_passed_output(run):
    _, folder, _ = run
    md = (folder / "report.md").read_text()
    assert PASSED_MARK not in md
    assert FAILED_MARK in md and "### fails: exit_code" in md
    assert "[report.html](report.html)" in md and "## Passed tests' output" in md
    assert '"type":"system"' not in md  # no stream-json init lines of the passed Claude test


def test_costs_and_tokens_are_labelled_simulated(run):
    proc, folder, out = run
    md = (folder / "report.md").read_text()
    assert "## Claude totals (simulated)" in md and "cost (USD, simulated)" in md
    totals = json.loads((folder / "report.json").read_text())["claude_totals"]
    assert totals["simulated"] is True and totals["runs"] >= 1
    assert re.search(r"claude: \d+ runs, cost \$[\d.]+, .* tokens \(simulated: loopback model, "
                     r"nothing billed\)", proc.stdout), proc.stdout
    run_id = folder.name
    show = subprocess.run([PY, "-m", "stress.history", "--db", str(out / "history.sqlite3"),
                           "show", run_id], cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "COLUMNS": "250"})
    assert show.returncode == 0, show.stderr
    assert "cost $ (simulated)" in show.stdout and "nothing was billed" in show.stdout


def test_history_html_page(run, browser_page, tmp_path):  # noqa: F811
    _, _, out = run
    page_path = tmp_path / "trends.html"
    proc = subprocess.run([PY, "-m", "stress.history", "--db", str(out / "history.sqlite3"),
                           "html", "--out", str(page_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"history: 1 runs -> {page_path}" in proc.stdout
    browser_page.page.goto(page_path.as_uri())
    assert browser_page.errors == []
    page = browser_page.page
    assert page.locator("figure svg > title").first.text_content().startswith("Suites htmlcheck: 1 runs")
    rows = page.locator("section", has_text="Runs (newest first)").locator("tbody tr")
    assert rows.count() == 1
    assert "local (simulated)" in rows.first.inner_text()
    assert re.search(r"\b\d+:\d+\b", rows.first.inner_text())


def test_live_counters_count_what_the_summary_counts():
    """Runs (attempts), skipped ones included, an instances attempt once: the Summary's unit."""
    import io

    stream = io.StringIO()
    p = Progress(4, stream=stream, live=False)
    p.skipped("needs_real", "requires 'real-model'", runs=1)
    for i in (1, 2):
        p.started(f"pair.i{i}", f"pair.i{i}")
        p.instance_finished(f"pair.i{i}", f"pair.i{i}", "passed", "passed", 0.1, "")
    p.finished("pair", "pair", "passed", "passed", 0.1, "")
    p.started("fails", "fails")
    p.finished("fails", "fails", "failed", "exit_code", 0.1, "exit 3")
    p.started("hello", "hello")
    p.finished("hello", "hello", "passed", "passed", 0.1, "")
    assert p.counts == {"passed": 2, "failed": 1, "skipped": 1, "lost": 0}
    assert sum(p.counts.values()) == p.total
    assert "PASS pair.i1" in stream.getvalue() and "SKIP needs_real" in stream.getvalue()


def test_capacity_host_and_trend_charts_from_a_record():
    """A --find-capacity run's record draws the step curve (limit marked) and the host chart
    from its /health samples; rendered in-process from the values report.json holds."""
    from stress.report.html import render_html
    from stress.report.results import Capacity, RunResult

    run = RunResult(run_id="r", tool="stress.local", argv=["x"], started_at=1000.0,
                    finished_at=1030.0, environment={"cores": 2})
    steps = [{"step": i + 1, "concurrency": c, "ended": 10.0 * (i + 1), "held": c < 6,
              "p95_duration": 0.5 * c, "error_rate": 0.0 if c < 6 else 0.2, "attempts": 10}
             for i, c in enumerate((2, 4, 6))]
    run.capacity = Capacity(4, "errors", "step 3 crossed error_rate<1%", ["error_rate<1%"], 2,
                            10.0, 8, steps)
    run.history = {"trend": [
        {"run_id": f"r{i}", "started": 900.0 + i, "passes": 10 - i, "failures": i,
         "duration": 20.0 + i} for i in range(3)]}
    run.history["trend"][-1]["run_id"] = "r"
    run.profile = {"started_at": 1001.0, "samples": [
        {"at": float(t), "load1": 1.0 + t / 10, "cpu_pressure": 0.1, "rss": 50_000_000}
        for t in range(30)]}
    page = render_html(run)
    cap = re.search(r'<figure id="chart-capacity">.*?</figure>', page, re.S)
    assert cap and "<title>Capacity search: sustains 4 in flight, limited by errors</title>" in cap[0]
    assert "tests in flight (concurrency of the step)" in cap[0] and "sustains 4" in cap[0]
    host = re.search(r'<figure id="chart-host">.*?</figure>', page, re.S)
    assert host and "load (runnable tasks)" in host[0] and "stalled share (%)" in host[0]
    trend = re.search(r'<figure id="chart-trend">.*?</figure>', page, re.S)
    assert trend and "<title>History: the last 3 runs of these suites</title>" in trend[0]
    assert "runs passed (%)" in trend[0] and "run duration (s)" in trend[0]
    assert 'id="chart-timeline"' not in page  # nothing ran in this record: no empty chart


@pytest.mark.parametrize("values, seconds, want", [
    ([0.3, 0.9, 2.0, 7.0], True, {"0.5", "1", "2", "5"}),  # under two decades: 1-2-5 labelled
    ([12, 3_000, 4_000_000], False, {"100 B", "1 kB", "1 MB"}),  # wide: decades only
])
def test_log_axes_label_enough_ticks_to_read(values, seconds, want):
    """A histogram of runs from 0.3 s to 7 s once showed a single `1` under its log axis; and
    its count axis read `2.5 runs`."""
    from stress.report.html.charts import count_axis, log_axis
    from stress.report.html.svg import pyplot

    fig, ax = pyplot().subplots()
    try:
        lo, hi = min(values), max(values)
        ax.hist(values, bins=[lo * (hi / lo) ** (i / 20) for i in range(21)])
        log_axis(ax, seconds=seconds)
        count_axis(ax)
        fig.canvas.draw()
        lo, hi = ax.get_xlim()
        shown = {t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks())
                 if lo <= v <= hi and t.get_text()}
        counts = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    finally:
        pyplot().close(fig)
    assert want <= shown, shown
    assert seconds or not {"2 kB", "5 kB"} & shown, shown  # a wide axis stays uncluttered
    assert all("." not in c for c in counts), counts


def test_previews_are_capped_per_test_so_every_test_gets_some():
    """A capacity run repeated `echo` 73 times; its previews filled the page's 200 and the tests
    after it got none. At most 3 per test, and the page says how many it left out."""
    from stress.report.html import render_html
    from stress.report.results import Attempt, Outcome, RunResult

    def outcome(tid: str, n: int) -> Outcome:
        attempts = [Attempt(i + 1, "passed", "passed", "", "exited", exit_code=0,
                            started_at=1001.0 + i, duration=0.1, preview=f"{tid}-out-{i + 1}")
                    for i in range(n)]
        return Outcome("s", tid, tid, [], "s.json", "command", "true", [], 10.0, None, n,
                       status="passed", reason="passed", message="", passes=n, runs=n,
                       required=n, attempts=attempts)

    run = RunResult(run_id="r", tool="stress.local", argv=["x"], started_at=1000.0,
                    finished_at=1100.0, environment={"cores": 2})
    run.outcomes = [outcome("many", 80), outcome("late", 2)]
    page = render_html(run)
    previews = re.search(r"<h2>Output previews.*?</section>", page, re.S)[0]
    assert previews.count("<details>") == 5
    assert "late-out-1" in previews and "late-out-2" in previews and "many-out-4" not in previews
    assert "77 more passed run(s) are not previewed" in previews


def test_live_counters_under_a_result_line_already_count_it():
    """On a terminal, the counters drawn under `FAIL x` include x (they once said `failed 0`
    there until the next timed refresh)."""
    import pty
    import select

    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w")
    p = None
    try:
        p = Progress(2, stream=stream)
        p.started("bad", "bad")
        p.finished("bad", "bad", "failed", "exit_code", 0.1, "exit 3")
        p.skipped("later", "requires 'real-model'")
        out = b""
        for _ in range(200):  # each read waits at most 5 s
            # Until the counters drawn under the SKIP line are on screen: rich's refresh thread
            # may draw `skipped 1` before the SKIP line itself has been written.
            if b"SKIP later" in out and b"skipped 1" in out.split(b"SKIP later", 1)[1]:
                break
            ready, _, _ = select.select([master], [], [], 5)
            assert ready, out
            out += os.read(master, 65536)
    finally:
        if p is not None:
            p.close()  # stops rich's refresh thread
        stream.close()
        os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode())
    after_fail = text[text.index("FAIL bad"):]
    assert "failed 1" in after_fail.split("SKIP later")[0], after_fail
    assert "skipped 1" in after_fail.split("SKIP later")[1], after_fail
