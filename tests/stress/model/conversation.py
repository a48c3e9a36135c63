"""Read what a Messages API request asks: the user's prompt, whether it is a side request, tool results.

The CLI wraps the typed prompt in extra text blocks (`<system-reminder>` context, the date) and, since
2.1.x, sends a second request per run asking for a session title. Replies must depend on the typed
prompt only, so this module peels those layers off in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_REMINDER_RE = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
_SESSION_RE = re.compile(r"<session>\s*(.*?)\s*</session>", re.DOTALL)


@dataclass(frozen=True)
class ToolResult:
    tool_use_id: str
    text: str
    is_error: bool


@dataclass(frozen=True)
class Conversation:
    prompt: str
    """The user's own text: the last user message with text, system reminders removed."""
    is_title_request: bool
    tool_results: tuple[ToolResult, ...] = ()
    """Tool results in the last user message (a follow-up turn after a tool_use reply)."""
    tool_rounds: int = 0
    """How many assistant tool_use turns the conversation already holds."""
    offered_tools: tuple[str, ...] = field(default_factory=tuple)


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _user_text(message: dict) -> str:
    texts = [b.get("text", "") for b in _blocks(message.get("content")) if b.get("type") == "text"]
    return _REMINDER_RE.sub("", "\n".join(t for t in texts if isinstance(t, str))).strip()


def _tool_result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in _blocks(content) if b.get("type") == "text")


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n".join(b.get("text", "") for b in _blocks(system) if isinstance(b.get("text"), str))


def _asks_for_title(body: dict) -> bool:
    """The CLI's title request: a JSON-schema output with a `title` field, or a prompt that says so."""
    fmt = (body.get("output_config") or {}).get("format") or {}
    properties = (fmt.get("schema") or {}).get("properties") or {}
    if "title" in properties and len(properties) == 1:
        return True
    system = _system_text(body.get("system"))
    return not body.get("tools") and "title" in system.lower() and "<session>" in str(body.get("messages"))


def read_conversation(body: dict) -> Conversation:
    """Classify a /v1/messages request body; raises ValueError naming what is malformed."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: expected a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError("messages: no message with role 'user'")
    is_title = _asks_for_title(body)
    results = tuple(
        ToolResult(str(b.get("tool_use_id", "")), _tool_result_text(b), bool(b.get("is_error")))
        for b in _blocks(users[-1].get("content"))
        if b.get("type") == "tool_result"
    )
    prompt = ""
    for message in reversed(users):
        prompt = _user_text(message)
        if prompt:
            break
    if is_title:
        session = _SESSION_RE.search(prompt)
        prompt = session.group(1).strip() if session else prompt
    rounds = sum(
        1
        for m in messages
        if isinstance(m, dict)
        and m.get("role") == "assistant"
        and any(b.get("type") == "tool_use" for b in _blocks(m.get("content")))
    )
    tools = tuple(str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict))
    return Conversation(prompt, is_title, results, rounds, tools)
