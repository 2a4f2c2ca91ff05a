"""The search instance's context keys: defaults, both context forms, and one clear line per bad value."""

from __future__ import annotations

import pytest

from spothub_core import timings
from stacks.config import ConfigError, SpothubConfig

VOLUME = "vol-0dec0de5eadc0ffee"
SEARCH = {"searchVolumeId": VOLUME, "searchImage": "ghcr.io/example/semantic-search:1.4"}


def test_without_a_volume_no_search_part_is_deployed() -> None:
    config = SpothubConfig.from_context({})
    assert not config.search_enabled
    assert config.search_volume_id is None
    # `-c searchVolumeId=` unsets it, as leaving it out does.
    assert not SpothubConfig.from_context({"searchVolumeId": ""}).search_enabled


def test_defaults() -> None:
    config = SpothubConfig.from_context(SEARCH)
    assert config.search_enabled
    assert config.search_region == "us-east-2"  # the first worker region
    assert config.search_instance_type == "g5.xlarge"
    assert config.search_use_spot is True
    assert config.search_spot_max_price is None
    assert config.search_spot_max_price_text == ""
    assert config.search_idle_timeout == timings.SEARCH_IDLE_TIMEOUT_SECONDS == 1800
    assert config.search_max_runtime == timings.SEARCH_MAX_RUNTIME_SECONDS == 1800
    assert config.search_health_interval == timings.SEARCH_HEALTH_INTERVAL_SECONDS == 60
    assert config.search_port == 8000
    assert config.search_health_path == "/health"


def test_the_names_derived_from_the_prefix() -> None:
    config = SpothubConfig.from_context({**SEARCH, "prefix": "gpu-prod"})
    assert config.search_table_name == "gpu-prod-search"
    assert config.search_launcher_name == "gpu-prod-search-launcher"
    assert config.search_host_parameter == "/spothub/gpu-prod/search-host"
    assert config.search_config_parameter == "/spothub/gpu-prod/search-config"
    assert config.search_api_key_secret_name == "gpu-prod/search/api-key"
    assert config.search_instance_role_name == "gpu-prod-search-instance"


def test_the_first_deployed_worker_region_is_the_hub_with_hub_as_worker() -> None:
    config = SpothubConfig.from_context({**SEARCH, "hubAsWorker": "true", "workerRegions": "us-west-2"})
    assert config.search_region == "us-east-1"
    assert SpothubConfig.from_context({**SEARCH, "workerRegions": "eu-west-1,us-west-2"}).search_region == "eu-west-1"


def test_command_line_strings_and_cdk_json_values_mean_the_same() -> None:
    from_cli = SpothubConfig.from_context(
        {
            **SEARCH,
            "searchRegion": "us-west-2",
            "searchUseSpot": "false",
            "searchSpotMaxPrice": "0.45",
            "searchIdleTimeout": "600",
            "searchMaxRuntime": "0",
            "searchHealthInterval": "120",
            "searchPort": "9200",
        }
    )
    from_json = SpothubConfig.from_context(
        {
            **SEARCH,
            "searchRegion": "us-west-2",
            "searchUseSpot": False,
            "searchSpotMaxPrice": 0.45,
            "searchIdleTimeout": 600,
            "searchMaxRuntime": 0,
            "searchHealthInterval": 120,
            "searchPort": 9200,
        }
    )
    assert from_cli == from_json
    assert from_cli.search_region == "us-west-2"
    assert (from_cli.search_use_spot, from_cli.search_max_runtime) == (False, 0)


