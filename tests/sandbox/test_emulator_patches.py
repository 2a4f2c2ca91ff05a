"""What `spothub.sandbox.emulator_patches` changes in moto, checked against the pinned moto.

For every addition: the pinned version is the one the patch was written for, the gap it closes is
still there in moto's own code (so an upgrade that closes or moves it fails here, loudly), and with
the patches applied the behaviour is right. No sandbox is started: moto's models are driven
in-process, in an account of their own so the session sandbox's account is never touched.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.cloudformation import parsing
from moto.cloudformation.exceptions import UnformattedGetAttTemplateException
from moto.core.common_models import CloudFormationModel

from spothub.sandbox import cfn_resources, emulator_patches
from spothub.sandbox.iam import hooks as iam_hooks
from spothub.sandbox.lambda_runtime import LambdaRuntime

# Never the sandbox's account (123456789012): models created here must not show up in its tests.
ACCOUNT = "210987654321"
REGION = "eu-west-1"


@pytest.fixture(scope="module", autouse=True)
def _patches_applied() -> None:
    emulator_patches.apply()


@pytest.fixture(autouse=True)
def _no_iam_here() -> Iterator[None]:
    """These tests drive the patched delivery mechanics with roleless targets in another account; IAM is
    tested in test_iam_enforcement.py. The session sandbox's enforcer is lent back afterwards."""
    lent = iam_hooks.current()
    iam_hooks.attach(None)
    yield
    iam_hooks.attach(lent)


def closure_value(function: Any, name: str) -> Any:
    """A variable a wrapper closes over (how the patches keep the moto function they wrap)."""
    function = getattr(function, "__func__", function)
    names = function.__code__.co_freevars
    assert name in names, f"{function.__qualname__} closes over {names}, not {name!r}"
    return function.__closure__[names.index(name)].cell_contents


def zipped_module(name: str, source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}.py", source)
    return buffer.getvalue()


# --- the pinned version ----------------------------------------------------------------------------


def test_installed_moto_is_the_version_the_patches_were_written_for() -> None:
    assert importlib.metadata.version("moto") == emulator_patches.MOTO_VERSION


def test_apply_is_idempotent() -> None:
    from moto.events.models import Rule  # noqa: PLC0415
    from moto.kms.models import Key  # noqa: PLC0415

    wrapper = Key.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    emulator_patches.apply()
    emulator_patches.apply()
    # A second apply wraps nothing twice: the wrapper still wraps moto's own function.
    assert Key.create_from_cloudformation_json.__func__ is wrapper  # type: ignore[attr-defined]
    assert closure_value(wrapper, "original").__module__ == "moto.kms.models"
    assert Rule.send_to_targets is emulator_patches._rule_send_to_targets
    assert emulator_patches._original_send_to_targets.__module__ == "moto.events.models"
    assert parsing.clean_json is emulator_patches._clean_json
    assert emulator_patches._original_clean_json.__module__ == "moto.cloudformation.parsing"


# --- PROPERTY_ADAPTERS: CloudFormation properties moto misreads --------------------------------------


def _kms_case(suffix: str) -> tuple[dict[str, Any], Callable[[Any], None]]:
    properties = {"KeyPolicy": {"Version": "2012-10-17", "Statement": []}, "Tags": [{"Key": "team", "Value": "gpu"}]}

    def check(key: Any) -> None:
        from moto.kms.models import kms_backends  # noqa: PLC0415

        tags = kms_backends[ACCOUNT][REGION].list_resource_tags(key.id)["Tags"]
        assert tags == [{"TagKey": "team", "TagValue": "gpu"}]

    return properties, check


def _archive_case(suffix: str) -> tuple[dict[str, Any], Callable[[Any], None]]:
    properties = {
        "SourceArn": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default",
        "EventPattern": {"source": ["spothub.test"]},
    }

    def check(archive: Any) -> None:
        assert archive.event_pattern.get_pattern() == {"source": ["spothub.test"]}
        assert archive.rule.event_pattern.matches_event({"source": "spothub.test"})
        assert not archive.rule.event_pattern.matches_event({"source": "aws.ec2"})

    return properties, check


def _ssm_case(suffix: str) -> tuple[dict[str, Any], Callable[[Any], None]]:
    name = f"/spothub/test/{suffix}"
    properties = {"Name": name, "Type": "String", "Value": "v", "Tags": {"team": "gpu"}}

    def check(parameter: Any) -> None:
        from moto.ssm.models import ssm_backends  # noqa: PLC0415

        assert parameter.value == "v"
        assert ssm_backends[ACCOUNT][REGION].list_tags_for_resource("Parameter", name) == {"team": "gpu"}

    return properties, check


