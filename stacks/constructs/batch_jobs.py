"""Batch jobs in the hub: the jobs table (the work queue), the jobs API (POST/GET /jobs, GET/DELETE
/jobs/{job_id}), the worker API the agents in batch mode call (/workers/...), the listing state machine that
partitions an S3 prefix into batches, the supervisor (timeouts, scaling, completion, notification) on a
one-minute schedule and on the worker regions' fleet reports, and the jobs topic that says a job ended.

Every grant is named: DynamoDB actions on the table and the indexes each function queries, S3 on the
deployment's batch buckets only (none named, none granted), the listing state machine and its executions,
the jobs topic, the hub bus, the spot finder, and SES on jobsSesSender's identity only when it is set.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub_core.consumers import Bus, Target
from spothub_core.models.batch_api import JobRequest
from spothub_core.models.batch_records import BY_STATUS_PROJECTION, JOBS_INDEX_KEYS, JobsIndex
from spothub_core.models.batch_workers import BatchAck, BatchStatusReport, WorkerRegistration
from spothub_core.timings import (
    BATCH_LISTING_FUNCTION_TIMEOUT_SECONDS,
    BATCH_SUPERVISOR_SECONDS,
    MULTI_CALL_FUNCTION_TIMEOUT_SECONDS,
)
from stacks.config import SpothubConfig
from stacks.constructs.alerts_topic import KMS_READ_WRITE
from stacks.constructs.consumer_rules import consuming_rules, entries
from stacks.constructs.python_function import FunctionDefaults, SpothubFunction
from stacks.constructs.rest_api import SpothubRestApi
from stacks.constructs.state_machine import SpothubStateMachine
from stacks.nag import STATE_MACHINE_REASON, acknowledge, invoke_versions_rule, nag_resource

# What the by_status index carries besides its keys: what a claim, the timeouts and the counts read.
# The supervisor waits on the spot finder (RequestResponse, up to its own timeout) and then does its own calls.
SUPERVISOR_TIMEOUT_SECONDS = 2 * MULTI_CALL_FUNCTION_TIMEOUT_SECONDS
# The jobs table's actions, by what a function does with it.
READ = ("dynamodb:GetItem", "dynamodb:Query")
WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem")


class BatchJobs(Construct):
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
        spot_finder: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self._stack = stack
        self._key = key
        self.table = self._jobs_table(config.prefix, key)
        self.topic = self._jobs_topic(config, key)
        listing_name = f"{config.prefix}-batch-listing"
        listing_arn = stack.format_arn(
            service="states",
            resource="stateMachine",
            resource_name=listing_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        listing_executions = listing_arn.replace(":stateMachine:", ":execution:") + ":*"
        jobs_table = {"SPOTHUB_JOBS_TABLE": self.table.table_name}

        self.jobs_api = functions.function(
            self,
            "JobsApi",
            concern="jobs_api",
            description="POST/GET /jobs, GET/DELETE /jobs/{job_id}: submit, list, view and cancel batch jobs",
            environment={
                **jobs_table,
                "SPOTHUB_BATCH_INPUT_BUCKETS": ",".join(config.batch_input_buckets),
                "SPOTHUB_BATCH_OUTPUT_BUCKETS": ",".join(config.batch_output_buckets),
                "SPOTHUB_LISTING_STATE_MACHINE_ARN": listing_arn,
                "SPOTHUB_JOBS_TOPIC_ARN": self.topic.topic_arn,
            },
        )
        self.workers_api = functions.function(
            self,
            "WorkersApi",
            concern="batch_workers_api",
            description="POST /workers/register, GET /workers/{id}/assignment, POST /workers/{id}/ack and /status",
            environment=jobs_table,
        )
        self.listing = functions.function(
            self,
            "Listing",
            concern="batch_listing",
            description="List a job's S3 prefix page by page into batches (the listing state machine's tasks)",
            environment=jobs_table,
            timeout_seconds=BATCH_LISTING_FUNCTION_TIMEOUT_SECONDS,
        )
        supervisor_environment = {
            **jobs_table,
            "SPOTHUB_HUB_BUS": bus.event_bus_name,
            "SPOTHUB_JOBS_TOPIC_ARN": self.topic.topic_arn,
            "SPOTHUB_SPOT_FINDER_FUNCTION": spot_finder.function_name,
            "SPOTHUB_BATCH_INSTANCE_TYPES": ",".join(config.batch_worker_instance_types),
            # What each region's job group may hold (the fleet function's SPOTHUB_BATCH_MAX_WORKERS).
            "SPOTHUB_BATCH_MAX_WORKERS": str(config.batch_max_workers_per_region),
        }
        if config.jobs_ses_sender:
            supervisor_environment["SPOTHUB_SES_SENDER"] = config.jobs_ses_sender
        self.supervisor = functions.function(
            self,
            "Supervisor",
            concern="batch_supervisor",
            description="Batch jobs: timeouts, workers per region, completion, notification, release",
            environment=supervisor_environment,
            timeout_seconds=SUPERVISOR_TIMEOUT_SECONDS,
        )

        self.listing_state_machine = SpothubStateMachine(
            self,
            "ListingStateMachine",
            name="batch_listing",
            state_machine_name=listing_name,
            substitutions={
                "BatchListingArn": self.listing.function.function_arn,
                "BatchSupervisorArn": self.supervisor.function.function_arn,
            },
            numbers={},
            log_retention=functions.log_retention,
        ).state_machine
        for function in (self.listing.function, self.supervisor.function):
            function.grant_invoke(self.listing_state_machine)
            acknowledge(
                self.listing_state_machine,
                invoke_versions_rule(function),
                "grant_invoke adds <function ARN>:* so the listing state machine may invoke this one function's "
                "versions.",
            )
        acknowledge(self.listing_state_machine, "AwsSolutions-IAM5[Resource::*]", STATE_MACHINE_REASON)

        self._grant_jobs_api(config, listing_arn, listing_executions)
        self._grant_workers_api()
        self._grant_listing(config)
        self._grant_supervisor(config, bus, spot_finder)
        self._routes(api)
        self._triggers(bus, failed_invocations)

    def _jobs_table(self, prefix: str, key: kms.IKey) -> dynamodb.Table:
        """Jobs, batches, workers, fleets and errors (spothub_core/models/batch_records.py): encrypted,
        recoverable and kept like the state table; both indexes are sparse."""
        table = dynamodb.Table(
            self,
            "Table",
            table_name=f"{prefix}-jobs",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            time_to_live_attribute="expires_at",
            # A job's record outlives `cdk destroy` like the state table; delete it by hand when you mean it.
            removal_policy=RemovalPolicy.RETAIN,
        )
        status_key, status_sort = JOBS_INDEX_KEYS[JobsIndex.BY_STATUS]
        list_key, created_key = JOBS_INDEX_KEYS[JobsIndex.BY_TIME]
        # "Next pending batch" of a job (claims), a job's batches by status (counts, timeouts), unsettled jobs.
        table.add_global_secondary_index(
            index_name=JobsIndex.BY_STATUS,
            partition_key=dynamodb.Attribute(name=status_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=status_sort, type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.INCLUDE,
            non_key_attributes=list(BY_STATUS_PROJECTION),
        )
        # GET /jobs, newest first.
        table.add_global_secondary_index(
            index_name=JobsIndex.BY_TIME,
            partition_key=dynamodb.Attribute(name=list_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=created_key, type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        return table

    def _jobs_topic(self, config: SpothubConfig, key: kms.IKey) -> sns.Topic:
        """Where the end of every job is published (message attribute job_id); a job's notify_email is
        subscribed at submit with a filter on its job id, jobsNotifyEmail to every job. The alerts key
        encrypts it: no second key to pay for."""
        topic = sns.Topic(self, "Topic", display_name=f"{config.prefix} jobs", master_key=key, enforce_ssl=True)
        if config.jobs_notify_email:
            topic.add_subscription(subscriptions.EmailSubscription(config.jobs_notify_email))
        return topic

    def _index_arn(self, index: str) -> str:
        return f"{self.table.table_arn}/index/{index}"

    def _grant_table(
        self, function: SpothubFunction, actions: tuple[str, ...], *, indexes: tuple[str, ...] = ()
    ) -> None:
        """Named actions on the table, Query on the named indexes, and the key that encrypts them."""
        grantee = function.function
        grantee.add_to_role_policy(
            iam.PolicyStatement(sid="JobsTable", actions=list(actions), resources=[self.table.table_arn])
        )
        if indexes:
            grantee.add_to_role_policy(
                iam.PolicyStatement(
                    sid="JobsTableIndexes",
                    actions=["dynamodb:Query"],
                    resources=[self._index_arn(index) for index in indexes],
                )
            )
        self._key.grant(grantee, *KMS_READ_WRITE)

    def _bucket_arn(self, bucket: str) -> str:
        return self._stack.format_arn(service="s3", region="", account="", resource=bucket)

    def _objects_arn(self, bucket: str) -> str:
        return self._stack.format_arn(service="s3", region="", account="", resource=bucket, resource_name="*")

    def _list_input_buckets(self, function: SpothubFunction, buckets: list[str]) -> None:
        if not buckets:
            return
        function.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="ListInputBuckets",
                actions=["s3:ListBucket"],
                resources=[self._bucket_arn(bucket) for bucket in buckets],
            )
        )

    def _grant_jobs_api(self, config: SpothubConfig, listing_arn: str, listing_executions: str) -> None:
        function = self.jobs_api
        # Create a job, read it, its batch counts (by_status), its page of the job list (by_time); cancel.
        self._grant_table(function, (*READ, *WRITE), indexes=(JobsIndex.BY_STATUS, JobsIndex.BY_TIME))
        # A config file (config_uri) lives in an input bucket; listing lets a missing one be told from a denied one.
        self._list_input_buckets(function, config.batch_input_buckets)
        if config.batch_input_buckets:
            function.function.add_to_role_policy(
                iam.PolicyStatement(
                    sid="ReadConfigFiles",
                    actions=["s3:GetObject"],
                    resources=[self._objects_arn(bucket) for bucket in config.batch_input_buckets],
                )
            )
            for bucket in config.batch_input_buckets:
                acknowledge(
                    function,
                    f"AwsSolutions-IAM5[Resource::{nag_resource(self._stack, self._objects_arn(bucket))}]",
                    "Config files (config_uri) are objects of the deployment's batch input buckets "
                    "(batchInputBuckets), under keys the caller names.",
                )
        function.function.add_to_role_policy(
            iam.PolicyStatement(sid="StartListing", actions=["states:StartExecution"], resources=[listing_arn])
        )
        function.function.add_to_role_policy(
            iam.PolicyStatement(sid="StopListing", actions=["states:StopExecution"], resources=[listing_executions])
        )
        acknowledge(
            function,
            f"AwsSolutions-IAM5[Resource::{nag_resource(self._stack, listing_executions)}]",
            "StopExecution (cancel) on the listing state machine's executions only; each is named by its job id.",
        )
        # A job's notify_email: subscribed with a filter on its job id, or its id added to the address's existing
        # subscription's filter (SNS authorizes the subscription's attributes on its topic).
        function.function.add_to_role_policy(
            iam.PolicyStatement(
                sid="SubscribeNotifyEmail",
                actions=[
                    "sns:Subscribe",
                    "sns:ListSubscriptionsByTopic",
                    "sns:GetSubscriptionAttributes",
                    "sns:SetSubscriptionAttributes",
                ],
                resources=[self.topic.topic_arn],
            )
        )

    def _grant_workers_api(self) -> None:
        # Register, read a worker with its job (BatchGetItem), claim (a Query on by_status, then a conditional
        # update), ack, status, errors.
        self._grant_table(self.workers_api, (*READ, *WRITE, "dynamodb:BatchGetItem"), indexes=(JobsIndex.BY_STATUS,))

    def _grant_listing(self, config: SpothubConfig) -> None:
        # Read the job, write batches 25 at a time, count what was listed, move the job on.
        # BatchGetItem: a retried listing task reads which of its batches exist before writing them again.
        self._grant_table(
            self.listing,
            ("dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"),
        )
        self._list_input_buckets(self.listing, config.batch_input_buckets)

    def _grant_supervisor(self, config: SpothubConfig, bus: events.IEventBus, spot_finder: lambda_.IFunction) -> None:
        function = self.supervisor.function
        # Unsettled jobs (by_status, then BatchGetItem) and a job's batches by status; its workers, fleet, errors.
        self._grant_table(self.supervisor, (*READ, *WRITE, "dynamodb:BatchGetItem"), indexes=(JobsIndex.BY_STATUS,))
        statements = [
            # Fleet requests to the worker regions, and "Spothub Job Finished" for automation.
            iam.PolicyStatement(sid="PutOnHubBus", actions=["events:PutEvents"], resources=[bus.event_bus_arn]),
            # The topic's key: KMS_READ_WRITE, granted with the table.
            iam.PolicyStatement(sid="NotifyJobEnd", actions=["sns:Publish"], resources=[self.topic.topic_arn]),
            # The unqualified function only (RequestResponse, no version or alias).
            iam.PolicyStatement(
                sid="RankRegions", actions=["lambda:InvokeFunction"], resources=[spot_finder.function_arn]
            ),
        ]
        if config.jobs_ses_sender:
            # Sending as the sender is authorized on the identity SES verified: the address, or its domain.
            statements.append(
                iam.PolicyStatement(
                    sid="MailJobEnd",
                    actions=["ses:SendEmail"],
                    resources=[
                        self._stack.format_arn(service="ses", resource="identity", resource_name=identity)
                        for identity in config.jobs_ses_identities
                    ],
                    conditions={"StringEquals": {"ses:FromAddress": config.jobs_ses_sender}},
                )
            )
        for statement in statements:
            function.add_to_role_policy(statement)

    def _routes(self, api: SpothubRestApi) -> None:
        jobs = self.jobs_api.function
        api.add_route("POST", "/jobs", jobs, request_model=JobRequest)
        api.add_route("GET", "/jobs", jobs)
        api.add_route("GET", "/jobs/{job_id}", jobs)
        api.add_route("DELETE", "/jobs/{job_id}", jobs)
        workers = self.workers_api.function
        api.add_route("POST", "/workers/register", workers, request_model=WorkerRegistration)
        api.add_route("GET", "/workers/{worker_id}/assignment", workers)
        api.add_route("POST", "/workers/{worker_id}/ack", workers, request_model=BatchAck)
        api.add_route("POST", "/workers/{worker_id}/status", workers, request_model=BatchStatusReport)

    def _triggers(self, bus: events.IEventBus, failed_invocations: sqs.IQueue) -> None:
        """The supervisor's schedule, and what it consumes from the hub bus (spothub_core.consumers)."""
        # A missed minute is caught up by the next one: a delivery older than a tick is not worth retrying.
        schedule = events.Rule(
            self,
            "SuperviseSchedule",
            description="Batch jobs: timeouts, scaling and completion, once a minute",
            schedule=events.Schedule.rate(Duration.seconds(BATCH_SUPERVISOR_SECONDS)),
        )
        schedule.add_target(
            targets.LambdaFunction(
                self.supervisor.function,
                event=events.RuleTargetInput.from_object({"action": "supervise"}),
                dead_letter_queue=failed_invocations,
                retry_attempts=2,
                max_event_age=Duration.seconds(BATCH_SUPERVISOR_SECONDS),
            )
        )
        consuming_rules(
            self,
            "ToBatchSupervisor",
            bus=bus,
            consumed=entries(bus=Bus.HUB, target=Target.BATCH_SUPERVISOR),
            function=self.supervisor.function,
            dead_letter_queue=failed_invocations,
            description="What the batch supervisor consumes from {source}",
        )
