"""The serving task in a worker region's ECS cluster: where it can run (container instances), starting it for a
launch (the launch named in `startedBy`, so a repeated start finds the first), looking at it, stopping it."""

from __future__ import annotations

from typing import Any

from spothub_core.contracts import InstanceTag
from spothub_core.dal.task_errors import aws_call
from spothub_core.errors import TransientError

# ECS startedBy holds at most 36 characters.
STARTED_BY_LENGTH = 36


def started_by(launch_id: str) -> str:
    return launch_id[-STARTED_BY_LENGTH:]


class ServingTasks:
    def __init__(self, ecs: Any, cluster_name: str, task_definition: str) -> None:
        self._ecs = ecs
        self.cluster_name = cluster_name
        self.task_definition = task_definition

    def container_instance(self, instance_id: str) -> str | None:
        """The instance's ACTIVE container instance in the cluster; None until its ECS agent registers."""
        arns = aws_call("list container instances", self._ecs.list_container_instances, cluster=self.cluster_name).get(
            "containerInstanceArns", []
        )
        if not arns:
            return None
        described = aws_call(
            "describe container instances",
            self._ecs.describe_container_instances,
            cluster=self.cluster_name,
            containerInstances=arns,
        ).get("containerInstances", [])
        return next(
            (
                c["containerInstanceArn"]
                for c in described
                if c.get("ec2InstanceId") == instance_id and c.get("status") == "ACTIVE"
            ),
            None,
        )

    def started_for(self, launch_id: str) -> list[str]:
        """The tasks a launch started (their ARNs)."""
        return list(
            aws_call(
                "list tasks", self._ecs.list_tasks, cluster=self.cluster_name, startedBy=started_by(launch_id)
            ).get("taskArns", [])
        )

    def running(self, *, launch_id: str | None = None, container_instance: str | None = None) -> list[str]:
        """The running tasks of a launch, on a container instance, or (neither given) in the whole cluster."""
        query: dict[str, Any] = {"cluster": self.cluster_name, "desiredStatus": "RUNNING"}
        if launch_id:
            query["startedBy"] = started_by(launch_id)
        if container_instance:
            query["containerInstance"] = container_instance
        return list(aws_call("list tasks", self._ecs.list_tasks, **query).get("taskArns", []))

    def start(self, launch_id: str, container_instance: str) -> str:
        """Start the serving task for a launch on a container instance; its ARN."""
        response = aws_call(
            "start the serving task",
            self._ecs.start_task,
            cluster=self.cluster_name,
            taskDefinition=self.task_definition,
            containerInstances=[container_instance],
            startedBy=started_by(launch_id),
            tags=[{"key": InstanceTag.LAUNCH.value, "value": launch_id}],
        )
        if response.get("failures") or not response.get("tasks"):
            raise TransientError(f"ECS did not start the task on {container_instance}: {response.get('failures')}")
        return str(response["tasks"][0]["taskArn"])

    def describe(self, task_arn: str) -> dict[str, Any] | None:
        """The task as ECS describes it; None when ECS no longer knows it."""
        tasks = aws_call(
            "describe the task", self._ecs.describe_tasks, cluster=self.cluster_name, tasks=[task_arn]
        ).get("tasks", [])
        return dict(tasks[0]) if tasks else None

    def stop(self, task_arn: str, reason: str) -> None:
        aws_call("stop a task", self._ecs.stop_task, cluster=self.cluster_name, task=task_arn, reason=reason)