# resource type -> (properties as CloudFormation gives them, check of what was created), and what
# moto raises for those properties without the adapter.
ADAPTER_CASES: dict[str, tuple[Callable[[str], tuple[dict[str, Any], Callable[[Any], None]]], type, str]] = {
    "AWS::KMS::Key": (_kms_case, KeyError, "TagKey"),
    "AWS::Events::Archive": (_archive_case, TypeError, "the JSON object must be str"),
    "AWS::SSM::Parameter": (_ssm_case, TypeError, "string indices must be integers"),
}


def test_every_property_adapter_is_covered_here() -> None:
    assert set(emulator_patches.PROPERTY_ADAPTERS) == set(ADAPTER_CASES)


@pytest.mark.parametrize("resource_type", sorted(ADAPTER_CASES))
def test_moto_alone_fails_on_the_cloudformation_properties(resource_type: str) -> None:
    module_name, class_name, _adapter = emulator_patches.PROPERTY_ADAPTERS[resource_type]
    model = getattr(importlib.import_module(module_name), class_name)
    assert model.cloudformation_type() == resource_type
    original = closure_value(model.create_from_cloudformation_json, "original")
    case, error, message = ADAPTER_CASES[resource_type]
    properties, _check = case("unpatched")
    with pytest.raises(error, match=message):
        original(model, "Unpatched", {"Type": resource_type, "Properties": properties}, ACCOUNT, REGION)


@pytest.mark.parametrize("resource_type", sorted(ADAPTER_CASES))
def test_adapted_cloudformation_properties_create_the_resource(resource_type: str) -> None:
    module_name, class_name, adapter = emulator_patches.PROPERTY_ADAPTERS[resource_type]
    model = getattr(importlib.import_module(module_name), class_name)
    assert closure_value(model.create_from_cloudformation_json, "adapter") is adapter
    case, _error, _message = ADAPTER_CASES[resource_type]
    properties, check = case("patched")
    created = model.create_from_cloudformation_json(
        "Patched", {"Type": resource_type, "Properties": properties}, ACCOUNT, REGION
    )
    check(created)


def test_adapters_leave_properties_moto_already_reads_alone() -> None:
    kms = emulator_patches.PROPERTY_ADAPTERS["AWS::KMS::Key"][2]
    archive = emulator_patches.PROPERTY_ADAPTERS["AWS::Events::Archive"][2]
    ssm = emulator_patches.PROPERTY_ADAPTERS["AWS::SSM::Parameter"][2]
    assert kms({"KeyPolicy": {}}) == {"KeyPolicy": {}}
    assert archive({"EventPattern": '{"source": ["a"]}'}) == {"EventPattern": '{"source": ["a"]}'}
    assert ssm({"Tags": [{"Key": "a", "Value": "b"}]}) == {"Tags": [{"Key": "a", "Value": "b"}]}


# --- MISSING_ATTRIBUTES: Fn::GetAtt attributes moto's models lack ------------------------------------


def _efs_file_system() -> tuple[Any, dict[str, str]]:
    from moto.efs.models import efs_backends  # noqa: PLC0415

    file_system = efs_backends[ACCOUNT][REGION].create_file_system(
        creation_token=f"spothub-test-{time.monotonic_ns()}",
        performance_mode="generalPurpose",
        encrypted=False,
        kms_key_id=None,  # type: ignore[arg-type]
        throughput_mode="bursting",
        provisioned_throughput_in_mibps=None,  # type: ignore[arg-type]
        availability_zone_name=None,  # type: ignore[arg-type]
        backup=False,
        tags=[],
    )
    return file_system, {"Arn": file_system.file_system_arn, "FileSystemId": file_system.file_system_id}


ATTRIBUTE_CASES: dict[tuple[str, str], Callable[[], tuple[Any, dict[str, str]]]] = {
    ("moto.efs.models", "FileSystem"): _efs_file_system,
}


def test_every_missing_attribute_is_covered_here() -> None:
    assert set(emulator_patches.MISSING_ATTRIBUTES) == set(ATTRIBUTE_CASES)
    for key, attributes in emulator_patches.MISSING_ATTRIBUTES.items():
        _model, expected = ATTRIBUTE_CASES[key]()
        assert set(attributes) == set(expected)


