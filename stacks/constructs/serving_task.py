"""The serving replica's ECS task definition: an OpenAI-compatible model server on servingGpus GPUs.

Host networking (one replica per instance, no port mapping layer), weights cached on the instance's
EFS mount so a replacement in the same region loads them without downloading, and a container
health check that ECS reports as the task's health: the launch waits for HEALTHY.

Its size fits what the ECS agent registers on every configured instance type (checked by
tests/infrastructure/test_serving_task.py against spothub.sandbox.ecs_placement's rule): a 16 GiB
xlarge registers less than 16 GiB, so a 16 GiB reservation is never placed.

Host networking shares the instance's network namespace: the IMDS hop limit of 1 does not keep this
container from the instance role's credentials. So the task has its own role (no permissions: the
model server calls no AWS API), delivered with ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST, and runs as its
own unprivileged user, SERVING_UID, whose traffic to IMDS the instance drops (gpu_capacity.py).

Credentials (the model API key, servingSecrets such as a Hugging Face token) reach the container as ECS
container secrets: the task definition holds only the secrets' names, the ECS agent fetches the values as
the task execution role when it starts the container, and that role may read exactly those secrets.
"""

from __future__ import annotations

from typing import cast

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from spothub_core.contracts import SERVING_CONTAINER_NAME
from spothub_core.timings import (
    SERVING_HEALTH_INTERVAL_SECONDS,
    SERVING_HEALTH_TIMEOUT_SECONDS,
    SERVING_STOP_TIMEOUT_SECONDS,
)
from stacks.config import COMPLETE_SECRET_ARN_SUFFIX, SpothubConfig
from stacks.nag import acknowledge

CACHE_VOLUME = "model-cache"
# What placement reserves (soft: the server may use more when the instance has it). A 16 GiB xlarge
# registers about 14.5 GiB (sandbox rule: installed less 7.5 % and ECS_RESERVED_MEMORY); room to spare.
MEMORY_RESERVATION_MIB = 12 * 1024
CPU_UNITS = 3 * 1024  # of an xlarge's 4 vCPUs (4096 units): the rest for the ECS and spothub agents
# The container's user: not root, and not a user of the instance; the instance drops its traffic to IMDS.
SERVING_UID = 10001
# /dev/shm for a server on several GPUs: tensor-parallel workers exchange through shared memory (NCCL), and
# Docker's default is 64 MiB. Every type with several GPUs has 96 GiB of memory or more.
MULTI_GPU_SHARED_MEMORY_MIB = 16 * 1024


