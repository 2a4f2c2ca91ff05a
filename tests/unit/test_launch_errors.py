"""Launch failures: capacity moves on, transient retries, fatal stops and alerts."""

from __future__ import annotations

import pytest

from spothub_core.logic.launch_errors import LaunchFailure, classify_launch_error, describe_error
from spothub_core.models.worker_tasks import CaughtError

ASG_NO_CAPACITY = (
    "Could not launch Spot Instances. InsufficientInstanceCapacity - There is no Spot capacity available that "
    "matches your request. Launching EC2 instance failed."
)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("InsufficientInstanceCapacity", "", LaunchFailure.CAPACITY),
        ("capacity-not-available", "", LaunchFailure.CAPACITY),
        (None, ASG_NO_CAPACITY, LaunchFailure.CAPACITY),
        (None, "Could not launch Spot Instances. There is no Spot capacity available.", LaunchFailure.CAPACITY),
        ("RequestLimitExceeded", "", LaunchFailure.TRANSIENT),
        ("ThrottlingException", "Rate exceeded", LaunchFailure.TRANSIENT),
        ("InternalError", "", LaunchFailure.TRANSIENT),
        ("InvalidAMIID.NotFound", "The image id '[ami-1]' does not exist", LaunchFailure.FATAL),
        ("UnauthorizedOperation", "You are not authorized to perform this operation.", LaunchFailure.FATAL),
        (None, "Launching EC2 instance failed. AccessDenied: not allowed to pass role", LaunchFailure.FATAL),
        ("SomethingNew", "", LaunchFailure.TRANSIENT),
        (None, "", LaunchFailure.TRANSIENT),
    ],
)
def test_classification(code: str | None, message: str, expected: LaunchFailure) -> None:
    assert classify_launch_error(code, message) is expected


# What a new account's zero G and VT spot vCPU quota looks like, from EC2 and in Auto Scaling's prose.
VCPU_LIMIT_OF_ZERO = (
    "You have requested more vCPU capacity than your current vCPU limit of 0 allows for the instance bucket that "
    "the specified instance type belongs to. Please visit http://aws.amazon.com/contact-us/ec2-request to request "
    "an adjustment to this limit."
)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        pytest.param("VcpuLimitExceeded", VCPU_LIMIT_OF_ZERO, id="vcpu-limit"),
        pytest.param("MaxSpotInstanceCountExceeded", "Max spot instance count exceeded", id="spot-count"),
        pytest.param("InstanceLimitExceeded", "", id="instance-limit"),
        pytest.param(
            None,
            f"Launching a new EC2 instance. Status Reason: {VCPU_LIMIT_OF_ZERO} Launching EC2 instance failed.",
            id="asg-vcpu-limit",
        ),
        pytest.param(
            None,
            "Launching a new EC2 instance. Status Reason: Max spot instance count exceeded. Launching EC2 instance "
            "failed.",
            id="asg-spot-count",
        ),
        pytest.param(
            None,
            "Could not launch On-Demand Instances. VcpuLimitExceeded - You have requested more vCPU capacity than "
            "your current vCPU limit of 0 allows. Launching EC2 instance failed.",
            id="asg-code-in-prose",
        ),
    ],
)
def test_an_account_quota_is_not_a_capacity_shortage(code: str | None, message: str) -> None:
    assert classify_launch_error(code, message) is LaunchFailure.QUOTA


def caught(error: dict[str, str]) -> CaughtError:
    """An error as the state machine catches it ({Error, Cause}), read as describe_failure reads it."""
    return CaughtError.model_validate(error)


def test_a_quota_class_reported_by_a_worker_task_is_kept() -> None:
    assert describe_error(caught({"Error": "quota", "Cause": VCPU_LIMIT_OF_ZERO})).error_class == "quota"
    assert describe_error(caught({"Error": "QuotaError", "Cause": VCPU_LIMIT_OF_ZERO})).error_class == "quota"


def test_the_code_wins_over_the_message() -> None:
    assert classify_launch_error("InsufficientInstanceCapacity", "UnauthorizedOperation") is LaunchFailure.CAPACITY


@pytest.mark.parametrize(
    ("error", "expected_class"),
    [
        ({"Error": "CapacityError", "Cause": "no spot capacity"}, "capacity"),
        ({"Error": "FatalError", "Cause": "bad AMI"}, "fatal"),
        ({"Error": "TransientError", "Cause": "throttled"}, "transient"),
        ({"Error": "fatal", "Cause": "CannotPullContainerError"}, "fatal"),  # a worker task's own failure class
        ({"Error": "States.Timeout", "Cause": ""}, "transient"),
        ({"Error": "Lambda.ServiceException", "Cause": ""}, "transient"),
        (None, "transient"),
    ],
)
def test_a_caught_error_is_described_in_the_class_the_hub_acts_on(
    error: dict[str, str] | None, expected_class: str
) -> None:
    described = describe_error(caught(error) if error is not None else None)
    assert described.error_class == expected_class
    if error:
        assert described.code == error["Error"]
        assert described.message == error["Cause"]


def test_a_described_cause_is_bounded() -> None:
    assert len(describe_error(caught({"Error": "FatalError", "Cause": "x" * 5000})).message) == 1000
