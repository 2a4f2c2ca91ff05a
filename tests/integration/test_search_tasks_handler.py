"""The search launcher's tasks against moto (the search region us-west-2, the hub's search table in us-east-1): a
launch through the handler from placement to ready, and each task's decisions: the subnet in the volume's zone,
spot recorded as starting, EC2's refusals by class, a retried launch, a scale-down during RunInstances, the attach
waiting for a pending instance or a retiring predecessor and refusing a volume held by a foreign instance, the
health check's budget, ready, and the failure step's cleanup."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from spothub_core.contracts import MANAGED_BY, SEARCH_SERVICE, InstanceTag, SearchTag
from spothub_core.errors import CapacityError, FatalError, QuotaError, Superseded, TransientError
from spothub_core.logic import search_launcher
from spothub_core.logic.search_launcher import VOLUME_DEVICE, failure_text
from spothub_core.models.search_records import EndReason, SearchStatus
from spothub_core.models.search_tasks import Attach, Check, Fail, Launch, Place, Placement, Ready
from spothub_core.timings import SEARCH_START_TIMEOUT_SECONDS
from tests.integration.conftest import HUB_ENVIRONMENT, ApiCalls, load_handler, set_environment
from tests.integration.search_fixtures import SEARCH_TABLE
from tests.integration.search_launcher_fixtures import (  # noqa: F401 (search_region_fixture: a fixture)
    HOST_PARAMETER,
    INSTANCE_TYPE,
    LAUNCH_ID,
    NOW,
    PORT,
    PREFIX,
    SEARCH_REGION,
    FakeRouter,
    SearchRegion,
    running,
    search_region_fixture,
)
from tests.lambda_events import FakeLambdaContext

# --- through the handler --------------------------------------------------------------------------------------


@pytest.fixture
def handler(search_region: SearchRegion, monkeypatch: pytest.MonkeyPatch) -> Any:
    set_environment(
        monkeypatch,
        {
            **HUB_ENVIRONMENT,
            "POWERTOOLS_SERVICE_NAME": "spothub-search-tasks",
            "SPOTHUB_SEARCH_TABLE": SEARCH_TABLE,
            "SPOTHUB_SEARCH_REGION": SEARCH_REGION,
            "SPOTHUB_SEARCH_VOLUME_ID": search_region.volume_id,
            "SPOTHUB_SEARCH_LAUNCHER_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:spothub-search-launcher",
            "SPOTHUB_SEARCH_ROUTER_ARN": "arn:aws:lambda:us-west-2:123456789012:function:spothub-search-router",
            "SPOTHUB_SEARCH_HOST_PARAMETER": HOST_PARAMETER,
            "SPOTHUB_SEARCH_PORT": str(PORT),
            "SPOTHUB_SEARCH_INSTANCE_TYPE": INSTANCE_TYPE,
            "SPOTHUB_SEARCH_SPOT_MAX_PRICE": "1.25",
            "SPOTHUB_SEARCH_IDLE_TIMEOUT": "1800",
            "SPOTHUB_SEARCH_MAX_RUNTIME": "1800",
            "SPOTHUB_SEARCH_HEALTH_INTERVAL": "60",
        },
    )
    module = load_handler("search_tasks.handler")
    # The router is a function in the search VPC: its answers are the test's.
    module.launcher = dataclasses.replace(module.launcher, router=search_region.router)
    return module


def call(handler: Any, action: str, **fields: Any) -> dict[str, Any]:
    return handler.lambda_handler({"action": action, "launch_id": LAUNCH_ID, **fields}, FakeLambdaContext())


def test_a_launch_through_the_handler_from_placement_to_ready(handler: Any, search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    calls = ApiCalls(handler.ec2, "RunInstances")

    placement = call(handler, "place")
    assert placement == {
        "volume_id": region.volume_id,
        "availability_zone": "us-west-2a",
        "subnet_id": region.subnet_a,
    }
    launched = call(handler, "launch", capacity_type="spot", placement=placement)
    assert launched["capacity_type"] == "spot" and launched["instance_type"] == INSTANCE_TYPE
    (request,) = calls.of("RunInstances")
    assert request["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
            "MaxPrice": "1.25",
        },
    }
    attached = call(handler, "attach", instance_id=launched["instance_id"], volume_id=region.volume_id)
    assert attached["device"] == VOLUME_DEVICE and attached["private_ip"]

    first = call(handler, "check")
    assert (first["healthy"], first["give_up"]) == (False, False) and "timed out" in first["detail"]
    region.router.ok = True
    assert call(handler, "check")["healthy"] is True
    assert region.router.asked[-1] == (attached["private_ip"], PORT, "/health")
    assert call(handler, "ready") == {"launch_id": LAUNCH_ID, "status": "ready"}
    record = region.record()
    assert record.status == SearchStatus.READY and record.instance_id == launched["instance_id"]
    assert region.store.slot().launch_id == LAUNCH_ID


def test_the_handler_refuses_an_unknown_action(handler: Any) -> None:
    with pytest.raises(ValueError, match="unknown action 'launch_now'"):
        call(handler, "launch_now")


def test_the_handler_raises_the_class_the_state_machine_catches(handler: Any, search_region: SearchRegion) -> None:
    search_region.claim()
    placement = call(handler, "place")
    ApiCalls(handler.ec2).answer(
        "RunInstances", error=("InsufficientInstanceCapacity", "There is no Spot capacity available")
    )
    with pytest.raises(CapacityError) as caught:
        call(handler, "launch", capacity_type="spot", placement=placement)
    assert type(caught.value).__name__ == "CapacityError"  # Lambda's errorType, the name the ASL catches


# --- place ----------------------------------------------------------------------------------------------------


def test_place_picks_the_subnet_in_the_volumes_zone(search_region: SearchRegion) -> None:
    search_region.claim()
    placement = search_launcher.place(search_region.launcher(), Place(launch_id=LAUNCH_ID), now=NOW)
    assert placement == Placement(
        volume_id=search_region.volume_id, availability_zone="us-west-2a", subnet_id=search_region.subnet_a
    )


def test_place_refuses_a_volume_that_does_not_exist(search_region: SearchRegion) -> None:
    search_region.claim()
    search_region.set_record(LAUNCH_ID, volume_id="vol-0123456789abcdef0")
    with pytest.raises(FatalError, match=r"vol-0123456789abcdef0 does not exist in us-west-2"):
        search_launcher.place(search_region.launcher(), Place(launch_id=LAUNCH_ID), now=NOW)


def test_place_refuses_a_volume_in_a_zone_without_a_subnet(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    elsewhere = region.ec2.create_volume(AvailabilityZone="us-west-2c", Size=10)["VolumeId"]
    region.set_record(LAUNCH_ID, volume_id=elsewhere)
    with pytest.raises(FatalError) as caught:
        search_launcher.place(region.launcher(), Place(launch_id=LAUNCH_ID), now=NOW)
    message = str(caught.value)
    assert f"no subnet of the search network is in us-west-2c, the zone of {elsewhere}" in message
    assert f"{region.subnet_a} (us-west-2a)" in message and f"{region.subnet_b} (us-west-2b)" in message


def test_place_stops_a_launch_ended_meanwhile(search_region: SearchRegion) -> None:
    search_region.claim()
    search_region.store.terminate_if_quiet(LAUNCH_ID, EndReason.SCALE_DOWN, NOW)
    with pytest.raises(Superseded, match="terminating"):
        search_launcher.place(search_region.launcher(), Place(launch_id=LAUNCH_ID), now=NOW)


# --- launch ---------------------------------------------------------------------------------------------------


def _launch(region: SearchRegion, capacity_type: str = "spot", **overrides: Any) -> Any:
    launcher = region.launcher(**overrides)
    placement = Placement(volume_id=region.volume_id, availability_zone="us-west-2a", subnet_id=region.subnet_a)
    return search_launcher.launch(
        launcher, Launch(launch_id=LAUNCH_ID, capacity_type=capacity_type, placement=placement), now=NOW + 5
    )


def test_a_spot_launch_records_starting_with_its_instance_and_tags(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    calls = ApiCalls(region.ec2, "RunInstances")
    launched = _launch(region)
    record = region.record()
    assert record.status == SearchStatus.STARTING
    assert (record.instance_id, record.capacity_type, record.instance_type) == (
        launched.instance_id,
        "spot",
        INSTANCE_TYPE,
    )
    assert (record.availability_zone, record.subnet_id, record.started_at) == ("us-west-2a", region.subnet_a, NOW + 5)
    assert record.private_ip
    (request,) = calls.of("RunInstances")
    assert request["LaunchTemplate"] == {"LaunchTemplateId": region.template_id, "Version": "$Latest"}
    assert request["NetworkInterfaces"] == [
        {
            "DeviceIndex": 0,
            "SubnetId": region.subnet_a,
            "Groups": [region.security_group_id],
            "AssociatePublicIpAddress": True,
        }
    ]
    assert request["ClientToken"] == f"{LAUNCH_ID}-spot"
    assert "MaxPrice" not in request["InstanceMarketOptions"]["SpotOptions"]
    (described,) = region.ec2.describe_instances(InstanceIds=[launched.instance_id])["Reservations"][0]["Instances"]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags[SearchTag.NAME] == "semantic-search-20270115-080005"
    assert tags[SearchTag.SERVICE] == SEARCH_SERVICE and tags[SearchTag.MANAGED_BY] == MANAGED_BY
    assert tags[SearchTag.VOLUME] == region.volume_id
    assert (tags[InstanceTag.PREFIX], tags[InstanceTag.HUB_REGION], tags[InstanceTag.LAUNCH]) == (
        PREFIX,
        "us-east-1",
        LAUNCH_ID,
    )
    assert {spec["ResourceType"] for spec in request["TagSpecifications"]} == {"instance", "volume"}


def test_an_on_demand_launch_has_no_market_options(search_region: SearchRegion) -> None:
    search_region.claim()
    calls = ApiCalls(search_region.ec2, "RunInstances")
    launched = _launch(search_region, "on-demand")
    (request,) = calls.of("RunInstances")
    assert "InstanceMarketOptions" not in request and request["ClientToken"] == f"{LAUNCH_ID}-on-demand"
    assert launched.capacity_type == "on-demand" and search_region.record().capacity_type == "on-demand"


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        ("InsufficientInstanceCapacity", CapacityError),
        ("VcpuLimitExceeded", QuotaError),
        ("InvalidParameterValue", FatalError),
        ("RequestLimitExceeded", TransientError),
    ],
)
def test_a_refused_launch_raises_its_class_and_leaves_the_record_launching(
    search_region: SearchRegion,
    code: str,
    raised: type[Exception],
) -> None:
    search_region.claim()
    ApiCalls(search_region.ec2).answer("RunInstances", error=(code, "refused"))
    with pytest.raises(raised, match=code):
        _launch(search_region)
    assert search_region.record().status == SearchStatus.LAUNCHING


def test_a_retried_launch_gets_the_instance_its_first_try_started(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    first = _launch(region)
    calls = ApiCalls(region.ec2, "RunInstances")
    assert _launch(region) == first  # recorded: the record answers
    # Launched but not recorded (the first try's answer was lost before the update): the tag finds it.
    region.set_record(LAUNCH_ID, status=SearchStatus.LAUNCHING)
    assert _launch(region).instance_id == first.instance_id
    assert calls.of("RunInstances") == []


def test_a_launch_ended_during_run_instances_terminates_its_instance(
    search_region: SearchRegion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    region = search_region
    region.claim()
    launcher = region.launcher()
    run = launcher.placement.run

    def scaled_down_meanwhile(request: dict[str, Any]) -> Any:
        started = run(request)
        assert region.store.terminate_if_quiet(LAUNCH_ID, EndReason.SCALE_DOWN, NOW) is not None
        return started

    monkeypatch.setattr(launcher.placement, "run", scaled_down_meanwhile)
    placement = search_launcher.place(launcher, Place(launch_id=LAUNCH_ID), now=NOW)
    with pytest.raises(Superseded, match="terminating"):
        search_launcher.launch(
            launcher, Launch(launch_id=LAUNCH_ID, capacity_type="spot", placement=placement), now=NOW
        )
    (orphan,) = [i["InstanceId"] for r in region.ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert region.state(orphan) in ("shutting-down", "terminated")
    record = region.record()
    assert (record.status, record.reason, record.instance_id) == (SearchStatus.TERMINATING, EndReason.SCALE_DOWN, None)


# --- attach ---------------------------------------------------------------------------------------------------


def _attach(region: SearchRegion, instance_id: str, launch_id: str = LAUNCH_ID) -> Any:
    return search_launcher.attach(
        region.launcher(), Attach(launch_id=launch_id, instance_id=instance_id, volume_id=region.volume_id), now=NOW
    )


def _volume(region: SearchRegion) -> dict[str, Any]:
    return region.ec2.describe_volumes(VolumeIds=[region.volume_id])["Volumes"][0]


def test_attach_waits_while_the_instance_is_pending(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    instance_id = running(region)
    described = region.ec2.describe_instances(InstanceIds=[instance_id])
    pending = json.loads(json.dumps(described, default=str))
    pending["Reservations"][0]["Instances"][0]["State"] = {"Code": 0, "Name": "pending"}
    calls = ApiCalls(region.ec2)
    calls.answer("DescribeInstances", {"Reservations": pending["Reservations"]})
    with pytest.raises(TransientError, match="pending"):
        _attach(region, instance_id)
    calls.forget("DescribeInstances")
    assert _volume(region)["State"] == "available"


def test_attach_attaches_the_free_volume_and_records_the_addresses(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    instance_id = running(region)
    attached = _attach(region, instance_id)
    assert attached.device == VOLUME_DEVICE
    (attachment,) = _volume(region)["Attachments"]
    assert (attachment["InstanceId"], attachment["Device"]) == (instance_id, VOLUME_DEVICE)
    record = region.record()
    assert record.private_ip == attached.private_ip and record.public_ip == attached.public_ip
    # Retried (the first answer lost): already attached to this instance, nothing more to do.
    calls = ApiCalls(region.ec2, "AttachVolume")
    assert _attach(region, instance_id) == attached
    assert calls.of("AttachVolume") == []


def test_attach_refuses_a_volume_held_by_a_foreign_instance(search_region: SearchRegion) -> None:
    region = search_region
    foreign = region.other_instance()
    region.ec2.attach_volume(VolumeId=region.volume_id, InstanceId=foreign, Device="/dev/sdg")
    region.claim()
    instance_id = running(region)
    with pytest.raises(
        FatalError, match=rf"VolumeInUse: {region.volume_id} is attached to {foreign} \(running; not ours\)"
    ):
        _attach(region, instance_id)


def _predecessor(region: SearchRegion, status: SearchStatus) -> str:
    """A search instance of ours, launched by `s-old`, holding the volume; its record in `status`."""
    region.claim("s-old")
    old = running(region, "s-old")
    _attach(region, old, "s-old")
    region.set_record("s-old", status=status)
    return old


@pytest.mark.parametrize("status", [SearchStatus.TERMINATING, SearchStatus.FAILED])
def test_attach_waits_for_a_retiring_search_instance_to_let_the_volume_go(
    search_region: SearchRegion,
    status: SearchStatus,
) -> None:
    region = search_region
    old = _predecessor(region, status)
    assert region.store.release_slot("s-old")
    region.claim()
    instance_id = running(region)
    with pytest.raises(TransientError, match=f"attached to {old} \\(launch s-old, {status}\\)"):
        _attach(region, instance_id)
    # Terminated: the volume is free (moto detaches at once), and the attach goes through.
    region.ec2.terminate_instances(InstanceIds=[old])
    assert _attach(region, instance_id).device == VOLUME_DEVICE


def test_attach_waits_for_the_instance_the_launch_replaces(search_region: SearchRegion) -> None:
    region = search_region
    old = _predecessor(region, SearchStatus.READY)
    region.claim(replaces="s-old")
    instance_id = running(region)
    with pytest.raises(TransientError, match=old):
        _attach(region, instance_id)


def test_attach_refuses_a_volume_held_by_a_serving_search_instance(search_region: SearchRegion) -> None:
    region = search_region
    old = _predecessor(region, SearchStatus.READY)
    region.set_record("s-old", status=SearchStatus.IDLE)
    assert region.store.release_slot("s-old")
    region.claim()
    instance_id = running(region)
    with pytest.raises(FatalError, match=f"VolumeInUse: .* {old} \\(running; a search instance that is not being"):
        _attach(region, instance_id)


def test_attach_stops_when_the_launch_was_ended(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    instance_id = running(region)
    region.store.terminate_if_quiet(LAUNCH_ID, EndReason.SCALE_DOWN, NOW)
    with pytest.raises(Superseded):
        _attach(region, instance_id)
    assert _volume(region)["State"] == "available"


def test_attach_fails_when_the_instance_is_gone(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    instance_id = running(region)
    region.ec2.terminate_instances(InstanceIds=[instance_id])
    with pytest.raises(FatalError, match="terminated before the volume was attached"):
        _attach(region, instance_id)


# --- check and ready ------------------------------------------------------------------------------------------


def _check(region: SearchRegion, now: float) -> Any:
    return search_launcher.check(region.launcher(), Check(launch_id=LAUNCH_ID), now=now)


@pytest.fixture
def attached(search_region: SearchRegion) -> str:
    search_region.claim()
    instance_id = running(search_region)
    _attach(search_region, instance_id)
    return instance_id


def test_check_is_healthy_when_the_router_says_so(search_region: SearchRegion, attached: str) -> None:
    search_region.router.ok = True
    health = _check(search_region, NOW + 60)
    assert health.healthy and not health.give_up
    assert search_region.router.asked == [(search_region.record().private_ip, PORT, "/health")]


def test_check_gives_up_only_once_the_start_budget_is_spent(search_region: SearchRegion, attached: str) -> None:
    early = _check(search_region, NOW + 60)
    assert (early.healthy, early.give_up) == (False, False) and "timed out" in early.detail
    late = _check(search_region, NOW + SEARCH_START_TIMEOUT_SECONDS)
    assert (late.healthy, late.give_up) == (False, True)
    assert f"not healthy {SEARCH_START_TIMEOUT_SECONDS} s after its launch: timed out" == late.detail


def test_an_unreachable_router_is_one_more_miss(search_region: SearchRegion, attached: str) -> None:
    search_region.router.unreachable = True
    health = _check(search_region, NOW + 60)
    assert (health.healthy, health.give_up) == (False, False) and "TooManyRequestsException" in health.detail


def test_check_gives_up_at_once_on_an_instance_that_is_gone(search_region: SearchRegion, attached: str) -> None:
    search_region.ec2.terminate_instances(InstanceIds=[attached])
    health = _check(search_region, NOW + 60)
    assert (health.healthy, health.give_up) == (False, True) and attached in health.detail


def test_ready_makes_the_record_routable_once(search_region: SearchRegion, attached: str) -> None:
    launcher = search_region.launcher()
    outcome = search_launcher.ready(launcher, Ready(launch_id=LAUNCH_ID), now=NOW + 120)
    assert (outcome.launch_id, outcome.status) == (LAUNCH_ID, "ready")
    record = search_region.record()
    assert (record.status, record.ready_at, record.health_failures) == (SearchStatus.READY, NOW + 120, 0)
    assert record.private_ip and record.public_ip
    search_region.store.begin_request(LAUNCH_ID, NOW + 130)
    # Retried: the record is already routable (busy now), and stays so.
    assert search_launcher.ready(launcher, Ready(launch_id=LAUNCH_ID), now=NOW + 140).status == "busy"
    assert search_region.record().ready_at == NOW + 120


def test_ready_leaves_a_record_ended_meanwhile(search_region: SearchRegion, attached: str) -> None:
    search_region.store.terminate_if_quiet(LAUNCH_ID, EndReason.SCALE_DOWN, NOW)
    with pytest.raises(Superseded):
        search_launcher.ready(search_region.launcher(), Ready(launch_id=LAUNCH_ID), now=NOW + 120)
    assert search_region.record().status == SearchStatus.TERMINATING


# --- fail -----------------------------------------------------------------------------------------------------

LAMBDA_CAUSE = json.dumps({"errorType": "FatalError", "errorMessage": "VolumeInUse: vol-1 is attached to i-2"})


def _fail(region: SearchRegion, error: str = "FatalError", cause: str = LAMBDA_CAUSE) -> Any:
    return search_launcher.fail(region.launcher(), Fail(launch_id=LAUNCH_ID, error=error, cause=cause), now=NOW + 300)


def test_fail_terminates_ends_the_record_and_releases_the_slot(search_region: SearchRegion, attached: str) -> None:
    region = search_region
    outcome = _fail(region)
    assert (outcome.launch_id, outcome.status) == (LAUNCH_ID, "terminated")
    assert region.state(attached) in ("shutting-down", "terminated")
    record = region.record()
    assert (record.status, record.reason, record.ended_at) == (
        SearchStatus.TERMINATED,
        EndReason.LAUNCH_FAILED,
        NOW + 300,
    )
    assert record.error == "FatalError: VolumeInUse: vol-1 is attached to i-2"
    assert region.store.slot().launch_id is None
    # Twice: nothing more happens, nothing breaks.
    assert _fail(region).status == "terminated"
    assert region.record().ended_at == NOW + 300


def test_fail_finds_an_instance_the_record_never_got(search_region: SearchRegion) -> None:
    region = search_region
    region.claim()
    launcher = region.launcher()
    placement = search_launcher.place(launcher, Place(launch_id=LAUNCH_ID), now=NOW)
    # RunInstances answered, then the task timed out before it recorded the instance.
    task = Launch(launch_id=LAUNCH_ID, capacity_type="spot", placement=placement)
    orphan = launcher.placement.run(search_launcher.run_request(launcher, launcher.placement.host(), task, NOW))
    assert region.record().instance_id is None
    assert _fail(region, "States.Timeout", "").status == "terminated"
    assert region.state(orphan.instance_id) in ("shutting-down", "terminated")
    assert region.record().error == "States.Timeout"


def test_fail_leaves_a_record_someone_else_ended(search_region: SearchRegion, attached: str) -> None:
    region = search_region
    region.store.terminate_if_quiet(LAUNCH_ID, EndReason.SCALE_DOWN, NOW)
    assert region.store.release_slot(LAUNCH_ID)
    region.claim("s-next")
    outcome = _fail(region, "Superseded", json.dumps({"errorType": "Superseded", "errorMessage": "stopped"}))
    assert outcome.status == "terminating"
    assert region.state(attached) in ("shutting-down", "terminated")
    record = region.record()
    assert (record.status, record.reason) == (SearchStatus.TERMINATING, EndReason.SCALE_DOWN)
    assert region.store.slot().launch_id == "s-next"  # the next launch keeps the slot


@pytest.mark.parametrize(
    ("error", "cause", "text"),
    [
        (
            "CapacityError",
            json.dumps({"errorType": "CapacityError", "errorMessage": "no spot"}),
            "CapacityError: no spot",
        ),
        (
            "NeverHealthy",
            "not healthy 900 s after its launch: timed out",
            "NeverHealthy: not healthy 900 s after its launch: timed out",
        ),
        ("States.Timeout", "", "States.Timeout"),
        ("", "", "the launch failed"),
    ],
)
def test_the_failure_text_says_what_failed(error: str, cause: str, text: str) -> None:
    assert failure_text(error, cause) == text
