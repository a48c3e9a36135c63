"""Write a run's report.md (for people), report.json (for tools), junit.xml (for CI) and
report.html (for people who would rather see it: charts, stress.report.html).

Why three files from one `RunResult`: each audience reads a different format, and deriving all
three from the same value keeps them from disagreeing. Each format has its own module:
`stress.report.markdown` (report.md, one function per section), `stress.report.json_file`
(report.json, following tests/stress/report.schema.json) and `stress.report.junit` (junit.xml,
the common JUnit XML shape: testsuites > testsuite > testcase with failure/error/skipped and
system-out). This module is the entry: `write_reports`, plus the names callers have always
imported from `stress.report` (re-exported below, so `from stress.report import cell` keeps
working).

Imports the three renderers (and `stress.report.text` for the re-exports); none of them imports
this module, and it imports nothing that runs tests or opens the history.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stress.report.html import render_html
from stress.report.json_file import render_json
from stress.report.junit import JUNIT_OUT_CHARS, render_junit
from stress.report.markdown import render_markdown
from stress.report.markdown_usage import TIMELINE_MIN_SECONDS, TIMELINE_ROWS
from stress.report.results import RunResult
from stress.report.text import (
    DURATION_BUCKETS,
    SIZE_BUCKETS,
    cell,
    clean,
    fence,
    fmt_bytes,
    fmt_seconds,
    histogram,
    limit_used,
)

__all__ = ["DURATION_BUCKETS", "JUNIT_OUT_CHARS", "SIZE_BUCKETS", "TIMELINE_MIN_SECONDS",
           "TIMELINE_ROWS", "cell", "clean", "fence", "fmt_bytes", "fmt_seconds", "histogram",
           "limit_used", "render_json", "render_junit", "render_markdown", "write_reports"]


def write_reports(run: RunResult, report_dir: Path) -> dict[str, Path]:
    """Write the three files of record, then report.html (each atomically: temp file, then
    rename). Returns their paths; the page is left out (with a note on stderr) if drawing it
    failed, so a charting problem never costs the run its report."""
    report_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": (report_dir / "report.md", render_markdown(run).encode("utf-8")),
        "json": (report_dir / "report.json", render_json(run)),
        "junit": (report_dir / "junit.xml", render_junit(run)),
    }
    out = {key: _write(path, data) for key, (path, data) in files.items()}
    try:
        page = render_html(run).encode("utf-8")
    except Exception as e:  # noqa: BLE001 - the text reports are already written
        print(f"report.html not written: {type(e).__name__}: {e}", file=sys.stderr)
    else:
        out["html"] = _write(report_dir / "report.html", page)
    return out


def _write(path: Path, data: bytes) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
