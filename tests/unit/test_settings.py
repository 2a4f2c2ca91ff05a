"""Environment as a pydantic model, checked at cold start."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from spothub_core.settings import HubSettings, load_settings

ENVIRONMENT = {
    "SPOTHUB_PREFIX": "spothub",
    "SPOTHUB_VERSION": "0.1.0",
    "POWERTOOLS_SERVICE_NAME": "spothub-platform-status",
    "SPOTHUB_HUB_REGION": "us-east-1",
    "SPOTHUB_WORKER_REGIONS": "us-west-2,eu-west-1",
    "SPOTHUB_STATE_TABLE": "state",
    "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
}


def test_lists_are_read_from_comma_separated_values() -> None:
    settings = load_settings(HubSettings, ENVIRONMENT)
    assert settings.worker_regions == ["us-west-2", "eu-west-1"]
    assert settings.state_table_name == "state"


def test_missing_variables_are_all_named() -> None:
    environment = {k: v for k, v in ENVIRONMENT.items() if k not in {"SPOTHUB_STATE_TABLE", "SPOTHUB_HUB_REGION"}}
    with pytest.raises(ValidationError) as caught:
        load_settings(HubSettings, environment)
    missing = {error["loc"][0] for error in caught.value.errors()}
    assert missing == {"SPOTHUB_STATE_TABLE", "SPOTHUB_HUB_REGION"}
