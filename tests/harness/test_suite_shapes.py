"""Every suite shape the harness reads, from fixtures written here (never the upstream files),
plus variable matrices: expansion order, case ids, --filter on case ids, `\\{{`, unknown
placeholders, and --list / --explain. Pure: no processes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from stress import cli
from stress.run.plan import build_plan
from stress.suite import (
    CASE_ID_RE,
    FORMAT_FIXTURES,
    FORMAT_OURS,
    FORMAT_TASK_LIST,
    FORMAT_UNIFIED,
    SuiteError,
    detect_format,
    load_suite,
    suite_to_json,
)
from stress.suite.matrix import expand, fill, fill_params
from stress.suite.verdict import MATCH_ALL

TS = "20250102_030405"


def write(tmp_path: Path, doc: Any, name: str = "suite.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def types(test) -> list[tuple[str, Any]]:
    return [(a.name, a.value) for a in test.assertions]


# --- older shapes ------------------------------------------------------------------------------


def test_categories_holding_tests_with_names_only(tmp_path):
    doc = {"task_list_id": "X", "categories": {"simple": {"timeout": 60, "tests": [
        {"name": "Echo", "command": "echo hi", "expected_patterns": ["hi"]},
        {"name": "Echo", "command": "echo again", "colour": "red"},
        {"name": "Say Hello!", "command": "echo hello"}]}}}
    suite = load_suite(write(tmp_path, doc), timestamp=TS)
    assert suite.format == FORMAT_UNIFIED and suite.name == "X"
    assert [t.id for t in suite.tests] == ["echo", "echo_2", "say_hello"]
    echo = suite.tests[0]
    assert (echo.command, echo.timeout, echo.tags, echo.match) == ("echo hi", 60, ("simple",), MATCH_ALL)
    assert [p.text for p in echo.expected_patterns] == ["hi"]
    assert suite.warnings == ("$.categories.simple.tests[1].colour: unknown key: read, kept, not acted on",)
    assert suite.tests[1].extra == {"colour": "red"}
    again = load_suite(write(tmp_path, doc), timestamp=TS)  # derived ids are stable
    assert [t.id for t in again.tests] == [t.id for t in suite.tests]


def test_validation_objects_become_assertions(tmp_path):
    doc = {"task_list_id": "V", "tests": [
        {"id": "m", "command": "claude -p 'x'", "validation": {
            "type": "json", "schema": {"answer": "number"}, "expected_answer": 4}},
        {"id": "c", "command": "cat doc.md", "validation": {
            "type": "content_check", "min_length": 2000, "must_contain": ["# Title"], "tone": "dry"}},
        {"id": "p", "command": "cat x.py", "validation": {
            "type": "code_validation", "language": "python", "must_contain": ["def"]}}]}
    suite = load_suite(write(tmp_path, doc), timestamp=TS)
    assert suite.format == FORMAT_TASK_LIST
    m, c, p = suite.tests
    assert types(m) == [("is-json", None),
                        ("json-schema", {"type": "object", "required": ["answer"],
                                         "properties": {"answer": {"type": "number"}}}),
                        ("json-path", 4)]
    assert m.assertions[2].path == "$.answer" and m.requires == ("claude", "real-model")
    assert types(c) == [("min-length", 2000), ("contains", "# Title")]
    assert types(p) == [("python-compiles", None), ("contains", "def")]
    assert suite.warnings == ("$.tests[1].validation.tone: unknown key: read, kept, not acted on",)


def test_prompt_fixtures_map_to_the_matrix_and_cli_options(tmp_path):
    doc = {"name": "quick", "tests": [
        {"name": "add", "prompt": 'What is {n} + {n}? Reply {"sum": N} {other}', "params": {"n": [1, 2]},
         "repeat": 2, "timeout": 20, "json_mode": True, "stream": False},
        {"name": "one", "prompt": "Say {w}", "params": {"w": "hello"}, "stream": True}]}
    suite = load_suite(write(tmp_path, doc), timestamp=TS)
    assert suite.format == FORMAT_FIXTURES and suite.name == "quick"
    assert [t.id for t in suite.tests] == ["add(n=1)", "add(n=2)", "one(w=hello)"]
    add1 = suite.tests[0]
    # Only the declared names are filled: the JSON braces and {other} stay as written.
    assert add1.args == ("claude", "-p", 'What is 1 + 1? Reply {"sum": N} {other}', "--output-format", "json")
    assert (add1.repeat, add1.timeout, add1.test_id, dict(add1.vars)) == (2, 20, "add", {"n": 1})
    assert suite.tests[2].args[3:] == ("--output-format", "stream-json", "--verbose")


def test_an_assert_list_added_to_an_older_test_is_acted_on(tmp_path, capsys):
    doc = {"task_list_id": "T", "tests": [
        {"id": "m", "command": "echo 4", "validation": {"type": "content_check", "min_length": 1},
         "assert": [{"type": "json-schema", "value": {"answer": "number"}}], "threshold": 0.5},
        {"name": "fx", "prompt": "{n}", "params": {"n": [1, 2]}, "assert": [{"type": "contains", "value": "={n}"}]},
        {"id": "v", "command": "echo {{n}}", "vars": {"n": [1]}}]}
    suite = load_suite(write(tmp_path, doc), timestamp=TS)
    m, fx1, fx2, v = suite.tests
    assert [a.type for a in m.assertions] == ["min-length", "json-schema"] and m.threshold == 0.5
    assert m.assertions[1].value["required"] == ["answer"]
    assert cli.main([str(tmp_path / "suite.json"), "--list", "--filter", "fx*"]) == 0
    assert "; 1 assertion\t" in capsys.readouterr().out
    assert (fx1.id, types(fx1), types(fx2)) == ("fx(n=1)", [("contains", "=1")], [("contains", "=2")])
    assert v.command == "echo {{n}}" and v.extra == {"vars": {"n": [1]}}
    assert suite.warnings == ("$.tests[2].vars: not acted on: 'vars' and {{name}} belong to our format; "
                              "this older shape's matrix is 'params' with {name} placeholders",)
    unified = {"categories": {"c": {"tasks": [{"id": "t", "command_template": "echo 4", "verification": {},
                                               "assert": [{"type": "equals", "value": 4}], "threshold": 1}]}}}
    [t] = load_suite(write(tmp_path, unified, "unified.json"), timestamp=TS).tests
    assert (types(t), t.threshold) == ([("equals", 4)], 1.0)
    doc["tests"][0]["assert"] = [{"type": "contians", "value": "x"}]
    doc["tests"][0]["threshold"] = 2
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc), timestamp=TS)
    assert "$.tests[0].assert[0]: unknown assertion type 'contians'" in str(info.value)
    assert "$.tests[0].threshold: must be a number from 0 to 1, got the integer 2" in str(info.value)


def test_suites_named_by_test_id_or_task_list_id(tmp_path):
    s = load_suite(write(tmp_path, {"test_id": "T1", "tests": [{"id": "a", "command": "true"}]}))
    assert (s.format, s.name) == (FORMAT_TASK_LIST, "T1")
    s = load_suite(write(tmp_path, {"task_list_id": "T2", "tests": [{"id": "a", "command": "true"}]}))
    assert s.name == "T2"


def test_unified_tasks_warn_about_keys_we_do_not_act_on(tmp_path):
    doc = {"task_list_id": "U", "endpoint": "/stream", "execution_config": {"default_timeout": 9, "x": 1},
           "categories": {"c": {"tasks": [{"id": "t1", "natural_language_request": "hi",
                                          "verification": {"expected_patterns": ["a"], "odd": 1},
                                          "validation": {"type": "content_check", "max_words": 50}}]}}}
    suite = load_suite(write(tmp_path, doc), timestamp=TS)
    assert suite.tests[0].timeout == 9
    assert [(a.name, a.value, a.unit) for a in suite.tests[0].assertions] == [("max-length", 50, "words")]
    assert set(suite.warnings) == {"$.endpoint: unknown key: read, kept, not acted on",
                                   "$.execution_config.x: unknown key: read, kept, not acted on",
                                   "$.categories.c.tasks[0].verification.odd: unknown key: read, kept, not acted on"}


def test_our_format_still_refuses_unknown_keys(tmp_path):
    doc = {"name": "n", "tests": [{"id": "a", "command": "true", "asert": []}]}
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc))
    assert "$.tests[0].asert: unknown key 'asert' (did you mean 'assert'?)" in str(info.value)


@pytest.mark.parametrize("doc", [{"foo": 1}, [1, 2], "tests"])
def test_a_file_that_is_no_suite_is_refused_in_one_line(tmp_path, doc):
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc))
    text = str(info.value)
    assert "\n" not in text and '"tests" list' in text and '"categories" object' in text


def test_an_empty_or_yaml_file_is_refused_in_one_line_saying_what_was_expected(tmp_path):
    (tmp_path / "empty.json").write_text("\n")
    (tmp_path / "promptfooconfig.yaml").write_text("prompts:\n  - 'What is {{n}}?'\n")
    for name, said in (("empty.json", "the file is empty: expected a JSON suite"),
                       ("promptfooconfig.yaml", "suites are JSON; YAML (such as promptfoo's")):
        with pytest.raises(SuiteError) as info:
            load_suite(tmp_path / name)
        assert said in str(info.value) and len(str(info.value).splitlines()) == 1


def test_promptfoo_top_level_keys_say_where_they_live_here(tmp_path):
    doc = {"defaultTest": {}, "providers": [], "tests": [{"vars": {"n": 1}, "assert": [{"type": "is-json"}]}]}
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc))
    assert "$.defaultTest: unknown key 'defaultTest' (promptfoo's defaultTest: here defaults" in str(info.value)
    assert "$.providers: unknown key 'providers' (promptfoo's providers: here defaults.claude_command" in str(info.value)


def test_detection_of_the_older_shapes():
    assert detect_format({"name": "q", "tests": [{"name": "a", "prompt": "p"}]}) == FORMAT_FIXTURES
    assert detect_format({"tests": [{"name": "a", "prompt": "p", "params": {}}]}) == FORMAT_FIXTURES
    assert detect_format({"tests": [{"id": "a", "command": "c", "validation": {}}]}) == FORMAT_TASK_LIST
    assert detect_format({"name": "q", "tests": [{"id": "a", "prompt": "p"}]}) == FORMAT_OURS
    assert detect_format({"name": "q", "tests": [{"id": "a", "command": "c", "validation": {}}]}) == FORMAT_TASK_LIST
    assert detect_format({"name": "q", "tests": [{"id": "a", "args": ["c"], "validation": {}}]}) == FORMAT_OURS


# --- matrices ----------------------------------------------------------------------------------


def test_expansion_is_a_stable_cartesian_product_with_safe_ids():
    cases = expand({"n": [5, 10], "model": ["a", "b c"], "q": "x" * 30})
    assert [c.suffix for c in cases] == ["(n=5,model=a,q=#1)", "(n=5,model=#2,q=#1)",
                                         "(n=10,model=a,q=#1)", "(n=10,model=#2,q=#1)"]
    assert cases[1].values == {"n": 5, "model": "b c", "q": "x" * 30}
    assert fill(r"{{ n }} and \{{n}} and {{model}}", {"n": 5, "model": True}) == "5 and {{n}} and true"
    assert fill_params('{"a": {n}} {m}', {"n": 1}) == '{"a": 1} {m}'


def test_our_format_matrix_fills_everything_and_filters_by_case_id(tmp_path, capsys):
    doc = {"name": "m", "tests": [
        {"id": "answer", "prompt": "What is {{n}} + {{n}}? \\{{not a var}}", "vars": {"n": [5, 10], "model": ["a", "b"]},
         "expected_patterns": ["{{n}}"], "env": {"M": "{{model}}"},
         "assert": [{"type": "json-path", "path": "$.sum", "value": "{{n}}"}, {"type": "contains", "value": "{{n}}"}]},
        {"id": "plain", "command": "echo {{x}}", "vars": {"x": ["a"]}}]}
    path = write(tmp_path, doc)
    suite = load_suite(path, timestamp=TS)
    ids = [t.id for t in suite.tests]
    assert all(re.match(CASE_ID_RE, i) for i in ids)
    assert ids == ["answer(n=5,model=a)", "answer(n=5,model=b)", "answer(n=10,model=a)",
                   "answer(n=10,model=b)", "plain(x=a)"]
    t = suite.tests[1]
    assert t.args[2] == "What is 5 + 5? {{not a var}}" and t.env == {"M": "b"}
    assert t.expected_patterns[0].text == "5" and t.assertions[0].value == 5 and t.assertions[1].value == "5"
    assert [p.test.id for p in build_plan([suite], ["answer(n=5,*"], None)] == ids[:2]
    assert [p.stem for p in build_plan([suite], ["answer(n=5,*"], None)] == ids[:2]
    assert [p.test.id for p in build_plan([suite], ["answer"], None)] == ids[:4]  # every case
    # Converted to our format, every case stands alone and loads again.
    again = load_suite(write(tmp_path, suite_to_json(suite), "converted.json"), timestamp=TS)
    assert [x.id for x in again.tests][:2] == ["answer-1", "answer-2"]
    assert cli.main([str(path), "--list", "--filter", "answer(n=10,*"]) == 0
    out = capsys.readouterr().out
    assert "answer(n=10,model=a)" in out and "answer(n=5" not in out and "1 assertions" not in out
    assert cli.main([str(path), "--explain", "answer(n=10,model=b)"]) == 0
    out = capsys.readouterr().out
    assert '"vars"' in out and "-- as run" in out and "[0] json-path $.sum 10" in out
    assert cli.main([str(path), "--explain", "nope"]) == 2
    assert "--explain: no test or case 'nope'" in capsys.readouterr().err


def test_an_unknown_placeholder_is_an_error_naming_it(tmp_path):
    doc = {"name": "m", "tests": [{"id": "a", "prompt": "{{n}} and {{typo}}", "vars": {"n": [1]}},
                                  {"id": "b", "command": "echo {{x}}"},
                                  {"id": "c", "command": "true", "vars": {"n": [1]},
                                   "assert": [{"type": "contains", "value": "{{n}}"},
                                              {"type": "contains-all", "value": ["{{n}}", "{{m}}"]}]}]}
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc))
    text = str(info.value)
    assert "$.tests[2].assert[1].value[1]: unknown placeholder {{m}} (vars: n)" in text
    assert "$.tests[2].assert[0]" not in text
    assert "$.tests[0].prompt: unknown placeholder {{typo}} (vars: n)" in text
    assert "$.tests[1].command: unknown placeholder {{x}} (vars: none declared)" in text


def test_vars_fill_the_claude_command_and_may_not_smuggle_shell_syntax(tmp_path):
    doc = {"name": "m", "defaults": {"claude_command": ["claude", "-p", "${PROMPT}", "--model", "{{model}}"]},
           "tests": [{"id": "a", "prompt": "hi", "vars": {"model": ["x", "y"]}}, {"id": "c", "command": "true"}]}
    suite = load_suite(write(tmp_path, doc), timestamp=TS)
    assert [t.args[-2:] for t in suite.tests[:2]] == [("--model", "x"), ("--model", "y")]
    doc["tests"][0]["instances"] = {"count": 1, "criterion": "fastest", "variants": [{"label": "v", "model": "m-{{model}}"}]}
    suite = load_suite(write(tmp_path, doc), timestamp=TS)
    assert [t.instances.variants[0].model for t in suite.tests[:2]] == ["m-x", "m-y"]
    doc["tests"].append({"id": "b", "prompt": "hi"})
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc), timestamp=TS)
    assert "$.defaults.claude_command: unknown placeholder {{model}} (vars: none declared)" in str(info.value)
    shell = {"name": "m", "defaults": {"claude_command": 'claude -p "${PROMPT}"'},
             "tests": [{"id": "a", "prompt": "say {{q}}", "vars": {"q": ["ok", "$(reboot)"]}}]}
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, shell), timestamp=TS)
    assert "$.tests[0].vars: case a(q=#2): the prompt gets $ from a var" in str(info.value)


def test_a_case_id_too_long_for_a_file_name_gets_a_short_unique_output_stem(tmp_path):
    vars_ = {f"variable_name_{i:02d}": [f"value_abcdefghijklmnop_{i}", "b"] for i in range(8)}
    doc = {"name": "m", "tests": [{"id": "t" * 100, "command": "true", "vars": vars_}]}
    plan = build_plan([load_suite(write(tmp_path, doc), timestamp=TS)], [], None)
    stems = [p.stem for p in plan]
    assert len(set(stems)) == len(plan) == 256 and all(len(s.encode()) <= 200 for s in stems)
    assert stems[0].startswith(plan[0].test.id[:150]) and plan[0].test.id != stems[0]


@pytest.mark.parametrize(("vars_", "message"), [
    ({"n": [1, 1]}, "lists a value twice"),
    ({"n": [1, "1", True, "true"]}, "lists a value twice (each case needs its own id): '1', 'true'"),
    ({"n": [[1]]}, "values must be strings, numbers"),
    ({"1n": [1]}, "var name '1n'"),
    ({"a": list(range(40)), "b": list(range(40))}, "at most 1000"),
])
def test_bad_vars_are_refused(tmp_path, vars_, message):
    doc = {"name": "m", "tests": [{"id": "a", "command": "true", "vars": vars_}]}
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc))
    assert message in str(info.value) and "$.tests[0].vars" in str(info.value)


def test_defaults_assert_runs_first_in_every_test_like_promptfoos_default_test(tmp_path):
    doc = {"name": "m", "defaults": {"assert": [{"type": "is-json"}, {"type": "not-contains", "value": "{{n}}x"}]},
           "tests": [{"id": "a", "command": "echo 1", "vars": {"n": [1]}, "assert": [{"type": "equals", "value": 1}]},
                     {"id": "b", "command": "echo 2", "vars": {"n": [2]}}]}
    suite = load_suite(write(tmp_path, doc))
    assert [types(t) for t in suite.tests] == [[("is-json", None), ("not-contains", "1x"), ("equals", 1)],
                                               [("is-json", None), ("not-contains", "2x")]]
    doc["tests"].append({"id": "c", "command": "echo 3"})
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc))
    assert "$.defaults.assert: unknown placeholder {{n}} (vars: none declared)" in str(info.value)
    assert "(in test 'c')" in str(info.value)