@pytest.mark.parametrize("model_path", sorted(ATTRIBUTE_CASES))
def test_moto_models_still_lack_the_added_attributes(model_path: tuple[str, str]) -> None:
    module_name, class_name = model_path
    source = inspect.getsource(getattr(importlib.import_module(module_name), class_name))
    # moto's own class defines neither: Fn::GetAtt on it fails with AttributeError.
    assert "def get_cfn_attribute" not in source
    assert "def has_cfn_attr" not in source


@pytest.mark.parametrize("model_path", sorted(ATTRIBUTE_CASES))
def test_added_attributes_answer_fn_getatt(model_path: tuple[str, str]) -> None:
    model, expected = ATTRIBUTE_CASES[model_path]()
    for attribute, value in expected.items():
        assert type(model).has_cfn_attr(attribute)
        assert model.get_cfn_attribute(attribute) == value
    assert not type(model).has_cfn_attr("NoSuchAttribute")
    with pytest.raises(UnformattedGetAttTemplateException):
        model.get_cfn_attribute("NoSuchAttribute")


# --- cfn_resources: resource types moto's CloudFormation does not know ------------------------------


def _leaf_types() -> dict[str, type]:
    return {cls.TYPE: cls for cls in cfn_resources._leaf_classes(cfn_resources.EmulatedResource)}


def test_moto_finds_cloudformation_models_among_direct_subclasses_only() -> None:
    original = closure_value(parsing.get_model_list, "moto_models")
    assert "CloudFormationModel.__subclasses__()" in inspect.getsource(original)
    # The sandbox's types are grandchildren of CloudFormationModel: moto alone never sees them.
    direct = CloudFormationModel.__subclasses__()
    assert cfn_resources.EmulatedResource in direct
    assert not any(cls in direct for cls in _leaf_types().values())


def test_moto_supports_none_of_the_sandbox_resource_types_natively() -> None:
    native = {
        model.cloudformation_type()
        for model in CloudFormationModel.__subclasses__()
        if not issubclass(model, cfn_resources.EmulatedResource)
    }
    native.update(parsing.NULL_MODELS)
    assert _leaf_types(), "cfn_resources defines no resource types"
    # Only the types the sandbox replaces on purpose, each with its reason.
    assert sorted(set(_leaf_types()) & native) == sorted(cfn_resources.REPLACES_MOTO)


def test_registered_types_resolve_to_the_sandbox_models() -> None:
    added = cfn_resources.register()
    assert sorted(added) == sorted(_leaf_types())
    assert set(cfn_resources.NOT_EMULATED) <= set(added)
    for resource_type, cls in _leaf_types().items():
        assert parsing.resource_class_from_type(resource_type) is cls
    # Registering again neither duplicates models nor drops moto's own.
    cfn_resources.register()
    models = parsing.get_model_list()
    assert len(models) == len(set(models))
    assert parsing.resource_class_from_type("AWS::SQS::Queue").__module__ == "moto.sqs.models"


def test_not_emulated_types_are_accepted_without_an_effect() -> None:
    for resource_type in cfn_resources.NOT_EMULATED:
        cls = parsing.resource_class_from_type(resource_type)
        created = cls.create_from_cloudformation_json("Logical", {"Properties": {}}, ACCOUNT, REGION)
        assert created.physical_resource_id == "not-emulated-Logical"


def test_an_emulated_alarm_is_created_through_the_cloudwatch_backend() -> None:
    from moto.cloudwatch.models import cloudwatch_backends  # noqa: PLC0415

    cls = parsing.resource_class_from_type("AWS::CloudWatch::Alarm")
    properties = {
        "AlarmName": "spothub-test-alarm",
        "ComparisonOperator": "GreaterThanThreshold",
        "EvaluationPeriods": 1,
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Namespace": "AWS/SQS",
        "Period": 300,
        "Statistic": "Maximum",
        "Threshold": 0,
    }
    alarm = cls.create_from_cloudformation_json("Alarm", {"Properties": properties}, ACCOUNT, REGION)
    assert alarm.physical_resource_id == "spothub-test-alarm"
    stored = cloudwatch_backends[ACCOUNT][REGION].alarms["spothub-test-alarm"]
    assert alarm.get_cfn_attribute("Arn") == stored.alarm_arn
    assert stored.comparison_operator == "GreaterThanThreshold"
    assert cls.has_cfn_attr("Arn")
    assert not cls.has_cfn_attr("Name")