@pytest.mark.parametrize(("price", "text"), [(0.45, "0.45"), ("1", "1"), (10, "10"), ("0.00001", "0.00001"), ("", "")])
def test_the_spot_price_cap_as_ec2_takes_it(price: object, text: str) -> None:
    assert SpothubConfig.from_context({**SEARCH, "searchSpotMaxPrice": price}).search_spot_max_price_text == text


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"searchVolumeId": "vol-123", "searchImage": "x:1"},
            "context key 'searchVolumeId': 'vol-123' is not an EBS volume id (vol-0123456789abcdef0)",
        ),
        ({"searchVolumeId": "snap-0dec0de5eadc0ffee"}, "context key 'searchVolumeId': 'snap-0dec0de5eadc0ffee' is not"),
        ({"searchRegion": "us-west-9"}, "context key 'searchRegion': unknown region 'us-west-9' (did you mean"),
        (
            {**SEARCH, "searchRegion": "eu-central-1"},
            "searchRegion eu-central-1 is not a worker region (worker regions: us-east-2, us-west-2): name the region "
            "of searchVolumeId, and deploy a worker there",
        ),
        # The hub region is a worker region only with hubAsWorker.
        ({**SEARCH, "searchRegion": "us-east-1"}, "searchRegion us-east-1 is not a worker region"),
        (
            {**SEARCH, "searchInstanceType": "big-gpu"},
            "context key 'searchInstanceType': 'big-gpu' is not an EC2 instance type name (like g5.xlarge)",
        ),
        ({**SEARCH, "searchUseSpot": "maybe"}, "context key 'searchUseSpot': Input should be a valid boolean"),
        ({**SEARCH, "searchSpotMaxPrice": "0"}, "context key 'searchSpotMaxPrice': Input should be greater than 0"),
        ({**SEARCH, "searchSpotMaxPrice": "-0.5"}, "context key 'searchSpotMaxPrice': Input should be greater than 0"),
        ({**SEARCH, "searchSpotMaxPrice": "cheap"}, "context key 'searchSpotMaxPrice': Input should be a valid number"),
        (
            {**SEARCH, "searchSpotMaxPrice": "inf"},
            "context key 'searchSpotMaxPrice': inf is not a price in USD per hour",
        ),
        (
            {**SEARCH, "searchIdleTimeout": "59"},
            "context key 'searchIdleTimeout': Input should be greater than or equal to 60",
        ),
        ({**SEARCH, "searchIdleTimeout": "half an hour"}, "context key 'searchIdleTimeout': Input should be a valid"),
        ({**SEARCH, "searchMaxRuntime": "-1"}, "context key 'searchMaxRuntime': Input should be greater than or equal"),
        (
            {**SEARCH, "searchHealthInterval": "30"},
            "context key 'searchHealthInterval': Input should be greater than or equal to 60",
        ),
        (
            {**SEARCH, "searchHealthInterval": "90"},
            "context key 'searchHealthInterval': 90 is not whole minutes: the health checks run on an EventBridge "
            "schedule, whose rate is in minutes (60, 120, ...)",
        ),
        ({**SEARCH, "searchPort": "80"}, "context key 'searchPort': Input should be greater than or equal to 1024"),
        ({**SEARCH, "searchPort": "70000"}, "context key 'searchPort': Input should be less than or equal to 65535"),
        (
            {"searchVolumeId": VOLUME},
            "searchImage is required with searchVolumeId: the search service's container image",
        ),
        ({**SEARCH, "searchImage": "my image"}, "context key 'searchImage': 'my image' must not contain spaces"),
        ({**SEARCH, "searchImage": "ab"}, "context key 'searchImage': String should have at least 3 characters"),
        (
            {**SEARCH, "searchHealthPath": "health"},
            "context key 'searchHealthPath': 'health' is not a URL path (/health)",
        ),
        ({"searchVolume": VOLUME}, "unknown context key 'searchVolume' (did you mean 'searchVolumeId'?)"),
    ],
)
def test_bad_values_are_refused_with_the_key_and_the_fix(context: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SpothubConfig.from_context(context)
    assert message in str(raised.value)


def test_search_region_may_be_the_hub_region_when_it_is_a_worker() -> None:
    config = SpothubConfig.from_context({**SEARCH, "hubAsWorker": "true", "searchRegion": "us-east-1"})
    assert config.search_region == "us-east-1"
