"""The agents' routes: each instance's agent registers and sends heartbeats to the hub."""

from __future__ import annotations

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from spothub_core.models.agent import Heartbeat, Registration
from stacks.constructs.alerts_topic import KMS_READ_WRITE
from stacks.constructs.python_function import FunctionDefaults
from stacks.constructs.rest_api import SpothubRestApi


class AgentApi(Construct):
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
            concern="agent_api",
            description="POST /agents/{instance_id}/register and /heartbeat: the instances' agents check in",
        )
        function = self.spothub_function.function
        state_table.grant(function, "dynamodb:UpdateItem")
        key.grant(function, *KMS_READ_WRITE)
        api.add_route("POST", "/agents/{instance_id}/register", function, request_model=Registration)
        api.add_route("POST", "/agents/{instance_id}/heartbeat", function, request_model=Heartbeat)
