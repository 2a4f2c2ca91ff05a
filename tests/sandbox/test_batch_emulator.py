"""What the sandbox adds to the pinned moto for batch jobs, checked without a sandbox (as in
test_emulator_patches.py): each gap is still there in moto's own code, and the addition closes it.
The end-to-end behaviour (groups of a job, their instances, S3 under IAM) is in test_batch_*.py."""

from __future__ import annotations

import inspect
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spothub.sandbox import batch_job, emulator_patches
from spothub.sandbox.iam.actions import ApiRequest, ResourceFacts, authorizations_for, s3_authorizations
from spothub.sandbox.lambda_runtime import LambdaRuntime

ACCOUNT = "210987654321"  # never the session sandbox's account
REGION = "eu-west-1"


@pytest.fixture(scope="module", autouse=True)
def _patches_applied() -> None:
    emulator_patches.apply()


# --- Auto Scaling -------------------------------------------------------------------------------------


def test_moto_answers_no_scaling_activity_and_the_fleet_answers_them() -> None:
    from moto.autoscaling.responses import AutoScalingResponse  # noqa: PLC0415

    assert '{"Activities": []}' in inspect.getsource(emulator_patches._original_describe_scaling_activities)
    assert AutoScalingResponse.describe_scaling_activities is emulator_patches._describe_scaling_activities


def test_moto_deletes_a_group_with_instances_without_force_delete() -> None:
    from moto.autoscaling.models import AutoScalingBackend  # noqa: PLC0415
    from moto.autoscaling.responses import AutoScalingResponse  # noqa: PLC0415

    deleting = inspect.getsource(AutoScalingBackend.delete_auto_scaling_group)
    assert "ForceDelete" not in deleting and "force" not in deleting.lower()
    assert "set_desired_capacity(group_name, 0)" in deleting  # only the counted instances go
    assert AutoScalingResponse.delete_auto_scaling_group is emulator_patches._delete_auto_scaling_group


def test_moto_fails_internally_on_terminating_an_instance_of_no_group() -> None:
    from moto.autoscaling.models import AutoScalingBackend  # noqa: PLC0415
    from moto.autoscaling.responses import AutoScalingResponse  # noqa: PLC0415

    source = inspect.getsource(AutoScalingBackend.terminate_instance)
    assert "next(" in source and "StopIteration" not in source  # a bare next(): an internal error, not a 400
    patched = AutoScalingResponse.terminate_instance_in_auto_scaling_group
    assert patched is emulator_patches._terminate_instance_in_auto_scaling_group


# --- SNS: publishes on the timeline ------------------------------------------------------------------------


def test_moto_delivers_nothing_to_email_subscriptions_and_the_patch_records_each_publish() -> None:
    from moto.sns.models import Subscription, Topic  # noqa: PLC0415

    assert '"email"' not in inspect.getsource(Subscription.publish)
    assert Topic.publish is emulator_patches._topic_publish


# --- Lambda: a function that invokes another synchronously ---------------------------------------------------

NESTED_HANDLERS = """
import spothub_nested_probe


def outer(event, context):
    return {"outer": context.function_name, "inner": spothub_nested_probe.call_inner()}


def inner(event, context):
    return {"inner": context.function_name}
"""


class _Function:
    """What LambdaRuntime reads of a moto LambdaFunction."""

    def __init__(self, name: str, handler: str, code: bytes) -> None:
        self.function_name = name
        self.function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        self.region = REGION
        self.handler = handler
        self.code_bytes = code
        self.memory_size = 128
        self.timeout = 10
        self.environment_vars: dict[str, str] = {}
        self.role = f"arn:aws:iam::{ACCOUNT}:role/probe"


@pytest.fixture
def nested_probe() -> Iterator[Any]:
    module = type(sys)("spothub_nested_probe")
    sys.modules["spothub_nested_probe"] = module
    yield module
    sys.modules.pop("spothub_nested_probe", None)