def test_moto_task_definition_model_drops_the_execution_role() -> None:
    source = inspect.getsource(_moto_task_definition_create())
    assert "execution_role_arn" not in source and "ExecutionRoleArn" not in source


def _moto_task_definition_create() -> Any:
    from moto.ecs.models import TaskDefinition  # noqa: PLC0415

    return TaskDefinition.create_from_cloudformation_json


def test_an_emulated_task_definition_keeps_its_roles_and_network_mode() -> None:
    cls = parsing.resource_class_from_type("AWS::ECS::TaskDefinition")
    properties = {
        "Family": "spothub-test-serving",
        "NetworkMode": "host",
        "RequiresCompatibilities": ["EC2"],
        "ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/execution",
        "TaskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/task",
        "ContainerDefinitions": [
            {
                "Name": "server",
                "Image": "vllm/vllm-openai:v0.8.5",
                "MemoryReservation": 12288,
                "Environment": [{"Name": "HF_HOME", "Value": "/cache"}],
                "Secrets": [{"Name": "SPOTHUB_API_KEY", "ValueFrom": "arn:aws:secretsmanager:eu-west-1:1:secret:k"}],
            }
        ],
    }
    created = cls.create_from_cloudformation_json("TaskDefinition", {"Properties": properties}, ACCOUNT, REGION)
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    stored = ecs_backends[ACCOUNT][REGION].describe_task_definition("spothub-test-serving")
    assert created.physical_resource_id == stored.arn == created.get_cfn_attribute("TaskDefinitionArn")
    assert stored.execution_role_arn == properties["ExecutionRoleArn"]
    assert stored.task_role_arn == properties["TaskRoleArn"]
    assert stored.network_mode == "host"
    container = stored.container_definitions[0]
    assert container["secrets"] == [
        {"name": "SPOTHUB_API_KEY", "valueFrom": "arn:aws:secretsmanager:eu-west-1:1:secret:k"}
    ]
    assert container["environment"] == [{"name": "HF_HOME", "value": "/cache"}]


def test_an_emulated_secret_is_generated_and_replicated_with_the_same_value() -> None:
    from moto.secretsmanager.models import secretsmanager_backends  # noqa: PLC0415

    cls = parsing.resource_class_from_type("AWS::SecretsManager::Secret")
    properties = {
        "Name": "spothub/test/model-api-key",
        "GenerateSecretString": {"ExcludePunctuation": True, "PasswordLength": 40},
        "ReplicaRegions": [{"Region": "us-west-2"}],
    }
    created = cls.create_from_cloudformation_json("Secret", {"Properties": properties}, ACCOUNT, REGION)
    assert created.physical_resource_id == created.get_cfn_attribute("Id")
    assert created.physical_resource_id.startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:spothub/test/")
    primary = secretsmanager_backends[ACCOUNT][REGION].get_secret_value("spothub/test/model-api-key", None, None)
    replica = secretsmanager_backends[ACCOUNT]["us-west-2"].get_secret_value("spothub/test/model-api-key", None, None)
    assert primary["SecretString"] == replica["SecretString"]
    assert len(primary["SecretString"]) == 40
    assert primary["SecretString"].isalnum()


def test_moto_finds_a_replica_secret_by_name_only_and_the_patch_by_partial_arn() -> None:
    from moto.secretsmanager.models import SecretsStore, secretsmanager_backends  # noqa: PLC0415

    backend = secretsmanager_backends[ACCOUNT][REGION]
    backend.create_secret(
        "spothub/test/replicated", "value", None, None, None, None, None, [{"Region": "us-east-2"}], False
    )
    replicas = secretsmanager_backends[ACCOUNT]["us-east-2"].secrets
    partial = f"arn:aws:secretsmanager:us-east-2:{ACCOUNT}:secret:spothub/test/replicated"
    # moto keeps a replica under its full ARN, so its own lookup of the partial ARN's name misses it.
    assert not emulator_patches._original_store_contains(replicas, partial)
    assert isinstance(replicas, SecretsStore)
    assert partial in replicas
    assert replicas[partial].name == "spothub/test/replicated"
    assert f"arn:aws:secretsmanager:us-east-2:{ACCOUNT}:secret:spothub/test/other" not in replicas


# --- Fn::GetAZs: the stack's own region -----------------------------------------------------------------


