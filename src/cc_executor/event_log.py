"""The job event log: one JSON object a line in `<log_dir>/cc_executor.jsonl`, rotated by size.

Apart from the server because it is a sink of its own: how a record becomes a line, when lines
are written (batched on the loop, off the reply's path) and when the file turns over. Every job
writes two or more lines, so each step here is on every job's way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
from pathlib import Path

log = logging.getLogger("cc_executor.server")


class _JsonLines(logging.Formatter):
    """One JSON object per job event. Only fields we put there: never env values or tokens."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "job_event", None) or {"event": record.getMessage()}
        return json.dumps({"ts": round(record.created, 3), **event}, default=str)


class _LoopBatchHandler(logging.Handler):
    """Collect records and write them in one go on the next event-loop turn.

    Why not a QueueHandler: waking a listener thread per record made every job pay for GIL
    hand-overs (~0.25 ms a record measured). Why not the file handler directly: the write would
    sit on the request path before the reply. Here a job event costs a list append; the write
    happens right after the current step (the reply has been handed to the socket by then)."""

    def __init__(self, target: logging.Handler):
        super().__init__()
        self.target = target
        self._buffer: list[logging.LogRecord] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        self._buffer.append(record)
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self.flush)
            self._scheduled = True
        except RuntimeError:  # no loop (start-up, shutdown): write now
            self.flush()

    def flush(self) -> None:
        self._scheduled = False
        records, self._buffer = self._buffer, []
        for record in records:
            self.target.handle(record)
        self.target.flush()

    def close(self) -> None:
        self.flush()
        self.target.close()
        super().close()


class _EventFile(logging.handlers.RotatingFileHandler):
    """The event log's file, rotated by size. The size is looked at every `CHECK_EVERY`
    records rather than before each one: RotatingFileHandler's look stats the path twice and
    formats the record a second time, ~30 us on each of a job's events. A file may then pass
    `maxBytes` by that many records (~20 KB of 10 MiB) before it rotates."""

    CHECK_EVERY = 64

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._unchecked = self.CHECK_EVERY  # the first record checks (a file left nearly full)

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802 - the base's name
        self._unchecked += 1
        if self._unchecked < self.CHECK_EVERY:
            return False
        self._unchecked = 0
        return bool(super().shouldRollover(record))


def setup_event_log(log_dir: Path) -> logging.Handler | None:
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = _EventFile(
            log_dir / "cc_executor.jsonl", maxBytes=10 * 1024**2, backupCount=5)
    except OSError as e:
        log.warning("event log disabled: %s", e)
        return None
    handler.setFormatter(_JsonLines())
    batched = _LoopBatchHandler(handler)
    events = logging.getLogger("cc_executor.events")
    events.setLevel(logging.INFO)
    events.propagate = False
    for old in list(events.handlers):
        events.removeHandler(old)
        old.close()
    events.addHandler(batched)
    return batched
