"""Tests of the sans-I/O protocol layer: every malformed-frame path, every model, the encoders'
round trips, and properties that hold for arbitrary input (decode_frame never raises)."""

from __future__ import annotations

import base64
import json
import shlex
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cc_executor import protocol as p
from cc_executor.policy import check_env, env_name_denied
from cc_executor.protocol import encoding
from cc_executor.process import utf8_cut
from cc_executor.protocol import (
    ARG_MAX,
    BINARY_FRAME,
    FRAME_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    Capabilities,
    CompletedParams,
    ConnectedParams,
    ControlParams,
    ControlResult,
    ErrorReply,
    ExecuteParams,
    ExecuteQueued,
    ExecuteStarted,
    JobInfo,
    JobsResult,
    NoParams,
    OutputParams,
    PingResult,
    QueuedParams,
    Request,
    RpcError,
    StartedParams,
    decode_frame,
    encode_output,
    error_json,
    notification_json,
    output_bytes,
    result_json,
    split_command,
)

MAX = 16 << 20  # the server's default max_frame
PROPS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def req(method="execute", params=None, id=1, **extra) -> str:
    msg = {"jsonrpc": "2.0", "method": method, **extra}
    if id is not ...:
        msg["id"] = id
    if params is not None:
        msg["params"] = params
    return json.dumps(msg)


def assert_valid_error_response(reply: ErrorReply) -> dict:
    """The JSON an ErrorReply produces is a well-formed JSON-RPC 2.0 error response."""
    text = reply.to_json()
    text.encode("utf-8")  # always sendable as a text frame
    msg = json.loads(text)
    assert set(msg) == {"jsonrpc", "id", "error"}
    assert msg["jsonrpc"] == "2.0"
    assert msg["id"] is None or isinstance(msg["id"], (str, int))
    assert not isinstance(msg["id"], bool)
    err = msg["error"]
    assert set(err) <= {"code", "message", "data"}
    assert isinstance(err["code"], int) and not isinstance(err["code"], bool)
    assert isinstance(err["message"], str) and err["message"]
    return msg


def decode_error(frame, max_frame=MAX) -> ErrorReply:
    reply = decode_frame(frame, max_frame)
    assert isinstance(reply, ErrorReply), f"expected an error for {frame!r:.200}, got {reply!r}"
    assert_valid_error_response(reply)
    return reply


# --- Malformed frames ----------------------------------------------------------------------
# (label, frame, code, id echoed back, substring of the message)
MALFORMED = [
    ("binary frame", b'{"jsonrpc":"2.0","id":1,"method":"ping"}', BINARY_FRAME, None, "binary"),
    ("bytearray frame", bytearray(b"{}"), BINARY_FRAME, None, "text frame"),
    ("empty text", "", PARSE_ERROR, None, "parse error"),
    ("whitespace only", " \n\t ", PARSE_ERROR, None, "parse error"),
    ("truncated object", '{"jsonrpc":"2.0","id":1', PARSE_ERROR, None, "parse error"),
    ("trailing garbage", req("ping") + " x", PARSE_ERROR, None, "Extra data"),
    ("single quotes", "{'jsonrpc':'2.0'}", PARSE_ERROR, None, "parse error"),
    ("NaN", req("execute", {"command": "x"}).replace('"x"}', '"x","timeout":NaN}'),
     PARSE_ERROR, None, "NaN"),
    ("Infinity", '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":Infinity}}',
     PARSE_ERROR, None, "Infinity"),
    ("-Infinity", "-Infinity", PARSE_ERROR, None, "Infinity"),
    ("float overflow", '{"jsonrpc":"2.0","id":1,"method":"execute","params":{"timeout":1e400}}',
     PARSE_ERROR, None, "out of range"),
    ("huge integer", '{"id":' + "9" * 5000 + "}", PARSE_ERROR, None, "parse error"),
    ("deep arrays", "[" * 100_000, PARSE_ERROR, None, "nested too deeply"),
    ("deep objects", '{"a":' * 50_000 + "1" + "}" * 50_000, PARSE_ERROR, None, "nested"),
    ("empty batch", "[]", INVALID_REQUEST, None, "empty batch"),
    ("number", "42", INVALID_REQUEST, None, "not number"),
    ("string", '"execute"', INVALID_REQUEST, None, "not string"),
    ("null", "null", INVALID_REQUEST, None, "not null"),
    ("boolean", "true", INVALID_REQUEST, None, "not boolean"),
    ("missing jsonrpc", '{"id":7,"method":"ping"}', INVALID_REQUEST, 7, '"jsonrpc"'),
    ("jsonrpc 1.0", '{"jsonrpc":"1.0","id":7,"method":"ping"}', INVALID_REQUEST, 7, '"2.0"'),
    ("jsonrpc number", '{"jsonrpc":2.0,"id":"a","method":"ping"}', INVALID_REQUEST, "a", '"2.0"'),
    ("jsonrpc null", '{"jsonrpc":null,"id":7,"method":"ping"}', INVALID_REQUEST, 7, '"2.0"'),
    ("unknown member", req("ping", id=8, extra=1), INVALID_REQUEST, 8, "extra"),
    ("response sent as request", '{"jsonrpc":"2.0","id":8,"result":{}}', INVALID_REQUEST, 8,
     "result"),
    ("float id", req("ping", id=1.5), INVALID_REQUEST, None, "id must be"),
    ("bool id", req("ping", id=True), INVALID_REQUEST, None, "not boolean"),
    ("object id", req("ping", id={"a": 1}), INVALID_REQUEST, None, "not object"),
    ("array id", req("ping", id=[1]), INVALID_REQUEST, None, "not array"),
    ("missing method", '{"jsonrpc":"2.0","id":9}', INVALID_REQUEST, 9, '"method"'),
    ("method number", req(5, id=9), INVALID_REQUEST, 9, "method must be a string"),
    ("method null", req(None, id=9), INVALID_REQUEST, 9, "method must be a string"),
    ("params string", req("ping", "x", id=9), INVALID_REQUEST, 9, "params must be an object"),
    ("params number", req("execute", 3, id=9), INVALID_REQUEST, 9, "params must be an object"),
    ("params array", req("execute", ["ls"], id=9), INVALID_PARAMS, 9, "positional"),
    ("unknown method", req("exec", id="x"), METHOD_NOT_FOUND, "x", '"exec"'),
    ("method case", req("Execute", id="x"), METHOD_NOT_FOUND, "x", '"Execute"'),
    ("reserved rpc. method", req("rpc.discover", id=0), METHOD_NOT_FOUND, 0, "rpc.discover"),
]


