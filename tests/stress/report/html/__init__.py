"""report.html, the run for people who would rather see it: charts and folded previews.

The page is `stress.report.html.page`; the charts are `charts` (the tests: timeline, durations
against limits, distributions) and `charts_host` (service and host over time, capacity,
history trends), drawn with matplotlib (`svg`, imported lazily) as inline SVG. The history's
trends page (`python -m stress.history html`) is `trends_page`.

This package imports only `stress.report.results`, `stress.report.text` and
`stress.report.simulated` from the rest of the harness, so it can render any report.json's run.
"""

from __future__ import annotations

from stress.report.html.page import render_html

__all__ = ["render_html"]
