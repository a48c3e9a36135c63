"""The `assert` list: each type with an answer that passes and one that fails, `not-`, weights and
`threshold`, what "the answer" is, and the load-time refusals. Pure: no processes.

python-runs needs the executor; its pass and fail are judged here from a `CodeRun` (what the
runner got back from the service) and run for real in test_assertions_claude.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from stress.suite.answer import Answer, CodeRun, answer_from, find_json, find_python
from stress.suite.assert_eval import evaluate, evaluate_all, score
from stress.suite.assertions import parse_assertion
from stress.suite.verdict import EXIT_ZERO, MATCH_ALL, Reason, judge

SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "number"}}}
CODE = "Here it is:\n```python\ndef f(x):\n    return x * 2\nprint(f(21))\n```\nDone."
BROKEN = "```python\ndef f(x) return x\n```"

# (assertion, an answer that passes, an answer that fails)
CASES = [
    ({"type": "contains", "value": "four"}, "It is four.", "It is Four."),
    ({"type": "icontains", "value": "FOUR"}, "It is four.", "It is 4."),
    ({"type": "not-contains", "value": "sorry"}, "4", "sorry, no"),
    ({"type": "contains-all", "value": ["a", "b"]}, "a and b", "only a"),
    ({"type": "contains-any", "value": ["x", "y"]}, "why y", "none here"),
    ({"type": "icontains-all", "value": ["A", "B"]}, "a b", "a"),
    ({"type": "icontains-any", "value": ["X", "Y"]}, "y", "z"),
    ({"type": "regex", "value": r"^\d+$", "flags": "m"}, "text\n42\n", "forty-two"),
    ({"type": "starts-with", "value": "Yes"}, "  Yes, it is.", "No, Yes."),
    ({"type": "equals", "value": "4"}, "4\n", "4.0"),
    ({"type": "equals", "value": {"a": [1, True]}}, '{"a": [1.0, true]}', '{"a": [1, 1]}'),
    ({"type": "equals", "value": 4}, "4.0", '"4"'),
    ({"type": "min-length", "value": 5}, "12345", "1234"),
    ({"type": "max-length", "value": 3, "unit": "words"}, "one two three", "one two three four"),
    ({"type": "is-json"}, '```json\n{"a": 1}\n```', 'Answer: {"a": 1}'),
    ({"type": "contains-json"}, 'Answer: {"a": 1} as asked', "Answer: {a: 1}"),
    ({"type": "is-json", "value": SCHEMA}, '{"answer": 4}', '{"answer": "4"}'),
    ({"type": "json-schema", "value": SCHEMA}, 'The answer: {"answer": 4} as asked', '{"result": 4}'),
    ({"type": "json-schema", "value": {"answer": "number"}}, '{"answer": 4}', '{"answer": "4"}'),
    ({"type": "is-json", "value": {"answer": "number", "unit": "string"}}, '{"answer": 4, "unit": "kg"}',
     '{"answer": 4}'),
    ({"type": "json-path", "path": "$.answer", "value": 4}, '{"answer": 4}', '{"answer": 5}'),
    ({"type": "json-path", "path": "$.items[*].n"}, '{"items": [{"n": 1}]}', '{"items": []}'),
    ({"type": "not-is-json"}, "plain words", "[1, 2]"),
    ({"type": "python-compiles"}, CODE, BROKEN),
]


@pytest.mark.parametrize(("raw", "good", "bad"), CASES, ids=[json.dumps(c[0])[:60] for c in CASES])
def test_each_type_passes_and_fails(raw, good, bad):
    a = parse_assertion(raw)
    ok = evaluate(a, Answer(good))
    no = evaluate(a, Answer(bad))
    assert ok.status == "passed", ok
    assert no.status == "failed", no
    assert no.why and ok.why and ok.type == raw["type"]


@pytest.mark.parametrize("raw", [{"type": "is-json"}, {"type": "contains-json"}, {"type": "json-path", "path": "$.a"},
                                 {"type": "python-compiles"}])
def test_an_answer_no_parser_can_take_fails_the_check_without_crashing_the_harness(raw):
    for text in ("[" * 5_000, 'x = ' + "1+" * 30_000 + "1", "x [1, " * 200_000):  # the last took 54 s unbounded
        r = evaluate(parse_assertion(raw), Answer(text))
        assert r.status == "failed", (raw, text[:20], r)
    r = evaluate(parse_assertion({"type": "not-python-compiles"}), Answer('x = ' + "1+" * 30_000 + "1"))
    assert r.status == "failed" and r.why == "could not be judged: RecursionError on this answer"


def test_metrics_latency_cost_tokens():
    lat = parse_assertion({"type": "latency", "value": 2})
    assert evaluate(lat, Answer("", latency=1.5)).status == "passed"
    slow = evaluate(lat, Answer("", latency=2.5))
    assert slow.status == "failed" and "2.50 s" in slow.why
    # promptfoo's threshold is in milliseconds
    assert parse_assertion({"type": "latency", "threshold": 1500}).value == 1.5
    cost = parse_assertion({"type": "cost", "value": 0.01})
    assert evaluate(cost, Answer("", cost=0.005)).status == "passed"
    assert evaluate(cost, Answer("", cost=0.02)).status == "failed"
    sim = evaluate(cost, Answer("", cost=0.005, cost_simulated=True))
    assert sim.status == "skipped" and "simulated" in sim.why
    assert evaluate(cost, Answer("")).status == "skipped"
    tok = parse_assertion({"type": "tokens", "value": {"output": 10}})
    assert evaluate(tok, Answer("", usage={"input_tokens": 99, "output_tokens": 8})).status == "passed"
    over = evaluate(tok, Answer("", usage={"input_tokens": 1, "output_tokens": 11}))
    assert over.status == "failed" and "output 11 > 10" in over.why
    total = parse_assertion({"type": "tokens", "value": 50})
    assert evaluate(total, Answer("", usage={"input_tokens": 30, "output_tokens": 30})).status == "failed"


def test_python_runs_is_judged_from_the_executors_run():
    a = parse_assertion({"type": "python-runs", "value": "42"})
    good = Answer(CODE, code_runs={0: CodeRun(0, "exited", "42\n", "", 0.1)})
    assert evaluate(a, good, 0).status == "passed"
    wrong = Answer(CODE, code_runs={0: CodeRun(0, "exited", "41\n", "", 0.1)})
    assert evaluate(a, wrong, 0).status == "failed"
    crash = Answer(CODE, code_runs={0: CodeRun(1, "exited", "", "Traceback\nNameError: x", 0.1)})
    r = evaluate(a, crash, 0)
    assert r.status == "failed" and "NameError" in r.why
    refused = Answer(CODE, code_runs={0: CodeRun(None, "error", error="refused: not allowed")})
    assert "not allowed" in evaluate(a, refused, 0).why
    assert evaluate(a, Answer(CODE), 0).status == "skipped"  # never run: no verdict on it


def test_the_answer_is_the_cli_result_or_stdout_and_target_picks_another_part():
    stream = "\n".join(json.dumps(e) for e in [
        {"type": "system", "subtype": "init", "session_id": "s"},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": '{"answer": 4}'}]}},
        {"type": "result", "subtype": "success", "result": '{"answer": 4}', "total_cost_usd": 0.01,
         "usage": {"input_tokens": 3, "output_tokens": 5}}])
    ans = answer_from(stream.encode(), b"warn: x", latency=0.5)
    assert ans.result == '{"answer": 4}' and ans.cost == 0.01 and ans.usage["output_tokens"] == 5
    assert evaluate(parse_assertion({"type": "json-schema", "value": SCHEMA}), ans).status == "passed"
    on_stdout = parse_assertion({"type": "json-schema", "value": SCHEMA, "target": "stdout"})
    assert evaluate(on_stdout, ans).status == "failed"  # its first object is the init event
    assert evaluate(parse_assertion({"type": "contains", "value": "warn", "target": "stderr"}), ans).passed
    plain = answer_from(b'{"answer": 4}\n')  # a command printing JSON: stdout is the answer
    assert plain.result == '{"answer": 4}\n' and plain.cost is None
    assert find_json("no json here")[0] is False
    assert find_python("```py\nx = 1\n```")[0] == "x = 1\n"


def test_weights_and_threshold_score_like_promptfoo():
    results = evaluate_all([parse_assertion({"type": "contains", "value": "a", "weight": 3}),
                            parse_assertion({"type": "contains", "value": "z"}),
                            parse_assertion({"type": "cost", "value": 1})], Answer("abc"))
    assert [r.status for r in results] == ["passed", "failed", "skipped"]
    assert score(results, None).passed is False  # no threshold: every counted one must pass
    assert score(results, 0.75).passed and score(results, 0.75).score == 0.75
    assert not score(results, 0.8).passed


def _T():
    return SimpleNamespace(expected_patterns=(), must_not_contain=(), expect_exit=EXIT_ZERO,
                           match=MATCH_ALL, threshold=None)


def test_judge_fails_on_assertions_after_every_other_check():
    bad = evaluate_all([parse_assertion({"type": "contains", "value": "z"})], Answer("abc"))
    v = judge(_T(), 0, "exited", "abc", assertions=bad)
    assert not v.passed and v.reason is Reason.ASSERTION_FAILED and "'z' not found" in v.message
    assert v.to_json()["assertions"][0]["status"] == "failed"
    v2 = judge(_T(), 1, "exited", "abc", assertions=bad)
    assert v2.failures == (Reason.EXIT_CODE, Reason.ASSERTION_FAILED)
    good = evaluate_all([parse_assertion({"type": "contains", "value": "a"})], Answer("abc"))
    ok = judge(_T(), 0, "exited", "abc", assertions=good)
    assert ok.passed and "1/1 assertions passed" in ok.message


@pytest.mark.parametrize(("raw", "message"), [
    ({"type": "contians", "value": "x"}, "did you mean 'contains'"),
    ({"type": "javascript", "value": "output.length > 1"}, "out of scope"),
    ({"type": "python", "value": "True"}, "out of scope"),
    ({"type": "json-schema", "value": {"type": "nope"}}, "not a valid JSON Schema"),
    ({"type": "tokens", "value": {"inputs": 5}}, "unknown limit(s) ['inputs'] (allowed: input, output, total)"),
    ({"type": "python-runs", "limits": {"memory": 5}}, "unknown limit(s) ['memory'] (allowed: memory_mb,"),
    ({"type": "python-runs", "limits": {"processes": 0}}, "'limits.processes' must be a number > 0"),
    ({"type": "contains", "value": "x", "limits": {"processes": 1}}, "do not apply"),
    ({"type": "json-path", "path": "$.[", "value": 1}, "invalid JSONPath"),
    ({"type": "regex", "value": "(a+)+"}, "exponential"),
    ({"type": "contains"}, "'value' must be a non-empty string"),
    ({"type": "min-length", "value": 3, "unit": "lines"}, "'unit' must be one of chars, words"),
    ({"type": "not-latency", "value": 1}, "cannot be inverted"),
    ({"type": "contains", "value": "x", "path": "$.a"}, "do not apply"),
    ({"type": "contains", "value": "x", "colour": 1}, "unknown key(s) ['colour']"),
    ({"type": "cost", "value": 1, "threshold": 1}, "not both"),
])
def test_bad_assertions_are_refused_when_loaded(raw, message):
    with pytest.raises(ValueError) as info:
        parse_assertion(raw)
    assert message in str(info.value)


def test_report_lists_every_assertion_with_counts_and_metrics():
    from stress.report.assertions import (
        assertions_section,
        failure_lines,
        junit_properties,
    )
    from stress.report.results import Attempt

    results = evaluate_all([parse_assertion({"type": "contains", "value": "a", "metric": "facts"}),
                            parse_assertion({"type": "contains", "value": "z", "metric": "facts"}),
                            parse_assertion({"type": "cost", "value": 1})], Answer("abc"))
    a = Attempt(attempt=1, status="failed", reason="assertion_failed", message="m", end_reason="exited",
                exit_code=0, assertions=[r.to_json() for r in results])
    run = SimpleNamespace(outcomes=[SimpleNamespace(id="t(n=1)", repeat=1, attempts=[a])])
    text = "\n".join(assertions_section(run))
    assert "3 judged: 1 passed, 1 failed, 1 skipped." in text and "Metrics: **facts** 1/2" in text
    assert "| t(n=1) | `contains 'z'` | **FAIL** | 'z' not found in 3 characters |" in text
    assert failure_lines(a) == ["assertion failed: contains 'z': 'z' not found in 3 characters",
                                "assertion skipped: cost 1.0: no cost reported (not a Claude stream-json or json run)"]
    assert junit_properties(a)[0] == ("assert[0] contains", "passed: found 'a'")
