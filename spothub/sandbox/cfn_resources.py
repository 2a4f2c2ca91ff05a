"""CloudFormation resource types the emulator's CloudFormation does not support, created through
the emulator's own service APIs from the template's properties.

moto finds CloudFormation models by subclass of `CloudFormationModel`; defining these classes
(and clearing moto's cached model map) makes its CloudFormation create, reference and delete
them like its own. Types that have no effect to emulate are listed in `NOT_EMULATED` with the
reason, and the deployer reports them; nothing is skipped silently.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from moto.core.common_models import CloudFormationModel

# Resource types accepted without an effect, and why.
NOT_EMULATED: dict[str, str] = {
    "AWS::CDK::Metadata": "CDK's version-reporting record; not an AWS resource",
    "AWS::ApiGateway::Account": "account-wide setting of API Gateway's CloudWatch role; the sandbox API logs locally",
}

# Types moto does support, but not as the sandbox needs, so the sandbox's model replaces moto's; and why.
REPLACES_MOTO: dict[str, str] = {
    "AWS::StepFunctions::StateMachine": "moto ignores DefinitionSubstitutions and creates the machine where "
    "executions are only recorded, not run",
    "AWS::ECS::TaskDefinition": "moto's model registers the family, containers, volumes and memory only, "
    "dropping ExecutionRoleArn, TaskRoleArn, NetworkMode, Cpu, RequiresCompatibilities, PlacementConstraints and "
    "Tags; the sandbox's serving container reads its secrets as the execution role",
}

# Every resource the sandbox created, as (type, physical id), for the deployer's report.
CREATED: list[tuple[str, str]] = []


def _camel(value: Any) -> Any:
    """PascalCase CloudFormation properties -> camelCase API parameters, recursively."""
    if isinstance(value, dict):
        return {key[:1].lower() + key[1:]: _camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel(item) for item in value]
    return value


class EmulatedResource(CloudFormationModel):
    """Base of the sandbox's resource types: create through a service API, remember the result."""

    TYPE: ClassVar[str] = ""
    ATTRIBUTES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, physical_id: str, attributes: dict[str, str] | None = None) -> None:
        self._physical_id = physical_id
        self._attributes = attributes or {}

    @property
    def physical_resource_id(self) -> str:
        return self._physical_id

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @classmethod
    def cloudformation_type(cls) -> str:  # type: ignore[override]
        return cls.TYPE

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr in cls.ATTRIBUTES

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self._attributes[attribute_name]

    @classmethod
    def create(
        cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str
    ) -> tuple[str, dict[str, str]]:
        raise NotImplementedError

    @classmethod
    def create_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str, **_: Any
    ) -> EmulatedResource:
        physical_id, attributes = cls.create(
            resource_name, cloudformation_json.get("Properties", {}), account_id, region_name
        )
        CREATED.append((cls.TYPE, physical_id))
        return cls(physical_id, attributes)

    @classmethod
    def update_from_cloudformation_json(  # type: ignore[override]
        cls,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
    ) -> EmulatedResource:
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(  # type: ignore[override]
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
    ) -> None:
        return None

    def is_created(self) -> bool:
        return True


class NotEmulated(EmulatedResource):
    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        return f"not-emulated-{logical_id}", {}


class CdkMetadata(NotEmulated):
    TYPE = "AWS::CDK::Metadata"


class ApiGatewayAccount(NotEmulated):
    TYPE = "AWS::ApiGateway::Account"


class ApiGatewayStage(EmulatedResource):
    TYPE = "AWS::ApiGateway::Stage"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.apigateway.models import apigateway_backends  # noqa: PLC0415

        stage = apigateway_backends[account_id][region].create_stage(
            properties["RestApiId"],
            properties["StageName"],
            deploymentId=properties["DeploymentId"],
            variables=properties.get("Variables"),
            description=properties.get("Description", ""),
            tracing_enabled=properties.get("TracingEnabled"),
        )
        return stage.name, {}


class ApiGatewayRequestValidator(EmulatedResource):
    TYPE = "AWS::ApiGateway::RequestValidator"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.apigateway.models import apigateway_backends  # noqa: PLC0415

        validator = apigateway_backends[account_id][region].create_request_validator(
            properties["RestApiId"],
            properties.get("Name", logical_id),
            properties.get("ValidateRequestBody", False),
            properties.get("ValidateRequestParameters", False),
        )
        return validator.id, {}


