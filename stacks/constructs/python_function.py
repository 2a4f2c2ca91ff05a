"""The one way spothub defines a Lambda function: runtime, architecture, observability, failure path.

Every function gets the same code asset (the `lambdas/` folder; its handler is
`<concern>.handler.lambda_handler`), the shared dependency layer, Powertools settings, X-Ray, a
log group with a retention, and a dead-letter queue for asynchronous invocations that keep failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from spothub import __version__
from spothub_core.contracts import METRICS_NAMESPACE
from spothub_core.timings import ASYNC_INVOCATION_MAX_AGE_SECONDS
from stacks.paths import LAMBDAS_DIR

RUNTIME = lambda_.Runtime.PYTHON_3_14
# Graviton: about a fifth cheaper per GB-second than x86 for the same work.
ARCHITECTURE = lambda_.Architecture.ARM_64
CODE_EXCLUDES = ["**/__pycache__", "**/*.pyc", "requirements.txt", ".pytest_cache"]


@dataclass(frozen=True)
class FunctionNetwork:
    """A function in a VPC: its subnets and security groups. The role gets no managed policy for it (the function's
    role is given; aws-cdk-lib adds AWSLambdaVPCAccessExecutionRole only to a role it creates): whoever places a
    function in a VPC grants the network interface actions Lambda needs."""

    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_groups: tuple[ec2.ISecurityGroup, ...]
    # Lambda gives a function's interfaces no public address: in a public subnet it reaches only the VPC.
    public_subnets: bool = False

    def function_props(self) -> dict[str, Any]:
        return {
            "vpc": self.vpc,
            "vpc_subnets": self.subnets,
            "security_groups": list(self.security_groups),
            "allow_public_subnet": self.public_subnets,
        }


class SpothubFunction(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        concern: str,
        description: str,
        prefix: str,
        layer: lambda_.ILayerVersion,
        dead_letter_queue: sqs.IQueue,
        log_retention: logs.RetentionDays,
        environment: dict[str, str] | None = None,
        memory_size: int = 256,
        timeout_seconds: int = 30,
        function_name: str | None = None,
        network: FunctionNetwork | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        if not (LAMBDAS_DIR / concern / "handler.py").is_file():
            raise ValueError(f"no handler for concern '{concern}': expected lambdas/{concern}/handler.py")
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        # Its own role with write access to its own log group, instead of AWSLambdaBasicExecutionRole
        # (which may write to every log group in the account).
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"spothub {concern} function",
        )
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=f"{concern}.handler.lambda_handler",
            code=lambda_.Code.from_asset(str(LAMBDAS_DIR), exclude=CODE_EXCLUDES),
            role=self.role,
            layers=[layer],
            memory_size=memory_size,
            timeout=Duration.seconds(timeout_seconds),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            dead_letter_queue=dead_letter_queue,
            function_name=function_name,
            **(network.function_props() if network else {}),
            retry_attempts=2,
            max_event_age=Duration.seconds(ASYNC_INVOCATION_MAX_AGE_SECONDS),
            environment={
                "SPOTHUB_PREFIX": prefix,
                "SPOTHUB_VERSION": __version__,
                "POWERTOOLS_SERVICE_NAME": f"{prefix}-{concern.replace('_', '-')}",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **(environment or {}),
            },
        )


@dataclass(frozen=True)
class FunctionDefaults:
    """What every function of one stack shares (prefix, layer, dead-letter queue, log retention, the stack's
    environment), so a construct builds its function in one line with `function(...)`."""

    prefix: str
    layer: lambda_.ILayerVersion
    dead_letter_queue: sqs.IQueue
    log_retention: logs.RetentionDays
    environment: Mapping[str, str] = field(default_factory=dict)

    def function(
        self,
        scope: Construct,
        construct_id: str,
        *,
        concern: str,
        description: str,
        environment: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> SpothubFunction:
        return SpothubFunction(
            scope,
            construct_id,
            concern=concern,
            description=description,
            prefix=self.prefix,
            layer=self.layer,
            dead_letter_queue=self.dead_letter_queue,
            log_retention=self.log_retention,
            environment={**self.environment, **(environment or {})},
            **kwargs,
        )
