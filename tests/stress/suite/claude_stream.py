"""What a Claude Code CLI run said, read from its stream-json stdout, and why it failed: pure functions.

Why a separate module with no I/O: the runner, the report writer and the tests all need the same
reading of a run (cost, tokens, the assistant's text for pattern matching, a failure class), and
the CLI's output is the only contract we have with it. Parsing plain bytes keeps this testable with
recorded lines and safe to call from any thread.

Why patterns are matched against the *assembled* text as well as the raw bytes: stream-json escapes
quotes and newlines (`"He said \\"hi\\"\\n"`), so a pattern such as `said "hi"` or a multi-line
regex never matches the raw JSON, only the decoded text.

The failure table (`FAILURE_RULES`) was filled from what the CLI 2.1.197 actually printed here
(`claude -p ... --output-format stream-json --verbose` against a loopback server answering 401,
429 and 529, without credentials, and as root): add a row to recognise a new message.

"Is this a claude command?" is answered by `cc_executor.claude_cli.mentions_claude`, the one
answer the service, the suite loaders and this module share; it is re-exported here because the
CLI and the tests import it from `stress.suite.claude_stream`.

Imports no other harness module and, of the service, only the shared library
`cc_executor.claude_cli` (never `cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from cc_executor.claude_cli import mentions_claude

__all__ = [  # mentions_claude too: callers import it from here
    "FAILURE_RULES", "MAX_LINE_BYTES", "TEXT_PREVIEW_CHARS", "USAGE_KEYS", "ClaudeTotals", "CliFailure",
    "FailureRule", "StreamSummary", "ToolUse", "classify_failure", "iter_lines", "mentions_claude",
    "parse_stream", "text_digest",
]

USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
"""Token counters summed into reports, as the CLI names them in `result.usage`."""

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Lines longer than this are counted as oversized and not decoded (a parser must stay bounded)."""

TEXT_PREVIEW_CHARS = 4096
"""`to_json()` keeps this much of the result text: a 4 MiB answer must not make report.json
4 MiB larger per attempt (the full answer is in the saved stdout; its length and sha256 say which)."""


@dataclass(frozen=True)
class ToolUse:
    """A `tool_use` block the model sent (the CLI ran it when tools were allowed)."""

    name: str
    id: str | None
    input: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "input": dict(self.input)}


@dataclass(frozen=True)
class StreamSummary:
    """Everything the reports use from one run's stream-json output."""

    events: int = 0
    """Lines that decoded to a JSON object."""
    non_json_lines: int = 0
    oversized_lines: int = 0
    event_types: Mapping[str, int] = field(default_factory=dict)
    session_id: str | None = None
    model: str | None = None
    claude_code_version: str | None = None
    has_result: bool = False
    subtype: str | None = None
    is_error: bool | None = None
    num_turns: int | None = None
    duration_ms: float | None = None
    duration_api_ms: float | None = None
    total_cost_usd: float | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    result_text: str = ""
    assistant_text: str = ""
    tool_uses: tuple[ToolUse, ...] = ()
    api_error_status: int | None = None
    error_kinds: tuple[str, ...] = ()
    """`error` fields on assistant events, e.g. "authentication_failed", "rate_limit"."""

    @property
    def is_stream_json(self) -> bool:
        """At least one event with a `type`: the output was stream-json (not plain text)."""
        return bool(self.event_types)

    @property
    def matchable_text(self) -> str:
        """Decoded text to match patterns against, besides the raw output."""
        parts = [t for t in (self.assistant_text, self.result_text) if t]
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "non_json_lines": self.non_json_lines,
            "oversized_lines": self.oversized_lines,
            "event_types": dict(self.event_types),
            "session_id": self.session_id,
            "model": self.model,
            "claude_code_version": self.claude_code_version,
            "has_result": self.has_result,
            "subtype": self.subtype,
            "is_error": self.is_error,
            "num_turns": self.num_turns,
            "duration_ms": self.duration_ms,
            "duration_api_ms": self.duration_api_ms,
            "total_cost_usd": self.total_cost_usd,
            "usage": dict(self.usage),
            "api_error_status": self.api_error_status,
            "error_kinds": list(self.error_kinds),
            **text_digest("result_text", self.result_text),
            "assistant_text_chars": len(self.assistant_text),
            "assistant_text_sha256": _sha256(self.assistant_text),
            "tool_uses": [t.to_json() for t in self.tool_uses],
        }


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def text_digest(name: str, text: str, limit: int = TEXT_PREVIEW_CHARS) -> dict[str, Any]:
    """A bounded record of `text`: `<name>_preview` (the first `limit` characters),
    `<name>_chars`, `<name>_sha256` (of its UTF-8 bytes) and `<name>_truncated`."""
    return {f"{name}_preview": text[:limit], f"{name}_chars": len(text),
            f"{name}_sha256": _sha256(text), f"{name}_truncated": len(text) > limit}


