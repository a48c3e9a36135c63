"""matplotlib, loaded only when a chart is drawn, and its figures as inline SVG for one HTML file.

Why lazy: importing matplotlib costs most of a second, which a short run (or `--list`) should
not pay; the first chart pays it once. Why the Agg backend: no display, no GUI toolkit, the
same pixels on a CI box as on a laptop. Why SVG inline rather than PNG: text stays text (it can
be searched, copied and printed sharply), and the report stays one file with no image requests.

What `figure_svg` fixes in matplotlib's SVG so that several of them live in one HTML page: the
XML prolog and the namespace declarations go (the HTML parser puts `<svg>` in its namespace
itself, and the page then holds no URL at all), every `id` and its references get a per-chart
prefix (matplotlib reuses `figure_1`, `axes_1`, clip ids across figures), the size becomes
responsive, and a `<title>` plus `role="img"` name the chart for screen readers and tests.

Imports matplotlib (lazily) and the standard library only.
"""

from __future__ import annotations

import html
import io
import itertools
import re
from typing import Any

_PLT: Any = None
_COUNTER = itertools.count(1)

PALETTE = {"passed": "#2e7d32", "failed": "#c62828", "lost": "#6a1b9a", "skipped": "#9e9e9e",
           "queued": "#f9a825", "limit": "#455a64", "accent": "#1565c0"}
"""Colours shared by every chart and the page's CSS: a status reads the same everywhere."""


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, configured once (first call only imports)."""
    global _PLT
    if _PLT is None:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        plt.rcParams.update({
            "svg.fonttype": "none",  # text as <text>, not paths: small, searchable, printable
            "svg.hashsalt": "cc-executor",  # the same data draws the same file
            "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
            "axes.spines.top": False, "axes.spines.right": False,
        })
        _PLT = plt
    return _PLT


def new_figure(width: float = 8.0, height: float = 3.2, rows: int = 1) -> tuple[Any, Any]:
    """A figure with `rows` stacked axes sharing x (one axes when rows == 1)."""
    plt = pyplot()
    fig, axes = plt.subplots(rows, 1, figsize=(width, height), sharex=rows > 1, squeeze=True)
    return fig, axes


_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_XMLNS = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')
_SIZE = re.compile(r'\s(width|height)="([\d.]+)pt"')


def figure_svg(fig: Any, title: str) -> str:
    """The figure as an inline `<svg>` element titled `title`; closes the figure."""
    plt = pyplot()
    buf = io.StringIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="svg",
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    finally:
        plt.close(fig)
    text = _PROLOG.sub("", buf.getvalue(), count=1)
    text = _XMLNS.sub("", text)
    width = next((m.group(2) for m in _SIZE.finditer(text) if m.group(1) == "width"), None)
    text = _SIZE.sub("", text)
    prefix = f"c{next(_COUNTER)}-"
    text = re.sub(r'\bid="', f'id="{prefix}', text)
    text = re.sub(r'(xlink:href|href)="#', rf'\1="#{prefix}', text)
    text = text.replace("url(#", f"url(#{prefix}")
    style = f"width:100%;height:auto;max-width:{width}pt" if width else "width:100%;height:auto"
    head = (f'<svg role="img" aria-label="{escape_attr(title)}" style="{style}"'
            f' data-chart="{escape_attr(title)}"')
    text = text.replace("<svg", head, 1)
    close = text.index(">", text.index("<svg")) + 1
    return text[:close] + f"<title>{escape_text(title)}</title>" + text[close:]


def escape_text(s: Any) -> str:
    return html.escape(str(s), quote=False)


def escape_attr(s: Any) -> str:
    return html.escape(str(s), quote=True)


__all__ = ["PALETTE", "escape_attr", "escape_text", "figure_svg", "new_figure", "pyplot"]
