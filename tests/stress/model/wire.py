"""Anthropic Messages API shapes: the JSON message, its SSE event sequence, and error bodies.

Kept apart from the HTTP server so the event sequence can be checked without a socket, and so the
server's fault injection can count text deltas as they are yielded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Iterator

from stress.model.replies import Reply, TextBlock, ToolUseBlock, split_text

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    431: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded",
}


def error_body(status: int, message: str) -> dict:
    """Anthropic's error shape: {"type": "error", "error": {"type": ..., "message": ...}}."""
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def tokens(n_chars: int) -> int:
    """A deterministic stand-in for token counts: about four characters a token."""
    return max(1, (n_chars + 3) // 4)


def message_id(seed: str) -> str:
    return "msg_" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:24]


def _block_json(block: TextBlock | ToolUseBlock) -> dict:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}


def message_json(reply: Reply, *, model: str, msg_id: str, input_tokens: int) -> dict:
    """The complete (non-streaming) message."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [_block_json(b) for b in reply.blocks],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": tokens(len(reply.text))},
    }


@dataclass(frozen=True)
class Event:
    name: str
    data: dict
    is_delta: bool = False
    """A content delta: the unit that latency, stall and drop faults count."""

    def encode(self) -> bytes:
        return f"event: {self.name}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n".encode()


def stream_events(reply: Reply, *, model: str, msg_id: str, input_tokens: int) -> Iterator[Event]:
    """The SSE sequence the CLI accepts: message_start, per block start/deltas/stop, message_delta, stop."""
    start = message_json(reply, model=model, msg_id=msg_id, input_tokens=input_tokens)
    start.update(content=[], stop_reason=None, usage={"input_tokens": input_tokens, "output_tokens": 1})
    yield Event("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(reply.blocks):
        if isinstance(block, TextBlock):
            yield Event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "text", "text": ""}})
            for piece in split_text(block.text):
                yield Event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "text_delta", "text": piece}}, True)
        else:
            yield Event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "tool_use", "id": block.id,
                                                                  "name": block.name, "input": {}}})
            for piece in split_text(json.dumps(block.input), small=0, piece=64):
                yield Event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "input_json_delta", "partial_json": piece}},
                            True)
        yield Event("content_block_stop", {"type": "content_block_stop", "index": index})
    yield Event("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                                  "usage": {"output_tokens": tokens(len(reply.text))}})
    yield Event("message_stop", {"type": "message_stop"})