def _resources_map(region: str) -> Any:
    return parsing.ResourceMap(
        stack_id=f"arn:aws:cloudformation:{region}:{ACCOUNT}:stack/test/1",
        stack_name="test",
        parameters={},
        tags={},
        region_name=region,
        account_id=ACCOUNT,
        template={"Resources": {}},
        cross_stack_resources={},
    )


def test_moto_answers_fn_getazs_of_the_own_region_with_us_east_1() -> None:
    original = emulator_patches._original_clean_json
    assert 'resource_json.get("Fn::GetAZs") or DEFAULT_REGION' in inspect.getsource(original)
    assert parsing.DEFAULT_REGION == "us-east-1"
    assert original({"Fn::GetAZs": ""}, _resources_map(REGION))[0] == "us-east-1a"


@pytest.mark.parametrize("own_region", ["", {"Ref": "AWS::Region"}])
def test_fn_getazs_of_the_own_region_gives_the_stack_region_zones(own_region: Any) -> None:
    zones = parsing.clean_json({"Fn::GetAZs": own_region}, _resources_map(REGION))
    assert zones == ["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d"]


def test_fn_getazs_inside_other_functions_and_of_a_named_region() -> None:
    resources = _resources_map(REGION)
    # moto's clean_json recurses through the module global, so nested GetAZs is fixed too.
    assert parsing.clean_json({"Fn::Select": [1, {"Fn::GetAZs": ""}]}, resources) == "eu-west-1b"
    assert parsing.clean_json({"Fn::GetAZs": "ap-south-1"}, resources)[0] == "ap-south-1a"


# --- Lambda: the real handler in-process instead of a Docker container ----------------------------------

HANDLERS = """
class SpotCapacityError(Exception):
    pass

def echo(event, context):
    return {"echo": event, "function": context.function_name}

def fail(event, context):
    raise SpotCapacityError("no spot capacity")
"""


def test_moto_invokes_lambda_in_docker_and_reports_errors_as_handled() -> None:
    from moto.awslambda.models import LambdaFunction  # noqa: PLC0415

    source = inspect.getsource(LambdaFunction)
    assert "self._invoke_lambda(event=body)" in source
    assert 'response_headers["x-amz-function-error"] = "Handled"' in source
    assert "docker" in inspect.getsource(LambdaFunction._invoke_lambda)
    assert LambdaFunction.invoke is emulator_patches._lambda_function_invoke


@pytest.fixture
def lambda_hooks(tmp_path: Path) -> Iterator[emulator_patches.Hooks]:
    """The patched emulator with a Lambda runtime of this test's own; the previous one back after."""
    previous = emulator_patches._hooks
    hooks = emulator_patches.Hooks(lambda_runtime=LambdaRuntime(tmp_path, {}))
    emulator_patches.attach(hooks)
    try:
        yield hooks
    finally:
        emulator_patches.attach(previous)
        hooks.executor.shutdown(wait=True)


def _function(name: str) -> Any:
    from moto.awslambda.models import LambdaFunction  # noqa: PLC0415
    from moto.iam.models import iam_backends  # noqa: PLC0415

    iam = iam_backends[ACCOUNT]["global"]
    role_name = "spothub-test-lambda"
    if role_name not in {role.name for role in iam.roles.values()}:
        iam.create_role(role_name, "{}", "/", None, "", [], None)
    role = next(role for role in iam.roles.values() if role.name == role_name)
    return LambdaFunction.create_from_cloudformation_json(
        name,
        {
            "Properties": {
                "Code": {"ZipFile": "unused"},
                "Handler": "probe.echo",
                "Role": role.arn,
                "Runtime": "python3.12",
                "DeadLetterConfig": {"TargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:spothub-test-dlq"},
            }
        },
        ACCOUNT,
        REGION,
    )


def _with_code(function: Any, handler: str) -> Any:
    function.code_bytes = zipped_module("probe", HANDLERS)
    function.handler = handler
    return function


def test_in_process_invoke_returns_the_handler_result(lambda_hooks: emulator_patches.Hooks) -> None:
    function = _with_code(_function(f"spothub-test-echo-{time.monotonic_ns()}"), "probe.echo")
    headers: dict[str, str] = {}
    payload = function.invoke(json.dumps({"job": 7}), {}, headers)
    assert json.loads(payload) == {"echo": {"job": 7}, "function": function.function_name}
    assert "x-amz-function-error" not in headers


