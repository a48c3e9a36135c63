"""Just enough HTTP/1.1 on asyncio streams for the CLI's fetch client, with faults a framework hides.

Plain asyncio instead of uvicorn because the faults need the raw socket: a stall must hold the
connection with no bytes at all (not even a chunk boundary), and a drop must reset the connection
mid-body, which an ASGI app cannot express. Keep-alive, Content-Length and chunked request bodies,
and `Expect: 100-continue` are handled; responses are Content-Length or chunked.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from stress.model.wire import REASONS

MAX_HEAD_BYTES = 1024 * 1024
MAX_BODY_BYTES = 256 * 1024 * 1024
STREAM_LIMIT = MAX_HEAD_BYTES


class HttpError(Exception):
    """A request we cannot parse; answered with `status` and the connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class HttpRequest:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts, total = [], 0
    while True:
        line = await reader.readline()
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(400, f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            while (await reader.readline()).strip():  # trailers
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise HttpError(413, f"request body over {MAX_BODY_BYTES} bytes")
        parts.append(await reader.readexactly(size))
        await reader.readline()


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> HttpRequest | None:
    """The next request on a keep-alive connection, or None when the client closed it cleanly."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "connection closed inside the request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head over {MAX_HEAD_BYTES} bytes") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"bad request line {lines[0][:80]!r}")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, f"bad content-length {headers['content-length']!r}") from None
        if length > MAX_BODY_BYTES:
            raise HttpError(413, f"request body of {length} bytes is over {MAX_BODY_BYTES}")
        body = await reader.readexactly(length) if length else b""
    split = urlsplit(target)
    return HttpRequest(method.upper(), target, split.path, dict(parse_qsl(split.query)), headers, body)


def response_head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def json_response(status: int, payload: dict, extra: dict[str, str] | None = None, *, head_only: bool = False) -> bytes:
    body = json.dumps(payload).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    headers.update(extra or {})
    return response_head(status, headers) + (b"" if head_only else body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


LAST_CHUNK = b"0\r\n\r\n"


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Drop the connection the hard way: RST, discarding anything still buffered."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
