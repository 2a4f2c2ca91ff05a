"""The serving replica's ECS task definition: an OpenAI-compatible model server on one GPU.

Host networking (one replica per instance, no port mapping layer), weights cached on the instance's
EFS mount so a replacement in the same region loads them without downloading, and a container
health check that ECS reports as the task's health: the launch waits for HEALTHY.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import SpothubConfig
from stacks.nag import acknowledge

CACHE_VOLUME = "model-cache"


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
        self.task_definition = ecs.Ec2TaskDefinition(
            self,
            "TaskDefinition",
            family=f"{config.prefix}-serving",
            network_mode=ecs.NetworkMode.HOST,
            volumes=[ecs.Volume(name=CACHE_VOLUME, host=ecs.Host(source_path=model_cache_mount))],
        )
        port = config.serving_port
        container = self.task_definition.add_container(
            "Server",
            container_name="server",
            image=ecs.ContainerImage.from_registry(config.serving_image),
            gpu_count=1,
            memory_reservation_mib=16 * 1024,
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
            environment={"HF_HOME": "/model-cache/huggingface"},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="serving", log_group=log_group),
            health_check=ecs.HealthCheck(
                command=["CMD-SHELL", f"curl -fsS http://localhost:{port}/health || exit 1"],
                interval=Duration.seconds(30),
                timeout=Duration.seconds(10),
                retries=3,
                # Model load time: failures before this do not count.
                start_period=Duration.seconds(300),
            ),
            stop_timeout=Duration.seconds(90),
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "The one environment variable is HF_HOME, a cache path; secrets (a Hugging Face token) belong in "
            "Secrets Manager as container secrets, never here.",
        )
        container.add_mount_points(
            ecs.MountPoint(container_path="/model-cache", source_volume=CACHE_VOLUME, read_only=False)
        )
