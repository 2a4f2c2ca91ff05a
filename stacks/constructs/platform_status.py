"""GET /status: the deployment's shape and whether the state store answers."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
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
        self.spothub_function = functions.function(
            self,
            "Function",
            concern="platform_status",
            description="GET /status: deployment shape and state store health",
        )
        function = self.spothub_function.function
        # GetItem only: the status probe reads one key, it never scans or writes.
        state_table.grant(function, "dynamodb:GetItem")
        key.grant_decrypt(function)
        api.add_route("GET", "/status", function)