def test_in_process_invoke_reports_an_exception_as_an_unhandled_function_error(
    lambda_hooks: emulator_patches.Hooks,
) -> None:
    function = _with_code(_function(f"spothub-test-fail-{time.monotonic_ns()}"), "probe.fail")
    headers: dict[str, str] = {}
    payload = json.loads(function.invoke("{}", {}, headers))
    assert headers["x-amz-function-error"] == "Unhandled"
    assert payload["errorType"] == "SpotCapacityError"
    assert payload["errorMessage"] == "no spot capacity"


def test_dry_run_and_event_invocations(lambda_hooks: emulator_patches.Hooks) -> None:
    function = _with_code(_function(f"spothub-test-async-{time.monotonic_ns()}"), "probe.echo")
    invocations = lambda_hooks.lambda_runtime.invocations
    assert function.invoke("{}", {"x-amz-invocation-type": "DryRun"}, {}) == b""
    assert invocations == []
    assert function.invoke("{}", {"x-amz-invocation-type": "Event"}, {}) == b""
    lambda_hooks.executor.shutdown(wait=True)
    assert [i.function_name for i in invocations] == [function.function_name]


def test_moto_drops_dead_letter_config_and_the_patch_keeps_it() -> None:
    from moto.awslambda.models import LambdaFunction  # noqa: PLC0415

    original = closure_value(LambdaFunction.create_from_cloudformation_json, "original")
    assert "DeadLetterConfig" not in inspect.getsource(original)
    function = _function(f"spothub-test-dlq-{time.monotonic_ns()}")
    assert function.spothub_dead_letter_arn == f"arn:aws:sqs:{REGION}:{ACCOUNT}:spothub-test-dlq"


# --- EventBridge: Lambda and Step Functions targets, Input, cross-bus forwarding ----------------------


def _rule(name: str, targets: list[dict[str, Any]]) -> Any:
    from moto.events.models import events_backends  # noqa: PLC0415

    backend = events_backends[ACCOUNT][REGION]
    rule = backend.put_rule(name, event_pattern=json.dumps({"source": ["spothub.test"]}))
    backend.put_targets(name, None, targets)
    return rule


def _event(**detail: Any) -> dict[str, Any]:
    """An event as moto's PutEvents hands it to a rule."""
    return {
        "version": "0",
        "id": "e-1",
        "detail-type": "Probe",
        "source": "spothub.test",
        "account": ACCOUNT,
        "time": time.time(),
        "region": REGION,
        "resources": [],
        "detail": detail,
        "ingestion-time": time.time(),
    }


def _queue(name: str) -> tuple[Any, str]:
    from moto.sqs.models import sqs_backends  # noqa: PLC0415

    backend = sqs_backends[ACCOUNT][REGION]
    queue = backend.create_queue(name)
    return backend, queue.queue_arn


def _bodies(backend: Any, name: str) -> list[Any]:
    messages = backend.receive_message(name, 10, 0, 0)
    return [json.loads(m.body) for m in messages]


def _state_machine(name: str) -> tuple[Any, str]:
    from moto.stepfunctions.responses import get_backend  # noqa: PLC0415

    backend = get_backend(ACCOUNT, REGION)
    definition = json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    machine = backend.create_state_machine(name, definition, f"arn:aws:iam::{ACCOUNT}:role/sfn")
    return backend, machine.arn


def _execution_inputs(backend: Any, arn: str) -> list[Any]:
    return [json.loads(e.execution_input) for e in backend.describe_state_machine(arn).executions]


def test_moto_rules_raise_for_lambda_and_step_functions_targets() -> None:
    original = emulator_patches._original_send_to_targets
    source = inspect.getsource(original)
    assert 'raise NotImplementedError(f"Expr not defined for {type(self)}")' in source
    assert '"lambda"' not in source
    assert '"states"' not in source
    for arn in (
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:anything",
        f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:anything",
    ):
        rule = _rule(f"unpatched-{arn.split(':')[2]}", [{"Id": "t", "Arn": arn}])
        with pytest.raises(NotImplementedError):
            original(rule, _event())


def test_a_rule_starts_a_state_machine_with_the_event_or_its_input() -> None:
    backend, whole_machine = _state_machine("spothub-test-whole")
    _backend, constant_machine = _state_machine("spothub-test-constant")
    rule = _rule(
        "to-state-machines",
        [
            {"Id": "whole", "Arn": whole_machine},
            {"Id": "constant", "Arn": constant_machine, "Input": '{"kind": "constant"}'},
        ],
    )
    rule.send_to_targets(_event(job="j-1"))
    assert _execution_inputs(backend, constant_machine) == [{"kind": "constant"}]
    (whole,) = _execution_inputs(backend, whole_machine)
    assert whole["detail"] == {"job": "j-1"}
    assert whole["source"] == "spothub.test"
    assert "ingestion-time" not in whole
    assert isinstance(whole["time"], str)
    assert whole["time"].endswith("Z")


