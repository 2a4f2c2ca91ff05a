"""A worker region's automation: the worker_tasks function, the launch, teardown and
capacity-monitor state machines, and the rules that start them.

Hub commands arrive on the worker bus and reach the function, which starts the matching state
machine named by the command's id (a command delivered twice starts one execution); a launch's group
is scaled out by the function as it starts the launch. Interruption warnings on the default bus start
the capacity monitor, which takes our interrupted instance out of the group's count; the hub hears of
spot notices from event_forwarding.py and the agent. Worker reports go from the worker bus to the hub bus.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from spothub_core.consumers import Bus, Target
from spothub_core.contracts import AwsEvent, NoticeKind, Source
from spothub_core.timings import (
    MAX_INSTANCE_POLLS_SECONDS,
    MAX_TEARDOWN_POLLS_SECONDS,
    MAX_WORKLOAD_POLLS_SECONDS,
    MULTI_CALL_FUNCTION_TIMEOUT_SECONDS,
)
from stacks.config import SpothubConfig
from stacks.constructs.consumer_rules import consuming_rules, entries, only_pattern
from stacks.constructs.gpu_capacity import GpuCapacity
from stacks.constructs.instance_remediation import instance_alarms_arn
from stacks.constructs.instance_template import grant_launch_template
from stacks.constructs.python_function import FunctionDefaults
from stacks.constructs.serving_task import ServingTask
from stacks.constructs.state_machine import SpothubStateMachine, placeholders
from stacks.nag import STATE_MACHINE_REASON, acknowledge, invoke_versions_rule, nag_resource

# The capacity monitor's input names the notice's kind (contracts.CapacityNotice.kind); one rule per notice.
NOTICE_KINDS = {
    AwsEvent.SPOT_INTERRUPTION_WARNING: NoticeKind.INTERRUPTION,
    AwsEvent.REBALANCE_RECOMMENDATION: NoticeKind.REBALANCE,
}


def poll_numbers(poll: int) -> dict[str, dict[str, int]]:
    """The worker state machines' numbers: poll caps (spothub_core.timings) in polls of `poll` seconds."""
    return {
        "launch_instance": {
            "PollSeconds": poll,
            "MaxInstancePolls": max(1, MAX_INSTANCE_POLLS_SECONDS // poll),
            "MaxWorkloadPolls": max(1, MAX_WORKLOAD_POLLS_SECONDS // poll),
        },
        "teardown_instance": {"PollSeconds": poll, "MaxTeardownPolls": max(1, MAX_TEARDOWN_POLLS_SECONDS // poll)},
        "capacity_monitor": {},
    }


class WorkerAutomation(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        capacity: GpuCapacity,
        serving: ServingTask,
        worker_bus: events.IEventBus,
        hub_bus_arn: str,
        alerts_topic: sns.ITopic,
        functions: FunctionDefaults,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        names = {
            kind: f"{config.prefix}-{kind.replace('_', '-')}"
            for kind in ("launch_instance", "teardown_instance", "capacity_monitor")
        }
        arns = {
            kind: stack.format_arn(
                service="states", resource="stateMachine", resource_name=name, arn_format=ArnFormat.COLON_RESOURCE_NAME
            )
            for kind, name in names.items()
        }
        dead_letter_queue = functions.dead_letter_queue
        self.spothub_function = functions.function(
            self,
            "WorkerTasks",
            concern="worker_tasks",
            description="Worker tasks: scale the group, claim the instance, run the serving task, tear down",
            timeout_seconds=MULTI_CALL_FUNCTION_TIMEOUT_SECONDS,
            environment={
                "SPOTHUB_GROUP_NAME": capacity.group_name,
                "SPOTHUB_CLUSTER_NAME": capacity.cluster.cluster_name,
                "SPOTHUB_TASK_DEFINITION": serving.task_definition.family,
                "SPOTHUB_LAUNCH_STATE_MACHINE_ARN": arns["launch_instance"],
                "SPOTHUB_TEARDOWN_STATE_MACHINE_ARN": arns["teardown_instance"],
                "SPOTHUB_ALERTS_TOPIC_ARN": alerts_topic.topic_arn,
            },
        )
        self.function = self.spothub_function.function
        self._grant(stack, config.prefix, capacity, serving, arns)

        numbers = poll_numbers(config.poll_seconds)
        self.state_machines: dict[str, sfn.StateMachine] = {}
        for kind, name in names.items():
            machine = SpothubStateMachine(
                self,
                kind.title().replace("_", ""),
                name=kind,
                state_machine_name=name,
                substitutions={
                    "WorkerTasksArn": self.function.function_arn,
                    "WorkerBusName": worker_bus.event_bus_name,
                },
                numbers=numbers[kind],
                log_retention=functions.log_retention,
            ).state_machine
            self.function.grant_invoke(machine)
            if "WorkerBusName" in placeholders(kind):  # only the machines that report put events
                worker_bus.grant_put_events_to(machine)
            acknowledge(
                machine,
                invoke_versions_rule(self.function),
                "grant_invoke adds <function ARN>:* so the state machine may invoke this one function's versions.",
            )
            acknowledge(machine, "AwsSolutions-IAM5[Resource::*]", STATE_MACHINE_REASON)
            self.state_machines[kind] = machine

        consuming_rules(
            self,
            "HubCommands",
            bus=worker_bus,
            consumed=entries(bus=Bus.WORKER, target=Target.WORKER_TASKS),
            function=self.function,
            dead_letter_queue=dead_letter_queue,
            description="Launch and teardown commands from the hub",
        )
        # Spot notices from the default bus: one rule per notice, for the kind in the capacity monitor's input.
        for entry in entries(bus=Bus.WORKER_DEFAULT, target=Target.CAPACITY_MONITOR):
            notice = AwsEvent(entry.detail_type)
            kind = NOTICE_KINDS[notice]
            rule = events.Rule(
                self,
                f"SpotNotice-{kind}",
                description=f"{notice.value} for any instance in the region: the capacity monitor picks ours",
                event_pattern=only_pattern([entry]),
            )
            rule.add_target(
                targets.SfnStateMachine(
                    self.state_machines["capacity_monitor"],
                    input=events.RuleTargetInput.from_object(
                        {
                            "instance_id": events.EventField.from_path("$.detail.instance-id"),
                            "kind": kind,
                        }
                    ),
                    dead_letter_queue=dead_letter_queue,
                )
            )
        # The worker's reports that the hub consumes, from this bus to the hub bus.
        reports = events.Rule(
            self,
            "ReportsToHub",
            event_bus=worker_bus,
            description="Worker reports to the hub bus",
            event_pattern=only_pattern(entries(bus=Bus.HUB, source=Source.WORKER)),
        )
        hub_bus = events.EventBus.from_event_bus_arn(self, "HubBus", hub_bus_arn)
        reports.add_target(targets.EventBus(hub_bus, dead_letter_queue=dead_letter_queue))

    def _grant(
        self, stack: Stack, prefix: str, capacity: GpuCapacity, serving: ServingTask, arns: dict[str, str]
    ) -> None:
        group_arn = stack.format_arn(
            service="autoscaling",
            resource="autoScalingGroup",
            resource_name=f"*:autoScalingGroupName/{capacity.group_name}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        cluster_arn = capacity.cluster.cluster_arn
        cluster_tasks = stack.format_arn(
            service="ecs", resource="task", resource_name=f"{capacity.cluster.cluster_name}/*"
        )
        launch_executions = arns["launch_instance"].replace(":stateMachine:", ":execution:") + ":*"
        instance_alarms = instance_alarms_arn(stack, prefix)
        any_instance = stack.format_arn(service="ec2", resource="instance", resource_name="*")
        task_definitions = stack.format_arn(
            service="ecs", resource="task-definition", resource_name=f"{serving.task_definition.family}:*"
        )
        statements = [
            iam.PolicyStatement(
                sid="ReadGroupsAndInstances",
                actions=[
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeScalingActivities",
                    "ec2:DescribeInstances",
                ],
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="SizeOwnGroup",
                actions=[
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:UpdateAutoScalingGroup",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                    "autoscaling:EnterStandby",
                ],
                resources=[group_arn],
            ),
            iam.PolicyStatement(
                sid="PassOwnRoles",
                actions=["iam:PassRole"],
                resources=[capacity.role.role_arn, serving.task_definition.task_role.role_arn]
                + ([serving.task_definition.execution_role.role_arn] if serving.task_definition.execution_role else []),
            ),
            iam.PolicyStatement(
                sid="ClaimOwnInstances",
                actions=["ec2:CreateTags"],
                resources=[stack.format_arn(service="ec2", resource="instance", resource_name="*")],
                conditions={"StringEquals": {"aws:ResourceTag/aws:autoscaling:groupName": capacity.group_name}},
            ),
            iam.PolicyStatement(
                sid="ServingTasks",
                actions=["ecs:StartTask"],
                resources=[
                    stack.format_arn(
                        service="ecs", resource="task-definition", resource_name=f"{serving.task_definition.family}:*"
                    )
                ],
                conditions={"ArnEquals": {"ecs:cluster": cluster_arn}},
            ),
            # Only actions whose requests carry ecs:cluster (Service Authorization Reference) can be narrowed by it.
            iam.PolicyStatement(
                sid="ClusterTasks",
                actions=["ecs:ListTasks", "ecs:DescribeTasks", "ecs:StopTask", "ecs:DescribeContainerInstances"],
                resources=["*"],
                conditions={"ArnEquals": {"ecs:cluster": cluster_arn}},
            ),
            # ListContainerInstances is authorized on the cluster itself and carries no ecs:cluster key.
            iam.PolicyStatement(
                sid="ClusterInstances", actions=["ecs:ListContainerInstances"], resources=[cluster_arn]
            ),
            # Tags given to StartTask are authorized as TagResource on the new task, with ecs:CreateAction.
            iam.PolicyStatement(
                sid="TagTasksAtStart",
                actions=["ecs:TagResource"],
                resources=[cluster_tasks],
                conditions={"StringEquals": {"ecs:CreateAction": "StartTask"}},
            ),
            iam.PolicyStatement(
                sid="StartOwnStateMachines",
                actions=["states:StartExecution"],
                resources=[arns["launch_instance"], arns["teardown_instance"]],
            ),
            iam.PolicyStatement(
                sid="ListLaunches", actions=["states:ListExecutions"], resources=[arns["launch_instance"]]
            ),
            iam.PolicyStatement(sid="StopLaunches", actions=["states:StopExecution"], resources=[launch_executions]),
            # A launch command looks its execution up before scaling out for it (a late duplicate scales nothing).
            iam.PolicyStatement(
                sid="LookUpLaunches", actions=["states:DescribeExecution"], resources=[launch_executions]
            ),
            iam.PolicyStatement(
                sid="InstanceAlarms",
                actions=["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
                resources=[instance_alarms],
            ),
        ]
        for statement in statements:
            self.function.add_to_role_policy(statement)
        # UpdateAutoScalingGroup re-submits the mixed instances policy, which names the launch template.
        grant_launch_template(self.function, "UseOwnLaunchTemplate", capacity.launch_template)
        reasons = {
            "AwsSolutions-IAM5[Resource::*]": "Describe calls (groups, instances, scaling activities) have no "
            "resource-level permissions; ec2:RunInstances/CreateTags only with this region's launch template; ECS "
            "task calls only in this cluster (ecs:cluster condition); X-Ray.",
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, group_arn)}]": "The group's ARN embeds a UUID unknown "
            "before deployment; the name pins it to this region's spothub group.",
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, any_instance)}]": "Instance ids are unknown ahead; "
            "CreateTags is limited to instances of the spothub group by tag condition.",
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, task_definitions)}]": "Every revision of the "
            "serving task definition family, in this cluster only.",
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, cluster_tasks)}]": "Tags at StartTask on this "
            "cluster's tasks (ids unknown ahead), only as part of StartTask (ecs:CreateAction).",
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, launch_executions)}]": "StopExecution and "
            "DescribeExecution on this region's launch executions (cancel, teardown; a command's look-up before it "
            "scales out); their names are the launch ids.",
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, instance_alarms)}]": "Per-instance alarms are named "
            "by instance id, unknown ahead; the name prefix pins them to this deployment.",
        }
        for rule, reason in reasons.items():
            acknowledge(self.spothub_function, rule, reason)
