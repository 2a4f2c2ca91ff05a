"""The search instance in the hub (only with searchVolumeId): the search table (the volume's one slot and the launch
records), the search API (POST /search/query, GET /search/status, POST /search/scale-up and /search/scale-down,
DELETE /search/instances/{instance_id}), the launcher state machine and its tasks, and the monitor (health,
idleness, maximum runtime, reconciliation) on a schedule and on the search region's forwarded spot interruption
warnings.

The instance itself lives in the search region (stacks/constructs/search_host.py): the hub's functions reach it
across regions by name, never by a cross-stack reference (the router function, the host parameter, the launch
template's region, the instance role), and every grant there is pinned to the search region and to what carries
the search instance's tags.
"""

from __future__ import annotations

import math

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core import timings
from spothub_core.consumers import Bus, Target
from spothub_core.contracts import MANAGED_BY, SEARCH_SERVICE, SearchTag, search_router_name
from spothub_core.models.search_api import SearchQuery
from spothub_core.timings import MULTI_CALL_FUNCTION_TIMEOUT_SECONDS
from stacks.config import SpothubConfig
from stacks.constructs.alerts_topic import KMS_READ_WRITE
from stacks.constructs.consumer_rules import consuming_rules, entries
from stacks.constructs.python_function import FunctionDefaults, SpothubFunction
from stacks.constructs.rest_api import SpothubRestApi
from stacks.constructs.state_machine import SpothubStateMachine, placeholders
from stacks.nag import STATE_MACHINE_REASON, acknowledge, invoke_versions_rule, nag_resource

STATE_MACHINE = "search_launcher"
# A query may wait for readiness (SEARCH_WAIT_BUDGET_SECONDS) and then run (SEARCH_QUERY_TIMEOUT_SECONDS): the
# function outlives both, and API Gateway's integration timeout, so each request ends with the handler's answer.
SEARCH_API_TIMEOUT_SECONDS = max(
    timings.SEARCH_WAIT_BUDGET_SECONDS + timings.SEARCH_QUERY_TIMEOUT_SECONDS + 3,
    timings.API_INTEGRATION_TIMEOUT_SECONDS + 1,
)
# The search table's actions, by function (dal/search_store.py).
READ = ("dynamodb:GetItem", "dynamodb:Query")
WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem")
TABLE_ACTIONS = {
    # The slot's claim and the launch record (start_launch), the records, queries in and out, termination.
    "search_api": (*READ, *WRITE),
    # Each task reads and moves its launch record; the failure step releases the slot (an update).
    "search_tasks": (*READ, "dynamodb:UpdateItem"),
    # Health, ends and replacements (start_launch), adoption (the slot's claim and a new record).
    "search_monitor": (*READ, *WRITE),
}


def launcher_numbers(names: set[str]) -> dict[str, int]:
    """The launcher's numeric placeholders, from spothub_core.timings: `${StartPollSeconds}` (or
    `${SearchStartPollSeconds}`) is SEARCH_START_POLL_SECONDS, and so on for every SEARCH_* constant; the attach is
    polled as often as the start (unless timings names SEARCH_ATTACH_POLL_SECONDS), for SEARCH_ATTACH_WAIT_SECONDS
    in all (AttachPollAttempts)."""
    known: dict[str, int] = {}
    for constant, value in vars(timings).items():
        if not constant.startswith("SEARCH_") or not isinstance(value, int):
            continue
        words = "".join(word.title() for word in constant.split("_"))
        known[words] = value
        known[words.removeprefix("Search")] = value
    known.setdefault("AttachPollSeconds", timings.SEARCH_START_POLL_SECONDS)
    known["AttachPollAttempts"] = math.ceil(timings.SEARCH_ATTACH_WAIT_SECONDS / known["AttachPollSeconds"])
    return {name: known[name] for name in names if name in known}