class ApiGatewayModel(EmulatedResource):
    """A request model. The sandbox API does not check bodies against it: the handler's pydantic model,
    from which the schema is generated, answers the same 400s one step later."""

    TYPE = "AWS::ApiGateway::Model"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.apigateway.models import apigateway_backends  # noqa: PLC0415

        schema = properties.get("Schema")
        model = apigateway_backends[account_id][region].create_model(
            properties["RestApiId"],
            properties.get("Name", logical_id),
            properties.get("ContentType", "application/json"),
            properties.get("Description", ""),
            json.dumps(schema) if isinstance(schema, dict) else schema,
        )
        return model.name, {}


class ApiGatewayGatewayResponse(EmulatedResource):
    TYPE = "AWS::ApiGateway::GatewayResponse"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.apigateway.models import apigateway_backends  # noqa: PLC0415

        apigateway_backends[account_id][region].put_gateway_response(
            rest_api_id=properties["RestApiId"],
            response_type=properties["ResponseType"],
            status_code=properties.get("StatusCode"),
            response_parameters=properties.get("ResponseParameters", {}),
            response_templates=properties.get("ResponseTemplates", {}),
        )
        return f"{properties['RestApiId']}:{properties['ResponseType']}", {}


class CloudWatchAlarm(EmulatedResource):
    TYPE = "AWS::CloudWatch::Alarm"
    ATTRIBUTES = ("Arn",)

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.cloudwatch.models import cloudwatch_backends  # noqa: PLC0415

        name = properties.get("AlarmName") or logical_id
        alarm = cloudwatch_backends[account_id][region].put_metric_alarm(
            name=name,
            namespace=properties.get("Namespace", ""),
            metric_name=properties.get("MetricName", ""),
            comparison_operator=properties["ComparisonOperator"],
            evaluation_periods=int(properties["EvaluationPeriods"]),
            period=int(properties.get("Period", 60)),
            threshold=float(properties.get("Threshold", 0)),
            statistic=properties.get("Statistic", ""),
            description=properties.get("AlarmDescription", ""),
            dimensions=[{"Name": d["Name"], "Value": d["Value"]} for d in properties.get("Dimensions", [])],
            alarm_actions=properties.get("AlarmActions", []),
            ok_actions=properties.get("OKActions", []),
            insufficient_data_actions=properties.get("InsufficientDataActions", []),
            treat_missing_data=properties.get("TreatMissingData"),
            datapoints_to_alarm=properties.get("DatapointsToAlarm"),
        )
        return name, {"Arn": alarm.alarm_arn}


class LambdaEventInvokeConfig(EmulatedResource):
    TYPE = "AWS::Lambda::EventInvokeConfig"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.awslambda.models import lambda_backends  # noqa: PLC0415

        config = {
            key: properties[key]
            for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")
            if key in properties
        }
        lambda_backends[account_id][region].put_function_event_invoke_config(properties["FunctionName"], config)
        return f"{properties['FunctionName']}:{properties.get('Qualifier', '$LATEST')}", {}


class SnsTopicPolicy(EmulatedResource):
    TYPE = "AWS::SNS::TopicPolicy"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.sns.models import sns_backends  # noqa: PLC0415

        for topic_arn in properties["Topics"]:
            sns_backends[account_id][region].set_topic_attribute(
                topic_arn, "Policy", json.dumps(properties["PolicyDocument"])
            )
        return f"{logical_id}-policy", {}


class SqsQueuePolicy(EmulatedResource):
    TYPE = "AWS::SQS::QueuePolicy"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.sqs.models import sqs_backends  # noqa: PLC0415

        for queue_url in properties["Queues"]:
            sqs_backends[account_id][region].set_queue_attributes(
                queue_url.rstrip("/").rsplit("/", 1)[-1], {"Policy": json.dumps(properties["PolicyDocument"])}
            )
        return f"{logical_id}-policy", {}


class AutoScalingLifecycleHook(EmulatedResource):
    TYPE = "AWS::AutoScaling::LifecycleHook"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        name = properties.get("LifecycleHookName") or logical_id
        autoscaling_backends[account_id][region].create_lifecycle_hook(
            name=name,
            as_name=properties["AutoScalingGroupName"],
            transition=properties["LifecycleTransition"],
            timeout=int(properties.get("HeartbeatTimeout", 3600)),
            result=properties.get("DefaultResult", "ABANDON"),
        )
        return name, {}