@pytest.mark.parametrize(
    "frame, code, rid, text", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_frame_is_answered_with_the_right_error(frame, code, rid, text):
    reply = decode_error(frame)
    assert reply.code == code
    assert reply.id == rid
    assert text in reply.message
    assert reply.should_send  # none of these is a well-formed notification


def test_there_are_at_least_twenty_kinds_of_malformed_frame():
    assert len(MALFORMED) >= 20


def test_oversized_frame_is_refused_before_parsing():
    junk = "{" * 2000  # would be a parse error if it were parsed
    reply = decode_error(junk, max_frame=1000)
    assert reply.code == FRAME_TOO_LARGE
    assert "1000" in reply.message and reply.data == {"max_frame": 1000}


def test_frame_limit_counts_utf8_bytes_not_characters():
    frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "execute",
                        "params": {"command": "echo " + "é" * 600}}, ensure_ascii=False)
    assert len(frame) < 1000 < len(frame.encode())
    assert decode_error(frame, max_frame=1000).code == FRAME_TOO_LARGE
    assert isinstance(decode_frame(frame, max_frame=2000), Request)


def test_frame_exactly_at_the_limit_is_accepted():
    frame = req("ping")
    assert isinstance(decode_frame(frame, max_frame=len(frame)), Request)
    assert decode_error(frame, max_frame=len(frame) - 1).code == FRAME_TOO_LARGE


def test_binary_frame_is_refused_even_when_oversized():
    assert decode_error(b"x" * 100, max_frame=10).code == BINARY_FRAME


def test_non_text_non_bytes_input_does_not_raise():
    for thing in (None, 42, 1.5, ["x"], {"a": 1}, object()):
        assert decode_error(thing).code == INVALID_REQUEST


def test_long_names_in_error_messages_are_truncated():
    reply = decode_error(req("m" * 100_000, id=1))
    assert reply.code == METHOD_NOT_FOUND and len(reply.message) < 300
    reply = decode_error(req("execute", {"command": "x", "k" * 100_000: 1}))
    assert reply.code == INVALID_PARAMS and len(reply.message) < 300


def test_lone_surrogate_id_is_echoed_as_valid_ascii_json():
    reply = decode_error('{"jsonrpc":"2.0","id":"\\ud800","method":"nope"}')
    assert reply.id == "\ud800"
    assert reply.to_json().isascii()


# --- Params validation -----------------------------------------------------------------------
# (label, method, params, field, message)
BAD_PARAMS = [
    ("neither command nor args", "execute", {}, "command", "params.command: give exactly one"),
    ("both command and args", "execute", {"command": "ls", "args": ["ls"]}, "args", "got both"),
    ("command null only", "execute", {"command": None}, "command", "got neither"),
    ("command number", "execute", {"command": 5}, "command", "params.command: must be a non-empty string"),
    ("command list", "execute", {"command": ["ls"]}, "command", "non-empty string"),
    ("command empty", "execute", {"command": ""}, "command", "non-empty string"),
    ("command blank", "execute", {"command": "  \t"}, "command", "non-empty string"),
    ("command NUL", "execute", {"command": "ls\x00"}, "command", "NUL"),
    ("command surrogate", "execute", {"command": "ls \ud800"}, "command", "lone surrogate"),
    ("command too long", "execute", {"command": "x" * (ARG_MAX + 1)}, "command", "too long"),
    ("args string", "execute", {"args": "ls -l"}, "args", "params.args: must be a non-empty list of strings"),
    ("args empty", "execute", {"args": []}, "args", "non-empty list"),
    ("args item number", "execute", {"args": ["ls", 1]}, "args", "params.args[1]: must be a string"),
    ("args item null", "execute", {"args": ["ls", None]}, "args", "params.args[1]: must be a string"),
    ("args empty program", "execute", {"args": ["", "x"]}, "args", "params.args[0]: must not be empty"),
    ("args NUL", "execute", {"args": ["ls", "a\x00b"]}, "args", "params.args[1]: must not contain NUL"),
    ("cwd number", "execute", {"command": "ls", "cwd": 1}, "cwd", "params.cwd: must be a non-empty string"),
    ("cwd empty", "execute", {"command": "ls", "cwd": ""}, "cwd", "params.cwd: must be"),
    ("env list", "execute", {"command": "ls", "env": ["A=1"]}, "env", "params.env: must be an object"),
    ("env value number", "execute", {"command": "ls", "env": {"A": 1}}, "env", "params.env.A: must be a string or null"),
    ("env name with =", "execute", {"command": "ls", "env": {"A=B": "1"}}, "env", "no '='"),
    ("env empty name", "execute", {"command": "ls", "env": {"": "1"}}, "env", "non-empty"),
    ("env NUL value", "execute", {"command": "ls", "env": {"A": "\x00"}}, "env", "NUL"),
    ("input number", "execute", {"command": "cat", "input": 5}, "input", "params.input: must be a string"),
    ("input surrogate", "execute", {"command": "cat", "input": "\udc80"}, "input", "lone surrogate"),
    ("timeout zero", "execute", {"command": "ls", "timeout": 0}, "timeout", "params.timeout: must be a number > 0"),
    ("timeout negative", "execute", {"command": "ls", "timeout": -1.5}, "timeout", "params.timeout: must be a number > 0"),
    ("timeout string", "execute", {"command": "ls", "timeout": "5"}, "timeout", "params.timeout: must be a number > 0"),
    ("timeout bool", "execute", {"command": "ls", "timeout": True}, "timeout", "params.timeout: must be a number > 0"),
    ("timeout huge", "execute", {"command": "ls", "timeout": 1e12}, "timeout", "at most"),
    ("stall zero", "execute", {"command": "ls", "stall_timeout": 0}, "stall_timeout", "params.stall_timeout: must be a number > 0"),
    ("execute unknown", "execute", {"command": "ls", "shell": True}, "shell", "params.shell: unknown parameter"),
    ("control missing type", "control", {}, "type", "params.type: is required"),
    ("control bad type", "control", {"type": "STOP"}, "type", "PAUSE, RESUME, CANCEL"),
    ("control type number", "control", {"type": 1}, "type", "params.type: must be one of"),
    ("control empty job", "control", {"type": "CANCEL", "job_id": ""}, "job_id", "params.job_id: must be a non-empty string"),
    ("control job number", "control", {"type": "CANCEL", "job_id": 3}, "job_id", "params.job_id"),
    ("control unknown", "control", {"type": "PAUSE", "signal": 9}, "signal", "unknown parameter"),
    ("ping with params", "ping", {"verbose": True}, "verbose", "ping takes no params"),
    ("jobs with params", "jobs", {"all": True}, "all", "jobs takes no params"),
]


