"""The sandbox's IAM evaluation (spothub.sandbox.iam): policies as AWS evaluates them, and requests resolved
to the actions, resources and condition keys the Service Authorization Reference says they carry."""

from __future__ import annotations

import pytest

from spothub.sandbox.iam.actions import ApiRequest, ResourceFacts, authorizations_for
from spothub.sandbox.iam.evaluator import Caller, NamedPolicy, condition_holds, evaluate, wildcard_match
from spothub.sandbox.iam.reference import context_for

ROLE = "arn:aws:iam::123456789012:role/worker"
CALLER = Caller(arn="arn:aws:sts::123456789012:assumed-role/worker/fn", role_arn=ROLE)
CLUSTER = "arn:aws:ecs:us-west-2:123456789012:cluster/spothub-gpu"


def policy(*statements: dict) -> NamedPolicy:
    return NamedPolicy("inline", {"Version": "2012-10-17", "Statement": list(statements)})


def allow(action: str | list[str], resource: str | list[str] = "*", **extra: object) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


class Facts(ResourceFacts):
    def cluster_arn(self, request: ApiRequest, cluster: str) -> str:
        return cluster if cluster.startswith("arn:") else CLUSTER

    def task_definition_arn(self, request: ApiRequest, task_definition: str) -> str:
        return f"arn:aws:ecs:us-west-2:123456789012:task-definition/{task_definition}:3"


def ecs(operation: str, **params: object) -> ApiRequest:
    return ApiRequest("ecs", operation, "us-west-2", "123456789012", dict(params))


def decide(request: ApiRequest, *statements: dict) -> bool:
    """Every authorization of the request, evaluated as the enforcer does (per resource, its condition keys)."""
    for authorization in authorizations_for(request, Facts()):
        for resource in authorization.resources:
            context = context_for(authorization.action, resource, authorization.context)
            if not evaluate(CALLER, authorization.action, resource, context, [policy(*statements)]).allowed:
                return False
    return True


def test_wildcards_follow_iam_not_shell_globbing() -> None:
    assert wildcard_match("arn:aws:ecs:*:*:task/spothub-gpu/*", "arn:aws:ecs:us-west-2:1:task/spothub-gpu/abc")
    assert wildcard_match("ecs:Describe*", "ecs:describetasks", case_sensitive=False)
    assert not wildcard_match("arn:aws:ecs:*:*:task/[ab]*", "arn:aws:ecs:x:1:task/a1")
    assert wildcard_match("i-????", "i-1234") and not wildcard_match("i-????", "i-12345")


def test_explicit_deny_wins_over_any_allow() -> None:
    statements = [allow("ecs:*"), {"Effect": "Deny", "Action": "ecs:StopTask", "Resource": "*"}]
    decision = evaluate(CALLER, "ecs:StopTask", "arn:x", {}, [policy(*statements)])
    assert not decision.allowed and "explicit deny" in decision.reason


def test_nothing_allows_means_denied_and_says_why() -> None:
    decision = evaluate(CALLER, "ecs:StopTask", "arn:x", {}, [policy(allow("ecs:ListTasks"))])
    assert not decision.allowed
    assert decision.reason == "no identity-based policy allows ecs:StopTask on arn:x"


def test_not_action_and_not_resource() -> None:
    statements = [{"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:secret"}]
    assert evaluate(CALLER, "ecs:StopTask", "arn:x", {}, [policy(*statements)]).allowed
    assert not evaluate(CALLER, "iam:PassRole", "arn:x", {}, [policy(*statements)]).allowed
    assert not evaluate(CALLER, "ecs:StopTask", "arn:secret", {}, [policy(*statements)]).allowed


