"""What is wrong with a suite file, and where: `Problem`, `SuiteError`, and the tools that find them.

Why problems are collected instead of raised one by one: a suite is usually run for minutes
against a real model, so `load_suite` reports every problem in a file at once, each located by
its JSON path (`$.tests[3].expect_exit`), and raises before anything runs. The pydantic-based
loader for our format collects its own; the two older formats use `ProblemCollector`, which
checks a value's JSON kind and keeps going.

Imports only `stress.suite.model` (the id rule) and `stress.suite.patterns` (`describe_json`): never a
loader, never the service's internals (`cc_executor.jobs/server/process/tree/registry`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stress.suite.model import ID_RE, ID_RULE
from stress.suite.patterns import describe_json

Located = tuple[tuple, "Problem"]
"""A problem with the JSON location it was found at (a tuple of keys and indexes), for sorting."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a suite file, located by JSON path (and line/column for bad JSON)."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f" (line {self.line}, column {self.column})"
        return f"{where}: {self.message}"


class SuiteError(ValueError):
    """A suite could not be loaded. `problems` lists everything wrong, not only the first."""

    def __init__(self, file: str | os.PathLike[str], problems: Sequence[Problem]):
        self.file = str(file)
        self.problems = tuple(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.file}: {self.problems[0]}"
        lines = [f"{self.file}: {len(self.problems)} problems"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def json_path(parts: Iterable[str | int]) -> str:
    """('tests', 3, 'expect_exit') -> '$.tests[3].expect_exit'; odd keys are quoted."""
    out = "$"
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", p):
            out += f".{p}"
        else:
            out += f"[{json.dumps(p)}]"
    return out


def ordered_problems(located: Iterable[Located]) -> list[Problem]:
    """Problems in document order of tests (suite-level first), duplicates dropped.

    Why: the pydantic and the semantic checks find problems in two passes; a reader fixing a file
    top to bottom wants them interleaved by test, and each only once."""
    def key(item: Located) -> int:
        loc = item[0]
        return loc[1] if len(loc) > 1 and loc[0] == "tests" and isinstance(loc[1], int) else -1
    seen: set[str] = set()
    out = []
    for _, p in sorted(located, key=key):
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def invalid_id(tid: str) -> str:
    """The message for an id that breaks `ID_RE` (the same in every format)."""
    return f"{tid!r} is not a valid id: {ID_RULE}"


_KIND_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "strings": lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
}
_KIND_WORDS = {"string": "a string", "number": "a positive number", "bool": "true or false",
               "object": "an object", "list": "a list", "strings": "a list of non-empty strings"}


class ProblemCollector:
    """Checks for the older formats, which have no schema: each records a located problem and
    returns a usable default, so one pass over a file finds every problem in it."""

    def __init__(self) -> None:
        self.problems: list[Located] = []
        self.warnings: list[str] = []
        """What the file says that we read but do not act on: "$.path: message"."""

    def add(self, loc: tuple, msg: str) -> None:
        self.problems.append((loc, Problem(json_path(loc), msg)))

    def warn(self, loc: tuple, msg: str) -> None:
        self.warnings.append(f"{json_path(loc)}: {msg}")

    def warn_unknown(self, obj: Mapping[str, Any], loc: tuple, known: Iterable[str]) -> dict[str, Any]:
        """Every key of `obj` not in `known`, warned with its path (an older format's key may
        carry meaning we do not act on: never silently dropped); returned to keep in `extra`."""
        known = set(known)
        unknown = {k: v for k, v in obj.items() if k not in known}
        for k in unknown:
            self.warn(loc + (k,), "unknown key: read, kept, not acted on")
        return unknown

    def get(self, obj: Mapping[str, Any], key: str, loc: tuple, kind: str, *, required: bool = False,
            default: Any = None) -> Any:
        """obj[key] if it has the JSON `kind` (string|number|bool|object|list|strings), else default."""
        if key not in obj:
            if required:
                self.add(loc + (key,), "required, but missing")
            return default
        v = obj[key]
        if not _KIND_CHECKS[kind](v):
            self.add(loc + (key,), f"must be {_KIND_WORDS[kind]}, got {describe_json(v)}")
            return default
        return v

    def check_id(self, tid: Any, loc: tuple, seen: dict[str, tuple]) -> None:
        """A string id must follow `ID_RE` and be unique in the file (`seen`: id -> location)."""
        if not isinstance(tid, str):
            return
        if not re.match(ID_RE, tid):
            self.add(loc, invalid_id(tid))
        elif tid in seen:
            self.add(loc, f"duplicate id {tid!r} (first used at {json_path(seen[tid])})")
        else:
            seen[tid] = loc

    def raise_if_any(self, file: Path) -> None:
        if self.problems:
            raise SuiteError(file, ordered_problems(self.problems))