@pytest.mark.parametrize(
    "method, params, field, text", [b[1:] for b in BAD_PARAMS], ids=[b[0] for b in BAD_PARAMS]
)
def test_bad_params_name_the_field_and_the_problem(method, params, field, text):
    reply = decode_error(req(method, params, id=42))
    assert reply.code == INVALID_PARAMS
    assert reply.id == 42
    assert reply.data == {"field": field}
    assert text in reply.message
    assert reply.message.startswith("params.")


# The env deny-list is policy, applied by the job layer (policy.check_env) to well-formed params:
# the same -32602 error, naming the variable, as a malformed param gets.
DENIED_ENV = [
    ("env LD_PRELOAD", "execute", {"command": "ls", "env": {"LD_PRELOAD": "/x.so"}}, "env", "params.env.LD_PRELOAD: may not be set"),
    ("env LD_ prefix", "execute", {"args": ["ls"], "env": {"A": "1", "LD_DEBUG_OUTPUT": "/x"}}, "env", "params.env.LD_DEBUG_OUTPUT: may not be set"),
    ("env NODE_OPTIONS", "execute", {"command": "ls", "env": {"NODE_OPTIONS": "--require /x.js"}}, "env", "params.env.NODE_OPTIONS: may not be set"),
    ("env BASH_FUNC_", "execute", {"command": "ls", "env": {"BASH_FUNC_ls%%": "() { id; }"}}, "env", "params.env.BASH_FUNC_ls%%: may not be set"),
]


@pytest.mark.parametrize(
    "method, params, field, text", [b[1:] for b in DENIED_ENV], ids=[b[0] for b in DENIED_ENV]
)
def test_a_denied_env_variable_is_refused_naming_it(method, params, field, text):
    request = decode_frame(req(method, params, id=42), MAX)
    assert isinstance(request, Request)  # well-formed: the policy, not the protocol, refuses it
    with pytest.raises(RpcError) as info:
        check_env(request.params.env)
    reply = request.error_from(info.value)
    assert reply.code == INVALID_PARAMS
    assert reply.id == 42
    assert reply.data == {"field": field}
    assert text in reply.message
    assert reply.message.startswith("params.")
    check_env({name: None for name in params["env"]})  # removing them is allowed


def test_env_deny_list():
    for name in ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "BASH_ENV", "ENV", "NODE_OPTIONS",
                 "PYTHONSTARTUP", "PYTHONPATH", "PERL5OPT", "RUBYOPT", "JAVA_TOOL_OPTIONS",
                 "GCONV_PATH", "SHELLOPTS", "PS4", "DYLD_INSERT_LIBRARIES", "BASH_FUNC_x%%"):
        assert env_name_denied(name), name
    # git and what it starts: its ssh, config from the environment, diff, prompts, pager, editor.
    for name in ("GIT_SSH_COMMAND", "GIT_SSH", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0",
                 "GIT_CONFIG_VALUE_0", "GIT_CONFIG_KEY_12", "GIT_CONFIG_PARAMETERS",
                 "GIT_CONFIG_GLOBAL", "GIT_EXTERNAL_DIFF", "GIT_ASKPASS", "SSH_ASKPASS",
                 "GIT_PROXY_COMMAND", "GIT_PAGER", "PAGER", "LESSOPEN", "EDITOR", "VISUAL",
                 "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR"):
        assert env_name_denied(name), name
    # PATH stays settable on purpose (see policy.ENV_DENIED); so do harmless git variables.
    for name in ("PATH", "HOME", "LANG", "LDFLAGS", "NODE_ENV", "PYTHONUNBUFFERED",
                 "ld_preload", "MY_LD_PRELOAD", "CLAUDE_CODE_MAX_RETRIES",
                 "GIT_AUTHOR_NAME", "GIT_TERMINAL_PROMPT", "GIT_TRACE", "MY_GIT_SSH", "git_pager",
                 "LESS", "TERM"):
        assert not env_name_denied(name), name
    for name in ("GIT_SSH_COMMAND", "GIT_CONFIG_KEY_0", "PAGER", "EDITOR"):
        request = decode_frame(req("execute", {"args": ["git", "log"], "env": {name: "sh -c id"}}), MAX)
        with pytest.raises(RpcError) as info:
            check_env(request.params.env)
        bad = request.error_from(info.value)
        assert isinstance(bad, ErrorReply) and bad.code == p.INVALID_PARAMS, name
        assert bad.message.startswith(f"params.env.{name}: may not be set: it can make an allowed "
                                      f"program run code of the client's choosing"), bad.message
    # Removing a denied variable is allowed (it can only take code away).
    ok = decode_frame(req("execute", {"args": ["ls"], "env": {"LD_PRELOAD": None, "A": "1"}}), MAX)
    assert ok.params.env == {"LD_PRELOAD": None, "A": "1"}
    check_env(ok.params.env)


def test_progress_params_never_look_like_output_or_an_error():
    good = {"job_id": "j", "state": "running", "elapsed": 12.5, "silent_for": 10.0}
    assert p.ProgressParams.model_validate(good).wire() == good
    assert p.NOTIFICATION_PARAMS["process.progress"] is p.ProgressParams
    for extra in ({"data": ""}, {"error": "x"}):
        with pytest.raises(ValidationError):
            p.ProgressParams.model_validate({**good, **extra})
    msg = json.loads(notification_json("process.progress", p.ProgressParams(**good)))
    assert "data" not in msg["params"] and "error" not in msg and "id" not in msg


@pytest.mark.parametrize("name", ["{path}", "{field}=", "{", "}{0}"])
def test_braces_in_client_names_are_reported_verbatim(name):
    # Client text must never reach pydantic's message templates, where braces are fields.
    reply = decode_error(req("execute", {"command": "ls", "env": {name: "a\x00"}}))
    assert reply.message.startswith(f"params.env.{name}: ")
    assert reply.message.count("params.") == 1


def test_timeout_message_matches_the_documented_example_exactly():
    reply = decode_error(req("execute", {"command": "ls", "timeout": 0}))
    msg = json.loads(reply.to_json())
    assert msg["error"] == {
        "code": -32602,
        "message": "params.timeout: must be a number > 0",
        "data": {"field": "timeout"},
    }


