"""The dashboard's HTTP server: the page at `/`, its feed at `/events` (SSE), a snapshot at
`/state`, on 127.0.0.1 only.

Why these rules: the page shows test names, commands and host figures, so it is served on the
loopback interface only, and a request whose Host header is not this address (a DNS-rebinding
page pretending to be another site) is refused with 403; the feed sends no CORS header, so a
page from another origin cannot read it either. The server runs on the harness's event loop,
never blocks it (snapshots are small and bounded), and ends every open feed when it stops.

Imports stress.live.state / page and stress.model.http11 (request parsing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from cc_executor import aio
from stress.live.page import PAGE
from stress.live.state import LiveState
from stress.model.http11 import HttpError, read_request, response_head

HOST = "127.0.0.1"
FEED_INTERVAL = 0.5
"""Seconds between checks for a change; a snapshot is sent only when something changed."""
KEEPALIVE = 10.0
MAX_CLIENTS = 32


class DashboardError(Exception):
    """The dashboard could not listen (port in use, bad port): a usage problem, said in words."""


class DashboardServer:
    def __init__(self, state: LiveState, port: int = 0) -> None:
        self.state = state
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._feeds: set[asyncio.Task] = set()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, HOST, self.port)
        except OSError as e:
            raise DashboardError(f"--dashboard: cannot listen on {HOST}:{self.port}: "
                                 f"{e.strerror or e}; pick another port or give no port "
                                 "(any free one)") from None
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, linger: float = 2.0) -> None:
        """Stop listening; each open feed sends the last change and ends (at most `linger` s),
        then whatever is left is cancelled."""
        self._closing.set()
        if self._server is not None:
            self._server.close()
        if self._feeds:
            await asyncio.wait(list(self._feeds), timeout=linger)
        for task in list(self._feeds):
            task.cancel()
        await asyncio.gather(*self._feeds, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await aio.wait_for(self._server.wait_closed(), 5.0)

    def _host_ok(self, host: str | None) -> bool:
        return host in (f"{HOST}:{self.port}", f"localhost:{self.port}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._feeds.add(task)
        try:
            await self._one(reader, writer)
        except (HttpError, ConnectionError, asyncio.IncompleteReadError, TimeoutError,
                UnicodeError):
            pass  # a bad, slow or vanished viewer ends its own connection, nothing else
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._feeds.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await aio.wait_for(writer.wait_closed(), 2.0)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        req = await aio.wait_for(read_request(reader, writer), 10.0)
        if req is None:
            return
        if not self._host_ok(req.headers.get("host")):
            return await _send(writer, 403, "text/plain", b"dashboard: wrong Host header\n")
        if req.method != "GET":
            return await _send(writer, 405, "text/plain", b"dashboard: GET only\n")
        if req.path == "/":
            return await _send(writer, 200, "text/html; charset=utf-8", PAGE.encode())
        if req.path == "/state":
            body = json.dumps(self.state.snapshot()).encode()
            return await _send(writer, 200, "application/json", body)
        if req.path == "/events":
            if len(self._feeds) > MAX_CLIENTS:
                return await _send(writer, 503, "text/plain", b"dashboard: too many viewers\n")
            return await self._feed(writer)
        return await _send(writer, 404, "text/plain", b"dashboard: not found\n")

    async def _feed(self, writer: asyncio.StreamWriter) -> None:
        """Server-Sent Events: a snapshot now and after every change, a comment as keepalive."""
        writer.write(response_head(200, {"content-type": "text/event-stream",
                                         "cache-control": "no-store", "connection": "close"}))
        seen, quiet = -1, 0.0
        while True:
            closing = self._closing.is_set()
            # Send on a change, and every second while tests run (their bars and elapsed grow).
            if self.state.version != seen or (self.state.busy and quiet >= 1.0):
                seen = self.state.version
                data = json.dumps(self.state.snapshot(), separators=(",", ":"))
                writer.write(f"event: state\ndata: {data}\n\n".encode())
                quiet = 0.0
            elif quiet >= KEEPALIVE:
                writer.write(b": keepalive\n\n")
                quiet = 0.0
            await writer.drain()
            if closing:
                return
            await asyncio.sleep(FEED_INTERVAL)
            quiet += FEED_INTERVAL


async def _send(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes) -> None:
    writer.write(response_head(status, {"content-type": ctype, "content-length": str(len(body)),
                                        "cache-control": "no-store", "connection": "close"}))
    writer.write(body)
    await writer.drain()


__all__ = ["DashboardError", "DashboardServer", "FEED_INTERVAL", "HOST"]