class EcsCapacityProvider(EmulatedResource):
    TYPE = "AWS::ECS::CapacityProvider"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        name = properties.get("Name") or logical_id
        ecs_backends[account_id][region].create_capacity_provider(
            name, _camel(properties["AutoScalingGroupProvider"]), _camel(properties.get("Tags"))
        )
        return name, {}


class EcsClusterCapacityProviderAssociations(EmulatedResource):
    TYPE = "AWS::ECS::ClusterCapacityProviderAssociations"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        ecs_backends[account_id][region].put_cluster_capacity_providers(
            properties["Cluster"],
            properties.get("CapacityProviders", []),
            _camel(properties.get("DefaultCapacityProviderStrategy", [])),
        )
        return properties["Cluster"], {}


class StepFunctionsStateMachine(EmulatedResource):
    """moto's own CloudFormation model ignores DefinitionSubstitutions and creates the machine in the
    backend that only records executions; this one substitutes, and creates it where the emulator's
    Step Functions API (with its interpreter) finds it."""

    TYPE = "AWS::StepFunctions::StateMachine"
    ATTRIBUTES = ("Arn", "Name")

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.stepfunctions.responses import get_backend  # noqa: PLC0415

        definition = properties.get("DefinitionString") or json.dumps(properties.get("Definition", {}))
        for key, value in (properties.get("DefinitionSubstitutions") or {}).items():
            definition = definition.replace("${" + key + "}", str(value))
        name = properties.get("StateMachineName", logical_id)
        machine = get_backend(account_id, region).create_state_machine(
            name, definition, properties["RoleArn"], sm_type=properties.get("StateMachineType", "STANDARD")
        )
        return machine.arn, {"Arn": machine.arn, "Name": name}


class EcsTaskDefinition(EmulatedResource):
    """A task definition registered with every property the ECS API takes (see REPLACES_MOTO)."""

    TYPE = "AWS::ECS::TaskDefinition"
    ATTRIBUTES = ("TaskDefinitionArn",)

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.core.utils import pascal_to_camelcase, remap_nested_keys  # noqa: PLC0415
        from moto.ecs.models import ecs_backends  # noqa: PLC0415

        def nested(key: str) -> Any:
            return remap_nested_keys(properties.get(key) or [], pascal_to_camelcase)

        definition = ecs_backends[account_id][region].register_task_definition(
            family=properties.get("Family") or logical_id,
            container_definitions=nested("ContainerDefinitions"),
            volumes=nested("Volumes"),
            network_mode=properties.get("NetworkMode"),
            tags=[{"key": t["Key"], "value": t["Value"]} for t in properties.get("Tags") or []],
            placement_constraints=nested("PlacementConstraints"),
            # Only FARGATE changes moto's model (EC2 is its default), and with EC2 named moto wants a `memory`
            # where ECS takes a container's memoryReservation alone.
            requires_compatibilities=[c for c in properties.get("RequiresCompatibilities") or [] if c != "EC2"] or None,
            cpu=properties.get("Cpu"),
            memory=properties.get("Memory"),
            task_role_arn=properties.get("TaskRoleArn"),
            execution_role_arn=properties.get("ExecutionRoleArn"),
        )
        return definition.arn, {"TaskDefinitionArn": definition.arn}


