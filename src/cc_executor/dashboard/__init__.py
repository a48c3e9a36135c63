"""`/dashboard`: a static page, and `/dashboard/feed`, the WebSocket that brings it live data.

Why static plus a feed: the page (index.html, app.js, style.css, shipped as package data) holds
no data, so it can be served to anyone and cached; everything about jobs travels on the feed,
which is guarded exactly like `/ws`: the same token (as the `bearer.<token>` subprotocol, the one
way a browser can send it on a WebSocket) and the same Origin rule, plus the service's own
loopback origins so the page it serves can connect. The page takes the token from the URL
fragment (`/dashboard#token=...`), which browsers never send to a server, or asks for it.

The feed sends a complete snapshot (`protocol.feed`) on connect and then every
`FEED_INTERVAL` seconds while the socket is open; it reads nothing from the page but the close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import aio
from .snapshot import build_snapshot

FEED_PATH = "/dashboard/feed"
FEED_INTERVAL = 0.5
ASSETS = {"": ("index.html", "text/html; charset=utf-8"),
          "app.js": ("app.js", "text/javascript; charset=utf-8"),
          "style.css": ("style.css", "text/css; charset=utf-8")}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# The page is the same for everyone and names no data; no caching keeps an upgrade's new page
# from mixing with an old script.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
                                      "img-src 'self' data:; frame-ancestors 'none'"}


def asset(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


def own_origins(websocket: WebSocket, host: str) -> set[str]:
    """The origins the service's own page has: its loopback names on the port it serves, and
    the configured host. Taken from the socket, never from the Host header (which a page on a
    rebinding DNS name controls)."""
    server = websocket.scope.get("server") or ("", 0)
    port = server[1]
    names = {*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host}
    return {f"http://{name}:{port}" for name in names} | {f"https://{name}:{port}" for name in names}


def feed_refusal(service: Any, websocket: WebSocket) -> tuple[int, str] | None:
    """`/ws`'s rule (token, Origin), with the service's own page's origins allowed too."""
    return service.refuse_reason(websocket, own_origins(websocket, service.settings.host))


async def serve_feed(service: Any, websocket: WebSocket) -> None:
    """Send snapshots until the page goes away (its close, or a failed send)."""
    closed = asyncio.Event()

    async def watch_close() -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        closed.set()

    watcher = asyncio.get_running_loop().create_task(watch_close())
    try:
        while not closed.is_set():
            await websocket.send_text(build_snapshot(service).to_json())
            with contextlib.suppress(asyncio.TimeoutError):
                await aio.wait_for(closed.wait(), FEED_INTERVAL)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


def install(app: FastAPI, service: Any, choose_subprotocol: Callable[[list[str]], str | None]
            ) -> None:
    """Add the page's routes and the feed to `app`."""
    def page_route(name: str):
        filename, media_type = ASSETS[name]

        async def page() -> Response:
            return Response(asset(filename), media_type=media_type, headers=HEADERS)
        return page

    for name in ASSETS:
        app.get("/dashboard" + (f"/{name}" if name else ""), include_in_schema=False)(
            page_route(name))

    async def feed(websocket: WebSocket) -> None:
        refused = feed_refusal(service, websocket)
        if refused is not None:
            status, message = refused
            service.observe.refused(status, message, websocket.client, FEED_PATH)
            await websocket.send_denial_response(
                JSONResponse({"error": message}, status_code=status))
            return
        await websocket.accept(subprotocol=choose_subprotocol(
            websocket.scope.get("subprotocols", [])))
        await serve_feed(service, websocket)

    app.router.routes.append(WebSocketRoute(FEED_PATH, feed))


__all__ = ["FEED_PATH", "install", "feed_refusal", "own_origins"]
