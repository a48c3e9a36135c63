"""What an assertion judges: "the answer" of a run, and the JSON and code inside it.

The answer is the Claude CLI's `result` text when its output is stream-json or json (what the
model said, without the event envelope), and stdout for text output and plain commands. An
assertion may name `target` (result, stdout, stderr) to judge another part.

Why JSON and code are dug out of fences: models asked for JSON often wrap it in a ```json fence
or a sentence; promptfoo users expect `is-json` to accept a fenced answer, and `python-compiles`
to read the code block, not the prose around it.

Pure: no I/O, no clock. Imports nothing of the harness but `stress.suite.claude_stream` (never
`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stress.suite import claude_stream as claude_mod

_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$",
                    re.MULTILINE | re.DOTALL)
PYTHON_TAGS = ("python", "py", "python3")


@dataclass(frozen=True)
class CodeRun:
    """A python-runs job's end, as the runner saw it on the executor."""

    exit_code: int | None
    reason: str
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    error: str | None = None
    """Set when the job could not be run at all (refused, connection lost)."""


@dataclass(frozen=True)
class Answer:
    """One attempt's outputs as the assertions read them."""

    result: str
    """The answer: the CLI's result text (stream-json / json), else stdout."""
    stdout: str = ""
    stderr: str = ""
    latency: float | None = None
    """Seconds the job ran."""
    cost: float | None = None
    """USD the CLI reported (total_cost_usd)."""
    cost_simulated: bool = False
    """The model was the loopback stand-in: its cost is made up, so cost assertions skip."""
    usage: Mapping[str, int] | None = None
    code_runs: Mapping[int, CodeRun] = field(default_factory=dict)
    """python-runs results, by the assertion's index in the test's list."""

    def text(self, target: str | None) -> str:
        if target == "stdout":
            return self.stdout
        if target == "stderr":
            return self.stderr
        return self.result


def answer_from(stdout: bytes | str, stderr: bytes | str = b"", *, latency: float | None = None,
                cost_simulated: bool = False, stream: claude_mod.StreamSummary | None = None,
                code_runs: Mapping[int, CodeRun] | None = None) -> Answer:
    """The Answer of a run's outputs; `stream` when the caller parsed the stdout already."""
    out = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    err = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    if stream is None and out.lstrip()[:1] == "{":
        stream = claude_mod.parse_stream(out)
    result = out
    cost = usage = None
    if stream is not None and stream.has_result:
        result = stream.result_text
        cost = stream.total_cost_usd
        usage = dict(stream.usage) or None
    elif stream is not None and stream.is_stream_json:
        result = stream.assistant_text  # cut short before its result: what the model said so far
    return Answer(result, out, err, latency, cost, cost_simulated, usage, dict(code_runs or {}))


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of every ``` or ~~~ fenced block, in order."""
    return [(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]


def find_json(text: str, *, anywhere: bool = True) -> tuple[bool, Any, str]:
    """(found, value, how): the whole text as JSON, else the first ```json (or untagged) fence
    that parses, else (`anywhere`) the first {...} or [...] span that parses. `how` says which,
    or why not."""
    stripped = text.strip()
    if not stripped:
        return False, None, "the answer is empty"
    try:
        return True, json.loads(stripped), "the whole answer"
    except ValueError as e:
        first_error = f"{e.msg} at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
    except RecursionError:  # a model's output like "[[[[..." must not take the harness down
        first_error = "nested too deeply to parse"
    for tag, body in fenced_blocks(text):
        if tag in ("json", "jsonc", ""):
            try:
                return True, json.loads(body), f"a fenced {tag or 'untagged'} block"
            except (ValueError, RecursionError):
                continue
    if not anywhere:
        return False, None, f"not JSON ({first_error}) and no JSON fence that parses"
    found = _json_anywhere(text)
    if found is not None:
        return True, found[1], f"JSON at character {found[0]}"
    return False, None, f"not JSON ({first_error}) and no JSON fence or object in it"


MAX_STARTS = 1000
"""Brackets the search for JSON anywhere tries: every failed parse costs time in proportion to
its position in the text (the decoder's error counts lines), so an output full of brackets
would take minutes without a bound. Realistic answers put their JSON in the first few."""


def _json_anywhere(text: str) -> tuple[int, Any] | None:
    """(position, value) of the first {...} or [...] span that parses, among MAX_STARTS tries."""
    decoder = json.JSONDecoder()
    for n, m in enumerate(re.finditer(r"[{\[]", text)):
        if n >= MAX_STARTS:
            return None
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict | list):
            return m.start(), value
    return None


def find_python(text: str) -> tuple[str, str]:
    """(code, where): the first ```python block, else the first untagged block, else the text."""
    blocks = fenced_blocks(text)
    for tag, body in blocks:
        if tag in PYTHON_TAGS:
            return body, f"the fenced {tag} block"
    for tag, body in blocks:
        if not tag:
            return body, "the first fenced block"
    return text, "the whole answer (no fenced block)"


__all__ = ["PYTHON_TAGS", "Answer", "CodeRun", "answer_from", "fenced_blocks", "find_json", "find_python"]