def test_every_event_a_rule_delivers_starts_its_own_execution() -> None:
    backend, machine = _state_machine("spothub-test-twice")
    rule = _rule("twice", [{"Id": "m", "Arn": machine}])
    rule.send_to_targets(_event(job="first"))
    rule.send_to_targets(_event(job="second"))
    executions = backend.describe_state_machine(machine).executions
    assert sorted(json.loads(e.execution_input)["detail"]["job"] for e in executions) == ["first", "second"]
    assert len({e.exec_arn for e in executions}) == 2


def test_a_rule_skips_events_its_pattern_does_not_match() -> None:
    backend, machine = _state_machine("spothub-test-unmatched")
    rule = _rule("unmatched", [{"Id": "t", "Arn": machine}])
    rule.send_to_targets({**_event(), "source": "aws.ec2"})
    assert _execution_inputs(backend, machine) == []


def test_target_input_forms() -> None:
    event = {**_event(job="j-2"), "time": "2024-05-01T12:00:00Z"}
    assert emulator_patches.target_input({"Input": '{"a": 1}'}, event) == {"a": 1}
    assert emulator_patches.target_input({"InputPath": "$.detail"}, event) == {"job": "j-2"}
    assert emulator_patches.target_input({"InputPath": "$.nothing"}, event) is None
    transformer = {"InputPathsMap": {"job": "$.detail.job"}, "InputTemplate": '{"job": "<job>"}'}
    assert emulator_patches.target_input({"InputTransformer": transformer}, event) == {"job": "j-2"}
    assert emulator_patches.target_input({}, event) is event


def test_an_input_transformer_on_a_state_machine_target_is_applied() -> None:
    backend, machine = _state_machine("spothub-test-transformed")
    transformer = {"InputPathsMap": {"job": "$.detail.job"}, "InputTemplate": '{"job": "<job>"}'}
    rule = _rule("transformed", [{"Id": "t", "Arn": machine, "InputTransformer": transformer}])
    rule.send_to_targets(_event(job="j-3"))
    assert _execution_inputs(backend, machine) == [{"job": "j-3"}]


def test_each_sqs_target_of_a_rule_receives_an_event_once() -> None:
    sqs, first = _queue("spothub-test-first")
    _sqs, second = _queue("spothub-test-second")
    rule = _rule("two-queues", [{"Id": "a", "Arn": first}, {"Id": "b", "Arn": second}])
    rule.send_to_targets(_event(job="j-4"))
    assert [m["detail"] for m in _bodies(sqs, "spothub-test-first")] == [{"job": "j-4"}]
    assert [m["detail"] for m in _bodies(sqs, "spothub-test-second")] == [{"job": "j-4"}]


def test_an_sqs_target_after_a_state_machine_target_receives_the_event() -> None:
    _backend, machine = _state_machine("spothub-test-mixed")
    sqs, queue = _queue("spothub-test-mixed")
    rule = _rule("mixed", [{"Id": "machine", "Arn": machine}, {"Id": "queue", "Arn": queue}])
    rule.send_to_targets(_event(job="j-5"))
    assert [m["detail"] for m in _bodies(sqs, "spothub-test-mixed")] == [{"job": "j-5"}]


def test_an_sqs_target_with_input_receives_the_constant() -> None:
    sqs, queue = _queue("spothub-test-constant")
    rule = _rule("constant", [{"Id": "q", "Arn": queue, "Input": '{"kind": "constant"}'}])
    rule.send_to_targets(_event(job="j-6"))
    assert _bodies(sqs, "spothub-test-constant") == [{"kind": "constant"}]


def test_moto_forwards_to_another_bus_without_resources_or_time() -> None:
    # What _deliver_to_bus replaces: moto's cross-bus forwarding drops Resources and Time.
    source = inspect.getsource(emulator_patches._original_send_to_targets)
    forwarded = source[source.index("new_event = {") : source.index("cross_account_backend.put_events")]
    assert '"Resources"' not in forwarded
    assert '"Time"' not in forwarded


