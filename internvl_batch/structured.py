"""Structured answers for pre-labeling: JSON parsed, validated against the config's JSON Schema, typed.

The schema (`task.json_schema`, JSON Schema; a pydantic model's `model_json_schema()` works) also fixes the
Arrow type of the output's `parsed` column, so Parquet holds structs and lists, not JSON strings:
object -> struct (its `properties`), array -> list (`items`), string/integer/number/boolean -> string/int64/
float64/bool; `enum` of strings -> string. Other constructs (`anyOf`, free-form objects) are refused when the
config is loaded, with a message naming where.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_SCALARS = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}


def arrow_type(schema: dict, where: str = "schema") -> pa.DataType:
    """The Arrow type that holds values valid under `schema`; ValueError for what cannot be typed."""
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: nullable is the Arrow default
        rest = [k for k in kind if k != "null"]
        kind = rest[0] if len(rest) == 1 else None
    if kind is None and "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        kind = "string"
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array":
        if "items" not in schema:
            raise ValueError(f"{where}: an array needs `items`")
        return pa.list_(arrow_type(schema["items"], f"{where}.items"))
    if kind == "object":
        properties = schema.get("properties")
        if not properties:
            raise ValueError(f"{where}: an object needs `properties` (free-form objects cannot be typed)")
        return pa.struct([(name, arrow_type(sub, f"{where}.{name}")) for name, sub in properties.items()])
    raise ValueError(
        f"{where}: cannot type {json.dumps(schema)[:120]} (use object/array/string/integer/number/boolean)"
    )


def check_schema(schema: dict) -> pa.DataType:
    """Fail fast on an invalid or untypable schema; returns the Arrow type."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    resolved = _inline_refs(schema)
    try:
        Draft202012Validator.check_schema(resolved)
    except SchemaError as exc:
        raise ValueError(f"task.json_schema is not a valid JSON Schema: {exc.message}") from None
    return arrow_type(resolved, "task.json_schema")


def _inline_refs(schema: dict) -> dict:
    """pydantic puts nested models under `$defs` and refers to them; inline them so the type is explicit."""
    defs = schema.get("$defs", {})

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(defs[node["$ref"].split("/")[-1]])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


class JsonAnswerParser:
    """Parse and validate answers against one schema; build once per actor."""

    def __init__(self, schema: dict) -> None:
        from jsonschema import Draft202012Validator

        self.schema = _inline_refs(schema)
        self.type = check_schema(schema)
        self.validator = Draft202012Validator(self.schema)

    def __call__(self, text: str | None) -> tuple[Any, str | None]:
        """(value, None) for a valid answer; (None, the reason) otherwise."""
        if not text:
            return None, "json: empty answer"
        candidate = _FENCE.search(text)
        body = candidate.group(1) if candidate else text
        start = min([i for i in (body.find("{"), body.find("[")) if i >= 0], default=-1)
        if start < 0:
            return None, "json: no JSON object in the answer"
        try:
            value, _ = json.JSONDecoder().raw_decode(body[start:])
        except json.JSONDecodeError as exc:
            return None, f"json: not valid JSON: {exc.msg} at character {exc.pos}"
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(root)"
            return None, f"json: does not match the schema at {where}: {first.message}"
        return value, None