def iter_lines(data: bytes | str) -> Iterator[bytes]:
    """Lines of `data` without their newline; a final line without newline is kept."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    start = 0
    n = len(raw)
    while start < n:
        end = raw.find(b"\n", start)
        if end < 0:
            end = n
        yield raw[start:end]
        start = end + 1


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_stream(data: bytes | str, *, max_line: int = MAX_LINE_BYTES) -> StreamSummary:
    """Read a run's stdout as stream-json. Non-JSON lines are counted, never fatal."""
    reader = _StreamReader()
    for line in iter_lines(data):
        reader.feed(line, max_line)
    return reader.summary()


@dataclass
class _StreamReader:
    """What `parse_stream` has read so far, one line at a time.

    Why a class: each event type fills different fields, and a handler per type (init, assistant,
    result) keeps each rule next to the fields it sets. A later result event wins; the session id
    is the first one seen, and the model the one `init` names, else the first assistant message's."""

    events: int = 0
    non_json: int = 0
    oversized: int = 0
    types: dict[str, int] = field(default_factory=dict)
    session: str | None = None
    model: str | None = None
    version: str | None = None
    subtype: str | None = None
    is_error: bool | None = None
    has_result: bool = False
    turns: int | None = None
    dur: float | None = None
    dur_api: float | None = None
    cost: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    result_text: str = ""
    assistant: list[str] = field(default_factory=list)
    tools: list[ToolUse] = field(default_factory=list)
    api_status: int | None = None
    error_kinds: list[str] = field(default_factory=list)

    def feed(self, line: bytes, max_line: int) -> None:
        """Count one output line and, when it is a JSON object, read it as an event."""
        ev = self._decode(line.strip(), max_line)
        if ev is None:
            return
        self.events += 1
        kind = ev.get("type")
        if not isinstance(kind, str):
            return
        self.types[kind] = self.types.get(kind, 0) + 1
        if isinstance(ev.get("session_id"), str):
            self.session = self.session or ev["session_id"]
        if kind == "system" and ev.get("subtype") == "init":
            self._on_init(ev)
        elif kind == "assistant":
            self._on_assistant(ev)
        elif kind == "result":
            self._on_result(ev)

    def _decode(self, stripped: bytes, max_line: int) -> dict[str, Any] | None:
        """The line's JSON object; None for a blank line, and counted when oversized or not JSON."""
        if not stripped:
            return None
        if len(stripped) > max_line:
            self.oversized += 1
            return None
        if not stripped.startswith(b"{"):
            self.non_json += 1
            return None
        try:
            ev = json.loads(stripped)
        except (ValueError, RecursionError):
            ev = None
        if not isinstance(ev, dict):
            self.non_json += 1
            return None
        return ev

    def _on_init(self, ev: Mapping[str, Any]) -> None:
        self.model = ev.get("model") if isinstance(ev.get("model"), str) else self.model
        version = ev.get("claude_code_version")
        self.version = version if isinstance(version, str) else self.version

    def _on_assistant(self, ev: Mapping[str, Any]) -> None:
        msg = ev.get("message") if isinstance(ev.get("message"), dict) else {}
        if self.model is None and isinstance(msg.get("model"), str) and not msg["model"].startswith("<"):
            self.model = msg["model"]
        if isinstance(ev.get("error"), str) and ev["error"] not in self.error_kinds:
            self.error_kinds.append(ev["error"])
        for block in msg.get("content") or ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                self.assistant.append(block["text"])
            elif block.get("type") == "tool_use":
                inp = block.get("input")
                self.tools.append(ToolUse(str(block.get("name", "?")),
                                          block.get("id") if isinstance(block.get("id"), str) else None,
                                          inp if isinstance(inp, dict) else {}))

    def _on_result(self, ev: Mapping[str, Any]) -> None:
        self.has_result = True
        self.subtype = ev.get("subtype") if isinstance(ev.get("subtype"), str) else self.subtype
        if isinstance(ev.get("is_error"), bool):
            self.is_error = ev["is_error"]
        self.turns = _int(ev.get("num_turns"))
        self.dur = _number(ev.get("duration_ms"))
        self.dur_api = _number(ev.get("duration_api_ms"))
        self.cost = _number(ev.get("total_cost_usd"))
        if isinstance(ev.get("result"), str):
            self.result_text = ev["result"]
        self.api_status = _int(ev.get("api_error_status")) or self.api_status
        u = ev.get("usage")
        if isinstance(u, dict):
            self.usage = {k: u[k] for k in USAGE_KEYS if _int(u.get(k)) is not None}

    def summary(self) -> StreamSummary:
        return StreamSummary(
            events=self.events, non_json_lines=self.non_json, oversized_lines=self.oversized,
            event_types=self.types, session_id=self.session, model=self.model,
            claude_code_version=self.version, has_result=self.has_result, subtype=self.subtype,
            is_error=self.is_error, num_turns=self.turns, duration_ms=self.dur,
            duration_api_ms=self.dur_api, total_cost_usd=self.cost, usage=self.usage,
            result_text=self.result_text, assistant_text="\n".join(self.assistant),
            tool_uses=tuple(self.tools), api_error_status=self.api_status,
            error_kinds=tuple(self.error_kinds),
        )