# --- Notifications (requests without id) ------------------------------------------------------
def test_request_without_id_is_a_notification():
    r = decode_frame(req("ping", id=...), MAX)
    assert isinstance(r, Request) and r.notification and r.id is None
    assert r.reply(PingResult(time=1.0)) is None
    assert r.error(INTERNAL_ERROR, "x").silent


def test_null_id_is_a_request_not_a_notification():
    r = decode_frame(req("ping", id=None), MAX)
    assert isinstance(r, Request) and not r.notification and r.id is None
    assert json.loads(r.reply(PingResult(time=1.0)))["id"] is None


@pytest.mark.parametrize(
    "frame",
    [req("nope", id=...), req("execute", {"timeout": 0}, id=...), req("ping", ["x"], id=...)],
)
def test_errors_about_a_well_formed_notification_are_silent(frame):
    reply = decode_error(frame)
    assert reply.silent and not reply.should_send


@pytest.mark.parametrize(
    "frame",
    ['{"jsonrpc":"1.0","method":"ping"}', '{"method":"ping"}', '{"jsonrpc":"2.0"}',
     '{"jsonrpc":"2.0","method":"ping","x":1}', '{"jsonrpc":"2.0","method":"ping","params":1}'],
)
def test_an_invalid_envelope_without_id_is_still_answered(frame):
    reply = decode_error(frame)
    assert reply.code == INVALID_REQUEST and reply.id is None and reply.should_send


# --- Valid requests ---------------------------------------------------------------------------
def test_seed_004_execute_frame_decodes():
    frame = json.dumps(
        {"jsonrpc": "2.0", "method": "execute", "params": {"command": 'claude -p "What is 2+2?"'},
         "id": 1}
    )
    r = decode_frame(frame, MAX)
    assert isinstance(r, Request)
    assert (r.id, r.method, r.notification) == (1, "execute", False)
    assert r.params.command == 'claude -p "What is 2+2?"'
    assert r.params.argv() == ["claude", "-p", "What is 2+2?"]


def test_execute_with_every_param():
    params = {
        "args": ["python3", "-c", "print(1)"], "cwd": "/tmp", "env": {"A": "1", "HOME": None},
        "input": "data\x00ok", "timeout": 5, "stall_timeout": 0.5,
    }
    r = decode_frame(req("execute", params, id="job-a"), MAX)
    assert isinstance(r, Request) and r.id == "job-a"
    e = r.params
    assert isinstance(e, ExecuteParams)
    assert e.argv(shell=True) == ["python3", "-c", "print(1)"]  # args are never shelled
    assert (e.cwd, e.env, e.input) == ("/tmp", {"A": "1", "HOME": None}, "data\x00ok")
    assert e.timeout == 5.0 and isinstance(e.timeout, float) and e.stall_timeout == 0.5


def test_null_optional_params_count_as_absent():
    r = decode_frame(req("execute", {"command": "ls", "timeout": None, "cwd": None}), MAX)
    assert isinstance(r, Request) and r.params.timeout is None


@pytest.mark.parametrize("given, normal", [("pause", "PAUSE"), ("Resume", "RESUME"),
                                           ("CANCEL", "CANCEL")])
def test_control_type_accepts_any_case(given, normal):
    r = decode_frame(req("control", {"type": given, "job_id": "j1"}), MAX)
    assert isinstance(r, Request) and r.params == ControlParams(type=normal, job_id="j1")


@pytest.mark.parametrize("params", [None, {}, "absent"])
def test_methods_without_params(params):
    for method in ("jobs", "ping"):
        msg = {"jsonrpc": "2.0", "id": 3, "method": method}
        if params != "absent":
            msg["params"] = params
        r = decode_frame(json.dumps(msg), MAX)
        assert isinstance(r, Request) and r.params == NoParams()


@pytest.mark.parametrize("rid", [0, -5, 2**70, "", "abc", "ü"])
def test_any_string_or_integer_id_is_echoed(rid):
    r = decode_frame(req("ping", id=rid), MAX)
    assert isinstance(r, Request) and r.id == rid
    assert json.loads(r.reply({"ok": True}))["id"] == rid
    assert json.loads(r.error(-32004, "no such job").to_json())["id"] == rid


@pytest.mark.parametrize(
    "request_",
    [
        Request(id=1, method="execute", params=ExecuteParams(command="echo hi")),
        Request(id="a", method="execute", params=ExecuteParams(args=["ls"], env={"X": None},
                                                              timeout=2.5)),
        Request(method="control", params=ControlParams(type="CANCEL"), notification=True),
        Request(id=None, method="jobs"),
        Request(id=7, method="ping"),
    ],
)
def test_request_round_trips_through_its_json(request_):
    assert decode_frame(request_.to_json(), MAX) == request_


def test_request_model_rejects_inconsistent_construction():
    with pytest.raises(ValidationError):
        Request(id=1, method="ping", params=ExecuteParams(command="x"))
    with pytest.raises(ValidationError):
        Request(id=1, method="ping", notification=True)
    with pytest.raises(ValidationError):
        Request(id=True, method="ping")
    with pytest.raises(ValidationError):
        Request(id=1, method="nope")


def test_rpc_error_becomes_a_reply_with_the_request_id():
    r = decode_frame(req("execute", {"command": "rm -rf /"}, id=12), MAX)
    exc = RpcError(p.COMMAND_NOT_ALLOWED, "command not allowed: rm", {"program": "rm"})
    msg = json.loads(r.error_from(exc).to_json())
    assert msg == {"jsonrpc": "2.0", "id": 12, "error": {
        "code": -32002, "message": "command not allowed: rm", "data": {"program": "rm"}}}


# --- argv and command splitting ------------------------------------------------------------
def test_argv_modes():
    e = ExecuteParams(command="echo 'a b' c")
    assert e.argv() == ["echo", "a b", "c"]
    assert e.argv(shell=True) == ["/bin/sh", "-c", "echo 'a b' c"]


@pytest.mark.parametrize("command, problem", [("echo 'unclosed", "No closing quotation"),
                                              ("echo a\\", "No escaped character"),
                                              ("'' x", "program name is empty")])
def test_argv_refuses_commands_that_cannot_be_split(command, problem):
    with pytest.raises(RpcError) as info:
        ExecuteParams(command=command).argv()
    assert info.value.code == INVALID_PARAMS
    assert info.value.data == {"field": "command"} and problem in info.value.message


