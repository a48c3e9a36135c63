"""The suite loader: our format, the two older formats read as they are, and validation errors.

Pure tests: files are written to tmp_path and parsed; nothing is run. Tests that read the upstream
suites in ../shared skip when that folder is absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from stress.suite import (DEFAULT_CLAUDE_COMMAND, FORMAT_OURS, FORMAT_TASK_LIST, FORMAT_UNIFIED,
                          SCHEMA_PATH, SPEC_MODELS, SuiteError, detect_format, list_suites,
                          load_suite, suite_to_json)
from stress.suite.verdict import (EXIT_NONZERO, EXIT_ZERO, MATCH_ALL, MATCH_ANY, MatchRule,
                                  RegexPattern, TextPattern)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "configs" / "examples").glob("*.json"))
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
UPSTREAM = SHARED / "upstream-suites"
needs_shared = pytest.mark.skipif(not UPSTREAM.is_dir(), reason="../shared/upstream-suites is absent")
TS = "20250102_030405"


def write(tmp_path: Path, doc: Any, name: str = "suite.json") -> Path:
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return p


def ours(*tests: dict, **top: Any) -> dict:
    return {"name": "t", **top, "tests": list(tests)}


# --- a minimal JSON Schema (2020-12) checker, enough for suite.schema.json ----------------------

SCHEMA = json.loads(SCHEMA_PATH.read_text())
ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default"}
CHECKED = {"type", "enum", "properties", "required", "additionalProperties", "items", "minItems",
           "minLength", "pattern", "minimum", "maximum", "exclusiveMinimum", "oneOf", "$ref"}


def schema_errors(value: Any, schema: dict = SCHEMA, path: str = "$") -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schema_errors(value, SCHEMA["$defs"][name], path)
    errs: list[str] = []
    types = schema.get("type")
    if types is not None:
        kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
        ok = False
        for t in [types] if isinstance(types, str) else types:
            if t == "integer":
                ok |= isinstance(value, int) and not isinstance(value, bool)
            elif t == "number":
                ok |= isinstance(value, int | float) and not isinstance(value, bool)
            else:
                ok |= isinstance(value, kinds[t])
        if not ok:
            return [f"{path}: not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: not in enum")
    if "oneOf" in schema:
        n = sum(not schema_errors(value, s, path) for s in schema["oneOf"])
        if n != 1:
            errs.append(f"{path}: matches {n} of oneOf")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errs.append(f"{path}: too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{path}: pattern")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: below minimum")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: above maximum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errs.append(f"{path}: not above exclusiveMinimum")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errs.append(f"{path}: too few items")
        if "items" in schema:
            for i, item in enumerate(value):
                errs += schema_errors(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errs.append(f"{path}: missing {key}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, v in value.items():
            if key in props:
                errs += schema_errors(v, props[key], f"{path}.{key}")
            elif extra is False:
                errs.append(f"{path}: unknown {key}")
            elif isinstance(extra, dict):
                errs += schema_errors(v, extra, f"{path}.{key}")
    return errs


def _walk_keywords(node: Any, out: set[str], in_props: bool = False) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if not in_props:
                out.add(k)
            _walk_keywords(v, out, in_props=(k in ("properties", "$defs")) and not in_props)
    elif isinstance(node, list):
        for v in node:
            _walk_keywords(v, out)


def test_the_schema_checker_covers_every_keyword_the_schema_uses():
    used: set[str] = set()
    _walk_keywords(SCHEMA, used)
    assert used - ANNOTATIONS - CHECKED == set()
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def _schema_node(name: str) -> dict:
    return SCHEMA if name == "suite" else SCHEMA["$defs"][name]


@pytest.mark.parametrize("name", sorted(SPEC_MODELS))
def test_schema_and_pydantic_models_have_the_same_keys(name):
    model, node = SPEC_MODELS[name], _schema_node(name)
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    assert set(node["properties"]) == set(fields)
    assert set(node.get("required", [])) == {k for k, f in fields.items() if f.is_required()}
    assert node.get("additionalProperties") is False  # pydantic: extra="forbid"


def test_schema_enums_agree_with_the_loader():
    crit = SCHEMA["$defs"]["instances"]["properties"]["criterion"]["enum"]
    assert crit == list(SPEC_MODELS["instances"].model_fields["criterion"].annotation.__args__)
    default_cmd = SCHEMA["$defs"]["defaults"]["properties"]["claude_command"]["default"]
    assert default_cmd == list(DEFAULT_CLAUDE_COMMAND)


# --- our format ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_schema_and_loader(path):
    doc = json.loads(path.read_text())
    assert schema_errors(doc) == []
    suite = load_suite(path)
    assert suite.format == FORMAT_OURS and len(suite.tests) >= 5
    for t in suite.tests:  # examples must stay runnable anywhere: plain commands only
        argv0 = (t.args[0] if t.args else t.command.split()[0])
        assert argv0 in {"echo", "printf", "python3", "sleep", "definitely-not-a-command-" + suite.timestamp}


def test_examples_load_by_name_from_configs():
    names = list_suites(REPO / "configs")
    assert "examples/basic" in names and "examples/rules" in names
    suite = load_suite("examples/basic", REPO / "configs")
    assert suite.path == REPO / "configs" / "examples" / "basic.json"
    assert load_suite("examples/rules").name == "examples-rules"  # default configs_dir, repo fallback


def test_unknown_suite_name_lists_known_ones(tmp_path):
    write(tmp_path, ours({"id": "a", "command": "true"}), "present.json")
    with pytest.raises(SuiteError, match=r"no suite named 'absent'.*known: present"):
        load_suite("absent", tmp_path)


def test_defaults_apply_and_tests_override(tmp_path):
    p = write(tmp_path, ours(
        {"id": "a", "command": "echo a"},
        {"id": "b", "args": ["echo", "b"], "timeout": 3, "stall_timeout": None, "match": "any",
         "expect_exit": "nonzero", "repeat": 2},
        defaults={"timeout": 7, "stall_timeout": 2, "match": {"min_ratio": 0.5}, "repeat": 3,
                  "expect_exit": 1},
    ))
    a, b = load_suite(p).tests
    assert (a.timeout, a.stall_timeout, a.match, a.repeat, a.expect_exit.code) == (7, 2, MatchRule("min_ratio", 0.5), 3, 1)
    assert (b.timeout, b.stall_timeout, b.match, b.repeat, b.expect_exit) == (3, None, MATCH_ANY, 2, EXIT_NONZERO)
    assert a.name == "a" and a.source.json_path == "$.tests[0]" and a.source.file == str(p)


def test_builtin_defaults(tmp_path):
    (t,) = load_suite(write(tmp_path, ours({"id": "a", "command": "echo"}))).tests
    assert (t.timeout, t.stall_timeout, t.match, t.expect_exit, t.repeat) == (120, None, MATCH_ALL, EXIT_ZERO, 1)


def test_pattern_forms(tmp_path):
    (t,) = load_suite(write(tmp_path, ours({"id": "a", "command": "x", "expected_patterns": [
        "plain", {"text": "Exact", "case_sensitive": True}, {"regex": "^x$", "flags": "im"}]}))).tests
    assert t.expected_patterns == (TextPattern("plain"), TextPattern("Exact", True), RegexPattern("^x$", "im"))


def test_prompt_runs_through_the_list_template(tmp_path):
    (t,) = load_suite(write(tmp_path, ours({"id": "q", "prompt": 'What is "2+2"? $HOME'})), timestamp=TS).tests
    assert t.kind == "prompt" and t.command is None
    assert t.args == ("claude", "-p", 'What is "2+2"? $HOME', "--output-format", "stream-json", "--verbose")


def test_prompt_through_a_string_template_and_placeholders(tmp_path):
    p = write(tmp_path, ours(
        {"id": "q1", "prompt": "What is 2+2? [${TIMESTAMP}]", "extra": {"metatags": "[k:v]"}},
        defaults={"claude_command": 'claude -p "${METATAGS} ${REQUEST}" --x ${TEST_ID} $HOME ${HOME}'},
    ))
    (t,) = load_suite(p, timestamp=TS).tests
    assert t.command == f'claude -p "[k:v] What is 2+2? [{TS}]" --x q1 $HOME ${{HOME}}'
    assert t.prompt == f"What is 2+2? [{TS}]"


def test_one_timestamp_per_load(tmp_path):
    p = write(tmp_path, ours(*[{"id": f"t{i}", "command": "echo ${TIMESTAMP}", "env": {"T": "${TIMESTAMP}"}}
                               for i in range(3)]))
    suite = load_suite(p)
    assert re.fullmatch(r"\d{8}_\d{6}", suite.timestamp)
    assert {t.command for t in suite.tests} == {f"echo {suite.timestamp}"}
    assert {t.env["T"] for t in suite.tests} == {suite.timestamp}


def test_repeat_defaults_to_pass_threshold_of(tmp_path):
    (t,) = load_suite(write(tmp_path, ours({"id": "a", "command": "x", "pass_threshold": {"passes": 4, "of": 5}}))).tests
    assert t.repeat == 5 and t.pass_threshold.required(5) == 4


def test_instances_and_variants(tmp_path):
    p = write(tmp_path, ours({"id": "c", "prompt": "hi", "instances": {"count": 3, "criterion": "most_patterns",
          "variants": [{"model": "haiku", "env": {"A": "1"}}, {"extra_args": ["--max-turns", "2"], "temperature": 0.5}]}}))
    (t,) = load_suite(p).tests
    assert t.instances.count == 3 and t.instances.criterion == "most_patterns"
    inv0, inv1, inv2 = (t.invocation(i) for i in range(3))
    assert inv0.args[-2:] == ("--model", "haiku") and inv0.env == {"A": "1"}
    assert inv1.args[-2:] == ("--max-turns", "2")
    assert inv2 == inv0  # variants cycle
    assert t.invocation().args == t.args
    with pytest.raises(IndexError):
        t.instances.variant_for(3)


def test_command_variant_extra_args_are_shell_quoted(tmp_path):
    p = write(tmp_path, ours({"id": "c", "command": "echo hi", "instances": {"count": 1, "criterion": "fastest",
          "variants": [{"extra_args": ["a b"]}]}}))
    assert load_suite(p).tests[0].invocation(0).command == "echo hi 'a b'"


def test_cwd_is_relative_to_the_suite_file(tmp_path):
    (tmp_path / "work").mkdir()
    (t,) = load_suite(write(tmp_path, ours({"id": "a", "command": "pwd", "cwd": "work"}))).tests
    assert t.cwd == str((tmp_path / "work").resolve())


def test_select_by_ids_and_tags(tmp_path):
    p = write(tmp_path, ours({"id": "a", "command": "x", "tags": ["fast"]}, {"id": "b", "command": "x"}))
    s = load_suite(p)
    assert [t.id for t in s.select(tags=["fast"]).tests] == ["a"]
    assert [t.id for t in s.select(ids=["b"]).tests] == ["b"]
    with pytest.raises(KeyError, match="no test"):
        s.select(ids=["zzz"])


# --- malformed suites: every problem, each with file and JSON path ----------------------------


MALFORMED = [
    ("wrong type", ours({"id": "a", "command": "x", "timeout": "10"}),
     "$.tests[0].timeout", "must be a number, got the string '10'", True),
    ("missing command", ours({"id": "a", "expected_patterns": ["x"]}),
     "$.tests[0]", "needs exactly one of 'command', 'args' or 'prompt'", True),
    ("command and args", ours({"id": "a", "command": "x", "args": ["x"]}),
     "$.tests[0]", "not 'command' and 'args'", True),
    ("duplicate ids", ours({"id": "a", "command": "x"}, {"id": "a", "command": "y"}),
     "$.tests[1].id", "duplicate id 'a' (first used at $.tests[0].id)", False),
    ("bad regex", ours({"id": "a", "command": "x", "expected_patterns": [{"regex": "(unclosed"}]}),
     "$.tests[0].expected_patterns[0]", "invalid regex", False),
    ("exponential regex", ours({"id": "a", "command": "x", "must_not_contain": [{"regex": "(a+)+$"}]}),
     "$.tests[0].must_not_contain[0]", "exponential", False),
    ("unknown key typo", ours({"id": "a", "command": "x", "expect_exti": 0}),
     "$.tests[0].expect_exti", "unknown key 'expect_exti' (did you mean 'expect_exit'?)", True),
    ("empty tests", ours(), "$.tests", "must not be empty", True),
    ("bad expect_exit", ours({"id": "a", "command": "x", "expect_exit": "zero"}),
     "$.tests[0].expect_exit", 'must be an integer, "nonzero" or "any"', True),
    ("bad match", ours({"id": "a", "command": "x", "match": {"min_ratio": 1.5}}),
     "$.tests[0].match", "min_ratio must be a number from 0 to 1", True),
    ("bad pattern item", ours({"id": "a", "command": "x", "expected_patterns": ["ok", 7]}),
     "$.tests[0].expected_patterns[1]", "got the integer 7", True),
    ("threshold vs repeat", ours({"id": "a", "command": "x", "repeat": 3, "pass_threshold": {"passes": 2, "of": 5}}),
     "$.tests[0].pass_threshold.of", "5 does not match repeat 3", False),
    ("missing name", {"tests": [{"id": "a", "command": "x"}]}, "$.name", "required, but missing", True),
    ("bad id", ours({"id": "has space", "command": "x"}), "$.tests[0].id", "not a valid id", True),
    ("bad criterion", ours({"id": "a", "command": "x", "instances": {"count": 2, "criterion": "best"}}),
     "$.tests[0].instances.criterion", "must be 'fastest', 'longest', 'cheapest' or 'most_patterns'", True),
    ("template without prompt", ours({"id": "a", "prompt": "hi"}, defaults={"claude_command": ["claude"]}),
     "$.defaults.claude_command", "must contain ${PROMPT}", False),
    ("prompt unsafe for string template", ours({"id": "a", "prompt": 'say "hi"'}, defaults={"claude_command": 'c "${PROMPT}"'}),
     "$.tests[0].prompt", "use a list template", False),
    ("bool as int", ours({"id": "a", "command": "x", "repeat": True}), "$.tests[0].repeat", "must be an integer, got true", True),
    ("env name", ours({"id": "a", "command": "x", "env": {"A-B": "1"}}), '$.tests[0].env["A-B"]', "not a valid environment variable name", False),
    ("not an object", [1, 2], "$", "a suite must be a JSON object", True),
]


@pytest.mark.parametrize(("kind", "doc", "path", "message", "schema_sees_it"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_suites_name_file_path_and_problem(tmp_path, kind, doc, path, message, schema_sees_it):
    p = write(tmp_path, doc, "broken.json")
    with pytest.raises(SuiteError) as info:
        load_suite(p)
    err = info.value
    assert str(p) in str(err) and err.file == str(p)
    assert any(pr.path == path and message in pr.message for pr in err.problems), str(err)
    assert f"{path}: " in str(err)
    # The JSON Schema rejects it too, unless it is a rule a JSON Schema cannot state.
    assert bool(schema_errors(doc)) is schema_sees_it


def test_invalid_json_reports_line_and_column(tmp_path):
    p = write(tmp_path, '{\n  "name": "x",\n  "tests": [\n    {"id": "a" "command": "echo"}\n  ]\n}\n')
    with pytest.raises(SuiteError) as info:
        load_suite(p)
    (pr,) = info.value.problems
    assert (pr.line, pr.column) == (4, 16)
    assert f"{p}: $ (line 4, column 16): invalid JSON: Expecting ',' delimiter" == str(info.value)


def test_duplicate_keys_are_reported_with_their_path(tmp_path):
    p = write(tmp_path, '{"name": "x", "tests": [{"id": "a", "command": "echo", "command": "rm"}]}')
    with pytest.raises(SuiteError, match=re.escape("$.tests[0].command: key appears more than once")):
        load_suite(p)


def test_all_problems_are_reported_at_once(tmp_path):
    p = write(tmp_path, ours(
        {"id": "a", "command": "x", "timeout": -1},
        {"id": "b"},
        {"id": "a", "args": [], "expected_patterns": [{"regex": "["}]},
        defaults={"timout": 3},
    ))
    with pytest.raises(SuiteError) as info:
        load_suite(p)
    paths = [pr.path for pr in info.value.problems]
    assert paths == ["$.defaults.timout", "$.tests[0].timeout", "$.tests[1]", "$.tests[2].args",
                     "$.tests[2].expected_patterns[0]", "$.tests[2].id"]
    assert str(info.value).startswith(f"{p}: 6 problems\n")


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "nope.json")
    p = tmp_path / "latin1.json"
    p.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(SuiteError, match="not UTF-8"):
        load_suite(p)


# --- the unified task list (seed 004 format) -------------------------------------------------


def unified(**categories: list[dict]) -> dict:
    return {"task_list_id": "U1", "description": "d", "execution_config": {"default_timeout": 77},
            "categories": {c: {"description": f"{c} tests", "tasks": tasks} for c, tasks in categories.items()}}


def task(tid: str, **kw: Any) -> dict:
    ver = {"expected_patterns": ["p1", "p2"], "timeout": 30, "stall_timeout": 9}
    ver.update(kw.pop("verification", {}))
    return {"id": tid, "name": tid + "_name", "natural_language_request": "What is 2+2?",
            "metatags": "[category:stress_test][complexity:simple]", "verification": ver, **kw}


def test_unified_mapping(tmp_path):
    p = write(tmp_path, unified(
        simple=[task("s1", command_template='claude --print "${METATAGS} ${REQUEST}" --tag ${TIMESTAMP}',
                     verification={"marker": "M_${TIMESTAMP}", "save_output": True, "weird": 1}, owner="x")],
        failure_modes=[task("failure_1", command_template="claude --bad"),
                       task("neg", command_template="false", verification={"expect_non_zero_exit": True})],
    ))
    suite = load_suite(p, timestamp=TS)
    assert suite.format == FORMAT_UNIFIED and suite.name == "U1"
    s1, f1, neg = suite.tests
    assert s1.command == f'claude --print "[category:stress_test][complexity:simple] What is 2+2?" --tag {TS}'
    assert s1.match == MATCH_ANY and s1.expect_exit == EXIT_ZERO
    assert s1.tags == ("simple", "category:stress_test", "complexity:simple")
    assert (s1.timeout, s1.stall_timeout) == (30, 9)
    assert s1.extra["marker"] == f"M_{TS}" and s1.extra["save_output"] is True
    assert s1.extra["owner"] == "x" and s1.extra["verification"] == {"weird": 1}
    assert s1.prompt == "What is 2+2?" and s1.requires == ("claude", "real-model")
    assert s1.source.json_path == "$.categories.simple.tasks[0]"
    for t in (f1, neg):
        assert t.expect_exit == EXIT_NONZERO and t.match.required(2) == 0
    assert f1.requires == ("claude",) and neg.requires == ()
    assert suite.extra["execution_config"] == {"default_timeout": 77}
    assert suite.extra["categories"]["simple"] == {"description": "simple tests"}


def test_unified_task_without_template_gets_the_seed_default_command(tmp_path):
    t = task("d1")
    t["verification"].pop("timeout")
    (d1,) = load_suite(write(tmp_path, unified(c=[t])), timestamp=TS).tests
    assert d1.command == (f'claude -p "[marker:LOCAL_d1_{TS}] [category:stress_test][complexity:simple] '
                          'What is 2+2?" --dangerously-skip-permissions --allowedTools none')
    assert d1.timeout == 77 and d1.extra["default_command"] is True


def test_unified_concurrent_tasks_become_instances(tmp_path):
    p = write(tmp_path, unified(concurrent_execution=[
        task("c1", concurrent_instances=3, evaluation_criteria="FASTEST", models=["sonnet", "haiku"],
             temperature_range=[0.5, 1.5]),
        task("c2", concurrent_instances=2, evaluation_criteria="MOST_DETAILED"),
        task("c3"),
    ]))
    c1, c2, c3 = load_suite(p).tests
    assert c1.instances.count == 3 and c1.instances.criterion == "fastest"
    assert [(v.model, v.temperature) for v in c1.instances.variants] == [("sonnet", 0.5), ("haiku", 1.0), ("sonnet", 1.5)]
    assert c2.instances.criterion == "longest" and c2.instances.variants == ()
    assert c3.instances is None and "concurrent_execution" in c3.tags


def test_unified_problems_are_all_reported(tmp_path):
    bad = unified(a=[{"id": "x"}, task("y", verification={"expected_patterns": "p", "timeout": -5})],
                  b=[task("y", concurrent_instances=2, evaluation_criteria="SMARTEST")], c="nope")
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, bad))
    got = {(pr.path, pr.message.split(",")[0]) for pr in info.value.problems}
    assert ("$.categories.a.tasks[0].verification", "required") in got
    assert ("$.categories.a.tasks[0]", "needs 'natural_language_request' or 'command_template'") in got
    assert ("$.categories.a.tasks[1].verification.expected_patterns", "must be a list of non-empty strings") in got
    assert ("$.categories.a.tasks[1].verification.timeout", "must be a positive number") in got
    assert any(p == "$.categories.b.tasks[0].id" and m.startswith("duplicate id 'y'") for p, m in got)
    assert any(p == "$.categories.b.tasks[0].evaluation_criteria" for p, _ in got)
    assert any(p == "$.categories.c.tasks" for p, _ in got)


# --- task lists (seed 002 format) ------------------------------------------------------------


def task_list(tlid: str, **top: Any) -> dict:
    return {"task_list_id": tlid, "description": "d", "timeout": 90, **top, "tests": [
        {"id": "a", "name": "A", "description": "da", "command": "echo ${TIMESTAMP}", "expected_patterns": ["x", "y"]},
        {"id": "b", "name": "B", "description": "db", "command": 'claude -p "What?"', "expected_patterns": ["z"], "note": 1},
    ]}


@pytest.mark.parametrize(
    ("tlid", "filename", "flag", "rule"),
    [
        ("SIMPLE_1", "simple_stress_tests.json", None, MATCH_ALL),
        ("MEDIUM_1", "medium.json", None, MATCH_ALL),
        ("COMPLEX_STRESS_1", "x.json", None, MatchRule("min_ratio", 0.8)),
        ("OTHER", "my_complex_suite.json", None, MatchRule("min_ratio", 0.8)),
        ("COMPLEX_1", "x.json", False, MATCH_ALL),
        ("SIMPLE_1", "x.json", True, MatchRule("min_ratio", 0.8)),
    ],
)
def test_task_list_rules(tmp_path, tlid, filename, flag, rule):
    suite = load_suite(write(tmp_path, task_list(tlid), filename), timestamp=TS, complex_suite=flag)
    assert suite.format == FORMAT_TASK_LIST and suite.name == tlid
    a, b = suite.tests
    assert a.match == rule == b.match and a.expect_exit == EXIT_ZERO
    assert a.timeout == 90 and a.command == f"echo {TS}" and a.requires == ()
    assert b.requires == ("claude", "real-model") and b.extra == {"note": 1}
    assert a.source.json_path == "$.tests[0]"


def test_task_list_problems(tmp_path):
    doc = {"task_list_id": "T", "timeout": "long", "tests": [{"id": "a"}, {"id": "a", "command": ""}, 3]}
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, doc))
    paths = {pr.path for pr in info.value.problems}
    assert {"$.timeout", "$.tests[0].command", "$.tests[1].id", "$.tests[1].command", "$.tests[2]"} <= paths


def test_format_detection():
    assert detect_format({"categories": {}}) == FORMAT_UNIFIED
    assert detect_format({"task_list_id": "x", "tests": []}) == FORMAT_TASK_LIST
    assert detect_format({"timeout": 5, "tests": [{"id": "a", "command": "x"}]}) == FORMAT_TASK_LIST
    assert detect_format({"name": "x", "tests": []}) == FORMAT_OURS
    assert detect_format({"tests": [{"id": "a", "command": "x"}]}) == FORMAT_OURS  # -> "name" missing
    assert detect_format({"timeout": 5, "tests": [{"id": "a", "args": ["x"]}]}) == FORMAT_OURS


# --- the upstream suites, read where they lie ------------------------------------------------


UPSTREAM_COUNTS = {
    "simple_stress_tests.json": (FORMAT_TASK_LIST, 5),
    "medium_stress_tests.json": (FORMAT_TASK_LIST, 7),
    "complex_stress_tests.json": (FORMAT_TASK_LIST, 7),
    "unified_stress_test_tasks.json": (FORMAT_UNIFIED, 24),
}


@needs_shared
def test_every_upstream_file_is_known_here():
    assert {p.name for p in UPSTREAM.glob("*.json")} == set(UPSTREAM_COUNTS)


@needs_shared
@pytest.mark.parametrize("name", sorted(UPSTREAM_COUNTS))
def test_upstream_suites_load_as_they_are(name, tmp_path):
    path = UPSTREAM / name
    fmt, count = UPSTREAM_COUNTS[name]
    suite = load_suite(path, timestamp=TS)
    assert suite.format == fmt and len(suite.tests) == count
    for t in suite.tests:
        assert t.command and "${" not in t.command, t.id
        assert t.source.file == str(path) and t.source.json_path.startswith("$.")
        assert "${" not in json.dumps(dict(t.extra))
    # Converted to our format, every upstream suite is valid for the schema and the loader alike.
    doc = suite_to_json(suite)
    assert schema_errors(doc) == []
    again = load_suite(write(tmp_path, doc, "converted.json"), timestamp=TS)
    for a, b in zip(suite.tests, again.tests, strict=True):
        assert (a.id, a.command, a.expected_patterns, a.match, a.expect_exit, a.timeout, a.stall_timeout,
                a.tags, a.requires, a.instances) == \
               (b.id, b.command, b.expected_patterns, b.match, b.expect_exit, b.timeout, b.stall_timeout,
                b.tags, b.requires, b.instances)


@needs_shared
def test_upstream_unified_mappings():
    suite = load_suite(UPSTREAM / "unified_stress_test_tasks.json", timestamp=TS)
    failures = [t for t in suite.tests if t.id.startswith("failure_")]
    assert [t.id for t in failures] == ["failure_1", "failure_2", "failure_3"]
    assert all(t.expect_exit == EXIT_NONZERO and "failure_modes" in t.tags for t in failures)
    others = [t for t in suite.tests if not t.id.startswith("failure_")]
    assert all(t.match == MATCH_ANY and t.expect_exit == EXIT_ZERO for t in others)
    s1 = suite.test("simple_1")
    assert s1.command.startswith('claude --print "[category:stress_test][task:daily_standup]')
    assert s1.extra["marker"] == f"STANDUP_{TS}" and (s1.timeout, s1.stall_timeout) == (30, 20)
    assert suite.test("failure_3").command == "cat"
    assert suite.test("extreme_3").timeout == 600
    assert {t.tags[0] for t in suite.tests} >= {"simple", "parallel", "concurrent_execution", "failure_modes"}


@needs_shared
def test_upstream_task_list_rules():
    complex_ = load_suite(UPSTREAM / "complex_stress_tests.json")
    assert all(t.match == MatchRule("min_ratio", 0.8) and t.timeout == 300 for t in complex_.tests)
    simple = load_suite(UPSTREAM / "simple_stress_tests.json")
    assert all(t.match == MATCH_ALL and t.timeout == 120 for t in simple.tests)
    assert simple.test("echo_test").requires == () and simple.test("simple_math").requires == ("claude", "real-model")
    assert load_suite(UPSTREAM / "medium_stress_tests.json").test("reverse_string").match == MATCH_ALL
