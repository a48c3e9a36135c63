"""report.json: the run for tools, following tests/stress/report.schema.json.

Why this module is small: the shape of report.json is written out by hand once, in the
`to_json` methods of `stress.report.results` (that is the versioned contract, see its SCHEMA_VERSION);
this module owns only how that value becomes the file's bytes (two-space indent, UTF-8 kept as
is, anything unexpected written as its `str`) and where the schema lives.

Imports `stress.report.results` only; never another report module.
"""

from __future__ import annotations

import json
from pathlib import Path

from stress.report.results import SCHEMA_VERSION, RunResult

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "report.schema.json"  # a public contract: stays put
"""The JSON Schema report.json follows (schema_version SCHEMA_VERSION)."""

__all__ = ["SCHEMA_PATH", "SCHEMA_VERSION", "render_json"]


def render_json(run: RunResult) -> bytes:
    """The whole report.json."""
    return (json.dumps(run.to_json(), indent=2, ensure_ascii=False, default=str) + "\n").encode()
