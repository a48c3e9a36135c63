"""Live progress: counts and the tests running now, redrawn in place on a terminal.

Why two renderings: a person at a terminal wants one compact, updating view (rich's Live), while a
log file or CI console needs one plain line per event that stays readable when captured. `--quiet`
prints nothing here; the summary and the report path are printed by the CLI either way.

Imports rich and the standard library only, nothing of the harness: the runner calls it with
plain strings, so it can never pull the runner (or the reports) into an import circle.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

_MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP", "lost": "LOST"}


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


class Progress:
    """Call `started` per job (an attempt, or one instance of an instances attempt), `finished`
    per attempt (`instance_finished` per instance), `skipped` per planned test that will not
    run, `note` for other lines, `close` at the end. The counters count attempts ("runs"), the
    unit of the summary's Runs line, skipped ones included."""

    def __init__(self, total: int | None, *, quiet: bool = False, stream: TextIO | None = None,
                 live: bool | None = None, listener: Any = None) -> None:
        self.total = total
        self.listener = listener
        """Gets every event too (the --dashboard's stress.live.state.LiveState), even --quiet."""
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.counts = {"passed": 0, "failed": 0, "skipped": 0, "lost": 0}
        self.running: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        use_live = self.stream.isatty() if live is None else live
        self._live: Live | None = None
        if use_live and not quiet:
            self._console = Console(file=self.stream)
            self._live = Live(self._render(), console=self._console, refresh_per_second=4,
                              transient=False, get_renderable=self._render)
            self._live.start()

    # ---- events ----------------------------------------------------------------------------

    def _tell(self, event: str, *args: Any) -> None:
        if self.listener is not None:
            getattr(self.listener, event)(*args)

    def started(self, key: str, label: str) -> None:
        self._tell("started", key, label)
        with self._lock:
            self.running[key] = (label, time.monotonic())
        if self._live is None and not self.quiet:
            self._line(f"START {label}")

    def finished(self, key: str, label: str, status: str, reason: str, duration: float,
                 message: str) -> None:
        self._tell("finished", key, label, status, reason, duration, message)
        with self._lock:
            self.running.pop(key, None)
            self.counts[status] = self.counts.get(status, 0) + 1
        self._emit(label, status, duration, message)

    def _emit(self, label: str, status: str, duration: float, message: str) -> None:
        if self.quiet:
            return
        line = f"{_MARK.get(status, status.upper())} {label} ({duration:.2f} s)"
        if status != "passed":
            line += f": {_short(message)}"
        if self._live is not None:
            style = {"passed": "green", "failed": "bold red", "skipped": "yellow",
                     "lost": "magenta"}.get(status, "")
            self._live_print(Text(line, style=style))
        else:
            self._line(line)

    def _live_print(self, text: Text) -> None:
        """A line above the live counters, which are redrawn from the counts as they are now:
        rich redraws the last refresh's counters under a printed line, so without the refresh
        a `FAIL` line stood over `failed 0` for up to a refresh period."""
        assert self._live is not None
        self._live.refresh()
        self._live.console.print(text)

    def instance_finished(self, key: str, label: str, status: str, reason: str, duration: float,
                          message: str) -> None:
        """One instance of an instances attempt ended: its line, but no count (the attempt is
        counted once, when the runner has picked its best instance, as the summary counts it)."""
        self._tell("instance_finished", key, label, status, reason, duration, message)
        with self._lock:
            self.running.pop(key, None)
        self._emit(label, status, duration, message)

    def skipped(self, label: str, reason: str, runs: int = 1) -> None:
        """A planned test that will not run: its `runs` attempts count as skipped now, so the
        live counters and the summary count the same thing."""
        self._tell("skipped", label, reason, runs)
        with self._lock:
            self.counts["skipped"] += runs
        self._print(f"SKIP {label}: {reason}")

    def step(self, step: dict) -> None:
        """A finished --find-capacity step (its terminal line came through `note`)."""
        self._tell("step", step)

    def note(self, text: str) -> None:
        self._tell("note", text)
        self._print(text)

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live_print(Text(text))  # Text: no markup, "[stderr]" stays as is
        else:
            self._line(text)

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    # ---- rendering -------------------------------------------------------------------------

    def _line(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):
            pass

    def _render(self) -> Group:
        with self._lock:
            counts = dict(self.counts)
            running = list(self.running.values())
        done = sum(counts.values())
        parts: list = [
            (f"{done}/{self.total} runs  " if self.total is not None else f"{done} runs  ", "bold"),
            (f"passed {counts.get('passed', 0)}", "green"), "  ",
            (f"failed {counts.get('failed', 0)}", "red"), "  ",
            (f"skipped {counts.get('skipped', 0)}", "yellow"), "  ",
        ]
        if counts.get("lost"):
            parts += [(f"lost {counts['lost']}", "magenta"), "  "]
        head = Text.assemble(*parts, (f"running {len(running)}", "cyan"))
        table = Table(show_header=bool(running), box=None, pad_edge=False)
        table.add_column("running")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        for label, t0 in sorted(running, key=lambda r: r[1])[:20]:
            table.add_row(label, f"{now - t0:.1f} s")
        if len(running) > 20:
            table.add_row(f"... and {len(running) - 20} more", "")
        return Group(head, table)
