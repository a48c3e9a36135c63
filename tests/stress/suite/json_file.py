"""Reading a suite file as JSON, with every reading problem located: the first step of any load.

Why not plain `json.load`: a person editing a suite needs the line and column of a syntax error,
and a key written twice in one object (which `json.load` silently resolves to the last) is almost
always a mistake that would change what a test checks, so it is reported with its JSON path.

Imports only `stress.suite.problems`: never a loader, never the service's internals
(`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stress.suite.problems import Problem, SuiteError, json_path


class _JsonObject(dict):
    """A JSON object that remembers keys it saw twice (json.load keeps only the last)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject()
    obj.duplicates = []
    for k, v in pairs:
        if k in obj and k not in obj.duplicates:
            obj.duplicates.append(k)
        obj[k] = v
    return obj


def _plain_json(value: Any, loc: tuple, dups: list[Problem]) -> Any:
    """Back to plain dicts, reporting duplicate keys with their paths."""
    if isinstance(value, _JsonObject):
        for k in value.duplicates:
            dups.append(Problem(json_path(loc + (k,)), "key appears more than once in this object"))
        return {k: _plain_json(v, loc + (k,), dups) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v, loc + (i,), dups) for i, v in enumerate(value)]
    return value


def read_json(file: Path) -> Any:
    """Parse a suite file; SuiteError with line and column for bad JSON, paths for duplicate keys."""
    try:
        data = file.read_bytes()
    except OSError as e:
        raise SuiteError(file, [Problem("$", f"cannot read the file: {e.strerror or e}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SuiteError(file, [Problem("$", f"not UTF-8 text (bad byte at offset {e.start})")]) from None
    if not text.strip():
        raise SuiteError(file, [Problem("$", "the file is empty: expected a JSON suite")])
    try:
        parsed = json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as e:
        if file.suffix.lower() in (".yaml", ".yml"):  # e.g. a promptfooconfig.yaml
            raise SuiteError(file, [Problem("$", "suites are JSON; YAML (such as promptfoo's "
                                            "promptfooconfig.yaml) is not read: write its tests as a "
                                            "JSON suite (docs/suites.md)")]) from None
        raise SuiteError(file, [Problem("$", f"invalid JSON: {e.msg}", e.lineno, e.colno)]) from None
    dups: list[Problem] = []
    plain = _plain_json(parsed, (), dups)
    if dups:
        raise SuiteError(file, dups)
    return plain