class ServingTask(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: SpothubConfig,
        model_cache_mount: str,
        log_group: logs.ILogGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        # Its own role, with no permission: the model server calls no AWS API, and without a task role the
        # AWS SDKs in the container would fall back to the instance's credentials.
        self.task_role = iam.Role(
            self,
            "TaskRole",
            description="spothub serving task: no AWS permissions (weights come from the model hub and EFS)",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com").with_conditions(
                {
                    "ArnLike": {"aws:SourceArn": stack.format_arn(service="ecs", resource="*")},
                    "StringEquals": {"aws:SourceAccount": stack.account},
                }
            ),
        )
        self.task_definition = ecs.Ec2TaskDefinition(
            self,
            "TaskDefinition",
            family=f"{config.prefix}-serving",
            network_mode=ecs.NetworkMode.HOST,
            task_role=self.task_role,
            volumes=[ecs.Volume(name=CACHE_VOLUME, host=ecs.Host(source_path=model_cache_mount))],
        )
        port = config.serving_port
        url = f"http://127.0.0.1:{port}{config.serving_health_path}"
        container = self.task_definition.add_container(
            "Server",
            container_name=SERVING_CONTAINER_NAME,
            image=ecs.ContainerImage.from_registry(config.serving_image),
            gpu_count=config.serving_gpus,
            memory_reservation_mib=MEMORY_RESERVATION_MIB,
            cpu=CPU_UNITS,
            user=f"{SERVING_UID}:{SERVING_UID}",
            # A setuid binary in the image cannot make it root again (and so out of the IMDS rule).
            docker_security_options=["no-new-privileges"],
            linux_parameters=ecs.LinuxParameters(self, "Linux", shared_memory_size=MULTI_GPU_SHARED_MEMORY_MIB)
            if config.serving_gpus > 1
            else None,
            command=config.serving_command_line,
            # HOME: JIT caches (Triton, FlashInfer) go to the container's own disk; the user has no home.
            environment={"HF_HOME": "/model-cache/huggingface", "HOME": "/tmp", **config.serving_env},  # noqa: S108
            logging=ecs.LogDrivers.aws_logs(stream_prefix="serving", log_group=log_group),
            health_check=ecs.HealthCheck(
                # curl where the image has it, else Python (both presets' images have it); either must get a 2xx.
                # The URL holds no quote, `$` or backtick (config.py's HEALTH_PATH_PATTERN): quoted, it is one word.
                command=[
                    "CMD-SHELL",
                    f"curl -fsS -o /dev/null '{url}' || python3 -c "
                    f"\"import urllib.request; urllib.request.urlopen('{url}', timeout=5)\" || exit 1",
                ],
                interval=Duration.seconds(SERVING_HEALTH_INTERVAL_SECONDS),
                timeout=Duration.seconds(SERVING_HEALTH_TIMEOUT_SECONDS),
                retries=3,
                start_period=Duration.seconds(config.serving_start_period),
            ),
            stop_timeout=Duration.seconds(SERVING_STOP_TIMEOUT_SECONDS),
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment holds HF_HOME and HOME (cache paths) and servingEnv, whose names config.py refuses when "
            "they look like credentials; the API key and servingSecrets are container secrets, never environment.",
        )
        self._add_secrets(config)
        container.add_mount_points(
            ecs.MountPoint(container_path="/model-cache", source_volume=CACHE_VOLUME, read_only=False)
        )

    def _add_secrets(self, config: SpothubConfig) -> None:
        """The container's secrets, by ARN, and the execution role's read of exactly those secrets."""
        stack = Stack.of(self)
        references = {
            **dict.fromkeys(config.serving_api_key_environment, config.api_key_secret_name),
            **config.serving_secrets,
        }
        cfn = cast(ecs.CfnTaskDefinition, self.task_definition.node.default_child)
        # Set on the template rather than through ecs.Secret, which would also grant secretsmanager:DescribeSecret.
        cfn.add_property_override(
            "ContainerDefinitions.0.Secrets",
            [
                {"Name": name, "ValueFrom": _secret_value_from(stack, reference)}
                for name, reference in sorted(references.items())
            ],
        )
        self.secret_arns = [_secret_arn(stack, reference) for reference in sorted(set(references.values()))]
        self.task_definition.obtain_execution_role().add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadServingSecrets", actions=["secretsmanager:GetSecretValue"], resources=self.secret_arns
            )
        )


def _secret_value_from(stack: Stack, reference: str) -> str:
    """ECS takes a Secrets Manager secret by ARN only (a bare name would be an SSM parameter's). A name becomes
    its partial ARN in the task's region, where the secret (or its replica) must exist: a worker stack cannot
    know the complete ARN, whose last six characters Secrets Manager chose."""
    if reference.startswith("arn:"):
        return reference
    return stack.format_arn(
        service="secretsmanager", resource="secret", resource_name=reference, arn_format=ArnFormat.COLON_RESOURCE_NAME
    )


def _secret_arn(stack: Stack, reference: str) -> str:
    """What IAM authorizes a read of the secret against: its complete ARN, `<partial ARN>-??????` when only the
    name is known."""
    value_from = _secret_value_from(stack, reference)
    if reference.startswith("arn:") and COMPLETE_SECRET_ARN_SUFFIX.search(reference.split(":secret:", 1)[1]):
        return value_from
    return f"{value_from}-??????"
