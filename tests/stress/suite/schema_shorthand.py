"""The older `{"answer": "number"}` schema shorthand, read as the JSON Schema it means.

Why its own module: both the older `validation` objects (`stress.suite.older`) and our own
`json-schema` / `is-json` assertions (`stress.suite.assertions`) accept it. Handed to `jsonschema`
as it is, the shorthand is a schema of unknown keywords that every value fits, so an answer
of the wrong type would pass silently; expanded, `{"answer": "number"}` requires an object
with a numeric `answer`.
"""

from __future__ import annotations

from typing import Any

JSON_TYPE_NAMES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_SCHEMA_WORDS = {"$schema", "$ref", "$defs", "properties", "required", "items", "oneOf", "anyOf",
                 "allOf", "not", "enum", "const", "additionalProperties", "patternProperties"}


def shorthand_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`{"answer": "number"}` (every value a JSON type name) as the JSON Schema it means: an
    object with those keys, each of that type. A real JSON Schema is returned as it is."""
    looks_real = bool(_SCHEMA_WORDS & set(schema)) or set(schema) == {"type"}
    if looks_real or not schema or not all(isinstance(v, str) and v in JSON_TYPE_NAMES
                                           for v in schema.values()):
        return schema
    return {"type": "object", "required": list(schema),
            "properties": {k: {"type": v} for k, v in schema.items()}}


__all__ = ["JSON_TYPE_NAMES", "shorthand_schema"]