@pytest.mark.parametrize(
    "command",
    ['a "b c" d', "a'b'c", "a\\ b", '""', "''", 'x "a\\"b\\\\c\\d"', "a\\\nb", '"a', "a\\",
     "'a", '"a\\', "  lead  trail  ", "tab\tsep\r\nlines", "a\x0bb", 'é "ü x"', "''''", '""""'],
)
def test_split_command_matches_shlex(command):
    assert _split_or_error(split_command, command) == _split_or_error(shlex.split, command)


def _split_or_error(fn, command):
    try:
        return fn(command)
    except ValueError as exc:
        return ("error", str(exc))


@PROPS
@given(st.text(alphabet=st.sampled_from(list("ab \t\n\r'\"\\é#$\x0b")), max_size=40))
def test_split_command_matches_shlex_for_any_text(command):
    assert _split_or_error(split_command, command) == _split_or_error(shlex.split, command)


def test_split_command_is_fast_on_a_long_quoted_prompt():
    # shlex.split is quadratic here (minutes); ours must finish well inside the test timeout.
    prompt = 'What is \\"2+2\\"? ' * 60_000
    words = split_command(f'claude -p "{prompt}" --verbose')
    assert words[:2] == ["claude", "-p"] and words[3] == "--verbose"
    assert words[2] == prompt.replace('\\"', '"')


# --- Results and notification models --------------------------------------------------------
def test_execute_results():
    started = json.loads(result_json(1, ExecuteStarted(job_id="j1", pid=10, pgid=10,
                                                       argv=["ls"])))
    assert started == {"jsonrpc": "2.0", "id": 1, "result": {
        "status": "started", "job_id": "j1", "pid": 10, "pgid": 10, "argv": ["ls"],
        "timeout": None, "stall_timeout": None, "timeout_factor": 1.0}}
    with pytest.raises(ValidationError):
        ExecuteStarted(job_id="j", pid=1, pgid=1, argv=["ls"], timeout_factor=0.5)
    queued = json.loads(result_json("x", ExecuteQueued(job_id="j2", position=3,
                                                       reason="host load 9.1 > 8")))
    assert queued["result"] == {"status": "queued", "job_id": "j2", "position": 3,
                                "reason": "host load 9.1 > 8"}
    with pytest.raises(ValidationError):
        ExecuteQueued(job_id="j", position=0, reason="r")


def test_control_result_for_each_type():
    for t, status in (("PAUSE", "paused"), ("resume", "resumed"), ("CANCEL", "cancelled")):
        assert ControlResult.for_type(t, "j1").wire() == {"status": status, "job_id": "j1"}


def test_jobs_result_allows_extra_detail():
    jobs = JobsResult(jobs=[
        JobInfo(job_id="j1", state="running", pid=5, pgid=5, argv=["sleep", "9"],
                started_at=1700000000.5, stdout_bytes=3),
        JobInfo(job_id="j2", state="queued", argv=["ls"], position=1),
    ])
    out = json.loads(result_json(2, jobs))["result"]["jobs"]
    assert out[0]["stdout_bytes"] == 3 and out[0]["started_at"] == 1700000000.5
    assert out[1] == {"job_id": "j2", "state": "queued", "pid": None, "pgid": None,
                      "argv": ["ls"], "started_at": None, "position": 1}
    with pytest.raises(ValidationError):
        JobInfo(job_id="j", state="sleeping", argv=[])


def test_ping_result():
    now = time.time()
    out = json.loads(result_json(3, PingResult(time=now)))["result"]
    assert out == {"pong": True, "time": now}


def test_connected_notification():
    caps = Capabilities(shell=False, allow=["claude"], max_frame=16 << 20, batch_bytes=65536)
    msg = json.loads(notification_json(p.CONNECTED, ConnectedParams(
        session_id="s1", version="0.1.0", capabilities=caps)))
    assert msg == {"jsonrpc": "2.0", "method": "connected", "params": {
        "session_id": "s1", "version": "0.1.0", "capabilities": {
            "methods": ["execute", "control", "jobs", "ping", "attach"], "shell": False,
            "allow": ["claude"], "max_frame": 16 << 20, "batch_bytes": 65536},
        "model": "real"}}


def test_connected_encoded_once_per_session_is_the_same_text():
    """`per_session` fills the id into a notification encoded once: byte for byte what
    `notify` gives for that id, whatever the other fields hold (a "session_id" in them too)."""
    caps = Capabilities(shell=True, allow=['"session_id":""', "é"], max_frame=1 << 20,
                        batch_bytes=4096)
    params = ConnectedParams(session_id="", version="0.1.0", capabilities=caps, model="simulated")
    fill = p.per_session(params)
    for sid in ("abc123def456", "", 'quote"and\\back'):
        assert fill(sid) == p.notify(params.model_copy(update={"session_id": sid}))
        assert json.loads(fill(sid))["params"]["session_id"] == sid


def test_queued_and_started_notifications():
    q = json.loads(notification_json(p.PROCESS_QUEUED, QueuedParams(
        job_id="j", position=2, reason="2 jobs running, limit 2")))
    assert q["params"] == {"job_id": "j", "position": 2, "reason": "2 jobs running, limit 2"}
    s = json.loads(notification_json(p.PROCESS_STARTED, StartedParams(
        job_id="j", pid=4, pgid=4, argv=["a", "é"])))
    assert s["params"]["argv"] == ["a", "é"] and "id" not in s


# (reason, exit_code, signal, expected status)
COMPLETIONS = [
    ("exited", 0, None, "completed"),
    ("exited", 3, None, "failed"),
    ("signalled", -9, 9, "signalled"),
    ("timeout", -15, 15, "timeout"),
    ("timeout", 143, None, "timeout"),  # the child caught SIGTERM and exited
    ("stalled", -9, 9, "stalled"),
    ("cancelled", -15, 15, "cancelled"),
    ("cancelled", -1, None, "cancelled"),  # cancelled while still queued
    ("shutdown", -15, 15, "shutdown"),
    ("queue_timeout", -1, None, "queue_timeout"),
    ("spawn_failed", -1, None, "spawn_failed"),
]


