"""Turning a client's frame into a validated request (or a ready error reply), and a server's
notification params into bytes, with no I/O.

Design choices worth knowing before editing:

* `decode_frame` never raises: a server that lets one bad frame kill the session (as an
  earlier implementation did for JSON arrays) is a denial of service. Every failure becomes
  an `ErrorReply`, carrying the request id whenever one could be read.
* Checks run cheapest-first: the frame type and size before parsing (an oversized frame
  costs no parse), then JSON, then the JSON-RPC envelope, then the method's params.
* A JSON array is a JSON-RPC 2.0 batch: `Batch` holds one decoded item per element, in order;
  the server answers the calls among them with one array (see `encoding.batch_json`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .. import defaults
from .encoding import RequestId, _dumps, error_json, result_json
from .errors import (
    BINARY_FRAME,
    FRAME_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    ErrorReason,
    RpcError,
    clip,
)
from .messages import NOTIFICATION_PARAMS
from .names import JSONRPC_VERSION, METHODS, Method
from .params import (
    _FIELD_RULES,
    _NESTED_RULES,
    MAX_SECONDS,
    METHOD_PARAMS,
    AttachParams,
    ControlParams,
    ExecuteParams,
    NoParams,
)

DEFAULT_MAX_BATCH = defaults.MAX_BATCH
"""The longest batch decoded when the caller names no limit (the service's `max_batch`)."""


class Request(BaseModel):
    """A decoded, validated client request. `notification` is True when the frame had no id:
    the server executes it but sends neither its result nor its error."""

    model_config = ConfigDict(frozen=True, strict=True)

    id: int | str | None = None
    method: Method
    params: ExecuteParams | ControlParams | AttachParams | NoParams = Field(default_factory=NoParams)
    notification: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Request:
        expected = METHOD_PARAMS[self.method]
        if type(self.params) is not expected:
            raise ValueError(f"{self.method} takes {expected.__name__}")
        if self.notification and self.id is not None:
            raise ValueError("a notification has no id")
        return self

    def to_json(self) -> str:
        """The frame a client sends (used by our own clients and the stress harness)."""
        msg: dict[str, Any] = {"jsonrpc": JSONRPC_VERSION}
        if not self.notification:
            msg["id"] = self.id
        msg["method"] = self.method
        params = self.params.model_dump(exclude_none=True)
        if params:
            msg["params"] = params
        return _dumps(msg)

    def reply(self, result: BaseModel | Mapping[str, Any]) -> str | None:
        """The result response, or None for a notification (nothing may be sent)."""
        return None if self.notification else result_json(self.id, result)

    def error(self, code: int, message: str, data: dict[str, Any] | None = None) -> ErrorReply:
        return ErrorReply(
            id=self.id, code=code, message=message, data=data, silent=self.notification
        )

    def error_from(self, exc: RpcError) -> ErrorReply:
        return self.error(exc.code, exc.message, exc.data)


class ErrorReply(BaseModel):
    """An error response ready to send. `silent` marks an error about a well-formed
    notification: JSON-RPC forbids answering those, so the server logs it and sends nothing."""

    model_config = ConfigDict(frozen=True, strict=True)

    id: int | str | None = None
    code: int
    message: str
    data: dict[str, Any] | None = None
    silent: bool = False

    @property
    def should_send(self) -> bool:
        return not self.silent

    def to_json(self) -> str:
        return error_json(self.id, self.code, self.message, self.data)


@dataclass(frozen=True)
class Batch:
    """A JSON-RPC batch: one decoded `Request` or `ErrorReply` per element, in order."""

    items: tuple[Request | ErrorReply, ...]


def output_bytes(params: Mapping[str, Any]) -> bytes:
    """The exact bytes of one `process.output` batch (client side): `data_base64` when
    present, else `data` encoded as UTF-8. Raises ValueError on a malformed notification."""
    b64 = params.get("data_base64")
    if b64 is not None:
        if not isinstance(b64, str):
            raise ValueError("data_base64 must be a string")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"data_base64 is not valid base64: {exc}") from None
    data = params.get("data")
    if not isinstance(data, str):
        raise ValueError("process.output params need a string 'data'")
    return data.encode("utf-8")


