"""Request models for API Gateway from pydantic: draft 4, references inlined."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stacks.constructs.api_models import DRAFT_4, api_gateway_schema


class Placement(BaseModel):
    regions: list[str] = Field(min_length=1)


class ToggleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["enable", "disable"]
    teardown: bool = False
    replicas: int = Field(1, gt=0, le=8)
    placement: Placement | None = None


def test_the_schema_is_draft_4_with_references_inlined() -> None:
    schema = api_gateway_schema(ToggleRequest)
    assert schema["$schema"] == DRAFT_4
    assert "$defs" not in schema
    assert "$ref" not in str(schema)
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["action"]
    assert schema["properties"]["action"]["enum"] == ["enable", "disable"]
    placement = schema["properties"]["placement"]["anyOf"][0]
    assert placement["properties"]["regions"]["minItems"] == 1


def test_exclusive_bounds_use_draft_4s_boolean_form() -> None:
    replicas = api_gateway_schema(ToggleRequest)["properties"]["replicas"]
    assert (replicas["minimum"], replicas["exclusiveMinimum"], replicas["maximum"]) == (0, True, 8)