@pytest.mark.parametrize("reason, code, sig, status", COMPLETIONS)
def test_completed_status_is_derived_from_reason_and_exit_code(reason, code, sig, status):
    c = CompletedParams(job_id="j", reason=reason, exit_code=code, signal=sig, duration=0.25,
                        stdout_bytes=1, stderr_bytes=2)
    assert c.status == status
    wire = json.loads(notification_json(p.PROCESS_COMPLETED, c))["params"]
    assert wire["status"] == status and wire["exit_code"] == code and wire["signal"] == sig
    assert "error" not in wire  # omitted when there is none
    assert "data" not in wire  # a seed-004 client would mistake it for output
    assert CompletedParams(**{**wire}) == c  # the explicit status is accepted back


@pytest.mark.parametrize(
    "fields",
    [
        {"reason": "exited", "exit_code": 0, "status": "failed"},
        {"reason": "exited", "exit_code": -9, "signal": 9},
        {"reason": "signalled", "exit_code": -9},
        {"reason": "timeout", "exit_code": 0, "signal": 15},
        {"reason": "spawn_failed", "exit_code": 127},
        {"reason": "queue_timeout", "exit_code": 0},
        {"reason": "crashed", "exit_code": 1},
        {"reason": "exited", "exit_code": 0, "duration": -1.0},
        {"reason": "exited", "exit_code": 0, "duration": float("nan")},
        {"reason": "exited", "exit_code": 0, "stdout_bytes": -1},
    ],
)
def test_completed_refuses_contradictions(fields):
    with pytest.raises(ValidationError):
        CompletedParams(**{"job_id": "j", "duration": 1.0, **fields})


def test_completed_error_text_is_inside_params_never_top_level():
    c = CompletedParams(job_id="j", reason="spawn_failed", exit_code=-1, duration=0.0,
                        error="No such file or directory: 'nope'")
    msg = json.loads(notification_json(p.PROCESS_COMPLETED, c))
    assert "error" not in msg and msg["params"]["error"].startswith("No such file")


def test_wire_models_refuse_unknown_fields():
    with pytest.raises(ValidationError):
        StartedParams(job_id="j", pid=1, pgid=1, argv=[], pdi=2)


def test_error_json_shape():
    assert json.loads(error_json(None, -32603, "boom")) == {
        "jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": "boom"}}


def test_every_code_has_a_name():
    codes = [v for k, v in vars(p).items() if k.isupper() and isinstance(v, int)
             and -32768 <= v <= -32000]
    assert sorted(codes) == sorted(p.ERROR_NAMES)
    assert len(set(codes)) == len(codes) == 14


# --- process.output ----------------------------------------------------------------------------
def decode_output(text: str) -> dict:
    text.encode("utf-8")
    msg = json.loads(text)
    assert set(msg) == {"jsonrpc", "method", "params"} and msg["method"] == "process.output"
    OutputParams.model_validate(msg["params"])
    return msg["params"]


def test_output_ascii():
    params = decode_output(encode_output("j1", "stdout", 0, 0, b"hello\n"))
    assert params == {"job_id": "j1", "type": "stdout", "seq": 0, "offset": 0, "size": 6,
                      "data": "hello\n"}


def test_output_escapes_every_control_character_quote_and_backslash():
    raw = bytes(range(128)) + b'"\\\\"'
    params = decode_output(encode_output("j", "stderr", 4, 100, raw))
    assert params["data"] == raw.decode() and params["type"] == "stderr"
    assert (params["seq"], params["offset"], params["size"]) == (4, 100, len(raw))
    assert "data_base64" not in params


def test_output_dense_escapes_take_the_other_path_with_the_same_result():
    line = json.dumps({"type": "assistant", "text": 'say "hi"\\n'}).encode() + b"\n"
    raw = line * 2000
    assert encoding._escape_dense(raw)
    assert decode_output(encode_output("j", "stdout", 0, 0, raw))["data"] == raw.decode()


def test_output_utf8_text_is_sent_as_text():
    raw = "naïve ✓ 日本語 \U0001f600\n".encode()
    params = decode_output(encode_output("j", "stdout", 1, 0, raw))
    assert params["data"] == raw.decode() and "data_base64" not in params
    assert params["size"] == len(raw)
    assert output_bytes(params) == raw


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"ok \xe6\x97", b"\xed\xa0\x80 surrogate",
                                 b"\xc0\xaf overlong", bytes(range(256))])
def test_output_invalid_utf8_is_lossless(raw):
    params = decode_output(encode_output("j", "stdout", 2, 9, raw))
    assert params["data"] == raw.decode("utf-8", "replace")
    assert base64.b64decode(params["data_base64"]) == raw
    assert output_bytes(params) == raw and params["size"] == len(raw)


def test_output_empty_batch():
    assert decode_output(encode_output("j", "stdout", 0, 0, b""))["data"] == ""


def test_output_job_id_is_escaped():
    assert decode_output(encode_output('j"1\\', "stdout", 0, 0, b"x"))["job_id"] == 'j"1\\'


def test_output_refuses_unknown_stream():
    with pytest.raises(ValueError):
        encode_output("j", "stdin", 0, 0, b"x")


@PROPS
@given(st.binary(max_size=300), st.sampled_from(["stdout", "stderr"]),
       st.integers(0, 2**40), st.integers(0, 2**50))
def test_output_round_trips_any_bytes(raw, stream, seq, offset):
    text = encode_output("job-1", stream, seq, offset, raw)
    params = decode_output(text)
    assert output_bytes(params) == raw
    assert params["data"] == raw.decode("utf-8", "replace")
    assert ("data_base64" in params) == (not _is_utf8(raw))
    assert (params["type"], params["seq"], params["offset"], params["size"]) == (
        stream, seq, offset, len(raw))
    # byte-identical to the generic encoder's output, apart from formatting
    expected = OutputParams(job_id="job-1", type=stream, seq=seq, offset=offset,
                            size=len(raw), data=params["data"],
                            data_base64=params.get("data_base64"))
    assert params == expected.wire()


@PROPS
@given(st.text(max_size=200))
def test_output_round_trips_any_text(s):
    raw = s.encode("utf-8", "surrogatepass")
    params = decode_output(encode_output("j", "stdout", 0, 0, raw))
    assert output_bytes(params) == raw


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("params", [{}, {"data": 5}, {"data": "x", "data_base64": "!!"},
                                    {"data": "x", "data_base64": 7}])
def test_output_bytes_refuses_malformed_params(params):
    with pytest.raises(ValueError):
        output_bytes(params)