def test_forwarding_to_another_bus_keeps_the_event_as_it_was_put() -> None:
    from moto.events.models import events_backends  # noqa: PLC0415

    target_region = "us-west-2"
    target = events_backends[ACCOUNT][target_region]
    bus = target.create_event_bus("spothub-test-forwarded")
    target.put_rule("on-target-bus", event_pattern=json.dumps({"source": ["spothub.test"]}), event_bus_arn=bus.name)
    backend, machine = _state_machine("spothub-test-forwarded")
    target.put_targets("on-target-bus", bus.name, [{"Id": "m", "Arn": machine}])
    rule = _rule("forward", [{"Id": "bus", "Arn": bus.arn}])
    sent = {**_event(job="j-7"), "resources": ["arn:aws:ec2:eu-west-1:210987654321:instance/i-1"]}
    sent["time"] = 1714564800.0  # 2024-05-01T12:00:00Z
    rule.send_to_targets(sent)
    (received,) = _execution_inputs(backend, machine)
    assert received["detail"] == {"job": "j-7"}
    assert received["resources"] == sent["resources"]
    assert received["time"] == "2024-05-01T12:00:00Z"
    # As on AWS, a forwarded event keeps the region and id it was put with.
    assert received["region"] == sent["region"] != target_region
    assert received["id"] == sent["id"]


# --- EC2 and Auto Scaling: the hooks the market and fleet rely on ---------------------------------------


def test_moto_has_no_spot_placement_scores_and_a_fixed_spot_price() -> None:
    from moto.ec2.responses import EC2Response  # noqa: PLC0415

    defining = [cls for cls in EC2Response.__mro__ if "get_spot_placement_scores" in vars(cls)]
    assert defining == [EC2Response]
    assert EC2Response.get_spot_placement_scores is emulator_patches._get_spot_placement_scores
    original = emulator_patches._original_describe_spot_price_history
    assert original.__module__.startswith("moto.ec2.responses")
    assert '"SpotPrice": "0.00001"' in inspect.getsource(original)


def test_the_fleet_hooks_wrap_moto_functions_of_the_expected_shape() -> None:
    from moto.autoscaling.models import FakeAutoScalingGroup  # noqa: PLC0415
    from moto.core.config import default_user_config  # noqa: PLC0415
    from moto.ec2.models.instances import InstanceBackend  # noqa: PLC0415

    assert FakeAutoScalingGroup.replace_autoscaling_group_instances is emulator_patches._group_replace_instances
    replace = inspect.signature(emulator_patches._original_replace_instances)
    assert list(replace.parameters) == ["self", "count_needed", "propagated_tags"]
    assert InstanceBackend.terminate_instances is emulator_patches._terminate_instances
    terminate = inspect.signature(emulator_patches._original_terminate_instances)
    assert list(terminate.parameters) == ["self", "instance_ids"]
    assert default_user_config["stepfunctions"]["execute_state_machine"] is True


def test_an_execution_stopped_as_it_starts_is_aborted(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.stepfunctions.parser.backend import execution_worker  # noqa: PLC0415

    source = inspect.getsource(execution_worker.ExecutionWorker._execution_logic)
    assert "self.env = self._get_evaluation_environment()" in source, "moto makes the environment in the thread"
    set_stop = inspect.getsource(importlib.import_module("moto.stepfunctions.parser.asl.eval.environment").Environment)
    assert "if isinstance(self._program_state, ProgramRunning):" in set_stop, "a stop before the program runs is lost"
    started = execution_worker.ExecutionWorker._execution_logic

    def slow_start(worker: Any) -> None:
        time.sleep(0.3)  # the execution's thread is not yet scheduled when StopExecution comes
        started(worker)

    monkeypatch.setattr(execution_worker.ExecutionWorker, "_execution_logic", slow_start)
    from moto.stepfunctions.responses import get_backend  # noqa: PLC0415

    backend = get_backend(ACCOUNT, REGION)
    definition = json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": True}}})
    arn = backend.create_state_machine(
        "spothub-test-stopped-at-start", definition, f"arn:aws:iam::{ACCOUNT}:role/sfn"
    ).arn
    execution = backend.start_execution(arn, "at-start", "{}")
    backend.stop_execution(execution.execution_arn)  # moto alone: AttributeError on the missing environment
    deadline = time.monotonic() + 5
    while backend.describe_execution(execution.execution_arn).status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.describe_execution(execution.execution_arn).status == "ABORTED"