_TOP_LEVEL = frozenset({"jsonrpc", "id", "method", "params"})


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {clip(text, 32)}")
    return value


# Built once: `json.loads` with hooks builds a new decoder (and scanner) for every call.
_strict_json = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _utf8_longer_than(text: str, limit: int) -> bool:
    n = len(text)
    if n > limit:
        return True
    if n * 4 <= limit or text.isascii():
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def _loc_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + clip(part)
    return path


def _params_problem(method: str, exc: ValidationError) -> tuple[str, str]:
    """(field, message) for the first problem pydantic found, in the house format."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = tuple(err.get("loc") or ())
    ctx = err.get("ctx") or {}
    field = str(ctx.get("field") or (loc[0] if loc else "params"))
    path = str(ctx.get("path") or _loc_path(loc) or field)
    kind = err.get("type")
    if kind == "extra_forbidden":
        allowed = list(METHOD_PARAMS[method].model_fields)
        takes = (
            f"{method} takes: {', '.join(allowed)}" if allowed else f"{method} takes no params"
        )
        return field, f"params.{path}: unknown parameter ({takes})"
    if kind == "cc_value":
        return field, f"params.{path}: {err.get('msg', 'is invalid')}"
    if kind == "missing":
        rule = _FIELD_RULES.get(field)
        return field, f"params.{path}: is required" + (f"; it {rule}" if rule else "")
    if kind == "less_than_equal" and field in ("timeout", "stall_timeout"):
        return field, f"params.{path}: must be at most {MAX_SECONDS:.0f} seconds"
    if len(loc) > 1 and field in _NESTED_RULES:
        return field, f"params.{path}: {_NESTED_RULES[field]}"
    rule = _FIELD_RULES.get(field) or str(err.get("msg", "is invalid")).lower()
    return field, f"params.{path}: {rule}"


def _reply(
    id: RequestId, code: int, message: str, data: dict[str, Any] | None = None, silent=False
) -> ErrorReply:
    return ErrorReply(id=id, code=code, message=message, data=data, silent=silent)


def decode_frame(
    frame: str | bytes, max_frame: int, max_batch: int = DEFAULT_MAX_BATCH
) -> Request | ErrorReply | Batch:
    """Turn one WebSocket frame into a validated `Request`, a `Batch` of them, or a ready
    `ErrorReply`. Never raises, whatever `frame` is."""
    try:
        return _decode(frame, max_frame, max_batch)
    except Exception as exc:  # the last line of defence; reaching it is a bug in this module
        return _reply(
            None, INTERNAL_ERROR, f"internal error decoding the frame ({type(exc).__name__})"
        )


def _decode(frame: Any, max_frame: int, max_batch: int) -> Request | ErrorReply | Batch:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return _reply(
            None,
            BINARY_FRAME,
            "binary frames are not accepted: send each request as a JSON text frame",
        )
    if not isinstance(frame, str):
        return _reply(None, INVALID_REQUEST, f"a frame must be text, not {type(frame).__name__}")
    if _utf8_longer_than(frame, max_frame):
        return _reply(
            None,
            FRAME_TOO_LARGE,
            f"frame too large: the limit is {max_frame} bytes",
            {"max_frame": max_frame},
        )

    try:
        obj = _strict_json.decode(frame)
    except RecursionError:
        return _reply(None, PARSE_ERROR, "parse error: JSON nested too deeply")
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, huge numbers
        return _reply(None, PARSE_ERROR, f"parse error: {clip(exc, 200)}")

    if isinstance(obj, list):
        return _decode_batch(obj, max_batch)
    return _decode_object(obj)


def _decode_batch(items: list[Any], max_batch: int) -> ErrorReply | Batch:
    """JSON-RPC 2.0 section 6: an empty array is one invalid request; otherwise each element
    is decoded as if it came alone. The length cap bounds the work one frame can ask for."""
    if not items:
        return _reply(
            None, INVALID_REQUEST, "empty batch: a batch array needs at least one request",
            {"reason": ErrorReason.EMPTY_BATCH.value},
        )
    if len(items) > max_batch:
        return _reply(
            None,
            INVALID_REQUEST,
            f"batch too long: {len(items)} requests; the limit is {max_batch} (max_batch)",
            {"reason": ErrorReason.BATCH_TOO_LONG.value, "max_batch": max_batch},
        )
    return Batch(tuple(_decode_object(item) for item in items))


def _decode_object(obj: Any) -> Request | ErrorReply:
    if not isinstance(obj, dict):
        return _reply(
            None, INVALID_REQUEST, f"a request must be a JSON object, not {_json_type(obj)}"
        )

    has_id = "id" in obj
    raw_id = obj.get("id")
    id_ok = raw_id is None or isinstance(raw_id, str) or (
        isinstance(raw_id, int) and not isinstance(raw_id, bool)
    )
    rid: RequestId = raw_id if id_ok else None

    unknown = sorted(clip(k, 32) for k in obj.keys() - _TOP_LEVEL)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        return _reply(
            rid,
            INVALID_REQUEST,
            f"unknown top-level member(s): {shown}; a request has only jsonrpc, id, method, params",
        )
    if "jsonrpc" not in obj:
        return _reply(rid, INVALID_REQUEST, 'missing "jsonrpc": "2.0"')
    if obj["jsonrpc"] != JSONRPC_VERSION or not isinstance(obj["jsonrpc"], str):
        return _reply(rid, INVALID_REQUEST, 'jsonrpc must be exactly "2.0"')
    if not id_ok:
        return _reply(
            None,
            INVALID_REQUEST,
            f"id must be a string, an integer or null, not {_json_type(raw_id)}",
        )
    if "method" not in obj:
        return _reply(rid, INVALID_REQUEST, 'missing "method"')
    method = obj["method"]
    if not isinstance(method, str):
        return _reply(rid, INVALID_REQUEST, f"method must be a string, not {_json_type(method)}")

    silent = not has_id
    params = obj.get("params")
    if params is None:
        params = {}
    elif isinstance(params, list):
        return _reply(
            rid,
            INVALID_PARAMS,
            "params must be an object of named parameters; "
            "positional (array) params are not supported",
            {"field": "params"},
            silent,
        )
    elif not isinstance(params, dict):
        return _reply(
            rid, INVALID_REQUEST, f"params must be an object, not {_json_type(params)}"
        )

    model_cls = METHOD_PARAMS.get(method)
    if model_cls is None:
        return _reply(
            rid,
            METHOD_NOT_FOUND,
            f"method not found: {json.dumps(clip(method))}; methods: {', '.join(METHODS)}",
            None,
            silent,
        )
    try:
        model = model_cls.model_validate(params)
    except ValidationError as exc:
        field, message = _params_problem(method, exc)
        return _reply(rid, INVALID_PARAMS, message, {"field": field}, silent)
    return Request(id=rid, method=method, params=model, notification=not has_id)


def parse_notification(method: str, params: Mapping[str, Any]) -> BaseModel | None:
    """Client side: a server notification's params as their typed model, or None when the
    method is not one of ours. Fields a newer server added are ignored, so an older client
    keeps working; a missing or mistyped known field raises pydantic's ValidationError."""
    model = NOTIFICATION_PARAMS.get(method)
    if model is None:
        return None
    if model.model_config.get("extra") == "forbid":
        known = model.model_fields
        if any(key not in known for key in params):
            params = {k: v for k, v in params.items() if k in known}
    return model.model_validate(params)