# ---------------------------------------------------------------------------------------------
# Why a CLI run failed


@dataclass(frozen=True)
class FailureRule:
    """One known way the CLI fails. Matches on exit code, event error kinds, or text (regex, i)."""

    kind: str
    """Stable word for reports and JSON: not_found, authentication, ..."""
    label: str
    """What a person reads; `{status}` is filled with the HTTP status when known."""
    exit_codes: tuple[int, ...] = ()
    error_kinds: tuple[str, ...] = ()
    statuses: tuple[int, ...] = ()
    text: str | None = None

    def matches(self, exit_code: int | None, kinds: Iterable[str], status: int | None, text: str) -> bool:
        if exit_code is not None and exit_code in self.exit_codes:
            return True
        if set(kinds) & set(self.error_kinds):
            return True
        if status is not None and status in self.statuses:
            return True
        return self.text is not None and re.search(self.text, text, re.IGNORECASE) is not None


FAILURE_RULES: tuple[FailureRule, ...] = (
    FailureRule("not_found", "claude CLI not found", exit_codes=(127,),
                text=r"ENOENT|claude: (?:command )?not found"),
    FailureRule("nesting_guard", "refused to run inside another Claude Code session (unset CLAUDECODE)",
                text=r"cannot be launched inside another Claude Code session|nested session"),
    FailureRule("root_guard", "--dangerously-skip-permissions refused as root (set IS_SANDBOX=1)",
                text=r"--dangerously-skip-permissions cannot be used with root"),
    FailureRule("authentication", "authentication failed",
                error_kinds=("authentication_failed",), statuses=(401, 403),
                text=r"Invalid API key|authentication_error|Not logged in|\b401\b.*unauthori[sz]ed|"
                     r"OAuth token has expired"),
    FailureRule("rate_limit", "rate limited (429)", error_kinds=("rate_limit",), statuses=(429,),
                text=r"rate_limit_error|\(429\)|API Error: 429"),
    FailureRule("api_error", "API error {status}", error_kinds=("server_error",),
                statuses=tuple(range(500, 600)), text=r"API Error: \d{3}|overloaded_error"),
    FailureRule("oversized_line", "an output line was too long to read",
                text=r"line (?:is )?too long|exceeds? (?:the )?maximum line|Separator is found, but chunk is longer"),
)
"""Checked in order; the first match names the failure. Add rows for new CLI messages."""

