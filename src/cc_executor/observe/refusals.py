"""Refused WebSocket upgrades: counted always, logged (console and event log) at a bounded rate.

Why rate-limited: any client can make the service refuse it as often as it likes; an unbounded
log line per refusal would let it fill the disk and drown the console. Every refusal is counted
(`cc_executor_upgrades_refused_total{reason}`); at most `burst` are logged per `window` seconds,
and the first line logged after a quiet spell says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("cc_executor.server")
events = logging.getLogger("cc_executor.events")


def refusal_kind(status: int, message: str) -> str:
    """A short fixed label for a refusal (a metric label must not carry the message)."""
    if status == 403:
        return "origin"
    if message.startswith("missing token"):
        return "missing_token"
    if message.startswith("invalid token"):
        return "invalid_token"
    return f"http_{status}"


class Refusals:
    """Count every refusal; log at most `burst` of them per `window` seconds."""

    def __init__(self, count: Callable[[str], None], burst: int = 10, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.burst = burst
        self.window = window
        self.clock = clock
        self._window_start = float("-inf")
        self._logged = 0
        self.suppressed = 0

    def refused(self, status: int, message: str, client: object, path: str) -> bool:
        """Record one refusal. Returns whether it was logged."""
        kind = refusal_kind(status, message)
        self.count(kind)
        now = self.clock()
        if now - self._window_start >= self.window:
            self._window_start, self._logged = now, 0
        if self._logged >= self.burst:
            self.suppressed += 1
            return False
        self._logged += 1
        left_out, self.suppressed = self.suppressed, 0
        peer = f"{client[0]}:{client[1]}" if isinstance(client, tuple) else str(client)
        more = f" ({left_out} more refused before this, not logged)" if left_out else ""
        log.info("refused upgrade on %s from %s: HTTP %d %s%s", path, peer, status, message,
                 more)
        events.info("refused", extra={"job_event": {
            "event": "refused", "path": path, "peer": peer, "status": status, "reason": kind,
            "message": message, "not_logged_before": left_out}})
        return True
