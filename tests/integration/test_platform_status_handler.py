"""GET /status and GET /regions through the real handler, against DynamoDB in moto; the spot finder function
GET /regions invokes is a fake Lambda client answering what the finder answers."""

from __future__ import annotations

import importlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub_core.models.orchestrator_tasks import (
    ExclusionView,
    FindAnswer,
    LeftOutKind,
    LeftOutView,
    RankedRegionView,
    SurveyedRegion,
)
from tests.integration.conftest import STATE_TABLE_KEYS
from tests.lambda_events import FakeLambdaContext, rest_proxy_event

TABLE = "spothub-state"
FINDER = "spothub-spot-finder"


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    for key, value in {
        "SPOTHUB_PREFIX": "spothub",
        "SPOTHUB_VERSION": "0.1.0",
        "POWERTOOLS_SERVICE_NAME": "spothub-platform-status",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Spothub",
        "SPOTHUB_HUB_REGION": "us-east-1",
        "SPOTHUB_WORKER_REGIONS": "us-west-2,eu-west-1",
        "SPOTHUB_STATE_TABLE": TABLE,
        "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
        "SPOTHUB_SPOT_FINDER_FUNCTION": FINDER,
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        boto3.client("dynamodb").create_table(TableName=TABLE, **STATE_TABLE_KEYS)
        sys.modules.pop("platform_status.handler", None)
        yield importlib.import_module("platform_status.handler")
    sys.modules.pop("platform_status.handler", None)


def invoke(handler: ModuleType, method: str, path: str) -> tuple[int, dict]:
    response = handler.lambda_handler(rest_proxy_event(method, path), FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_status_reports_the_deployment_and_a_reachable_table(handler: ModuleType) -> None:
    status, body = invoke(handler, "GET", "/status")
    assert status == 200
    assert body == {
        "prefix": "spothub",
        "version": "0.1.0",
        "hub_region": "us-east-1",
        "worker_regions": ["us-west-2", "eu-west-1"],
        "capacity_fallback": "on-demand",
        "state_table": "reachable",
    }


def test_the_openapi_document_describes_the_answer(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    answer = schema["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ControlPlaneStatus"}
    assert schema["components"]["schemas"]["ControlPlaneStatus"]["properties"]["state_table"]["const"] == "reachable"


def test_status_is_503_with_the_reason_when_the_table_is_gone(handler: ModuleType) -> None:
    boto3.client("dynamodb").delete_table(TableName=TABLE)
    status, body = invoke(handler, "GET", "/status")
    assert status == 503
    assert body["message"].startswith(f"state table {TABLE} did not answer: ResourceNotFoundException")


def test_unknown_route_is_404(handler: ModuleType) -> None:
    status, _ = invoke(handler, "POST", "/status")
    assert status == 404


@pytest.mark.parametrize("variable", ["SPOTHUB_STATE_TABLE", "SPOTHUB_SPOT_FINDER_FUNCTION"])
def test_missing_environment_fails_at_cold_start(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.delenv(variable, raising=False)
    sys.modules.pop("platform_status.handler", None)
    with pytest.raises(Exception, match=variable):
        importlib.import_module("platform_status.handler")
    sys.modules.pop("platform_status.handler", None)


# --- GET /regions ----------------------------------------------------------------------------------

NOW = 1_795_818_000.0  # 2026-11-27T22:20:00Z
WEST, EU, SOUTH = "us-west-2", "eu-west-1", "ap-south-1"


@dataclass
class FakeLambda:
    """The Lambda client's `invoke` as the finder function answers it: a payload, or a function error."""

    answer: dict[str, Any] | None = None
    function_error: str | None = None
    invoked: list[dict[str, Any]] = field(default_factory=list)

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.invoked.append({**kwargs, "Payload": json.loads(kwargs["Payload"])})
        if self.function_error:
            return {"FunctionError": "Unhandled", "Payload": io.BytesIO(self.function_error.encode())}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.answer).encode())}


def surveyed(region: str, **facts: Any) -> SurveyedRegion:
    base: dict[str, Any] = {
        "region": region,
        "rank": None,
        "placement_score": 5,
        "spot_price": 0.42,
        "spot_zone": f"{region}a",
        "spot_instance_type": "g5.xlarge",
        "reason": "score 5, $0.4200/h",
        "left_out": None,
        "exclusion": None,
        "denied": False,
        "allowed": True,
        "replicas": [],
    }
    return SurveyedRegion.model_validate(base | facts)


def survey_answer() -> dict[str, Any]:
    """West ranks first and holds replica-0; EU is excluded after a capacity failure; ap-south-1 is denied
    by the operator and excluded too (a quota)."""
    capacity = ExclusionView(until=NOW + 900, kind="capacity", reason="capacity: InsufficientInstanceCapacity none")
    quota = ExclusionView(until=NOW + 21_600, kind="quota", reason="quota: MaxSpotInstanceCountExceeded limit")
    answer = FindAnswer(
        best=WEST,
        reason="score 9, $0.3512/h, best placement score",
        on_demand_region=None,
        ranked=[RankedRegionView(region=WEST, rank=1, placement_score=9, spot_price=0.3512, reason="score 9")],
        left_out=[
            LeftOutView(region=EU, reason="excluded for 900s more: capacity", kind=LeftOutKind.EXCLUDED),
            LeftOutView(region=SOUTH, reason="denied by the operator", kind=LeftOutKind.DENIED),
        ],
        instance_types=["g5.xlarge", "g6.xlarge"],
        target_capacity=1,
        observed_at=NOW,
        regions=[
            surveyed(
                WEST,
                rank=1,
                placement_score=9,
                spot_price=0.3512,
                reason="score 9, $0.3512/h, best placement score",
                replicas=["replica-0"],
            ),
            surveyed(EU, reason="excluded for 900s more: capacity", left_out="excluded", exclusion=capacity),
            surveyed(
                SOUTH,
                placement_score=None,
                spot_price=None,
                spot_zone=None,
                spot_instance_type=None,
                reason="denied by the operator",
                left_out="denied",
                exclusion=quota,
                denied=True,
            ),
        ],
    )
    return answer.model_dump(mode="json")


@pytest.fixture
def finder(handler: ModuleType, monkeypatch: pytest.MonkeyPatch) -> FakeLambda:
    fake = FakeLambda(answer=survey_answer())
    monkeypatch.setattr(handler, "finder_client", fake)
    return fake


def test_regions_answers_the_finders_survey_asked_once_without_changing_anything(
    handler: ModuleType, finder: FakeLambda
) -> None:
    status, body = invoke(handler, "GET", "/regions")
    assert status == 200, body
    (asked,) = finder.invoked
    assert (asked["FunctionName"], asked["InvocationType"]) == (FINDER, "RequestResponse")
    # Every region on its own merits, the switch's types and lists (none named), with the survey.
    assert asked["Payload"] == {
        "target_capacity": 1,
        "denied_regions": [],
        "spot_only": False,
        "share_regions": True,
        "survey": True,
    }
    assert {k: body[k] for k in ("at", "best", "reason", "instance_types")} == {
        "at": "2026-11-27T22:20:00Z",
        "best": WEST,
        "reason": "score 9, $0.3512/h, best placement score",
        "instance_types": ["g5.xlarge", "g6.xlarge"],
    }
    west, eu, south = body["regions"]
    assert west == {
        "region": WEST,
        "rank": 1,
        "state": "ok",
        "placement_score": 9,
        "spot_price": 0.3512,
        "spot_zone": "us-west-2a",
        "spot_instance_type": "g5.xlarge",
        "on_demand_price": None,
        "excluded": None,
        "denied": False,
        "allowed": True,
        "replicas": ["replica-0"],
        "reason": "score 9, $0.3512/h, best placement score",
    }
    assert (eu["rank"], eu["state"]) == (None, "excluded")
    assert eu["excluded"] == {
        "until": "2026-11-27T22:35:00Z",
        "kind": "capacity",
        "error": "InsufficientInstanceCapacity none",
    }
    # The operator's list comes first, and the exclusion behind it still shows.
    assert (south["state"], south["denied"], south["spot_price"]) == ("denied", True, None)
    assert south["excluded"] == {
        "until": "2026-11-28T04:20:00Z",
        "kind": "quota",
        "error": "MaxSpotInstanceCountExceeded limit",
    }


def test_a_region_outside_the_allow_list_is_not_allowed(handler: ModuleType, finder: FakeLambda) -> None:
    answer = survey_answer()
    answer["regions"][1] |= {"left_out": "not-allowed", "allowed": False, "exclusion": None}
    finder.answer = answer
    _, body = invoke(handler, "GET", "/regions")
    assert [(r["region"], r["state"]) for r in body["regions"]] == [
        (WEST, "ok"),
        (EU, "not-allowed"),
        (SOUTH, "denied"),
    ]


def test_regions_is_503_with_the_reason_when_the_finder_fails(handler: ModuleType, finder: FakeLambda) -> None:
    finder.function_error = json.dumps({"errorType": "SpotDataUnavailable", "errorMessage": "GetSpotPlacementScores"})
    status, body = invoke(handler, "GET", "/regions")
    assert status == 503
    assert body["message"].startswith("the spot finder failed:")
    assert "SpotDataUnavailable" in body["message"]


def test_regions_is_503_when_the_finder_answers_no_survey(handler: ModuleType, finder: FakeLambda) -> None:
    finder.answer = {**survey_answer(), "regions": None}
    status, body = invoke(handler, "GET", "/regions")
    assert status == 503
    assert "without its survey" in body["message"]


def test_the_openapi_document_describes_the_regions(handler: ModuleType) -> None:
    schema = handler.app.get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
    answer = schema["paths"]["/regions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/RegionsView"}
    assert set(schema["components"]["schemas"]["RegionState"]["enum"]) == {"ok", "excluded", "denied", "not-allowed"}


# --- GET /events ---------------------------------------------------------------------------------------------


def _put(kind: str, key: str, **fields: Any) -> None:
    from decimal import Decimal  # noqa: PLC0415

    item = {"pk": kind, "sk": key, **{k: Decimal(str(v)) if isinstance(v, float) else v for k, v in fields.items()}}
    boto3.resource("dynamodb").Table(TABLE).put_item(Item=item)


def test_events_are_the_timeline_of_the_kept_records_newest_first(handler: ModuleType) -> None:
    _put(
        "LAUNCH",
        "l-1",
        status="failed",
        replica_id="replica-0",
        region="us-west-2",
        capacity_type="spot",
        error="CapacityError: InsufficientInstanceCapacity",
        created_at=1_800_000_000.0,
        resolved_at=1_800_000_030.0,
    )
    _put(
        "LAUNCH",
        "l-2",
        status="succeeded",
        replica_id="replica-0",
        region="eu-west-1",
        capacity_type="spot",
        instance_id="i-0123456789abcdef0",
        created_at=1_800_000_031.0,
        resolved_at=1_800_000_200.0,
    )
    _put(
        "INSTANCE",
        "i-0123456789abcdef0",
        status="interrupted",
        region="eu-west-1",
        replica_id="replica-0",
        notice="interruption warning",
        updated_at=1_800_000_500.0,
    )
    _put(
        "TEARDOWN",
        "t-1",
        status="completed",
        region="eu-west-1",
        instance_id="i-0123456789abcdef0",
        reason="interrupted",
        created_at=1_800_000_510.0,
        resolved_at=1_800_000_600.0,
    )
    status, body = invoke(handler, "GET", "/events")
    assert status == 200
    kinds = [e["kind"] for e in body["events"]]
    assert kinds == [
        "teardown-done",
        "teardown",
        "notice",
        "launched",
        "launch-requested",
        "launch-failed",
        "launch-requested",
    ]
    failed = body["events"][5]
    assert failed["region"] == "us-west-2"
    assert "InsufficientInstanceCapacity" in failed["summary"]
    assert body["events"][0]["at"] == "2027-01-15T08:10:00Z"


def test_a_terminated_instance_keeps_its_notice_in_the_timeline(handler: ModuleType) -> None:
    _put(
        "INSTANCE",
        "i-0123456789abcdef1",
        status="terminated",
        region="us-west-2",
        notice="interruption warning",
        updated_at=1_800_000_700.0,
    )
    _put("INSTANCE", "i-0123456789abcdef2", status="serving", region="us-west-2", updated_at=1_800_000_710.0)
    status, body = invoke(handler, "GET", "/events")
    assert status == 200
    assert [(e["kind"], e["instance_id"]) for e in body["events"]] == [("notice", "i-0123456789abcdef1")]
    assert body["events"][0]["summary"] == "i-0123456789abcdef1 terminated: interruption warning"


def test_events_since_and_limit(handler: ModuleType) -> None:
    for i in range(5):
        _put(
            "LAUNCH",
            f"l-{i}",
            status="pending",
            region="us-west-2",
            capacity_type="spot",
            created_at=1_800_000_000.0 + 60 * i,
        )
    event = rest_proxy_event("GET", "/events")
    event["queryStringParameters"] = {"since": "2027-01-15T08:01:30Z", "limit": "2"}
    response = handler.lambda_handler(event, FakeLambdaContext())
    body = json.loads(response["body"])
    assert response["statusCode"] == 200
    assert [e["at"] for e in body["events"]] == ["2027-01-15T08:04:00Z", "2027-01-15T08:03:00Z"]


def test_events_since_that_is_no_time_is_a_400(handler: ModuleType) -> None:
    event = rest_proxy_event("GET", "/events")
    event["queryStringParameters"] = {"since": "yesterday"}
    response = handler.lambda_handler(event, FakeLambdaContext())
    assert response["statusCode"] == 400
    assert "yesterday" in json.loads(response["body"])["message"]


def test_a_standby_is_in_the_timeline_from_its_start_to_its_end(handler: ModuleType) -> None:
    from spothub_core.dal.standby import StandbyStore  # noqa: PLC0415
    from spothub_core.models.standby_records import (  # noqa: PLC0415
        EndedStandby,
        StandbyOutcome,
        StandbyRecord,
        StandbyStatus,
    )

    store = StandbyStore(boto3.resource("dynamodb").Table(TABLE))
    held = StandbyRecord(
        replica_id="replica-0",
        launch_id="replica-0-sb-1800000600",
        region="eu-west-1",
        zone="eu-west-1b",
        launched_at=1_800_000_600.0,
        reasons=("serving for 60s only",),
    )
    assert store.claim(held)
    released = StandbyRecord(
        replica_id="replica-1",
        launch_id="replica-1-sb-1800000000",
        region="us-west-2",
        capacity_type="on-demand",
        status=StandbyStatus.READY,
        instance_id="i-0123456789abcdef3",
        launched_at=1_800_000_000.0,
        ready_at=1_800_000_300.0,
        reasons=("serving for 60s only", "capacity error in us-west-2 30s ago", "score of us-west-2a fell from 5 to 2"),
    )
    store.record_end(
        EndedStandby.model_validate(
            {**released.model_dump(), "ended_at": 1_800_000_400.0, "outcome": "released", "why": "the risk fell"}
        )
    )
    store.record_end(  # a retry of the same end writes the same item
        EndedStandby.model_validate(
            {
                **released.model_dump(),
                "ended_at": 1_800_000_400.0,
                "outcome": StandbyOutcome.RELEASED,
                "why": "the risk fell",
            }
        )
    )

    status, body = invoke(handler, "GET", "/events")
    assert status == 200
    assert [(e["kind"], e["replica_id"], e["summary"]) for e in body["events"]] == [
        ("standby-started", "replica-0", "standby of replica-0 started (spot in eu-west-1b): serving for 60s only"),
        ("standby-released", "replica-1", "standby of replica-1 released: the risk fell"),
        ("standby-ready", "replica-1", "standby of replica-1 ready on i-0123456789abcdef3 (on-demand in us-west-2)"),
        (
            "standby-started",
            "replica-1",
            "standby of replica-1 started (on-demand in us-west-2): serving for 60s only; capacity error in us-west-2 "
            "30s ago; score of us-west-2a fell from 5 to 2",
        ),
    ]
    assert body["events"][1]["instance_id"] == "i-0123456789abcdef3"
    assert body["events"][1]["at"] == "2027-01-15T08:06:40Z"
