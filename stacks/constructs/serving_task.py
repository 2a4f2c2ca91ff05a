"""The serving replica's ECS task definition: an OpenAI-compatible model server on one GPU.

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
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from spothub_core.contracts import SERVING_CONTAINER_NAME
from spothub_core.timings import (
    SERVING_HEALTH_INTERVAL_SECONDS,
    SERVING_HEALTH_START_PERIOD_SECONDS,
    SERVING_HEALTH_TIMEOUT_SECONDS,
    SERVING_STOP_TIMEOUT_SECONDS,
)
from stacks.config import SpothubConfig
from stacks.nag import acknowledge

CACHE_VOLUME = "model-cache"
# What placement reserves (soft: the server may use more when the instance has it). A 16 GiB xlarge
# registers about 14.5 GiB (sandbox rule: installed less 7.5 % and ECS_RESERVED_MEMORY); room to spare.
MEMORY_RESERVATION_MIB = 12 * 1024
CPU_UNITS = 3 * 1024  # of an xlarge's 4 vCPUs (4096 units): the rest for the ECS and spothub agents
# The container's user: not root, and not a user of the instance; the instance drops its traffic to IMDS.
SERVING_UID = 10001


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
        container = self.task_definition.add_container(
            "Server",
            container_name=SERVING_CONTAINER_NAME,
            image=ecs.ContainerImage.from_registry(config.serving_image),
            gpu_count=1,
            memory_reservation_mib=MEMORY_RESERVATION_MIB,
            cpu=CPU_UNITS,
            user=f"{SERVING_UID}:{SERVING_UID}",
            # A setuid binary in the image cannot make it root again (and so out of the IMDS rule).
            docker_security_options=["no-new-privileges"],
            command=[
                "python3",
                "-m",
                "sglang.launch_server",
                "--model-path",
                config.serving_model,
                "--host",
                "0.0.0.0",  # noqa: S104 (host networking; the security group has no ingress)
                "--port",
                str(port),
            ],
            # HOME: JIT caches (Triton, FlashInfer) go to the container's own disk; the user has no home.
            environment={"HF_HOME": "/model-cache/huggingface", "HOME": "/tmp"},  # noqa: S108
            logging=ecs.LogDrivers.aws_logs(stream_prefix="serving", log_group=log_group),
            health_check=ecs.HealthCheck(
                command=["CMD-SHELL", f"curl -fsS http://localhost:{port}/health || exit 1"],
                interval=Duration.seconds(SERVING_HEALTH_INTERVAL_SECONDS),
                timeout=Duration.seconds(SERVING_HEALTH_TIMEOUT_SECONDS),
                retries=3,
                start_period=Duration.seconds(SERVING_HEALTH_START_PERIOD_SECONDS),
            ),
            stop_timeout=Duration.seconds(SERVING_STOP_TIMEOUT_SECONDS),
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The environment variables are HF_HOME and HOME, cache paths; secrets (a Hugging Face token) belong "
            "in Secrets Manager as container secrets, never here.",
        )
        container.add_mount_points(
            ecs.MountPoint(container_path="/model-cache", source_volume=CACHE_VOLUME, read_only=False)
        )