def _zipped(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("nestedprobe.py", source)
    return buffer.getvalue()


def test_a_synchronous_invocation_by_the_running_function_runs_inside_its_turn(
    tmp_path: Path, nested_probe: Any
) -> None:
    runtime = LambdaRuntime(tmp_path, {})
    code = _zipped(NESTED_HANDLERS)
    outer = _Function(f"spothub-test-outer-{time.monotonic_ns()}", "nestedprobe.outer", code)
    inner = _Function(f"spothub-test-inner-{time.monotonic_ns()}", "nestedprobe.inner", code)

    def call_inner(on_behalf_of: str | None) -> Any:
        # As the emulator does: the callee is invoked on a request thread while the caller waits for the answer.
        answer: dict[str, Any] = {}
        thread = threading.Thread(
            target=lambda: answer.update(result=runtime.invoke(inner, {}, on_behalf_of=on_behalf_of))
        )
        thread.start()
        thread.join(timeout=3)
        return json.loads(answer["result"][0]) if "result" in answer else "still waiting"

    nested_probe.call_inner = lambda: call_inner(outer.function_name)
    payload, error = runtime.invoke(outer, {})
    assert error is None
    assert json.loads(payload) == {"outer": outer.function_name, "inner": {"inner": inner.function_name}}

    # Anyone else (not the running function) waits for its turn: concurrency 1.
    nested_probe.call_inner = lambda: call_inner("someone-else")
    payload, _ = runtime.invoke(outer, {})
    assert json.loads(payload)["inner"] == "still waiting"


# --- IAM: what the new calls are authorized as ---------------------------------------------------------------


class _Facts(ResourceFacts):
    def group_tags(self, request: ApiRequest, group_name: str) -> dict[str, str]:
        return {"spothub:prefix": "spothub"} if group_name.startswith("spothub-job-") else {}

    def launch_template(self, request: ApiRequest, template: dict[str, str]) -> tuple[str, str | None, bool]:
        arn = request.arn("ec2", f"launch-template/{template['LaunchTemplateId']}")
        return arn, f"arn:aws:iam::{request.account}:role/spothub-batch-worker", True  # it tags at launch

    def group_arn(self, request: ApiRequest, group_name: str) -> str:
        return request.arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{group_name}")


def _request(operation: str, params: dict[str, Any]) -> ApiRequest:
    return ApiRequest(service="autoscaling", operation=operation, region=REGION, account=ACCOUNT, params=params)


def test_creating_a_group_from_a_launch_template_is_also_run_instances_and_pass_role() -> None:
    params = {
        "AutoScalingGroupName": "spothub-job-0123456789ab",
        "MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.LaunchTemplateId": "lt-0abc",
        "MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.Version": "$Latest",
        "MixedInstancesPolicy.LaunchTemplate.Overrides.member.1.InstanceType": "g5.xlarge",
        "Tags.member.1.Key": "spothub:prefix",
        "Tags.member.1.Value": "spothub",
        "Tags.member.1.PropagateAtLaunch": "true",
        "Tags.member.1.ResourceId": "spothub-job-0123456789ab",
        "Tags.member.1.ResourceType": "auto-scaling-group",
    }
    found = {a.action: a for a in authorizations_for(_request("CreateAutoScalingGroup", params), _Facts())}
    assert set(found) == {"autoscaling:CreateAutoScalingGroup", "ec2:RunInstances", "ec2:CreateTags", "iam:PassRole"}
    create = found["autoscaling:CreateAutoScalingGroup"]
    assert create.context["aws:RequestTag/spothub:prefix"] == "spothub"
    assert create.context["aws:TagKeys"] == ["spothub:prefix"]
    assert create.context["autoscaling:InstanceTypes"] == ["g5.xlarge"]
    assert found["ec2:RunInstances"].context["ec2:LaunchTemplate"].endswith(":launch-template/lt-0abc")
    # Tagging at launch is conditioned on the create action: ec2:LaunchTemplate is not a key of ec2:CreateTags.
    assert found["ec2:CreateTags"].context["ec2:CreateAction"] == "RunInstances"
    assert [r.rsplit(":", 1)[-1] for r in found["ec2:CreateTags"].resources] == ["instance/*", "volume/*"]
    assert found["iam:PassRole"].resources == [f"arn:aws:iam::{ACCOUNT}:role/spothub-batch-worker"]
    assert found["iam:PassRole"].context == {"iam:PassedToService": "ec2.amazonaws.com"}


def test_tagging_a_group_is_authorized_on_the_group_the_tags_name() -> None:
    params = {
        "Tags.member.1.ResourceId": "spothub-job-0123456789ab",
        "Tags.member.1.ResourceType": "auto-scaling-group",
        "Tags.member.1.Key": "spothub:requested",
        "Tags.member.1.Value": "3",
    }
    (tagging,) = authorizations_for(_request("CreateOrUpdateTags", params), _Facts())
    assert tagging.resources[0].endswith("autoScalingGroupName/spothub-job-0123456789ab")
    assert tagging.context["aws:RequestTag/spothub:requested"] == "3"
    assert tagging.context["autoscaling:ResourceTag/spothub:prefix"] == "spothub"


def test_s3_actions_are_authorized_on_the_bucket_or_the_object() -> None:
    (listing,) = s3_authorizations("ListBucket", "in", None, {"prefix": ["jobs/a/"], "list-type": ["2"]})
    assert (listing.action, listing.resources, listing.context) == (
        "s3:ListBucket",
        ["arn:aws:s3:::in"],
        {"s3:prefix": "jobs/a/"},
    )
    (head,) = s3_authorizations("HeadBucket", "in", None, {})
    assert head.action == "s3:ListBucket"
    (read,) = s3_authorizations("GetObject", "in", "jobs/a/x.txt", {})
    assert read.resources == ["arn:aws:s3:::in/jobs/a/x.txt"]
    (write,) = s3_authorizations("PutObject", "out", "r/x.txt.out", {})
    assert (write.action, write.resources) == ("s3:PutObject", ["arn:aws:s3:::out/r/x.txt.out"])


def test_moto_s3_authorizes_outside_call_action() -> None:
    from moto.s3.responses import S3Response  # noqa: PLC0415

    assert "call_action" not in inspect.getsource(S3Response.bucket_response)
    assert "_authenticate_and_authorize_s3_action" in inspect.getsource(S3Response._key_response_get)


# --- the stand-in job ----------------------------------------------------------------------------------------


def _run_job(tmp_path: Path, image: str, files: dict[str, bytes], command: list[str] | None = None) -> Any:
    inputs, outputs = tmp_path / "Inputs", tmp_path / "Outputs"
    for name, data in files.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        (inputs / name).write_bytes(data)
    outputs.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "SPOTHUB_BATCH_INPUT_DIR": str(inputs),
        "SPOTHUB_BATCH_OUTPUT_DIR": str(outputs),
        "SPOTHUB_BATCH_IMAGE": image,
        "SPOTHUB_BATCH_JOB_COMMAND": json.dumps(command or []),
    }
    done = subprocess.run(
        [sys.executable, batch_job.__file__], env=environment, capture_output=True, text=True, check=False
    )
    return done, outputs


