"""Defaults that more than one part of the project relies on, written once.

The settings (`settings.Settings`) take their defaults from here, and so do the parts that can
run without settings: the process runner's `RunSpec` (used by `safe_run` and the harness), the
client's keepalive. A change here changes them together. Imports nothing.
"""

from __future__ import annotations

KILL_GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL when a process tree is ended."""

END_WAIT_MARGIN = 10.0
"""How long past the kill grace a caller waits for ended trees before it stops waiting (a
process stuck in the kernel, uninterruptible, can outlive even SIGKILL for a while)."""

BATCH_BYTES = 64 * 1024
"""Largest `process.output` batch, in bytes of output."""

BATCH_INTERVAL = 0.010
"""Longest wait, in seconds, before a partial batch of a slow producer goes out."""

MAX_BUFFER = 4 * 1024 * 1024
"""Output bytes per job waiting for its consumer before the runner stops reading (back-pressure)."""

PING_INTERVAL = 20.0
"""Seconds between WebSocket pings, server and client."""

PING_TIMEOUT = 120.0
"""Seconds a WebSocket peer may take to answer a ping before the connection is dropped."""

MAX_BATCH = 100
"""Most requests one JSON-RPC batch array may hold; a longer one gets a single -32600."""
