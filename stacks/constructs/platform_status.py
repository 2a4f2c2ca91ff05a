"""GET /status: the deployment's shape and whether the state store answers; GET /regions: the spot finder's
ranking now, asked of the finder function (which only reads); GET /events: the recent timeline, read from the
state table's launch, teardown, instance, remediation and exclusion records."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.constructs.python_function import FunctionDefaults
from stacks.constructs.rest_api import SpothubRestApi


class PlatformStatus(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: FunctionDefaults,
        state_table: dynamodb.ITable,
        key: kms.IKey,
        api: SpothubRestApi,
    ) -> None:
        super().__init__(scope, construct_id)
        self._api = api
        self.spothub_function = functions.function(
            self,
            "Function",
            concern="platform_status",
            description="GET /status: deployment shape, state store health; /regions: the ranking; /events: timeline",
        )
        function = self.spothub_function.function
        # Reads only: the status probe's one key, and the timeline's partitions (queries, never a scan).
        state_table.grant(function, "dynamodb:GetItem", "dynamodb:Query")
        key.grant_decrypt(function)
        api.add_route("GET", "/status", function)
        api.add_route("GET", "/events", function)

    def serve_regions(self, spot_finder: lambda_.IFunction) -> None:
        """GET /regions, answered by invoking `spot_finder` (built after this construct, in SpotProvisioning)."""
        function = self.spothub_function.function
        function.add_environment("SPOTHUB_SPOT_FINDER_FUNCTION", spot_finder.function_name)
        # The unqualified finder only (RequestResponse, no version or alias); the finder reads, never writes.
        function.add_to_role_policy(
            iam.PolicyStatement(
                sid="RankRegions", actions=["lambda:InvokeFunction"], resources=[spot_finder.function_arn]
            )
        )
        self._api.add_route("GET", "/regions", function)
