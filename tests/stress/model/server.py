"""The loopback model server: routes, the request log, per-prompt attempt counters, fault injection.

One asyncio server object; `ModelServer` runs it inside the caller's event loop and
`ModelServerThread` runs it on a private loop in a thread for synchronous tests and harness code.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable

from stress.model.conversation import read_conversation
from stress.model.directives import FOREVER, DirectiveError, Plan, parse_plan
from stress.model.http11 import (
    LAST_CHUNK,
    STREAM_LIMIT,
    HttpError,
    HttpRequest,
    chunk,
    json_response,
    read_request,
    reset_connection,
    response_head,
)
from stress.model.replies import main_reply, title_reply
from stress.model.wire import (
    error_body,
    message_id,
    message_json,
    stream_events,
    tokens,
)

FLUSH_BYTES = 64 * 1024
MODELS = ("claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5")


@dataclass
class RecordedRequest:
    """One request as received, and what the server did with it (updated while it is answered)."""

    seq: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict | None
    body_bytes: int
    received_at: float
    kind: str = "unknown"
    """messages | title | count_tokens | models | probe | not_found | bad_request"""
    prompt: str | None = None
    attempt: int | None = None
    stream: bool | None = None
    status: int | None = None
    outcome: str = "pending"
    """pending | streaming | stalling | ok | error | dropped | client_gone | shutdown"""
    faults: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    finished_at: float | None = None

    def summary(self) -> dict:
        """The record without headers and body, for one-line logs."""
        data = asdict(self)
        data.pop("headers")
        data.pop("body")
        if data["prompt"] and len(data["prompt"]) > 200:
            data["prompt"] = data["prompt"][:200] + "..."
        return data


class _Stop(Exception):
    """Ends the handling of a request and closes its connection."""


class ModelServer:
    """An Anthropic-compatible Messages API server on loopback, scripted by prompt directives.

    `faults` holds directives (same syntax as in prompts, e.g. "[[latency: 5ms]] [[error: 529 x2]]")
    applied to every real prompt unless the prompt sets its own. Title requests are never faulted
    unless `fault_title_requests` is set: a flaky title request only adds noise to a test.
    `keep_bodies=False` drops each request body from the log once answered (a CLI request body is
    about 80 KB, so long stress runs would otherwise hold hundreds of MB); `on_request` still sees it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: str = "",
        fault_title_requests: bool = False,
        keep_bodies: bool = True,
        on_request: Callable[[RecordedRequest], None] | None = None,
    ):
        if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
            raise ValueError(f"host {host!r} is not a loopback address; this server is loopback-only")
        self.host = host
        self.port = port
        self.defaults: Plan = parse_plan(faults)
        self.fault_title_requests = fault_title_requests
        self.keep_bodies = keep_bodies
        self._on_request = on_request
        self._log: list[RecordedRequest] = []
        self._attempts: Counter = Counter()
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._shutdown: asyncio.Event | None = None
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> "ModelServer":
        self._shutdown = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=STREAM_LIMIT)
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        """Stop listening, end stalls, close every connection; returns when all handlers are done."""
        if self._server is None:
            return
        self._shutdown.set()
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> "ModelServer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # --- observation -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the request log, oldest first."""
        return list(self._log)

    def attempts(self, prompt: str, kind: str = "messages") -> int:
        """How many requests this prompt has had in its first round (what error counts are against)."""
        return self._attempts[(kind, prompt, 0)]

    def reset(self) -> None:
        """Forget the log and the attempt counters, so a prompt's faults start over."""
        self._log.clear()
        self._attempts.clear()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # --- connections -----------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while not self._shutdown.is_set():
                try:
                    request = await read_request(reader, writer)
                except HttpError as exc:
                    writer.write(json_response(exc.status, error_body(exc.status, str(exc)), {"connection": "close"}))
                    await writer.drain()
                    break
                if request is None:
                    break
                if not await self._answer(request, reader, writer) or not request.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _answer(self, request: HttpRequest, reader, writer) -> bool:
        """Answer one request; False when the connection must not be reused."""
        record = RecordedRequest(
            seq=len(self._log) + 1, method=request.method, path=request.path, query=request.query,
            headers=request.headers, body=None, body_bytes=len(request.body), received_at=time.time(),
        )
        self._log.append(record)
        try:
            return await self._route(request, record, reader, writer)
        except _Stop:
            return False
        except (ConnectionError, asyncio.IncompleteReadError):
            record.outcome = "client_gone"
            return False
        except asyncio.CancelledError:
            if record.outcome in ("pending", "streaming", "stalling"):
                record.outcome = "shutdown"
            raise
        finally:
            record.finished_at = time.time()
            if self._on_request:
                self._on_request(record)
            if not self.keep_bodies:
                record.body = None

    async def _send(self, writer, record: RecordedRequest, data: bytes) -> None:
        writer.write(data)
        record.bytes_sent += len(data)
        await writer.drain()

    async def _reply_json(self, writer, record, status: int, payload: dict, extra=None, head_only=False) -> bool:
        record.status = status
        record.outcome = "ok" if status < 400 else "error"
        await self._send(writer, record, json_response(status, payload, extra, head_only=head_only))
        return True

    async def _route(self, request: HttpRequest, record: RecordedRequest, reader, writer) -> bool:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/":
            record.kind = "probe"
            return await self._reply_json(writer, record, 200, {"service": "stress.model"}, head_only=method == "HEAD")
        if path == "/v1/models" and method in ("GET", "HEAD"):
            record.kind = "models"
            data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in MODELS]
            payload = {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
            return await self._reply_json(writer, record, 200, payload, head_only=method == "HEAD")
        if path in ("/v1/messages", "/v1/messages/count_tokens"):
            if method != "POST":
                record.kind = "bad_request"
                return await self._reply_json(writer, record, 405, error_body(405, f"{path} takes POST, not {method}"),
                                              {"allow": "POST"})
            try:
                body = json.loads(request.body or b"null")
                if not isinstance(body, dict):
                    raise ValueError("expected a JSON object")
            except ValueError as exc:
                record.kind = "bad_request"
                return await self._reply_json(writer, record, 400, error_body(400, f"request body is not valid JSON: {exc}"))
            record.body = body
            if path.endswith("count_tokens"):
                record.kind = "count_tokens"
                return await self._reply_json(writer, record, 200, {"input_tokens": tokens(len(request.body))})
            return await self._messages(body, record, reader, writer)
        record.kind = "not_found"
        return await self._reply_json(writer, record, 404, error_body(404, f"no route for {method} {request.path}"))

    # --- /v1/messages ----------------------------------------------------------------------------

    async def _messages(self, body: dict, record: RecordedRequest, reader, writer) -> bool:
        try:
            conversation = read_conversation(body)
        except ValueError as exc:
            record.kind = "bad_request"
            return await self._reply_json(writer, record, 400, error_body(400, str(exc)))
        record.kind = "title" if conversation.is_title_request else "messages"
        record.prompt = conversation.prompt
        record.stream = bool(body.get("stream"))
        faulted = not conversation.is_title_request or self.fault_title_requests
        try:
            plan = parse_plan(conversation.prompt).over(self.defaults) if faulted else Plan()
        except DirectiveError as exc:
            return await self._reply_json(writer, record, 400, error_body(400, f"bad directive in prompt: {exc}"))
        reply = title_reply(conversation) if conversation.is_title_request else main_reply(conversation, plan)
        key = (record.kind, conversation.prompt, conversation.tool_rounds)
        self._attempts[key] += 1
        attempt = record.attempt = self._attempts[key]

        if plan.delay:
            record.faults.append(f"delay {plan.delay}s")
            await self._hold(plan.delay, reader, record)
        if plan.error and plan.error.repeat.hits(attempt):
            err = plan.error
            record.faults.append(f"error {err.status} ({attempt}/{err.repeat.describe()})")
            extra = {"request-id": f"req_stress_{record.seq}"}
            if err.retry_after is not None:
                extra["retry-after"] = f"{err.retry_after:g}"
            await self._reply_json(writer, record, err.status,
                                   error_body(err.status, f"injected {err.status} for attempt {attempt}"), extra)
            return True
        stall = plan.stall if plan.stall and plan.stall.repeat.hits(attempt) else None
        drop = plan.drop if plan.drop and plan.drop.repeat.hits(attempt) else None
        model = str(body.get("model") or MODELS[0])
        msg_id = message_id(f"{record.kind}\0{conversation.prompt}\0{conversation.tool_rounds}")
        input_tokens = tokens(record.body_bytes)
        if record.stream:
            events = stream_events(reply, model=model, msg_id=msg_id, input_tokens=input_tokens)
            await self._stream(events, plan, stall, drop, record, reader, writer)
        else:
            payload = json.dumps(message_json(reply, model=model, msg_id=msg_id, input_tokens=input_tokens)).encode()
            await self._whole(payload, stall, drop, record, reader, writer)
        return True

    async def _hold(self, seconds: float, reader, record: RecordedRequest) -> None:
        """Wait with the connection open and silent; raise _Stop if the client leaves or we shut down."""
        waits = [asyncio.ensure_future(self._shutdown.wait()), asyncio.ensure_future(reader.read(1))]
        try:
            done, _ = await asyncio.wait(waits, timeout=None if seconds == FOREVER else seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            # Let the cancelled read finish unwinding, or the next read on this stream fails with
            # "readuntil() called while another coroutine is already waiting".
            await asyncio.gather(*waits, return_exceptions=True)
        if waits[0] in done:
            record.outcome = "shutdown"
            raise _Stop
        if waits[1] in done:
            record.outcome = "client_gone"
            raise _Stop

    async def _fault(self, stall, drop, record, reader, writer) -> None:
        """Apply a due stall (hold, then carry on) or drop (reset the connection)."""
        if stall is not None:
            label = "forever" if stall.seconds == FOREVER else f"{stall.seconds:g}s"
            record.faults.append(f"stall {label}")
            record.outcome = "stalling"
            await self._hold(stall.seconds, reader, record)
            record.outcome = "streaming"
        if drop is not None:
            record.faults.append("drop")
            record.outcome = "dropped"
            reset_connection(writer)
            raise _Stop

    async def _stream(self, events, plan: Plan, stall, drop, record, reader, writer) -> None:
        record.status = 200
        record.outcome = "streaming"
        headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "transfer-encoding": "chunked",
            "request-id": f"req_stress_{record.seq}",
        }
        await self._send(writer, record, response_head(200, headers))
        buffer = bytearray()
        deltas = 0

        async def flush() -> None:
            if buffer:
                await self._send(writer, record, chunk(bytes(buffer)))
                buffer.clear()

        for event in events:
            at_fault_point = event.is_delta or event.name == "message_delta"
            due_stall = stall if stall and (stall.after == 0 or (at_fault_point and deltas >= stall.after)) else None
            due_drop = drop if drop and (drop.after == 0 or (at_fault_point and deltas >= drop.after)) else None
            if due_stall or due_drop:
                await flush()
                await self._fault(due_stall, due_drop, record, reader, writer)
                stall = None if due_stall else stall
            if event.is_delta:
                if plan.latency:
                    await flush()
                    await asyncio.sleep(plan.latency)
                deltas += 1
            buffer += event.encode()
            if len(buffer) >= FLUSH_BYTES:
                await flush()
        await flush()
        await self._send(writer, record, LAST_CHUNK)
        record.outcome = "ok"

    async def _whole(self, payload: bytes, stall, drop, record, reader, writer) -> None:
        """A non-streaming reply; a stall or drop happens after half the body is sent."""
        record.status = 200
        record.outcome = "streaming"
        head = response_head(200, {"content-type": "application/json", "content-length": str(len(payload)),
                                   "request-id": f"req_stress_{record.seq}"})
        if stall or drop:
            half = len(payload) // 2
            await self._send(writer, record, head + payload[:half])
            await self._fault(stall, drop, record, reader, writer)
            await self._send(writer, record, payload[half:])
        else:
            await self._send(writer, record, head + payload)
        record.outcome = "ok"


class ModelServerThread:
    """`ModelServer` on its own event loop in a daemon thread, for synchronous callers.

    `with ModelServerThread(faults=...) as server:` gives `server.url` and `server.requests`; leaving
    the block stops the server and joins the thread, so nothing outlives the test.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **options):
        self.server = ModelServer(host, port, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.server.requests

    def attempts(self, prompt: str, kind: str = "messages") -> int:
        return self.server.attempts(prompt, kind)

    def reset(self) -> None:
        self._call(self.server.reset)

    def _call(self, fn) -> None:
        done = threading.Event()
        self._loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        done.wait(5)

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float) -> list[RecordedRequest]:
        """Poll the request log until `predicate(log)` holds; raises TimeoutError with the log summary."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.requests
            if predicate(log):
                return log
            if time.monotonic() >= deadline:
                summary = [r.summary() for r in log]
                raise TimeoutError(f"condition not met within {timeout}s; request log: {summary}")
            time.sleep(0.01)

    def start(self) -> "ModelServerThread":
        self._thread = threading.Thread(target=self._run, name="stress-model-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("model server thread did not start within 10 s")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            try:
                await self.server.start()
            except BaseException as exc:  # reported to start()
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            try:
                await self._stopped.wait()
            finally:
                await self.server.stop()

        asyncio.run(main())

    def stop(self, timeout: float = 10) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopped is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"model server thread did not stop within {timeout} s")
        self._thread = None

    def __enter__(self) -> "ModelServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
