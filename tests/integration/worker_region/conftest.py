"""The worker function (worker_tasks) in a worker region in moto: the group, the cluster, the state machines.

The group launches real moto instances when its desired capacity changes; the ECS agent's registration is
done by the test (moto runs no agent); tasks stay in the status they are put in (moto advances a task on
every describe unless told not to). moto records no failed scaling activity, so that one answer is given
at the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import boto3
import pytest
from moto import mock_aws
from moto.moto_api import state_manager

from tests.integration.conftest import create_state_machine, load_handler, set_environment
from tests.integration.worker_region.region import (
    CLUSTER,
    GROUP,
    LAUNCH_MACHINE,
    REGION,
    TASK_FAMILY,
    TEARDOWN_MACHINE,
    create_group,
)

WORKER_ENVIRONMENT = {
    "SPOTHUB_PREFIX": "spothub",
    "SPOTHUB_VERSION": "0.1.0",
    "POWERTOOLS_TRACE_DISABLED": "true",
    # Lambda sets both; boto3 reads the second.
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with mock_aws():
        launch_arn = create_state_machine(LAUNCH_MACHINE, REGION)
        teardown_arn = create_state_machine(TEARDOWN_MACHINE, REGION)
        alerts_arn = boto3.client("sns", region_name=REGION).create_topic(Name="spothub-alerts")["TopicArn"]
        set_environment(
            monkeypatch,
            {
                **WORKER_ENVIRONMENT,
                "POWERTOOLS_SERVICE_NAME": "spothub-worker-tasks",
                "SPOTHUB_GROUP_NAME": GROUP,
                "SPOTHUB_CLUSTER_NAME": CLUSTER,
                "SPOTHUB_TASK_DEFINITION": TASK_FAMILY,
                "SPOTHUB_LAUNCH_STATE_MACHINE_ARN": launch_arn,
                "SPOTHUB_TEARDOWN_STATE_MACHINE_ARN": teardown_arn,
                "SPOTHUB_ALERTS_TOPIC_ARN": alerts_arn,
            },
        )
        create_group()
        ecs = boto3.client("ecs", region_name=REGION)
        ecs.create_cluster(clusterName=CLUSTER)
        ecs.register_task_definition(
            family=TASK_FAMILY, containerDefinitions=[{"name": "serve", "image": "serve:latest", "memory": 1024}]
        )
        before = state_manager.get_transition("ecs::task")
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**9})
        try:
            yield load_handler("worker_tasks.handler")
        finally:
            state_manager.set_transition("ecs::task", before)
