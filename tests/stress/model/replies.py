"""Compose the model's reply from the prompt alone.

Honesty rule: nothing here may look at a test suite's expected output. Everything a reply says is
computed from the request: arithmetic found in the prompt, text marked for echo, a checksummed block
of a requested size, a Bash tool call the prompt asks for, or the tool results the CLI sent back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from stress.model.arithmetic import find_calculations
from stress.model.conversation import Conversation
from stress.model.directives import Plan, strip_directives
from stress.model.sized import block

TOOL_RESULT_SHOWN_CHARS = 4000
"""How much of each tool result the final reply quotes; enough to assert on, bounded for big outputs."""


@dataclass(frozen=True)
class TextBlock:
    text: str


@dataclass(frozen=True)
class ToolUseBlock:
    id: str
    name: str
    input: dict


@dataclass(frozen=True)
class Reply:
    blocks: tuple[TextBlock | ToolUseBlock, ...]
    stop_reason: str = "end_turn"

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.blocks if isinstance(b, TextBlock))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def title_reply(conversation: Conversation) -> Reply:
    """A short JSON title, as the CLI's title request asks for (its output schema is {title})."""
    words = strip_directives(conversation.prompt).split()
    title = " ".join(words[:7]) or "Empty prompt"
    return Reply((TextBlock(json.dumps({"title": title})),))


def _content_text(prompt: str, plan: Plan) -> str:
    prose = strip_directives(prompt)
    parts = [c.sentence() + "." for c in find_calculations(prose)]
    parts += plan.echoes
    if plan.size is not None:
        parts.append(block(plan.size))
    if not parts:
        parts.append(
            f"I received a prompt of {len(prompt)} characters (sha256 {_digest(prompt)[:12]}); "
            "it asks for nothing I can compute or echo."
        )
    return "\n".join(parts)


def _tool_summary(conversation: Conversation) -> str:
    lines = []
    for result in conversation.tool_results:
        shown = result.text[:TOOL_RESULT_SHOWN_CHARS]
        more = f" [{len(result.text) - len(shown)} more characters]" if len(result.text) > len(shown) else ""
        status = "failed" if result.is_error else "finished"
        lines.append(f"Tool call {result.tool_use_id} {status}. Output:\n{shown}{more}")
    return "\n".join(lines)


def tool_use_id(prompt: str, round_index: int) -> str:
    """Stable per prompt and round, so a retried request gets the same id."""
    return "toolu_" + _digest(f"{round_index}\0{prompt}")[:24]


def main_reply(conversation: Conversation, plan: Plan) -> Reply:
    """The reply to the real prompt: a Bash tool call while the prompt has rounds left, else text."""
    summary = _tool_summary(conversation)
    round_index = conversation.tool_rounds
    if round_index < len(plan.bash):
        command = plan.bash[round_index]
        if "Bash" not in conversation.offered_tools:
            text = f"The Bash tool is not offered in this request, so I cannot run: {command}"
            return Reply((TextBlock("\n".join(p for p in (summary, text) if p)),))
        tool_input = {"command": command, "description": f"Run scripted command {round_index + 1}"}
        if plan.bash_background[round_index]:
            tool_input["run_in_background"] = True
        lead = "\n".join(p for p in (summary, f"Running: {command}") if p)
        return Reply(
            (TextBlock(lead), ToolUseBlock(tool_use_id(conversation.prompt, round_index), "Bash", tool_input)),
            stop_reason="tool_use",
        )
    text = "\n".join(p for p in (summary, _content_text(conversation.prompt, plan)) if p)
    return Reply((TextBlock(text),))


def split_text(text: str, *, small: int = 4096, piece: int = 4096) -> list[str]:
    """Text deltas: word by word for short text (like a real stream), 4 KiB pieces for bulk."""
    if not text:
        return []
    if len(text) <= small:
        pieces, current = [], ""
        for char in text:
            current += char
            if char.isspace() and len(current.strip()) > 0:
                pieces.append(current)
                current = ""
        if current:
            pieces.append(current)
        return pieces
    return [text[i : i + piece] for i in range(0, len(text), piece)]