_STATUS_RE = re.compile(r"API Error: (?:[^(]*\()?(\d{3})")


@dataclass(frozen=True)
class CliFailure:
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


def _first_line(text: str, limit: int = 200) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def classify_failure(
    exit_code: int | None,
    stderr: bytes | str,
    stream: StreamSummary | None,
    *,
    end_reason: str = "exited",
    stdout_tail: str = "",
) -> CliFailure | None:
    """Why a claude run failed, or None when nothing says it did (exit 0, no error result).

    `stdout_tail` is the non-JSON text of stdout worth searching (e.g. the last KiB), since some
    guards print there. Runs that timed out or stalled are classified only by their messages.
    """
    err = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes | bytearray) else stderr
    s = stream or StreamSummary()
    failed = ((exit_code not in (0, None)) or bool(s.is_error) or end_reason != "exited"
              or (s.events > 0 and not s.has_result))
    if not failed:
        return None
    status = s.api_error_status
    text = "\n".join(t for t in (err, stdout_tail, s.result_text if s.is_error else "",
                                  s.assistant_text if s.error_kinds or s.is_error else "") if t)
    if status is None:
        m = _STATUS_RE.search(text)
        status = int(m.group(1)) if m else None
    for rule in FAILURE_RULES:
        if rule.matches(exit_code if end_reason == "exited" else None, s.error_kinds, status, text):
            label = rule.label.format(status=status if status is not None else "")
            detail = _first_line(s.result_text if s.is_error and s.result_text else err or text)
            return CliFailure(rule.kind, f"{label}: {detail}" if detail and detail not in label else label)
    if s.oversized_lines:
        return CliFailure("oversized_line", f"{s.oversized_lines} output line(s) over {MAX_LINE_BYTES} bytes")
    if end_reason == "exited" and s.events and not s.has_result:
        return CliFailure("no_result", "the CLI exited without a result event")
    if end_reason == "exited" and not s.events and stream is not None:
        detail = _first_line(err)
        return CliFailure("no_result", "no stream-json events" + (f": {detail}" if detail else ""))
    if s.is_error:
        return CliFailure("error_result", f"result is an error ({s.subtype}): {_first_line(s.result_text)}")
    return None


# ---------------------------------------------------------------------------------------------
# Totals over many runs


@dataclass
class ClaudeTotals:
    """Sums over the runs that reported them: cost, tokens, turns, API time."""

    runs: int = 0
    runs_with_cost: int = 0
    total_cost_usd: float = 0.0
    usage: dict[str, int] = field(default_factory=lambda: {k: 0 for k in USAGE_KEYS})
    num_turns: int = 0
    duration_api_ms: float = 0.0

    def add(self, s: StreamSummary) -> None:
        if not s.is_stream_json:
            return
        self.runs += 1
        if s.total_cost_usd is not None:
            self.runs_with_cost += 1
            self.total_cost_usd += s.total_cost_usd
        for k, v in s.usage.items():
            self.usage[k] = self.usage.get(k, 0) + v
        self.num_turns += s.num_turns or 0
        self.duration_api_ms += s.duration_api_ms or 0.0

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "runs_with_cost": self.runs_with_cost,
                "total_cost_usd": round(self.total_cost_usd, 6), "usage": dict(self.usage),
                "num_turns": self.num_turns, "duration_api_ms": self.duration_api_ms}