class SearchService(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        functions: FunctionDefaults,
        key: kms.IKey,
        bus: events.IEventBus,
        failed_invocations: sqs.IQueue,
        api: SpothubRestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        if config.search_volume_id is None:
            raise ValueError("SearchService needs searchVolumeId")
        self._volume_id = config.search_volume_id
        stack = Stack.of(self)
        self._stack = stack
        self._config = config
        self._key = key
        region = config.search_region
        self.table = self._search_table(config, key)

        # Built from names, not references: the launcher's ARN in its own functions' environment would be a cycle
        # (the machine invokes search_tasks), and the router and the host parameter are in the search region.
        self.launcher_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=config.search_launcher_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.router_arn = stack.format_arn(
            service="lambda",
            region=region,
            resource="function",
            resource_name=search_router_name(config.prefix),
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.host_parameter_arn = stack.format_arn(
            service="ssm",
            region=region,
            resource="parameter",
            resource_name=config.search_host_parameter.lstrip("/"),
        )
        environment = {
            "SPOTHUB_SEARCH_TABLE": self.table.table_name,
            "SPOTHUB_SEARCH_REGION": region,
            "SPOTHUB_SEARCH_VOLUME_ID": config.search_volume_id,
            "SPOTHUB_SEARCH_LAUNCHER_ARN": self.launcher_arn,
            "SPOTHUB_SEARCH_ROUTER_ARN": self.router_arn,
            "SPOTHUB_SEARCH_HOST_PARAMETER": config.search_host_parameter,
            "SPOTHUB_SEARCH_PORT": str(config.search_port),
            "SPOTHUB_SEARCH_HEALTH_PATH": config.search_health_path,
            "SPOTHUB_SEARCH_INSTANCE_TYPE": config.search_instance_type,
            "SPOTHUB_SEARCH_USE_SPOT": str(config.search_use_spot).lower(),
            "SPOTHUB_SEARCH_SPOT_MAX_PRICE": config.search_spot_max_price_text,
            "SPOTHUB_SEARCH_IDLE_TIMEOUT": str(config.search_idle_timeout),
            "SPOTHUB_SEARCH_MAX_RUNTIME": str(config.search_max_runtime),
            "SPOTHUB_SEARCH_HEALTH_INTERVAL": str(config.search_health_interval),
        }

        self.search_api = functions.function(
            self,
            "Api",
            concern="search_api",
            description="POST /search/query, GET /search/status, POST /search/scale-up|scale-down, "
            "DELETE /search/instances/{instance_id}",
            environment=environment,
            timeout_seconds=SEARCH_API_TIMEOUT_SECONDS,
        )
        self.tasks = functions.function(
            self,
            "Tasks",
            concern="search_tasks",
            description="The search launcher's tasks: place, launch, attach, check, ready, fail",
            environment=environment,
            timeout_seconds=MULTI_CALL_FUNCTION_TIMEOUT_SECONDS,
        )
        self.monitor = functions.function(
            self,
            "Monitor",
            concern="search_monitor",
            description="The search instance's health, idleness, maximum runtime, interruptions and reconciliation",
            environment=environment,
            timeout_seconds=MULTI_CALL_FUNCTION_TIMEOUT_SECONDS,
        )

        self.launcher = self._launcher(config, functions)
        for concern, function in self.functions.items():
            self._grant_table(function, TABLE_ACTIONS[concern])
            self._grant_router(function)
            self._grant_terminate(function)
        for function in (self.search_api, self.monitor):
            function.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="StartSearchLauncher", actions=["states:StartExecution"], resources=[self.launcher_arn]
                )
            )
            # Whether an instance id is the search instance's (DELETE), and the reconciliation's tagged instances.
            function.function.add_to_role_policy(
                iam.PolicyStatement(sid="DescribeSearchInstances", actions=["ec2:DescribeInstances"], resources=["*"])
            )
            acknowledge(
                function,
                "AwsSolutions-IAM5[Resource::*]",
                "ec2:DescribeInstances has no resource-level permissions; X-Ray.",
            )
        self._grant_tasks()
        self._routes(api)
        self._triggers(config, bus, failed_invocations)

    @property
    def functions(self) -> dict[str, SpothubFunction]:
        return {"search_api": self.search_api, "search_tasks": self.tasks, "search_monitor": self.monitor}

    def _search_table(self, config: SpothubConfig, key: kms.IKey) -> dynamodb.Table:
        """The volume's slot and the launch records (spothub_core/models/search_records.py): encrypted, recoverable
        and kept like the state table; ended launches expire."""
        return dynamodb.Table(
            self,
            "Table",
            table_name=config.search_table_name,
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            time_to_live_attribute="expires_at",
            # The slot and its records outlive `cdk destroy` like the state table; delete it by hand when you mean it.
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _launcher(self, config: SpothubConfig, functions: FunctionDefaults) -> SpothubStateMachine:
        names = placeholders(STATE_MACHINE)
        machine = SpothubStateMachine(
            self,
            "Launcher",
            name=STATE_MACHINE,
            state_machine_name=config.search_launcher_name,
            substitutions={"SearchTasksArn": self.tasks.function.function_arn},
            numbers=launcher_numbers(names - {"SearchTasksArn"}),
            log_retention=functions.log_retention,
        )
        state_machine = machine.state_machine
        self.tasks.function.grant_invoke(state_machine)
        acknowledge(
            state_machine,
            invoke_versions_rule(self.tasks.function),
            "grant_invoke adds <function ARN>:* so the search launcher may invoke this one function's versions.",
        )
        acknowledge(state_machine, "AwsSolutions-IAM5[Resource::*]", STATE_MACHINE_REASON)
        return machine

    # --- grants ---------------------------------------------------------------------------------------------

    def _region_arn(self, resource: str, name: str) -> str:
        return self._stack.format_arn(
            service="ec2", region=self._config.search_region, resource=resource, resource_name=name
        )

    def _acknowledge_wildcard(self, function: SpothubFunction, arn: str, reason: str) -> None:
        acknowledge(function, f"AwsSolutions-IAM5[Resource::{nag_resource(self._stack, arn)}]", reason)

    def _grant_table(self, function: SpothubFunction, actions: tuple[str, ...]) -> None:
        """Named actions on the search table (no index: the records are one partition), and its key."""
        function.function.add_to_role_policy(
            iam.PolicyStatement(sid="SearchTable", actions=list(actions), resources=[self.table.table_arn])
        )
        self._key.grant(function.function, *KMS_READ_WRITE)

    def _grant_router(self, function: SpothubFunction) -> None:
        # The unqualified router in the search region (RequestResponse, no version or alias).
        function.function.add_to_role_policy(
            iam.PolicyStatement(sid="CallSearchRouter", actions=["lambda:InvokeFunction"], resources=[self.router_arn])
        )

    def _search_instance_tags(self) -> dict[str, str]:
        return {
            f"aws:ResourceTag/{SearchTag.SERVICE}": SEARCH_SERVICE,
            f"aws:ResourceTag/{SearchTag.MANAGED_BY}": MANAGED_BY,
        }

    def _grant_terminate(self, function: SpothubFunction) -> None:
        """Scale-down, DELETE, the monitor's retirements and a failed launch terminate the search instance: only an
        instance of the search region that carries its tags."""
        instances = self._region_arn("instance", "*")
        function.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="TerminateSearchInstance",
                actions=["ec2:TerminateInstances"],
                resources=[instances],
                conditions={"StringEquals": self._search_instance_tags()},
            )
        )
        self._acknowledge_wildcard(
            function,
            instances,
            "The search instance's id is known only once launched; TerminateInstances only on instances of the "
            "search region tagged Service=semantic-search and ManagedBy=spothub.",
        )

    def _grant_tasks(self) -> None:
        """The launcher's tasks: read where to launch (the host parameter), launch from the search launch template
        with the search instance role, tag at launch, attach the volume, and read the volume, subnets and
        instance."""
        config = self._config
        function = self.tasks
        stack = self._stack
        # The volume's zone and state, the subnets of that zone, the instance's state and addresses.
        function.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="DescribeSearchPlacement",
                actions=["ec2:DescribeVolumes", "ec2:DescribeSubnets", "ec2:DescribeInstances"],
                resources=["*"],
            )
        )
        # The template's id is known only in the search region: any launch template of that region, and then only
        # with the search instance role (PassRole below) and tags only at launch.
        templates = self._region_arn("launch-template", "*")
        instances = self._region_arn("instance", "*")
        volumes = self._region_arn("volume", "*")
        volume = self._region_arn("volume", self._volume_id)
        role_arn = stack.format_arn(
            service="iam", region="", resource="role", resource_name=config.search_instance_role_name
        )
        statements = [
            iam.PolicyStatement(
                sid="ReadSearchHost", actions=["ssm:GetParameter"], resources=[self.host_parameter_arn]
            ),
            iam.PolicyStatement(
                sid="LaunchSearchInstance",
                actions=["ec2:RunInstances"],
                resources=["*"],
                conditions={"ArnLike": {"ec2:LaunchTemplate": templates}},
            ),
            iam.PolicyStatement(
                sid="TagSearchInstanceAtLaunch",
                actions=["ec2:CreateTags"],
                resources=[instances, volumes],
                conditions={"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            ),
            iam.PolicyStatement(
                sid="PassSearchInstanceRole",
                actions=["iam:PassRole"],
                resources=[role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            ),
            # AttachVolume is authorized on the volume and on the instance: the one volume, and only an instance
            # tagged as the search instance.
            iam.PolicyStatement(sid="AttachSearchVolume", actions=["ec2:AttachVolume"], resources=[volume]),
            iam.PolicyStatement(
                sid="AttachToSearchInstance",
                actions=["ec2:AttachVolume"],
                resources=[instances],
                conditions={"StringEquals": self._search_instance_tags()},
            ),
        ]
        if config.search_use_spot:
            spot_requests = self._region_arn("spot-instances-request", "*")
            # A spot launch also creates its one-time request; the launch template condition covers it as well,
            # named here so a spot launch does not depend on how the request is authorized.
            statements.append(
                iam.PolicyStatement(
                    sid="LaunchSearchSpotRequest", actions=["ec2:RunInstances"], resources=[spot_requests]
                )
            )
            self._acknowledge_wildcard(
                function,
                spot_requests,
                "A spot launch creates a one-time spot request whose id is unknown ahead; the instance itself is "
                "launched only from a launch template of the search region.",
            )
        for statement in statements:
            function.function.add_to_role_policy(statement)
        self._acknowledge_wildcard(
            function,
            volumes,
            "Tags at launch on the search instance's root volume, unknown ahead; only as part of RunInstances "
            "(ec2:CreateAction).",
        )
        acknowledge(
            function,
            "AwsSolutions-IAM5[Resource::*]",
            "Describe calls (volumes, subnets, instances) have no resource-level permissions; ec2:RunInstances only "
            "from a launch template of the search region (ec2:LaunchTemplate), with the search instance role; X-Ray.",
        )

    # --- routes and triggers ------------------------------------------------------------------------------

    def _routes(self, api: SpothubRestApi) -> None:
        function = self.search_api.function
        api.add_route("POST", "/search/query", function, request_model=SearchQuery)
        api.add_route("GET", "/search/status", function)
        api.add_route("POST", "/search/scale-up", function)
        api.add_route("POST", "/search/scale-down", function)
        api.add_route("DELETE", "/search/instances/{instance_id}", function)

    def _triggers(self, config: SpothubConfig, bus: events.IEventBus, failed_invocations: sqs.IQueue) -> None:
        """The monitor's schedule, and what it consumes from the hub bus (spothub_core.consumers): the spot
        interruption warnings the search region forwards."""
        interval = Duration.seconds(config.search_health_interval)
        schedule = events.Rule(
            self,
            "SweepSchedule",
            description="The search instance: health, idleness, maximum runtime and reconciliation",
            schedule=events.Schedule.rate(interval),
        )
        # A missed sweep is caught up by the next one: a delivery older than a period is not worth retrying.
        schedule.add_target(
            targets.LambdaFunction(
                self.monitor.function,
                event=events.RuleTargetInput.from_object({"action": "sweep"}),
                dead_letter_queue=failed_invocations,
                retry_attempts=2,
                max_event_age=interval,
            )
        )
        consuming_rules(
            self,
            "ToSearchMonitor",
            bus=bus,
            consumed=entries(bus=Bus.HUB, target=Target.SEARCH_MONITOR),
            function=self.monitor.function,
            dead_letter_queue=failed_invocations,
            description="What the search monitor consumes from {source}",
        )
