"""stress.suite.claude_stream: reading stream-json and classifying CLI failures. Pure: no processes.

The failure lines below are what `claude` 2.1.197 printed on this machine (against a loopback
server answering 401 / 429 / 529, without credentials, and as root), trimmed to the fields we read.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from stress.suite.claude_stream import (FAILURE_RULES, TEXT_PREVIEW_CHARS, ClaudeTotals,
                                        classify_failure, iter_lines, mentions_claude,
                                        parse_stream)


def line(obj) -> str:
    return json.dumps(obj)


INIT = line({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-sonnet-4-5",
             "claude_code_version": "2.1.197", "tools": ["Bash"]})


def assistant(*blocks, error=None):
    ev = {"type": "assistant", "session_id": "s-1",
          "message": {"role": "assistant", "model": "claude-sonnet-4-5", "content": list(blocks)}}
    if error:
        ev["error"] = error
    return line(ev)


def result(text, *, is_error=False, status=None, cost=0.0123, usage=None):
    return line({"type": "result", "subtype": "success", "is_error": is_error, "api_error_status": status,
                 "duration_ms": 1500, "duration_api_ms": 1200, "num_turns": 2, "result": text,
                 "session_id": "s-1", "total_cost_usd": cost,
                 "usage": usage or {"input_tokens": 10, "output_tokens": 20,
                                    "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4}})


def test_parses_a_successful_run_with_text_and_tool_use():
    out = "\n".join([
        INIT,
        assistant({"type": "text", "text": 'He said "hi"\nand left'}),
        assistant({"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}),
        line({"type": "user", "message": {"content": [{"type": "tool_result", "content": "x"}]}}),
        assistant({"type": "text", "text": "The answer is 4."}),
        result("The answer is 4."),
    ]) + "\n"
    s = parse_stream(out.encode())
    assert s.is_stream_json and s.events == 6 and s.non_json_lines == 0
    assert (s.session_id, s.model, s.claude_code_version) == ("s-1", "claude-sonnet-4-5", "2.1.197")
    assert s.has_result and s.is_error is False and s.subtype == "success"
    assert (s.num_turns, s.duration_ms, s.duration_api_ms, s.total_cost_usd) == (2, 1500, 1200, 0.0123)
    assert s.usage == {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 3,
                       "cache_read_input_tokens": 4}
    assert s.assistant_text == 'He said "hi"\nand left\nThe answer is 4.'
    assert s.result_text == "The answer is 4."
    assert [(t.name, t.id, dict(t.input)) for t in s.tool_uses] == [("Bash", "t1", {"command": "ls"})]
    # The raw line escapes the quote and the newline; the assembled text has them.
    assert 'said "hi"\nand' not in out and 'said "hi"\nand' in s.matchable_text
    assert s.event_types == {"system": 1, "assistant": 3, "user": 1, "result": 1}
    assert classify_failure(0, b"", s) is None


def test_tolerates_non_json_lines_and_very_long_lines():
    big = "x" * (5 * 1024 * 1024)
    out = "\n".join(["Loading...", "{not json", "[1, 2]", "", assistant({"type": "text", "text": big}),
                     result("ok")]) + "\r\n"
    s = parse_stream(out)
    assert s.non_json_lines == 3 and s.events == 2 and s.has_result
    assert len(s.assistant_text) == len(big)
    capped = parse_stream(out, max_line=1024)
    assert capped.oversized_lines == 1 and capped.assistant_text == ""


def test_summary_json_keeps_a_bounded_preview_of_the_answer():
    """report.json holds one summary per attempt: a 4 MiB answer must not be copied into it."""
    big = "".join(f"{i:08d} checksummed line\n" for i in range(4 * 1024 * 1024 // 26))
    s = parse_stream("\n".join([INIT, assistant({"type": "text", "text": big}), result(big)]))
    doc = s.to_json()
    assert "result_text" not in doc
    assert doc["result_text_preview"] == big[:TEXT_PREVIEW_CHARS] and TEXT_PREVIEW_CHARS == 4096
    assert doc["result_text_chars"] == len(big) and doc["result_text_truncated"] is True
    assert doc["result_text_sha256"] == hashlib.sha256(big.encode()).hexdigest()
    assert doc["assistant_text_chars"] == len(big)
    assert doc["assistant_text_sha256"] == doc["result_text_sha256"]
    assert len(json.dumps(doc)) < 3 * TEXT_PREVIEW_CHARS
    short = parse_stream("\n".join([INIT, result("The answer is 4.")])).to_json()
    assert (short["result_text_preview"], short["result_text_chars"], short["result_text_truncated"]) == \
        ("The answer is 4.", 16, False)
    assert parse_stream(b"plain").to_json()["result_text_sha256"] == hashlib.sha256(b"").hexdigest()


def test_plain_text_is_not_stream_json():
    s = parse_stream(b"just some output\nwith lines\n")
    assert not s.is_stream_json and s.events == 0 and s.non_json_lines == 2
    assert list(iter_lines(b"a\nb")) == [b"a", b"b"] and list(iter_lines(b"")) == []


@pytest.mark.parametrize("kind, exit_code, stderr, lines", [
    ("authentication", 1, "", [
        assistant({"type": "text", "text": "Invalid API key \u00b7 Fix external API key"},
                  error="authentication_failed"),
        result("Invalid API key \u00b7 Fix external API key", is_error=True, status=401)]),
    ("authentication", 1, "", [
        assistant({"type": "text", "text": "Not logged in \u00b7 Please run /login"},
                  error="authentication_failed"),
        result("Not logged in \u00b7 Please run /login", is_error=True)]),
    ("rate_limit", 1, "", [
        assistant({"type": "text", "text": "API Error: Request rejected (429) \u00b7 Number of requests "
                                           "has exceeded your rate limit"}, error="rate_limit"),
        result("API Error: Request rejected (429) \u00b7 rate limit", is_error=True, status=429)]),
    ("api_error", 1, "", [
        assistant({"type": "text", "text": "API Error: 529 Overloaded. This is a server-side issue"},
                  error="server_error"),
        result("API Error: 529 Overloaded. This is a server-side issue", is_error=True, status=529)]),
    ("root_guard", 1, "--dangerously-skip-permissions cannot be used with root/sudo privileges "
                      "for security reasons", []),
    ("nesting_guard", 1, "Error: Claude Code cannot be launched inside another Claude Code session.", []),
    ("not_found", 127, "sh: 1: claude: not found", []),
    ("oversized_line", 1, "Error: line too long", []),
    ("no_result", 0, "", [INIT, assistant({"type": "text", "text": "partial"})]),
])
def test_classifies_cli_failures(kind, exit_code, stderr, lines):
    s = parse_stream("\n".join(lines))
    end = "exited" if exit_code is not None else "error"  # None: it never started
    f = classify_failure(exit_code, stderr.encode(), s, end_reason=end)
    assert f is not None and f.kind == kind, f
    assert f.message


def test_api_error_names_the_status_and_text_only_messages_work():
    s = parse_stream(result("API Error: 529 Overloaded", is_error=True, status=529))
    assert classify_failure(1, b"", s).message.startswith("API error 529")
    f = classify_failure(1, b"API Error: 503 Service Unavailable", parse_stream(b""))
    assert f.kind == "api_error" and "503" in f.message


def test_rules_table_is_extensible_and_ordered():
    kinds = [r.kind for r in FAILURE_RULES]
    assert kinds.index("not_found") < kinds.index("authentication") < kinds.index("api_error")
    assert len(set(kinds)) == len(kinds)


def test_totals_sum_cost_and_tokens():
    t = ClaudeTotals()
    t.add(parse_stream(result("a", cost=0.5)))
    t.add(parse_stream(result("b", cost=0.25, usage={"input_tokens": 1, "output_tokens": 2})))
    t.add(parse_stream(b"not claude"))
    j = t.to_json()
    assert j["runs"] == 2 and j["total_cost_usd"] == 0.75 and j["num_turns"] == 4
    assert j["usage"]["input_tokens"] == 11 and j["usage"]["output_tokens"] == 22
    assert j["usage"]["cache_read_input_tokens"] == 4


@pytest.mark.parametrize("command, args, expected", [
    ('claude -p "What is 2+2?"', None, True),
    ("cd /tmp && claude --version", None, True),
    ("/opt/bin/claude -p x", None, True),
    ("echo claude-code is a name", None, False),
    ("echo 'about claude'", None, True),  # conservative: a word "claude" may be the CLI
    (None, ["/usr/local/bin/claude", "-p", "x"], True),
    (None, ["echo", "claude"], False),
])
def test_mentions_claude(command, args, expected):
    assert mentions_claude(command, args) is expected