class SecretsManagerSecret(EmulatedResource):
    """A secret, its value given (SecretString) or generated (GenerateSecretString, as GetRandomPassword does),
    replicated to ReplicaRegions under the same name with the same value. Ref and Id: its ARN."""

    TYPE = "AWS::SecretsManager::Secret"
    ATTRIBUTES = ("Id",)

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.secretsmanager.models import secretsmanager_backends  # noqa: PLC0415

        backend = secretsmanager_backends[account_id][region]
        value = properties.get("SecretString")
        generate = properties.get("GenerateSecretString")
        if generate is not None:
            value = cls._generate(backend, generate)
        answer = backend.create_secret(
            name=properties.get("Name") or f"{logical_id}-{_suffix()}",
            secret_string=value,
            secret_binary=None,
            description=properties.get("Description"),
            tags=properties.get("Tags"),
            kms_key_id=properties.get("KmsKeyId"),
            client_request_token=None,
            replica_regions=[
                {"Region": r["Region"], **({"KmsKeyId": r["KmsKeyId"]} if r.get("KmsKeyId") else {})}
                for r in properties.get("ReplicaRegions") or []
            ],
            force_overwrite=False,
        )
        arn = json.loads(answer)["ARN"] if isinstance(answer, str) else answer["ARN"]
        return arn, {"Id": arn}

    @staticmethod
    def _generate(backend: Any, generate: dict[str, Any]) -> str:
        def flag(key: str) -> bool:
            return str(generate.get(key, False)).lower() == "true"

        password = json.loads(
            backend.get_random_password(
                password_length=int(generate.get("PasswordLength", 32)),
                exclude_characters=generate.get("ExcludeCharacters", ""),
                exclude_numbers=flag("ExcludeNumbers"),
                exclude_punctuation=flag("ExcludePunctuation"),
                exclude_uppercase=flag("ExcludeUppercase"),
                exclude_lowercase=flag("ExcludeLowercase"),
                include_space=flag("IncludeSpace"),
                require_each_included_type=str(generate.get("RequireEachIncludedType", True)).lower() == "true",
            )
        )["RandomPassword"]
        template, key = generate.get("SecretStringTemplate"), generate.get("GenerateStringKey")
        if template and key:
            return json.dumps({**json.loads(template), key: password})
        return str(password)


def egress_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation egress rule (inline or AWS::EC2::SecurityGroupEgress) as moto's
    authorize_security_group_egress takes it."""
    described = {"Description": rule["Description"]} if rule.get("Description") else {}
    ip_ranges = [{"CidrIp": rule["CidrIp"], **described}] if rule.get("CidrIp") else []
    ip_ranges += [{"CidrIpv6": rule["CidrIpv6"], **described}] if rule.get("CidrIpv6") else []
    destination = rule.get("DestinationSecurityGroupId")
    prefix_list = rule.get("DestinationPrefixListId")
    return {
        "ip_protocol": str(rule["IpProtocol"]),
        "from_port": rule.get("FromPort"),
        "to_port": rule.get("ToPort"),
        "ip_ranges": ip_ranges,
        "source_groups": [{"GroupId": destination}] if destination else [],
        "prefix_list_ids": [{"PrefixListId": prefix_list, **described}] if prefix_list else [],
    }


class Ec2SecurityGroupEgress(EmulatedResource):
    """An outbound rule of its own (CDK writes one for a group with allowAllOutbound false that may reach another
    group): authorized on the group, as EC2's AuthorizeSecurityGroupEgress does."""

    TYPE = "AWS::EC2::SecurityGroupEgress"

    @classmethod
    def create(cls, logical_id: str, properties: dict[str, Any], account_id: str, region: str) -> tuple[str, dict]:
        from moto.ec2.models import ec2_backends  # noqa: PLC0415

        rules, _ = ec2_backends[account_id][region].authorize_security_group_egress(
            group_name_or_id=properties["GroupId"], **egress_rule(properties)
        )
        return (rules[0].id if rules else f"{properties['GroupId']}-{logical_id}"), {}


def _suffix() -> str:
    import secrets  # noqa: PLC0415

    return secrets.token_hex(6)


def register() -> list[str]:
    """Make moto's CloudFormation see the classes above; returns the types added."""
    from moto.cloudformation import parsing  # noqa: PLC0415

    leaves = _leaf_classes(EmulatedResource)
    # moto lists models as CloudFormationModel.__subclasses__(), direct subclasses only.
    if not getattr(parsing.get_model_list, "spothub_sandbox", False):
        moto_models = parsing.get_model_list

        def get_model_list() -> list[type[CloudFormationModel]]:
            return [*moto_models(), *leaves]

        get_model_list.spothub_sandbox = True  # type: ignore[attr-defined]
        parsing.get_model_list = get_model_list  # type: ignore[assignment]
    for cache in (parsing.get_model_map, parsing.get_name_type_map):
        cache.cache_clear()
    model_map = parsing.get_model_map()
    added = [cls.TYPE for cls in leaves]
    missing = [t for t in added if model_map.get(t) is None or not issubclass(model_map[t], EmulatedResource)]
    if missing:
        raise RuntimeError(f"moto's CloudFormation did not take the sandbox's models for {missing}")
    return added


def _leaf_classes(base: type) -> list[type[EmulatedResource]]:
    leaves = []
    for sub in base.__subclasses__():
        if getattr(sub, "TYPE", ""):
            leaves.append(sub)
        leaves.extend(_leaf_classes(sub))
    return leaves