def test_the_stand_in_job_transforms_each_file_keeping_sub_paths(tmp_path: Path) -> None:
    files = {"a.txt": b"hello\n", "deep/b.txt": b"world"}
    done, outputs = _run_job(tmp_path, batch_job.IMAGE, files)
    assert done.returncode == 0, done.stdout
    for name, data in files.items():
        assert (outputs / batch_job.output_name(name)).read_bytes() == batch_job.expected_output(data)
    assert batch_job.expected_output(b"hello\n").startswith(b"HELLO\nsha256 5891b5b522")


def test_an_unknown_image_fails_as_docker_run_does_when_it_cannot_pull(tmp_path: Path) -> None:
    done, outputs = _run_job(tmp_path, "spothub/no-such-image:1", {"a.txt": b"x"})
    assert done.returncode == batch_job.DOCKER_RUN_FAILED
    assert "pull access denied for spothub/no-such-image" in done.stdout
    assert not list(outputs.iterdir())


def test_the_stand_in_job_fails_on_request(tmp_path: Path) -> None:
    done, _ = _run_job(tmp_path, batch_job.IMAGE, {"a.txt": b"poison"}, ["transform", "--fail-on", "poison"])
    assert done.returncode == 1


# --- the process environment, while invocations swap their variables in and out ---------------------------


def test_walking_the_environment_never_meets_a_key_that_went_meanwhile() -> None:
    import urllib.request  # noqa: PLC0415

    import spothub.sandbox.lambda_runtime  # noqa: F401, PLC0415 (installs the snapshot readers)

    stop = threading.Event()

    def swap() -> None:  # what each invocation does with its function's variables
        while not stop.is_set():
            for index in range(50):
                os.environ[f"SPOTHUB_TEST_SWAPPED_{index}"] = "x"
            for index in range(50):
                os.environ.pop(f"SPOTHUB_TEST_SWAPPED_{index}", None)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: unpatched, a few of these walks fail
    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        for _ in range(300):
            urllib.request.getproxies_environment()
            os.environ.copy()
    finally:
        stop.set()
        swapper.join(timeout=5)
        sys.setswitchinterval(interval)