def test_encode_output_speed_is_reported():
    """Times the hot path on 256 x 64 KiB of base64 lines (asserting only correctness)."""
    raw = base64.encodebytes(bytes(range(256)) * 192)[: 64 * 1024]
    batches = 256
    start = time.perf_counter()
    for seq in range(batches):
        text = encode_output("job-1", "stdout", seq, seq * len(raw), raw)
    elapsed = time.perf_counter() - start
    assert output_bytes(decode_output(text)) == raw
    mib = batches * len(raw) / 2**20
    print(f"\nencode_output: {mib / elapsed:.0f} MiB/s "
          f"({elapsed / batches * 1e6:.0f} us per 64 KiB batch)")


# --- UTF-8 batch boundaries --------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, tail",
    [(b"", 0), (b"abc", 0), (b"a\xc3", 1), (b"a\xc3\xa9", 0), (b"\xe6\x97", 2),
     (b"\xe6\x97\xa5", 0), (b"\xf0\x9f\x98", 3), (b"\xf0\x9f\x98\x80", 0), (b"\x80\x80", 0),
     (b"\xff", 0)],
)
def test_incomplete_utf8_tail(data, tail):
    """The runner's one UTF-8 cut holds back exactly an unfinished character."""
    assert len(data) - utf8_cut(data, len(data)) == tail


@PROPS
@given(st.text(min_size=1, max_size=50), st.data())
def test_cutting_before_the_incomplete_tail_gives_valid_utf8(s, data):
    raw = s.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode()
    cut = data.draw(st.integers(0, len(raw)))
    head = raw[:cut]
    keep = utf8_cut(head, len(head))
    head[:keep].decode("utf-8")  # must not raise
    assert len(head) - keep <= 3


# --- Seed-004 compatibility ---------------------------------------------------------------------
def seed_style_client(frames: list[str]) -> tuple[str, int, list[str]]:
    """What seed 004's execute_test does with each frame, per the compatibility notes:
    any top-level `error` fails; params.data is output; process.completed ends the run."""
    outputs = []
    for frame in frames:
        data = json.loads(frame)
        if "error" in data:
            return "error", -1, outputs
        if "params" in data and "data" in data["params"]:
            outputs.append(data["params"]["data"])
        elif data.get("method") == "process.completed":
            return "completed", data["params"].get("exit_code", -1), outputs
    return "hung", -1, outputs


def normal_run(exit_code: int, reason: str = "exited", signal=None) -> list[str]:
    request = decode_frame(req("execute", {"command": "claude -p 'What is 2+2?'"}), MAX)
    assert isinstance(request, Request)
    caps = Capabilities(shell=False, allow=["claude"], max_frame=MAX, batch_bytes=65536)
    return [
        notification_json(p.CONNECTED, ConnectedParams(session_id="s", version="0.1.0",
                                                       capabilities=caps)),
        request.reply(ExecuteStarted(job_id="j", pid=9, pgid=9, argv=["claude"])),
        notification_json(p.PROCESS_STARTED, StartedParams(job_id="j", pid=9, pgid=9,
                                                           argv=["claude"])),
        encode_output("j", "stdout", 0, 0, b'{"type":"result","result":"4"}\n'),
        encode_output("j", "stderr", 1, 0, b"warning\n"),
        notification_json(p.PROCESS_COMPLETED, CompletedParams(
            job_id="j", reason=reason, exit_code=exit_code, signal=signal, duration=0.5,
            stdout_bytes=31, stderr_bytes=8)),
    ]


def test_seed_004_client_sees_output_then_exit_code():
    outcome, code, outputs = seed_style_client(normal_run(0))
    assert (outcome, code) == ("completed", 0)
    assert outputs == ['{"type":"result","result":"4"}\n', "warning\n"]


def test_seed_004_client_sees_failures_as_non_zero_exit():
    assert seed_style_client(normal_run(2))[:2] == ("completed", 2)
    assert seed_style_client(normal_run(-15, "timeout", 15))[:2] == ("completed", -15)


def test_nothing_in_a_normal_run_has_a_top_level_error_or_a_stray_data_key():
    for frame in normal_run(0):
        msg = json.loads(frame)
        assert "error" not in msg and msg["jsonrpc"] == "2.0"
        if msg.get("method") not in (None, "process.output"):
            assert "data" not in msg.get("params", {})


# --- Never-raise properties --------------------------------------------------------------------
json_leaves = (st.none() | st.booleans() | st.integers()
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
param_names = st.sampled_from(["command", "args", "cwd", "env", "input", "timeout",
                               "stall_timeout", "type", "job_id", "bogus"])
param_values = json_values | st.sampled_from(
    ["echo hi", "pause", "CANCEL", "", "a\x00b", "\ud800", "'x", 0, -1, 1e300, 0.5])
param_values |= st.lists(st.text(max_size=6), max_size=3)
param_values |= st.dictionaries(st.text(max_size=5), st.none() | st.text(max_size=5),
                                max_size=3)
well_formed_envelope = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "method": st.sampled_from(p.METHODS),
     "params": st.dictionaries(param_names, param_values, max_size=4)},
    optional={"id": st.none() | st.integers() | st.text(max_size=6)},
)
request_like = well_formed_envelope | well_formed_envelope | st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2.0, None, "2.0 "]),
        "id": json_values,
        "method": st.sampled_from(list(p.METHODS) + ["nope", "", "rpc.x"]) | json_leaves,
        "params": st.dictionaries(param_names, param_values, max_size=4) | json_values,
        "extra": json_values,
    },
)


def check_decoded(result, frame):
    if isinstance(result, p.Batch):  # a JSON array: each element is decoded on its own
        assert result.items
        for item in result.items:
            check_decoded(item, frame)
        return
    assert isinstance(result, (Request, ErrorReply))
    if isinstance(result, ErrorReply):
        assert_valid_error_response(result)
        assert result.code != INTERNAL_ERROR, f"decoder bug on {frame!r:.300}"
    else:
        assert decode_frame(result.to_json(), MAX) == result


@PROPS
@given(st.text(max_size=300))
def test_decode_never_raises_on_any_text(frame):
    check_decoded(decode_frame(frame, MAX), frame)


@PROPS
@given(st.binary(max_size=100))
def test_decode_answers_any_bytes_with_binary_frame_error(frame):
    assert decode_error(frame).code == BINARY_FRAME


@PROPS
@given(json_values, st.booleans())
def test_decode_never_raises_on_any_json_value(value, ascii_only):
    frame = json.dumps(value, ensure_ascii=ascii_only)
    check_decoded(decode_frame(frame, MAX), frame)


