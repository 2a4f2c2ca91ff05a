"""API Gateway request models from the pydantic models the handlers validate with.

API Gateway speaks JSON Schema draft 4; pydantic writes 2020-12. The conversion inlines `$ref`s
(API Gateway resolves references only to other models by URL), turns numeric
`exclusiveMinimum`/`exclusiveMaximum` into draft 4's boolean form, and drops keywords draft 4
does not know. One model, two enforcers: API Gateway refuses a bad body before any Lambda runs,
and the handler's own validation still names each field for the 400 it answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

DRAFT_4 = "http://json-schema.org/draft-04/schema#"
UNKNOWN_TO_DRAFT_4 = frozenset({"const", "examples", "$defs", "deprecated", "readOnly", "writeOnly", "discriminator"})


def api_gateway_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})
    converted = _convert(schema, definitions, seen=())
    return {"$schema": DRAFT_4, **converted}


def _convert(node: Any, definitions: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_convert(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            raise ValueError(f"recursive model {name} cannot be inlined for API Gateway")
        merged = {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, definitions, (*seen, name))
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in UNKNOWN_TO_DRAFT_4:
            if key == "const":
                result["enum"] = [value]
            continue
        if key in {"exclusiveMinimum", "exclusiveMaximum"} and not isinstance(value, bool):
            result["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            result[key] = True
            continue
        if key == "properties":
            result[key] = {name: _convert(prop, definitions, seen) for name, prop in value.items()}
            continue
        result[key] = _convert(value, definitions, seen)
    return result
