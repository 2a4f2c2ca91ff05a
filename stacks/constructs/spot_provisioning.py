"""Spot provisioning in the hub: the switch (POST /spot-provisioning), where the replicas run
(GET /spot-instances), the spot finder, the capacity handler, the orchestrator that runs them, the rules
that bring the capacity handler what it consumes, and the rules that carry commands to each worker region.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from spothub_core.consumers import Bus, Target
from spothub_core.contracts import Source
from spothub_core.models.api import ToggleRequest
from spothub_core.models.standby_records import STANDBY
from spothub_core.timings import MULTI_CALL_FUNCTION_TIMEOUT_SECONDS
from stacks.config import SpothubConfig
from stacks.constructs.alerts_topic import KMS_READ_WRITE, AlertsTopic
from stacks.constructs.consumer_rules import consuming_rules, entries, only_pattern
from stacks.constructs.python_function import FunctionDefaults, SpothubFunction
from stacks.constructs.rest_api import SpothubRestApi
from stacks.constructs.state_machine import SpothubStateMachine
from stacks.nag import acknowledge, invoke_versions_rule, nag_resource


class SpotProvisioning(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        functions: FunctionDefaults,
        state_table: dynamodb.ITable,
        bus: events.IEventBus,
        alerts: AlertsTopic,
        failed_invocations: sqs.IQueue,
        api: SpothubRestApi,
        orchestrator_durations: Mapping[str, int],
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        orchestrator_name = f"{config.prefix}-spot-orchestrator"
        # Built from the name: the capacity handler starts the orchestrator that invokes it (no cycle).
        orchestrator_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=orchestrator_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        orchestrator_executions = orchestrator_arn.replace(":stateMachine:", ":execution:")
        self.active_instance_parameter = ssm.StringParameter(
            self,
            "Param-active-instance",
            parameter_name=f"{config.ssm_prefix}/active-instance",
            string_value="none",
            description=f"spothub {config.prefix}: the serving instance (JSON), written by the capacity handler",
        )

        # Where a replica answers, for the functions that publish or report its endpoint.
        serving = {
            "SPOTHUB_SERVING_PORT": str(config.serving_port),
            "SPOTHUB_SERVING_PUBLIC_IP": "true" if config.serving_public_ip else "false",
        }
        if config.endpoint_name:
            serving["SPOTHUB_ENDPOINT_NAME"] = config.endpoint_name
        self.spot_finder = self._spot_finder(functions=functions, config=config, state_table=state_table, alerts=alerts)
        self.toggle = self._toggle(
            functions=functions,
            config=config,
            state_table=state_table,
            bus=bus,
            alerts=alerts,
            api=api,
            orchestrator_arn=orchestrator_arn,
            serving=serving,
        )

        details = functions.function(
            self,
            "InstanceDetails",
            concern="instance_details",
            description="GET /spot-instances: where the replicas run",
            environment=serving,
        )
        state_table.grant(details.function, "dynamodb:GetItem", "dynamodb:Query")
        alerts.key.grant_decrypt(details.function)
        api.add_route("GET", "/spot-instances", details.function)
        self.instance_details = details

        self.capacity_handler = self._capacity_handler(
            functions=functions,
            config=config,
            state_table=state_table,
            bus=bus,
            alerts=alerts,
            orchestrator_arn=orchestrator_arn,
            serving=serving,
        )

        self.orchestrator = SpothubStateMachine(
            self,
            "SpotOrchestrator",
            name="spot_orchestrator",
            state_machine_name=orchestrator_name,
            substitutions={
                "SpotFinderArn": self.spot_finder.function.function_arn,
                "CapacityHandlerArn": self.capacity_handler.function.function_arn,
                "AlertsTopicArn": alerts.topic.topic_arn,
            },
            numbers=dict(orchestrator_durations),
            log_retention=functions.log_retention,
        ).state_machine
        self.spot_finder.function.grant_invoke(self.orchestrator)
        self.capacity_handler.function.grant_invoke(self.orchestrator)
        # Named actions, not grant_publish (which adds kms:GenerateDataKey* for the encrypted topic).
        self.orchestrator.add_to_role_policy(
            iam.PolicyStatement(sid="Alert", actions=["sns:Publish"], resources=[alerts.topic.topic_arn])
        )
        alerts.key.grant(self.orchestrator, *KMS_READ_WRITE)
        for function in (self.spot_finder.function, self.capacity_handler.function):
            acknowledge(
                self.orchestrator,
                invoke_versions_rule(function),
                "grant_invoke adds <function ARN>:* so the orchestrator may invoke this one function's versions.",
            )
        acknowledge(
            self.toggle,
            f"AwsSolutions-IAM5[Resource::{nag_resource(stack, orchestrator_executions)}:*]",
            "StopExecution on the executions of this deployment's orchestrator only; their names are not known ahead.",
        )

        consuming_rules(
            self,
            "ToCapacityHandler",
            bus=bus,
            consumed=entries(bus=Bus.HUB, target=Target.CAPACITY_HANDLER),
            function=self.capacity_handler.function,
            dead_letter_queue=failed_invocations,
            description="What the capacity handler consumes from {source}",
        )
        # The warm standby's risk check of every replica (spothub_core.logic.standby_watch), once a minute: one
        # delivery and one invocation for all replicas, no state machine loop per replica.
        check_interval = Duration.minutes(1)
        standby_check = events.Rule(
            self,
            "StandbyCheck",
            description="Warm standby: start one where a replica's risk rose, release it where it fell",
            schedule=events.Schedule.rate(check_interval),
        )
        # A missed minute is caught up by the next one: a delivery older than a check is not worth retrying.
        standby_check.add_target(
            targets.LambdaFunction(
                self.capacity_handler.function,
                event=events.RuleTargetInput.from_object({"action": "check_standbys"}),
                dead_letter_queue=failed_invocations,
                retry_attempts=2,
                max_event_age=check_interval,
            )
        )
        # The hub's own commands that a worker region consumes (its tasks' and its batch fleet's), for that region:
        # one source, so one exact pattern.
        commands = entries(bus=Bus.WORKER, source=Source.HUB)
        for region in config.deployed_worker_regions:
            worker_bus = events.EventBus.from_event_bus_arn(
                self,
                f"WorkerBus-{region}",
                stack.format_arn(
                    service="events", region=region, resource="event-bus", resource_name=config.worker_bus_name
                ),
            )
            rule = events.Rule(
                self,
                f"CommandsTo-{region}",
                event_bus=bus,
                description=f"Launch, teardown and batch fleet commands for {region}",
                event_pattern=only_pattern(commands, detail={"region": [region]}),
            )
            rule.add_target(targets.EventBus(worker_bus, dead_letter_queue=failed_invocations))

    def _spot_finder(
        self,
        *,
        functions: FunctionDefaults,
        config: SpothubConfig,
        state_table: dynamodb.ITable,
        alerts: AlertsTopic,
    ) -> SpothubFunction:
        finder = functions.function(
            self,
            "SpotFinder",
            concern="spot_finder",
            description="Rank the worker regions for a spot launch: placement score, price, exclusions",
            environment={"SPOTHUB_INSTANCE_TYPES": ",".join(config.instance_types)},
            timeout_seconds=MULTI_CALL_FUNCTION_TIMEOUT_SECONDS,
        )
        # Query only: exclusions are one partition; the finder never writes.
        state_table.grant(finder.function, "dynamodb:Query")
        alerts.key.grant_decrypt(finder.function)
        finder.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadSpotMarket",
                actions=["ec2:GetSpotPlacementScores", "ec2:DescribeSpotPriceHistory"],
                resources=["*"],
            )
        )
        # Read (switch, replicas) and nothing else: the finder decides, the capacity handler writes.
        state_table.grant(finder.function, "dynamodb:GetItem")
        return finder

    def _toggle(
        self,
        *,
        functions: FunctionDefaults,
        config: SpothubConfig,
        state_table: dynamodb.ITable,
        bus: events.IEventBus,
        alerts: AlertsTopic,
        api: SpothubRestApi,
        orchestrator_arn: str,
        serving: Mapping[str, str],
    ) -> SpothubFunction:
        toggle = functions.function(
            self,
            "ToggleProvisioning",
            concern="toggle_provisioning",
            description="POST /spot-provisioning: enable or disable spot provisioning",
            environment={
                "SPOTHUB_INSTANCE_TYPES": ",".join(config.instance_types),
                "SPOTHUB_ORCHESTRATOR_ARN": orchestrator_arn,
                "SPOTHUB_HUB_BUS": bus.event_bus_name,
                **serving,
            },
        )
        state_table.grant(
            toggle.function, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"
        )
        alerts.key.grant(toggle.function, *KMS_READ_WRITE)
        bus.grant_put_events_to(toggle.function)
        toggle.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="StartOrchestrator", actions=["states:StartExecution"], resources=[orchestrator_arn]
            )
        )
        toggle.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="StopOrchestrator",
                actions=["states:StopExecution"],
                resources=[orchestrator_arn.replace(":stateMachine:", ":execution:") + ":*"],
            )
        )
        api.add_route("POST", "/spot-provisioning", toggle.function, request_model=ToggleRequest)
        return toggle

    def _capacity_handler(
        self,
        *,
        functions: FunctionDefaults,
        config: SpothubConfig,
        state_table: dynamodb.ITable,
        bus: events.IEventBus,
        alerts: AlertsTopic,
        orchestrator_arn: str,
        serving: Mapping[str, str],
    ) -> SpothubFunction:
        environment = {
            **serving,
            "SPOTHUB_HUB_BUS": bus.event_bus_name,
            "SPOTHUB_ORCHESTRATOR_ARN": orchestrator_arn,
            "SPOTHUB_ACTIVE_INSTANCE_PARAMETER": self.active_instance_parameter.parameter_name,
            "SPOTHUB_ALERTS_TOPIC_ARN": alerts.topic.topic_arn,
            "SPOTHUB_INSTANCE_TYPES": ",".join(config.instance_types),
        }
        if config.hosted_zone_id:
            environment["SPOTHUB_HOSTED_ZONE_ID"] = config.hosted_zone_id
        handler = functions.function(
            self,
            "CapacityHandler",
            concern="capacity_handler",
            description="Dispatch launches and teardowns to worker regions, consume their reports",
            environment=environment,
        )
        state_table.grant(
            handler.function, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"
        )
        alerts.key.grant(handler.function, *KMS_READ_WRITE)
        bus.grant_put_events_to(handler.function)
        self.active_instance_parameter.grant_write(handler.function)
        # Task-token answers support no resource-level permission (Service Authorization Reference): scoped to
        # the orchestrator's ARN, AWS denies them. The token itself names the one task they answer.
        handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="AnswerOrchestrator",
                actions=["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"],
                resources=["*"],
            )
        )
        # A quota that stops launches is the operator's to raise (the topic's key: KMS_READ_WRITE, granted above).
        handler.function.add_to_role_policy(
            iam.PolicyStatement(sid="AlertOperator", actions=["sns:Publish"], resources=[alerts.topic.topic_arn])
        )
        # A replacement's first attempt is ranked in-process, as the spot finder ranks (read only; neither call
        # supports resource-level permissions).
        # The standby check samples the zones' scores, named as this account names its zones.
        handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadSpotMarket",
                actions=[
                    "ec2:GetSpotPlacementScores",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeAvailabilityZones",
                ],
                resources=["*"],
            )
        )
        # A standby promoted or released is forgotten: deletes of the state table's STANDBY items only.
        handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ForgetStandby",
                actions=["dynamodb:DeleteItem"],
                resources=[state_table.table_arn],
                conditions={"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [STANDBY]}},
            )
        )
        acknowledge(
            handler,
            "AwsSolutions-IAM5[Resource::*]",
            "states:SendTaskSuccess/SendTaskFailure/SendTaskHeartbeat support no resource-level permissions (the "
            "task token names the task); ec2:GetSpotPlacementScores/DescribeSpotPriceHistory (a replacement's first "
            "ranking, the standby's zone scores) and ec2:DescribeAvailabilityZones neither; X-Ray "
            "PutTraceSegments/PutTelemetryRecords neither.",
        )
        handler.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="StartOrchestrator", actions=["states:StartExecution"], resources=[orchestrator_arn]
            )
        )
        if config.hosted_zone_id and config.endpoint_name:
            # UPSERT a replica's A record when it serves, DELETE it when the replica stops: the one action, on
            # this zone, for the endpoint name's A records only.
            handler.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="MoveEndpoint",
                    actions=["route53:ChangeResourceRecordSets"],
                    resources=[
                        Stack.of(self).format_arn(
                            service="route53",
                            region="",
                            account="",
                            resource="hostedzone",
                            resource_name=config.hosted_zone_id,
                        )
                    ],
                    conditions={
                        "ForAllValues:StringEquals": {
                            "route53:ChangeResourceRecordSetsNormalizedRecordNames": [
                                config.endpoint_name.rstrip(".").lower()
                            ],
                            "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
                            "route53:ChangeResourceRecordSetsActions": ["UPSERT", "DELETE"],
                        }
                    },
                )
            )
        return handler