@PROPS
@given(request_like, st.booleans())
def test_decode_never_raises_on_request_like_objects(obj, ascii_only):
    frame = json.dumps(obj, ensure_ascii=ascii_only)
    result = decode_frame(frame, MAX)
    check_decoded(result, frame)
    if isinstance(result, ErrorReply) and "id" in obj and result.code != PARSE_ERROR:
        rid = obj["id"]
        readable = rid is None or isinstance(rid, str) or (
            isinstance(rid, int) and not isinstance(rid, bool))
        if readable:
            assert result.id == rid  # the id is echoed whenever it could be read


@PROPS
@given(st.text(max_size=50), st.integers(-5, 60))
def test_decode_never_raises_with_any_frame_limit(frame, limit):
    check_decoded(decode_frame(frame, limit), frame)


# --- docs/protocol.md stays true ---------------------------------------------------------------
DOC = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def doc_exchange_lines() -> list[tuple[str, str]]:
    return [(line[0], line[2:]) for line in DOC.read_text().splitlines()
            if line.startswith(("→ ", "← "))]


def test_doc_examples_are_what_the_protocol_produces():
    lines = doc_exchange_lines()
    assert len(lines) > 25
    stream_totals: dict[tuple[str, str], int] = {}
    for i, (direction, frame) in enumerate(lines):
        if direction == "→":
            decoded = decode_frame(frame, MAX)
            following = json.loads(lines[i + 1][1]) if i + 1 < len(lines) else {}
            if isinstance(decoded, ErrorReply):
                if decoded.silent:
                    continue
                assert json.loads(decoded.to_json()) == following, frame
            if isinstance(decoded, p.Batch) and all(
                    isinstance(item, ErrorReply) for item in decoded.items):
                sent = [json.loads(item.to_json()) for item in decoded.items if not item.silent]
                assert sent == following, frame
            continue
        msg = json.loads(frame)
        if isinstance(msg, list):  # a batch's responses: checked with the request above
            continue
        method = msg.get("method")
        if method == "process.output":
            params = msg["params"]
            raw = output_bytes(params)
            again = encode_output(params["job_id"], params["type"], params["seq"],
                                  params["offset"], raw)
            assert json.loads(again) == msg
            key = (params["job_id"], params["type"])
            assert params["offset"] == stream_totals.get(key, 0)
            stream_totals[key] = params["offset"] + params["size"]
        elif method in p.NOTIFICATION_PARAMS:
            model = p.NOTIFICATION_PARAMS[method].model_validate(msg["params"])
            if method == "process.completed":
                assert model.stdout_bytes == stream_totals.get((model.job_id, "stdout"), 0)
                assert model.stderr_bytes == stream_totals.get((model.job_id, "stderr"), 0)


def test_doc_lists_every_error_code_and_notification():
    text = DOC.read_text()
    for code in p.ERROR_NAMES:
        assert f"| {code} |" in text
    for name in p.NOTIFICATIONS + p.METHODS:
        assert f"`{name}`" in text


# --- JSON-RPC 2.0 batches (decoding) ------------------------------------------------------------
def test_a_batch_decodes_each_element_in_order_as_if_it_came_alone():
    frame = "[" + ",".join([req("ping", id=1), req("jobs", id=...), "3",
                            req("nope", id="x"), req("execute", {"args": []}, id=4)]) + "]"
    batch = decode_frame(frame, MAX)
    assert isinstance(batch, p.Batch)
    ping, jobs, three, nope, bad = batch.items
    assert isinstance(ping, Request) and (ping.id, ping.method) == (1, "ping")
    assert isinstance(jobs, Request) and jobs.notification
    assert isinstance(three, ErrorReply) and (three.code, three.id) == (INVALID_REQUEST, None)
    assert isinstance(nope, ErrorReply) and (nope.code, nope.id) == (METHOD_NOT_FOUND, "x")
    assert isinstance(bad, ErrorReply) and (bad.code, bad.id) == (INVALID_PARAMS, 4)


def test_a_batch_longer_than_the_cap_is_one_error_naming_the_cap():
    frame = "[" + ",".join(req("ping", id=i) for i in range(6)) + "]"
    reply = decode_frame(frame, MAX, max_batch=5)
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.id) == (INVALID_REQUEST, None)
    assert reply.data == {"reason": "batch_too_long", "max_batch": 5}
    assert "5" in reply.message
    assert isinstance(decode_frame(frame, MAX, max_batch=6), p.Batch)


def test_an_empty_batch_is_one_invalid_request_with_its_reason():
    reply = decode_error("[]")
    assert reply.data == {"reason": "empty_batch"}


def test_the_batch_reply_is_an_array_or_nothing():
    assert p.batch_json([]) is None
    one = result_json(1, PingResult(time=1.0))
    two = error_json(None, INVALID_REQUEST, "x")
    assert json.loads(p.batch_json([one, two])) == [json.loads(one), json.loads(two)]


@PROPS
@given(st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none(),
                          st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)),
                max_size=8))
def test_decoding_any_array_never_raises_and_keeps_one_item_per_element(items):
    out = decode_frame(json.dumps(items), MAX)
    if not items:
        assert isinstance(out, ErrorReply)
    else:
        assert isinstance(out, p.Batch) and len(out.items) == len(items)


# --- Client-side parsing -------------------------------------------------------------------------
def test_parse_notification_gives_the_typed_model_and_ignores_fields_it_does_not_know():
    params = {"job_id": "j", "state": "running", "elapsed": 1.5, "silent_for": 1.0, "new": 1}
    parsed = p.parse_notification(p.PROCESS_PROGRESS, params)
    assert isinstance(parsed, p.ProgressParams) and parsed.elapsed == 1.5
    assert p.parse_notification("process.unknown", params) is None
    with pytest.raises(ValidationError):
        p.parse_notification(p.PROCESS_PROGRESS, {"job_id": "j"})


def test_every_notification_model_names_its_method():
    for method, model in p.NOTIFICATION_PARAMS.items():
        assert model.METHOD == method


def test_every_message_field_holding_messages_is_declared_nested():
    """`wire()` reads the values as they are, so a field holding messages must be listed in
    `_nested` to be sent through their own `wire()`."""
    for model in [*p.NOTIFICATION_PARAMS.values(), p.ExecuteStarted, p.ExecuteQueued,
                  p.ControlResult, p.JobsResult, p.PingResult]:
        for name, field in model.model_fields.items():
            text = str(field.annotation)
            holds = any(cls.__name__ in text for cls in (p.JobInfo, p.Capabilities, p.Hardware, p.Gpu))
            assert holds == (name in model._nested), (model.__name__, name)