@pytest.mark.parametrize(
    ("operator", "key", "values", "context", "holds"),
    [
        ("StringEquals", "k", "a", {"k": "a"}, True),
        ("StringEquals", "k", ["a", "b"], {"k": "b"}, True),  # values of one key: OR
        ("StringEquals", "k", "a", {"K": "a"}, True),  # keys are case-insensitive
        ("StringEquals", "k", "a", {}, False),  # absent key: no match
        ("StringNotEquals", "k", "a", {}, True),  # ... but the negated operators hold
        ("StringEqualsIfExists", "k", "a", {}, True),
        ("StringLike", "k", "spot*", {"k": "spothub"}, True),
        ("ArnEquals", "ecs:cluster", CLUSTER, {"ecs:cluster": CLUSTER}, True),
        ("ArnLike", "aws:SourceArn", "arn:aws:events:*:*:rule/*", {"aws:SourceArn": "arn:aws:events:r:1:rule/x"}, True),
        ("Bool", "aws:SecureTransport", "false", {"aws:SecureTransport": "true"}, False),
        ("Null", "k", "true", {}, True),
        ("Null", "k", "false", {"k": "v"}, True),
        ("NumericLessThanEquals", "n", "10", {"n": "4"}, True),
        ("ForAllValues:StringEquals", "aws:TagKeys", ["a", "b"], {"aws:TagKeys": ["a"]}, True),
        ("ForAllValues:StringEquals", "aws:TagKeys", ["a"], {"aws:TagKeys": ["a", "c"]}, False),
        ("ForAnyValue:StringEquals", "aws:TagKeys", ["c"], {"aws:TagKeys": ["a", "c"]}, True),
    ],
)
def test_condition_operators(operator: str, key: str, values: object, context: dict, holds: bool) -> None:
    assert condition_holds(operator, key, values, context) is holds


def test_resource_policy_grants_a_service_principal_only_when_it_names_it() -> None:
    function = "arn:aws:lambda:us-east-1:123456789012:function:f"
    permission = NamedPolicy(
        "function policy",
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "lambda:InvokeFunction",
                    "Resource": function,
                    "Condition": {"ArnLike": {"AWS:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/bus/r"}},
                }
            ]
        },
    )
    events = Caller(arn="events.amazonaws.com", service="events.amazonaws.com")
    from_rule = {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/bus/r"}
    assert evaluate(events, "lambda:InvokeFunction", function, from_rule, [], permission).allowed
    other_rule = {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/bus/other"}
    assert not evaluate(events, "lambda:InvokeFunction", function, other_rule, [], permission).allowed
    apigw = Caller(arn="apigateway.amazonaws.com", service="apigateway.amazonaws.com")
    assert not evaluate(apigw, "lambda:InvokeFunction", function, from_rule, [], permission).allowed


# --- defect 1 of issue 11: conditions on keys the request never carries ----------------------------------


def test_list_container_instances_carries_no_ecs_cluster_key() -> None:
    """The worker's old ClusterTasks statement: `ArnEquals ecs:cluster` over ListContainerInstances refuses it."""
    old = allow(["ecs:ListContainerInstances", "ecs:ListTasks"], "*", Condition={"ArnEquals": {"ecs:cluster": CLUSTER}})
    assert not decide(ecs("ListContainerInstances", cluster="spothub-gpu"), old)
    assert decide(ecs("ListContainerInstances", cluster="spothub-gpu"), allow("ecs:ListContainerInstances", CLUSTER))
    assert decide(ecs("ListTasks", cluster="spothub-gpu", startedBy="x"), old)  # ListTasks does carry it


def test_start_task_with_tags_is_also_tag_resource_with_create_action() -> None:
    start = ecs(
        "StartTask",
        cluster="spothub-gpu",
        taskDefinition="spothub-serving",
        containerInstances=["abc"],
        tags=[{"key": "spothub:launch-id", "value": "l-1"}],
    )
    starting = allow("ecs:StartTask", "*", Condition={"ArnEquals": {"ecs:cluster": CLUSTER}})
    assert not decide(start, starting)
    # The old statement: TagResource under ecs:cluster, which a tagging request on a task does not carry.
    assert not decide(start, starting, allow("ecs:TagResource", "*", Condition={"ArnEquals": {"ecs:cluster": CLUSTER}}))
    tagging = allow("ecs:TagResource", "*", Condition={"StringEquals": {"ecs:CreateAction": "StartTask"}})
    assert decide(start, starting, tagging)


def test_put_system_log_events_needs_the_cluster_without_a_cluster_condition() -> None:
    cluster_resource = context_for("ecs:PutSystemLogEvents", CLUSTER, {"ecs:cluster": CLUSTER})
    instance = "arn:aws:ecs:us-west-2:123456789012:container-instance/spothub-gpu/abc"
    assert "ecs:cluster" not in cluster_resource
    assert "ecs:cluster" in context_for("ecs:PutSystemLogEvents", instance, {"ecs:cluster": CLUSTER})


def test_actions_without_resource_types_are_authorized_on_star() -> None:
    request = ApiRequest("states", "SendTaskSuccess", "us-east-1", "123456789012", {"taskToken": "t"})
    [authorization] = authorizations_for(request, Facts())
    assert authorization.resources == ["*"]
