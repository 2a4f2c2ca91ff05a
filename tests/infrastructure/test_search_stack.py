"""Template assertions for the search instance: the hub's search table, routes, functions, grants, launcher and
schedule (stacks/constructs/search_service.py), and the search region's router, security groups, instance role,
launch template, secret, parameters and forwarding (stacks/constructs/search_host.py). Without searchVolumeId none
of it exists anywhere."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match

from spothub_core import timings
from spothub_core.contracts import AwsEvent
from spothub_core.models.search_records import SearchAgentConfig, SearchHost
from spothub_core.settings import SearchSettings, load_settings
from stacks.constructs.search_service import SEARCH_API_TIMEOUT_SECONDS
from stacks.constructs.state_machine import placeholders
from tests.infrastructure.conftest import SEARCH_VOLUME_ID
from tests.infrastructure.synth import Synthesized

HUB = "spothub-hub"
SEARCH_REGION = "us-west-2"
SEARCH_WORKER = f"spothub-worker-{SEARCH_REGION}"
OTHER_WORKER = "spothub-worker-eu-west-1"
SEARCH_CONCERNS = ("search_api", "search_tasks", "search_monitor")
SEARCH_ENVIRONMENT = {
    "SPOTHUB_SEARCH_TABLE",
    "SPOTHUB_SEARCH_REGION",
    "SPOTHUB_SEARCH_VOLUME_ID",
    "SPOTHUB_SEARCH_LAUNCHER_ARN",
    "SPOTHUB_SEARCH_ROUTER_ARN",
    "SPOTHUB_SEARCH_HOST_PARAMETER",
    "SPOTHUB_SEARCH_PORT",
    "SPOTHUB_SEARCH_HEALTH_PATH",
    "SPOTHUB_SEARCH_INSTANCE_TYPE",
    "SPOTHUB_SEARCH_USE_SPOT",
    "SPOTHUB_SEARCH_SPOT_MAX_PRICE",
    "SPOTHUB_SEARCH_IDLE_TIMEOUT",
    "SPOTHUB_SEARCH_MAX_RUNTIME",
    "SPOTHUB_SEARCH_HEALTH_INTERVAL",
}
SEARCH_ROUTES = {
    "POST /search/query": "SearchQuery",
    "GET /search/status": None,
    "POST /search/scale-up": None,
    "POST /search/scale-down": None,
    "DELETE /search/instances/{instance_id}": None,
}
SEARCH_TAGS = {"aws:ResourceTag/Service": "semantic-search", "aws:ResourceTag/ManagedBy": "spothub"}
ACCOUNT = "111122223333"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _render(value: Any) -> Any:
    """A template value as text, references written as <LogicalId> / <LogicalId.Attribute>, the account filled."""
    if isinstance(value, dict):
        if "Ref" in value:
            return ACCOUNT if value["Ref"] == "AWS::AccountId" else f"<{value['Ref']}>"
        if "Fn::GetAtt" in value:
            return f"<{value['Fn::GetAtt'][0]}.{value['Fn::GetAtt'][1]}>"
        if "Fn::Join" in value:
            separator, parts = value["Fn::Join"]
            return separator.join(str(_render(part)) for part in parts)
        return {k: _render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v) for v in value]
    return value


def _resources(synthesized: Synthesized, stack_name: str) -> dict[str, dict[str, Any]]:
    return synthesized.templates[stack_name]["Resources"]


def _function(synthesized: Synthesized, stack_name: str, concern: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, resource["Properties"])
        for logical_id, resource in synthesized.resources(stack_name, "AWS::Lambda::Function").items()
        if resource["Properties"]["Handler"] == f"{concern}.handler.lambda_handler"
    ]
    return found


def _statements(synthesized: Synthesized, stack_name: str, concern: str) -> dict[str, dict[str, Any]]:
    """The named statements of a function's role, by Sid."""
    role = _function(synthesized, stack_name, concern)[1]["Role"]["Fn::GetAtt"][0]
    return {
        statement["Sid"]: statement
        for policy in synthesized.resources(stack_name, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "Sid" in statement
    }


def _role_statements(synthesized: Synthesized, stack_name: str, role_prefix: str) -> dict[str, dict[str, Any]]:
    return {
        statement["Sid"]: statement
        for logical_id, policy in synthesized.resources(stack_name, "AWS::IAM::Policy").items()
        if logical_id.startswith(role_prefix)
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "Sid" in statement
    }


def _environment(synthesized: Synthesized, concern: str) -> dict[str, Any]:
    return _function(synthesized, synthesized.config.hub_stack_name(), concern)[1]["Environment"]["Variables"]


def _one(resources: dict[str, dict[str, Any]], prefix: str, kind: str) -> tuple[str, dict[str, Any]]:
    """The one resource of type `kind` whose logical id starts with `prefix`."""
    (found,) = [(k, r["Properties"]) for k, r in resources.items() if k.startswith(prefix) and r["Type"] == kind]
    return found


def _route_paths(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    resources = _resources(synthesized, synthesized.config.hub_stack_name())

    def path_of(reference: Any) -> str:
        if "Fn::GetAtt" in reference:
            return ""
        resource = resources[reference["Ref"]]["Properties"]
        return f"{path_of(resource['ParentId'])}/{resource['PathPart']}"

    return {
        f"{m['Properties']['HttpMethod']} {path_of(m['Properties']['ResourceId'])}": m["Properties"]
        for m in resources.values()
        if m["Type"] == "AWS::ApiGateway::Method"
    }


# --- the hub ----------------------------------------------------------------------------------------------


def test_search_table_is_on_demand_encrypted_recoverable_expires_items_and_is_kept(search: Synthesized) -> None:
    search.hub.has_resource(
        "AWS::DynamoDB::Table",
        {
            "Properties": Match.object_like(
                {
                    "TableName": "spothub-search",
                    "BillingMode": "PAY_PER_REQUEST",
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                    "SSESpecification": {
                        "SSEEnabled": True,
                        "SSEType": "KMS",
                        "KMSMasterKeyId": {"Fn::GetAtt": [Match.string_like_regexp("^AlertsKey"), "Arn"]},
                    },
                    "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
                }
            ),
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
        },
    )
    (table,) = [
        t
        for t in search.resources(HUB, "AWS::DynamoDB::Table").values()
        if t["Properties"].get("TableName") == "spothub-search"
    ]
    assert "GlobalSecondaryIndexes" not in table["Properties"]


@pytest.mark.parametrize("concern", SEARCH_CONCERNS)
def test_search_functions_get_the_search_settings(search: Synthesized, concern: str) -> None:
    env = _environment(search, concern)
    assert set(env) >= SEARCH_ENVIRONMENT
    rendered = {name: str(_render(value)) for name, value in env.items()}
    assert rendered["SPOTHUB_SEARCH_TABLE"].startswith("<SearchTable")
    assert rendered["SPOTHUB_SEARCH_LAUNCHER_ARN"] == (
        f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:spothub-search-launcher"
    )
    assert rendered["SPOTHUB_SEARCH_ROUTER_ARN"] == (
        f"arn:aws:lambda:{SEARCH_REGION}:{ACCOUNT}:function:spothub-search-router"
    )
    assert {k: rendered[k] for k in SEARCH_ENVIRONMENT - {"SPOTHUB_SEARCH_TABLE", "SPOTHUB_SEARCH_LAUNCHER_ARN"}} == {
        "SPOTHUB_SEARCH_REGION": SEARCH_REGION,
        "SPOTHUB_SEARCH_VOLUME_ID": SEARCH_VOLUME_ID,
        "SPOTHUB_SEARCH_ROUTER_ARN": rendered["SPOTHUB_SEARCH_ROUTER_ARN"],
        "SPOTHUB_SEARCH_HOST_PARAMETER": "/spothub/spothub/search-host",
        "SPOTHUB_SEARCH_PORT": "8000",
        "SPOTHUB_SEARCH_HEALTH_PATH": "/health",
        "SPOTHUB_SEARCH_INSTANCE_TYPE": "g5.xlarge",
        "SPOTHUB_SEARCH_USE_SPOT": "true",
        "SPOTHUB_SEARCH_SPOT_MAX_PRICE": "0.45",
        "SPOTHUB_SEARCH_IDLE_TIMEOUT": str(timings.SEARCH_IDLE_TIMEOUT_SECONDS),
        "SPOTHUB_SEARCH_MAX_RUNTIME": str(timings.SEARCH_MAX_RUNTIME_SECONDS),
        "SPOTHUB_SEARCH_HEALTH_INTERVAL": str(timings.SEARCH_HEALTH_INTERVAL_SECONDS),
    }
    # What the handlers read at cold start accepts it.
    settings = load_settings(SearchSettings, rendered)
    assert settings.use_spot is True
    assert settings.volume_id == SEARCH_VOLUME_ID


def test_every_search_key_reaches_the_functions(search_in_hub: Synthesized) -> None:
    env = {name: str(_render(value)) for name, value in _environment(search_in_hub, "search_monitor").items()}
    settings = load_settings(SearchSettings, env)
    assert settings.search_region == "us-east-1"
    assert settings.router_arn == "arn:aws:lambda:us-east-1:123456789012:function:gpu-prod-search-router"
    assert settings.launcher_arn == "arn:aws:states:us-east-1:123456789012:stateMachine:gpu-prod-search-launcher"
    assert settings.host_parameter == "/spothub/gpu-prod/search-host"
    assert (settings.volume_id, settings.instance_type) == ("vol-0123456789abcdef0", "g6.2xlarge")
    assert (settings.use_spot, settings.spot_max_price) == (False, "")
    assert (settings.idle_timeout_s, settings.max_runtime_s, settings.health_interval_s) == (600, 0, 120)
    assert (settings.port, settings.health_path) == (9200, "/ready")


def test_search_function_timeouts(search: Synthesized) -> None:
    timeout = {c: _function(search, HUB, c)[1]["Timeout"] for c in SEARCH_CONCERNS}
    # A query waits for readiness at most the wait budget, then runs; API Gateway gives up after its own timeout.
    assert timeout["search_api"] == SEARCH_API_TIMEOUT_SECONDS
    assert timeout["search_api"] > timings.SEARCH_WAIT_BUDGET_SECONDS + timings.SEARCH_QUERY_TIMEOUT_SECONDS
    assert timeout["search_api"] > timings.API_INTEGRATION_TIMEOUT_SECONDS
    # A task or a sweep waits on health checks through the router and a few EC2 calls.
    assert timeout["search_tasks"] == timeout["search_monitor"] == timings.MULTI_CALL_FUNCTION_TIMEOUT_SECONDS


@pytest.mark.parametrize("route", SEARCH_ROUTES)
def test_search_routes_use_iam_validate_and_reach_the_search_api(search: Synthesized, route: str) -> None:
    method = _route_paths(search)[route]
    assert method["AuthorizationType"] == "AWS_IAM"
    assert "RequestValidatorId" in method
    assert method["Integration"]["Type"] == "AWS_PROXY"
    function_id, _ = _function(search, HUB, "search_api")
    assert {"Fn::GetAtt": [function_id, "Arn"]} in method["Integration"]["Uri"]["Fn::Join"][1]
    model = SEARCH_ROUTES[route]
    if model is None:
        assert "RequestModels" not in method
    else:
        assert method["RequestModels"] == {"application/json": model}


def test_the_api_has_exactly_these_search_routes(search: Synthesized) -> None:
    assert {r for r in _route_paths(search) if r.split(" ")[1].startswith("/search")} == set(SEARCH_ROUTES)


def test_launcher_runs_the_asl_with_its_tasks_and_timings(search: Synthesized) -> None:
    (machine,) = [
        m["Properties"]
        for m in search.resources(HUB, "AWS::StepFunctions::StateMachine").values()
        if m["Properties"]["StateMachineName"] == "spothub-search-launcher"
    ]
    tasks_id, _ = _function(search, HUB, "search_tasks")
    assert machine["DefinitionSubstitutions"] == {"SearchTasksArn": {"Fn::GetAtt": [tasks_id, "Arn"]}}
    definition = json.loads(machine["DefinitionString"])
    # Every number is filled in; only the ARN is left to CloudFormation.
    assert set(re.findall(r"\$\{(\w+)\}", machine["DefinitionString"])) == {"SearchTasksArn"}
    assert placeholders("search_launcher") >= {"SearchTasksArn", "LaunchTimeoutSeconds"}
    assert definition["TimeoutSeconds"] == timings.SEARCH_LAUNCH_TIMEOUT_SECONDS
    assert machine["TracingConfiguration"] == {"Enabled": True}
    # The machine invokes its tasks function and nothing else.
    role = machine["RoleArn"]["Fn::GetAtt"][0]
    invoked = [
        s
        for p in search.resources(HUB, "AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if "lambda:InvokeFunction" in _as_list(s["Action"])
    ]
    assert invoked
    assert all(tasks_id in json.dumps(r) for s in invoked for r in _as_list(s["Resource"]))


def test_attach_is_polled_for_the_attach_wait(search: Synthesized) -> None:
    (machine,) = [
        m["Properties"]
        for m in search.resources(HUB, "AWS::StepFunctions::StateMachine").values()
        if m["Properties"]["StateMachineName"] == "spothub-search-launcher"
    ]
    retries = [
        r
        for state in json.loads(machine["DefinitionString"])["States"].values()
        for r in state.get("Retry", [])
        if r["ErrorEquals"] == ["TransientError"]
        and state.get("Parameters", {}).get("Payload", {}).get("action") == "attach"
    ]
    (retry,) = retries
    assert retry["IntervalSeconds"] * retry["MaxAttempts"] >= timings.SEARCH_ATTACH_WAIT_SECONDS


@pytest.mark.parametrize(("deployment", "rate"), [("search", "rate(1 minute)"), ("search_in_hub", "rate(2 minutes)")])
def test_monitor_sweeps_every_health_interval(request: pytest.FixtureRequest, deployment: str, rate: str) -> None:
    synthesized: Synthesized = request.getfixturevalue(deployment)
    hub = synthesized.config.hub_stack_name()
    monitor_id, _ = _function(synthesized, hub, "search_monitor")
    (schedule,) = [
        r["Properties"]
        for r in synthesized.resources(hub, "AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
        and r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [monitor_id, "Arn"]}
    ]
    assert schedule["ScheduleExpression"] == rate
    (target,) = schedule["Targets"]
    assert json.loads(target["Input"]) == {"action": "sweep"}
    assert "DeadLetterConfig" in target


def test_monitor_consumes_the_forwarded_interruption_warnings_from_the_hub_bus(search: Synthesized) -> None:
    monitor_id, _ = _function(search, HUB, "search_monitor")
    (rule,) = [
        r["Properties"]
        for r in search.resources(HUB, "AWS::Events::Rule").values()
        if "EventPattern" in r["Properties"]
        and any(t["Arn"] == {"Fn::GetAtt": [monitor_id, "Arn"]} for t in r["Properties"]["Targets"])
    ]
    assert rule["EventPattern"] == {"source": ["aws.ec2"], "detail-type": [str(AwsEvent.SPOT_INTERRUPTION_WARNING)]}
    assert rule["EventBusName"]["Ref"].startswith("HubBus")
    assert "DeadLetterConfig" in rule["Targets"][0]


def test_every_search_function_uses_its_table_the_router_and_terminates_only_the_search_instance(
    search: Synthesized,
) -> None:
    for concern in SEARCH_CONCERNS:
        statements = _statements(search, HUB, concern)
        assert statements["SearchTable"]["Resource"]["Fn::GetAtt"][0].startswith("SearchTable")
        assert "dynamodb:DeleteItem" not in _as_list(statements["SearchTable"]["Action"])
        assert _render(statements["CallSearchRouter"]["Resource"]) == (
            f"arn:aws:lambda:{SEARCH_REGION}:{ACCOUNT}:function:spothub-search-router"
        ), concern
        terminate = statements["TerminateSearchInstance"]
        assert terminate["Action"] == "ec2:TerminateInstances"
        assert _render(terminate["Resource"]) == f"arn:aws:ec2:{SEARCH_REGION}:{ACCOUNT}:instance/*"
        assert terminate["Condition"] == {"StringEquals": SEARCH_TAGS}
    for concern in ("search_api", "search_monitor"):
        start = _statements(search, HUB, concern)["StartSearchLauncher"]
        assert start["Action"] == "states:StartExecution"
        assert _render(start["Resource"]) == f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:spothub-search-launcher"
    assert "StartSearchLauncher" not in _statements(search, HUB, "search_tasks")


def test_search_tasks_launch_and_attach_only_the_search_instance(search: Synthesized) -> None:
    statements = _statements(search, HUB, "search_tasks")
    assert _render(statements["ReadSearchHost"]["Resource"]) == (
        f"arn:aws:ssm:{SEARCH_REGION}:{ACCOUNT}:parameter/spothub/spothub/search-host"
    )
    assert statements["ReadSearchHost"]["Action"] == "ssm:GetParameter"
    describe = statements["DescribeSearchPlacement"]
    assert set(describe["Action"]) == {"ec2:DescribeVolumes", "ec2:DescribeSubnets", "ec2:DescribeInstances"}
    launch = statements["LaunchSearchInstance"]
    assert (launch["Action"], launch["Resource"]) == ("ec2:RunInstances", "*")
    assert _render(launch["Condition"]) == {
        "ArnLike": {"ec2:LaunchTemplate": f"arn:aws:ec2:{SEARCH_REGION}:{ACCOUNT}:launch-template/*"}
    }
    tags = statements["TagSearchInstanceAtLaunch"]
    assert tags["Action"] == "ec2:CreateTags"
    assert _render(tags["Resource"]) == [
        f"arn:aws:ec2:{SEARCH_REGION}:{ACCOUNT}:instance/*",
        f"arn:aws:ec2:{SEARCH_REGION}:{ACCOUNT}:volume/*",
    ]
    assert tags["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    passed = statements["PassSearchInstanceRole"]
    assert passed["Action"] == "iam:PassRole"
    assert _render(passed["Resource"]) == f"arn:aws:iam::{ACCOUNT}:role/spothub-search-instance"
    assert passed["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    # AttachVolume is authorized on the volume and on the instance: the one volume, an instance tagged as ours.
    assert _render(statements["AttachSearchVolume"]["Resource"]) == (
        f"arn:aws:ec2:{SEARCH_REGION}:{ACCOUNT}:volume/{SEARCH_VOLUME_ID}"
    )
    assert "Condition" not in statements["AttachSearchVolume"]
    attach = statements["AttachToSearchInstance"]
    assert _render(attach["Resource"]) == f"arn:aws:ec2:{SEARCH_REGION}:{ACCOUNT}:instance/*"
    assert attach["Condition"] == {"StringEquals": SEARCH_TAGS}
    spot = statements["LaunchSearchSpotRequest"]
    assert _render(spot["Resource"]) == f"arn:aws:ec2:{SEARCH_REGION}:{ACCOUNT}:spot-instances-request/*"


def test_without_spot_no_spot_request_is_granted(search_in_hub: Synthesized) -> None:
    statements = _statements(search_in_hub, "gpu-prod-hub", "search_tasks")
    assert "LaunchSearchSpotRequest" not in statements
    assert "spot-instances-request" not in json.dumps(statements)
    assert _render(statements["PassSearchInstanceRole"]["Resource"]) == (
        "arn:aws:iam::123456789012:role/gpu-prod-search-instance"
    )


# --- the search region ------------------------------------------------------------------------------------


def test_router_runs_in_the_vpcs_public_subnets_in_its_own_security_group(search: Synthesized) -> None:
    resources = _resources(search, SEARCH_WORKER)
    _, router = _function(search, SEARCH_WORKER, "search_router")
    assert router["FunctionName"] == "spothub-search-router"
    public_subnets = sorted(k for k, r in resources.items() if r["Type"] == "AWS::EC2::Subnet")
    assert sorted(s["Ref"] for s in router["VpcConfig"]["SubnetIds"]) == public_subnets
    (group,) = router["VpcConfig"]["SecurityGroupIds"]
    assert group["Fn::GetAtt"][0].startswith("SearchRouterSecurityGroup")
    # It needs no AWS API and no settings of its own.
    assert not {name for name in router["Environment"]["Variables"] if name.startswith("SPOTHUB_SEARCH")}


def test_only_the_router_reaches_the_service_port_and_the_router_reaches_nothing_else(search: Synthesized) -> None:
    resources = _resources(search, SEARCH_WORKER)
    router_group, router = _one(resources, "SearchRouterSecurityGroup", "AWS::EC2::SecurityGroup")
    instance_group, instance = _one(resources, "SearchInstanceSecurityGroup", "AWS::EC2::SecurityGroup")
    ingress = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    egress = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupEgress"]
    into_instance = [r for r in ingress if r["GroupId"] == {"Fn::GetAtt": [instance_group, "GroupId"]}]
    assert [(r["SourceSecurityGroupId"], r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in into_instance] == [
        ({"Fn::GetAtt": [router_group, "GroupId"]}, 8000, 8000, "tcp")
    ]
    assert "SecurityGroupIngress" not in instance
    assert not [r for r in ingress if r["GroupId"] == {"Fn::GetAtt": [router_group, "GroupId"]}]
    assert "SecurityGroupIngress" not in router
    # The router's one way out: the service port of the instance's group (no inline rule to anywhere else).
    out_of_router = [r for r in egress if r["GroupId"] == {"Fn::GetAtt": [router_group, "GroupId"]}]
    assert [(r["DestinationSecurityGroupId"], r["FromPort"], r["ToPort"], r["IpProtocol"]) for r in out_of_router] == [
        ({"Fn::GetAtt": [instance_group, "GroupId"]}, 8000, 8000, "tcp")
    ]
    assert "0.0.0.0/0" not in json.dumps(router.get("SecurityGroupEgress", []))


def test_the_service_port_follows_search_port(search_in_hub: Synthesized) -> None:
    resources = _resources(search_in_hub, "gpu-prod-worker-us-east-1")
    ingress = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    instance_group, _ = _one(resources, "SearchInstanceSecurityGroup", "AWS::EC2::SecurityGroup")
    (rule,) = [r for r in ingress if r["GroupId"] == {"Fn::GetAtt": [instance_group, "GroupId"]}]
    assert (rule["FromPort"], rule["ToPort"]) == (9200, 9200)
    _, router = _function(search_in_hub, "gpu-prod-worker-us-east-1", "search_router")
    assert router["VpcConfig"]["SubnetIds"] == ["subnet-0aaa1111", "subnet-0bbb2222"]


def test_search_launch_template_is_the_gpu_template_with_the_instance_role_and_group(search: Synthesized) -> None:
    resources = _resources(search, SEARCH_WORKER)
    _, template = _one(resources, "SearchLaunchTemplate", "AWS::EC2::LaunchTemplate")
    assert template["LaunchTemplateName"] == "spothub-search"
    data = template["LaunchTemplateData"]
    assert data["MetadataOptions"] == {
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 1,
        "InstanceMetadataTags": "enabled",
    }
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert data["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0].startswith("SearchLaunchTemplateProfile")
    groups = json.dumps(data)
    assert "SearchInstanceSecurityGroup" in groups
    user_data = json.dumps(data["UserData"])
    assert "install.sh" in user_data
    assert "systemctl disable --now ecs" in user_data
    _, profile = _one(resources, "SearchLaunchTemplateProfile", "AWS::IAM::InstanceProfile")
    (role_id,) = [
        k for k, r in resources.items() if k.startswith("SearchInstanceRole") and r["Type"] == "AWS::IAM::Role"
    ]
    assert profile["Roles"] == [{"Ref": role_id}]


def test_instance_role_is_named_for_the_hubs_pass_role(search: Synthesized) -> None:
    resources = _resources(search, SEARCH_WORKER)
    (role,) = [
        r["Properties"]
        for k, r in resources.items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("SearchInstanceRole")
    ]
    assert role["RoleName"] == "spothub-search-instance"
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert "ManagedPolicyArns" not in role


def test_instance_role_reads_its_config_and_the_api_key_only(search: Synthesized) -> None:
    statements = _role_statements(search, SEARCH_WORKER, "SearchInstanceRole")
    assert _render(statements["ReadSearchConfig"]["Resource"]) == (
        f"arn:aws:ssm:{SEARCH_REGION}:{ACCOUNT}:parameter/spothub/spothub/search-config"
    )
    assert statements["ReadSearchApiKey"]["Action"] == "secretsmanager:GetSecretValue"
    assert statements["ReadSearchApiKey"]["Resource"]["Ref"].startswith("SearchApiKey")
    decrypt = statements["DecryptSearchApiKey"]
    assert decrypt["Resource"]["Fn::GetAtt"][0].startswith("AlertsKey")
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": f"secretsmanager.{SEARCH_REGION}.amazonaws.com"}}
    # Nothing of the hub: the agent in search mode reports nowhere (the hub checks the service through the router).
    text = json.dumps(statements)
    assert "execute-api" not in text
    assert "events:PutEvents" not in text
    assert "us-east-1" not in text


def test_api_key_secret_is_generated_encrypted_and_never_in_the_template(search: Synthesized) -> None:
    resources = _resources(search, SEARCH_WORKER)
    _, secret = _one(resources, "SearchApiKey", "AWS::SecretsManager::Secret")
    assert secret["Name"] == "spothub/search/api-key"
    assert secret["KmsKeyId"]["Fn::GetAtt"][0].startswith("AlertsKey")
    assert "GenerateSecretString" in secret
    assert "SecretString" not in secret


def test_search_region_publishes_the_host_and_the_agent_config(search: Synthesized) -> None:
    resources = _resources(search, SEARCH_WORKER)
    parameters = {
        r["Properties"]["Name"]: r["Properties"]["Value"]
        for r in resources.values()
        if r["Type"] == "AWS::SSM::Parameter"
    }
    host = SearchHost.model_validate_json(_render(parameters["/spothub/spothub/search-host"]))
    assert host.region == SEARCH_REGION
    assert host.launch_template_id.startswith("<SearchLaunchTemplate")
    assert host.security_group_id.startswith("<SearchInstanceSecurityGroup")
    assert sorted(host.subnet_ids) == sorted(f"<{k}>" for k, r in resources.items() if r["Type"] == "AWS::EC2::Subnet")
    config = SearchAgentConfig.model_validate_json(parameters["/spothub/spothub/search-config"])
    assert config == SearchAgentConfig(
        image="ghcr.io/example/semantic-search:1.4",
        port=8000,
        health_path="/health",
        api_key_secret_name="spothub/search/api-key",
    )


def test_search_region_forwards_spot_interruption_warnings_to_the_hub_bus(search: Synthesized) -> None:
    hub_bus = f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/spothub-hub"
    forwarded = [
        r["Properties"]
        for r in search.resources(SEARCH_WORKER, "AWS::Events::Rule").values()
        if any(_render(t["Arn"]) == hub_bus for t in r["Properties"].get("Targets", []))
        and r["Properties"]["EventPattern"]["detail-type"] == [str(AwsEvent.SPOT_INTERRUPTION_WARNING)]
    ]
    (rule,) = forwarded
    assert rule["EventPattern"] == {"source": ["aws.ec2"], "detail-type": [str(AwsEvent.SPOT_INTERRUPTION_WARNING)]}
    (target,) = rule["Targets"]
    assert target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0].startswith("UndeliveredEvents")


def test_only_the_search_region_holds_the_search_host(search: Synthesized) -> None:
    assert set(search.templates) == {HUB, SEARCH_WORKER, OTHER_WORKER}
    other = search.templates[OTHER_WORKER]
    assert not [k for k in other["Resources"] if k.startswith(("Search", "ForwardToHubSearch"))]
    text = json.dumps(other)
    for name in ("spothub-search", "/search-host", "/search-config", "search/api-key", "search_router"):
        assert name not in text, name


def test_search_in_the_hub_region_lands_in_its_worker_stack(search_in_hub: Synthesized) -> None:
    worker = search_in_hub.worker("us-east-1")
    worker.has_resource_properties("AWS::Lambda::Function", {"FunctionName": "gpu-prod-search-router"})
    worker.has_resource_properties("AWS::EC2::LaunchTemplate", {"LaunchTemplateName": "gpu-prod-search"})
    worker.has_resource_properties("AWS::IAM::Role", {"RoleName": "gpu-prod-search-instance"})
    worker.has_resource_properties("AWS::SSM::Parameter", {"Name": "/spothub/gpu-prod/search-host"})
    resources = _resources(search_in_hub, "gpu-prod-worker-us-east-1")
    (host,) = [
        r["Properties"]["Value"]
        for r in resources.values()
        if r["Type"] == "AWS::SSM::Parameter" and r["Properties"]["Name"] == "/spothub/gpu-prod/search-host"
    ]
    assert SearchHost.model_validate_json(_render(host)).subnet_ids == ["subnet-0aaa1111", "subnet-0bbb2222"]
    config = {
        r["Properties"]["Name"]: r["Properties"]["Value"]
        for r in resources.values()
        if r["Type"] == "AWS::SSM::Parameter"
    }["/spothub/gpu-prod/search-config"]
    assert SearchAgentConfig.model_validate_json(config).model_dump(include={"port", "health_path"}) == {
        "port": 9200,
        "health_path": "/ready",
    }


# --- without searchVolumeId ------------------------------------------------------------------------------


def test_without_a_search_volume_nothing_of_search_is_deployed(
    reference: Synthesized, hub_as_worker: Synthesized
) -> None:
    for synthesized in (reference, hub_as_worker):
        for stack_name, template in synthesized.templates.items():
            for logical_id, resource in template["Resources"].items():
                assert not logical_id.startswith(("Search", "ForwardToHubSearch")), f"{stack_name}/{logical_id}"
                handler = (
                    resource["Properties"].get("Handler", "") if resource["Type"] == "AWS::Lambda::Function" else ""
                )
                assert not handler.startswith("search_"), f"{stack_name}/{logical_id}"
            text = json.dumps(template)
            assert "search-launcher" not in text, stack_name
            assert "/search-host" not in text, stack_name
        assert not [r for r in _route_paths(synthesized) if r.split(" ")[1].startswith("/search")]
