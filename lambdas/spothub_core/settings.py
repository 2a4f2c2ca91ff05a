"""Environment variables as pydantic models, validated once at cold start.

A function whose environment is wrong fails its first invocation with the list of what is
missing, instead of a KeyError deep inside a request.
"""

from __future__ import annotations

import os
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

SettingsT = TypeVar("SettingsT", bound=BaseModel)


class BaseSettings(BaseModel):
    """What every spothub function is given by `SpothubFunction`."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    prefix: str = Field(alias="SPOTHUB_PREFIX", min_length=1)
    version: str = Field(alias="SPOTHUB_VERSION", min_length=1)
    service: str = Field(alias="POWERTOOLS_SERVICE_NAME", min_length=1)


class HubSettings(BaseSettings):
    """Functions of the hub stack, which all know the deployment's shape and its state table."""

    hub_region: str = Field(alias="SPOTHUB_HUB_REGION", min_length=1)
    worker_regions: list[str] = Field(alias="SPOTHUB_WORKER_REGIONS")
    state_table_name: str = Field(alias="SPOTHUB_STATE_TABLE", min_length=1)
    capacity_fallback: str = Field(alias="SPOTHUB_CAPACITY_FALLBACK", min_length=1)


def load_settings(model: type[SettingsT], environ: dict[str, str] | None = None) -> SettingsT:
    """Read `model` from the process environment; list values are comma-separated strings."""
    source = dict(os.environ if environ is None else environ)
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key in source and _is_list(field.annotation):
            source[key] = [item for item in source[key].split(",") if item]  # type: ignore[assignment]
    return model.model_validate(source)


def _is_list(annotation: object) -> bool:
    return getattr(annotation, "__origin__", None) is list
