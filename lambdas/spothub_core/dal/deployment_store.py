"""The deployments table (layout: spothub_core/models/deployment_records.py): deployments, their tasks, the GPU
nodes and their accounting, tenants' reservations, node group asks, scaling events and the controller's lease.

Every write that races another is conditional, and says which race it closes. GPUs move between a node and a task
only in transactions with the task's status change, so an allocation is made once and given back once. Callers get
typed records back; a lost race is `None` or False (or an outcome naming the condition that failed), never an
exception.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import (
    PARTITION_KEY,
    SORT_KEY,
    call,
    conditional_write,
    plain_item,
    query_all,
    reason_of,
    to_item_value,
    update_fields,
)
from spothub_core.errors import DependencyUnavailable
from spothub_core.models.deployment_records import (
    ControllerLease,
    DeploymentStatus,
    DeploymentTask,
    GpuNode,
    ModelDeployment,
    NodeGroupAsk,
    NodeStatus,
    ScalingEvent,
    TaskStatus,
    TenantUsage,
)

MODEL_PK = "MODEL"
NODE_PK = "NODE"
TENANT_PK = "TENANT"
NODEGROUP_PK = "NODEGROUP"
SCALING_PK = "SCALING"
LEASE_KEY = {PARTITION_KEY: "CONTROLLER", SORT_KEY: "LEASE"}
TASK_PREFIX = "TASK#"


def deployment_key(deployment_id: str) -> dict[str, str]:
    return {PARTITION_KEY: MODEL_PK, SORT_KEY: deployment_id}


def task_key(deployment_id: str, task_id: str) -> dict[str, str]:
    return {PARTITION_KEY: f"{MODEL_PK}#{deployment_id}", SORT_KEY: f"{TASK_PREFIX}{task_id}"}


def node_key(instance_id: str) -> dict[str, str]:
    return {PARTITION_KEY: NODE_PK, SORT_KEY: instance_id}


def tenant_key(tenant: str) -> dict[str, str]:
    return {PARTITION_KEY: TENANT_PK, SORT_KEY: tenant}


def ask_key(region: str, node_class: str) -> dict[str, str]:
    return {PARTITION_KEY: NODEGROUP_PK, SORT_KEY: f"{region}#{node_class}"}


def _item(key: dict[str, str], record: Any) -> dict[str, Any]:
    return {**key, **to_item_value(record.model_dump(mode="json", exclude_none=True))}


def _values(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields as DynamoDB takes them: enums as their value, floats as Decimals, models as maps."""
    return {name: _value(value) for name, value in fields.items()}


def _value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, StrEnum):
        return str(value)
    if hasattr(value, "model_dump"):
        return to_item_value(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, list):
        return to_item_value(
            [v.model_dump(mode="json", exclude_none=True) if hasattr(v, "model_dump") else v for v in value]
        )
    return to_item_value(value)


def _in(attribute: str, values: Iterable[StrEnum], tag: str) -> tuple[str, dict[str, str]]:
    names = {f":{tag}{i}": str(v) for i, v in enumerate(values)}
    return f"{attribute} IN ({', '.join(names)})", names


def _give_back(instance_id: str, gpus: int) -> dict[str, Any]:
    """A transaction item giving a task's GPUs back to its node; the condition keeps the count from going below
    zero (a node record that was never charged, written by hand, cannot be credited)."""
    return {
        "Update": {
            "Key": node_key(instance_id),
            "UpdateExpression": "SET gpus_allocated = gpus_allocated - :g",
            "ConditionExpression": f"attribute_exists({PARTITION_KEY}) AND gpus_allocated >= :g",
            "ExpressionAttributeValues": {":g": gpus},
        }
    }


class PlaceOutcome(StrEnum):
    PLACED = "placed"
    NODE_FULL = "node-full"  # the node has fewer free GPUs than the task needs, or takes no placements now
    TASK_MOVED = "task-moved"  # the task is no longer pending (another run placed or ended it)


class CreateOutcome(StrEnum):
    CREATED = "created"
    EXISTS = "exists"
    OVER_QUOTA = "over-quota"


class DeploymentStore:
    """Typed access to the deployments table through a boto3 DynamoDB Table resource."""

    def __init__(self, table: Any) -> None:
        self._table = table

    @property
    def _client(self) -> Any:
        return self._table.meta.client

    def _transact(self, what: str, items: list[dict[str, Any]]) -> list[str] | None:
        """Run a write transaction; None when it went through, else each item's cancellation code ("None" for an
        item whose condition held). Other failures become DependencyUnavailable."""
        for item in items:
            next(iter(item.values()))["TableName"] = self._table.name
        try:
            self._client.transact_write_items(TransactItems=items)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and exc.response["Error"].get("Code") == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or [{"Code": "Unknown"}] * len(items)
                return [str(reason.get("Code", "None")) for reason in reasons]
            raise DependencyUnavailable(f"could not {what}: {reason_of(exc)}") from exc
        return None

    def _update_existing(
        self, key: dict[str, str], fields: dict[str, Any], expect: Iterable[StrEnum] | None, *, what: str
    ) -> dict[str, Any] | None:
        """SET fields on an item that exists, and with `expect` only while its status is one of those; the item as it
        is now, None when it is absent or the condition failed."""
        condition = f"attribute_exists({PARTITION_KEY})"
        values: dict[str, Any] = {}
        if expect is not None:
            clause, values = _in("#status", expect, "e")
            condition = f"{condition} AND {clause}"
        return update_fields(
            self._table,
            key,
            _values(fields),
            what=what,
            condition=condition,
            names={"#status": "status"} if expect is not None else None,
            values=values or None,
        )

    # --- deployments and tenants' reservations ------------------------------------------------------------

    def create_deployment(self, deployment: ModelDeployment, *, reserve: int, quota: int) -> CreateOutcome:
        """Write a new deployment and reserve `reserve` GPUs of its tenant's `quota`, in one transaction. Twenty
        concurrent creates of one tenant: the reservation's condition (reserved so far <= quota - reserve) lets
        through only those that fit; a redelivered create finds the deployment there and reserves nothing."""
        reasons = self._transact(
            "create the deployment",
            [
                {
                    "Put": {
                        "Item": _item(deployment_key(deployment.deployment_id), deployment),
                        "ConditionExpression": f"attribute_not_exists({PARTITION_KEY})",
                    }
                },
                self._reserve(deployment.tenant, reserve, quota),
            ],
        )
        if reasons is None:
            return CreateOutcome.CREATED
        return CreateOutcome.EXISTS if reasons[0] == "ConditionalCheckFailed" else CreateOutcome.OVER_QUOTA

    @staticmethod
    def _reserve(tenant: str, gpus: int, quota: int) -> dict[str, Any]:
        update: dict[str, Any] = {
            "Key": tenant_key(tenant),
            "UpdateExpression": "SET tenant = :tenant, gpus_reserved = if_not_exists(gpus_reserved, :zero) + :n",
            "ExpressionAttributeValues": {":tenant": tenant, ":zero": 0, ":n": gpus},
        }
        if gpus > 0:
            # The quota race: the sum after this reservation stays within the quota, however many reserve at once.
            update["ConditionExpression"] = "attribute_not_exists(gpus_reserved) OR gpus_reserved <= :room"
            update["ExpressionAttributeValues"][":room"] = quota - gpus
            if quota - gpus < 0:
                update["ConditionExpression"] = "attribute_not_exists(gpus_reserved) AND :room >= :zero"
        return {"Update": update}

    def change_replicas(
        self, deployment: ModelDeployment, replicas: int, *, quota: int, fields: dict[str, Any] | None = None
    ) -> CreateOutcome | None:
        """Set the desired replicas (and `fields`), moving the tenant's reservation by gpus x the difference.
        The condition on the replicas read closes the race of two scale requests (or a scale and an autoscaling
        decision) computing their reservations from the same count; None when that race was lost."""
        delta = (replicas - deployment.replicas) * deployment.gpus
        values = _values({**(fields or {}), "replicas": replicas})
        names = {f"#f{i}": name for i, name in enumerate(values)}
        reasons = self._transact(
            "scale the deployment",
            [
                {
                    "Update": {
                        "Key": deployment_key(deployment.deployment_id),
                        "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(values))),
                        "ConditionExpression": "replicas = :before AND #status <> :deleted",
                        "ExpressionAttributeNames": {**names, "#status": "status"},
                        "ExpressionAttributeValues": {
                            **{f":f{i}": v for i, v in enumerate(values.values())},
                            ":before": deployment.replicas,
                            ":deleted": str(DeploymentStatus.DELETED),
                        },
                    }
                },
                self._reserve(deployment.tenant, delta, quota),
            ],
        )
        if reasons is None:
            return CreateOutcome.CREATED
        return None if reasons[0] == "ConditionalCheckFailed" else CreateOutcome.OVER_QUOTA

    def release_reservation(self, deployment: ModelDeployment) -> bool:
        """Mark the deployment deleted and give its tenant's GPUs back, once: the condition (not deleted yet) keeps a
        second run of the deletion from giving them back twice."""
        reasons = self._transact(
            "release the deployment's reservation",
            [
                {
                    "Update": {
                        "Key": deployment_key(deployment.deployment_id),
                        "UpdateExpression": "SET #status = :deleted, expires_at = :expires",
                        "ConditionExpression": "#status <> :deleted",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {
                            ":deleted": str(DeploymentStatus.DELETED),
                            ":expires": deployment.expires_at or 0,
                        },
                    }
                },
                {
                    "Update": {
                        "Key": tenant_key(deployment.tenant),
                        "UpdateExpression": "SET gpus_reserved = gpus_reserved - :n",
                        "ExpressionAttributeValues": {":n": deployment.gpus * deployment.replicas},
                    }
                },
            ],
        )
        return reasons is None

    def tenant(self, tenant: str) -> TenantUsage:
        item = call("read the tenant", self._table.get_item, Key=tenant_key(tenant), ConsistentRead=True).get("Item")
        return TenantUsage.model_validate(plain_item(item)) if item else TenantUsage(tenant=tenant)

    def get_deployment(self, deployment_id: str) -> ModelDeployment | None:
        item = call(
            "read the deployment", self._table.get_item, Key=deployment_key(deployment_id), ConsistentRead=True
        ).get("Item")
        return ModelDeployment.model_validate(plain_item(item)) if item else None

    def deployments(self) -> list[ModelDeployment]:
        """Every deployment (deleted ones until they expire), by id (ids sort by creation time)."""
        items = query_all(
            self._table,
            "list the deployments",
            KeyConditionExpression=Key(PARTITION_KEY).eq(MODEL_PK),
            ConsistentRead=True,
        )
        return [ModelDeployment.model_validate(plain_item(item)) for item in items]

    def live_deployments(self) -> list[ModelDeployment]:
        return [d for d in self.deployments() if d.status.live]

    def deployments_page(
        self, *, limit: int, next_token: str | None, filters: dict[str, str] | None = None
    ) -> tuple[list[ModelDeployment], str | None]:
        """Newest first, `limit` at most, matching `filters` (field -> value: tenant, status, model); the token is
        the last id returned. Raises ValueError for a token this function did not make."""
        condition = Key(PARTITION_KEY).eq(MODEL_PK)
        if next_token:
            condition &= Key(SORT_KEY).lt(decode_token(next_token))
        query: dict[str, Any] = {"KeyConditionExpression": condition, "ScanIndexForward": False}
        expression = None
        for name, value in (filters or {}).items():
            term = Attr(name).eq(value)
            expression = term if expression is None else expression & term
        if expression is not None:
            query["FilterExpression"] = expression
        found: list[ModelDeployment] = []
        while True:
            page = call("list the deployments", self._table.query, **query)
            for item in page.get("Items", []):
                found.append(ModelDeployment.model_validate(plain_item(item)))
                if len(found) == limit + 1:
                    return found[:limit], encode_token(found[limit - 1].deployment_id)
            if "LastEvaluatedKey" not in page:
                return found, None
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def update_deployment(
        self, deployment_id: str, fields: dict[str, Any], *, expect: Iterable[DeploymentStatus] | None = None
    ) -> ModelDeployment | None:
        """SET fields; with `expect`, only while the deployment is in one of those statuses (the race with a delete:
        nothing brings a deleting deployment back to running). None when absent or the condition failed."""
        item = self._update_existing(deployment_key(deployment_id), fields, expect, what="update the deployment")
        return None if item is None else ModelDeployment.model_validate(item)

    # --- tasks ----------------------------------------------------------------------------------------------

    def put_task(self, task: DeploymentTask) -> bool:
        """Write a new task; False when it exists (a retried run created it already)."""
        response = conditional_write(
            "record the task",
            self._table.put_item,
            Item=_item(task_key(task.deployment_id, task.task_id), task),
            ConditionExpression=f"attribute_not_exists({PARTITION_KEY})",
        )
        return response is not None

    def tasks(self, deployment_id: str) -> list[DeploymentTask]:
        """Every task of a deployment (ended ones until they expire), oldest first."""
        items = query_all(
            self._table,
            "list the deployment's tasks",
            KeyConditionExpression=Key(PARTITION_KEY).eq(f"{MODEL_PK}#{deployment_id}")
            & Key(SORT_KEY).begins_with(TASK_PREFIX),
            ConsistentRead=True,
        )
        return [DeploymentTask.model_validate(plain_item(item)) for item in items]

    def update_task(
        self, task: DeploymentTask, fields: dict[str, Any], *, expect: Iterable[TaskStatus]
    ) -> DeploymentTask | None:
        """SET fields while the task is in one of `expect` (the race with another run moving it: a task seen
        running is not marked healthy after it was stopped). Not for moves that give GPUs back: end_task."""
        item = self._update_existing(task_key(task.deployment_id, task.task_id), fields, expect, what="update the task")
        return None if item is None else DeploymentTask.model_validate(item)

    def place_task(self, task: DeploymentTask, node: GpuNode, fields: dict[str, Any]) -> PlaceOutcome:
        """Allocate the task's GPUs on the node and move the task from pending to starting (with `fields`: where,
        when), in one transaction. The node's condition (ready, and allocated <= total - gpus) is what keeps twenty
        concurrent placements from promising a node more GPUs than it has; the task's (still pending) keeps two
        runs from placing one task twice."""
        values = _values({**fields, "status": TaskStatus.STARTING})
        names = {f"#f{i}": name for i, name in enumerate(values)}
        reasons = self._transact(
            "place the task",
            [
                {
                    "Update": {
                        "Key": node_key(node.instance_id),
                        "UpdateExpression": "SET gpus_allocated = gpus_allocated + :g REMOVE idle_since",
                        "ConditionExpression": "#status = :ready AND gpus_allocated <= :room",
                        "ExpressionAttributeNames": {"#status": "status"},
                        "ExpressionAttributeValues": {
                            ":g": task.gpus,
                            ":ready": str(NodeStatus.READY),
                            ":room": node.gpus_total - task.gpus,
                        },
                    }
                },
                {
                    "Update": {
                        "Key": task_key(task.deployment_id, task.task_id),
                        "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(values))),
                        "ConditionExpression": "#status = :pending",
                        "ExpressionAttributeNames": {**names, "#status": "status"},
                        "ExpressionAttributeValues": {
                            **{f":f{i}": v for i, v in enumerate(values.values())},
                            ":pending": str(TaskStatus.PENDING),
                        },
                    }
                },
            ],
        )
        if reasons is None:
            return PlaceOutcome.PLACED
        return PlaceOutcome.NODE_FULL if reasons[0] == "ConditionalCheckFailed" else PlaceOutcome.TASK_MOVED

    def unplace_task(self, task: DeploymentTask, fields: dict[str, Any]) -> DeploymentTask | None:
        """Undo a placement whose StartTask was refused (or never made): the task back to pending (with `fields`: the
        error, a backoff), its GPUs back to the node, in one transaction; the condition (still starting, on that
        node, with no ECS task) keeps it from undoing a placement that did start a task."""
        if task.status != TaskStatus.STARTING or not task.instance_id:
            raise ValueError("unplace_task undoes a placement: a starting task on a node")
        cleared = ("instance_id", "region", "container_instance_arn", "placed_at", "gpu_ids", "endpoint")
        values = _values({**fields, "status": TaskStatus.PENDING})
        names = {f"#f{i}": name for i, name in enumerate(values)}
        removed = {f"#r{i}": name for i, name in enumerate(cleared)}
        reasons = self._transact(
            "undo the placement",
            [
                {
                    "Update": {
                        "Key": task_key(task.deployment_id, task.task_id),
                        "UpdateExpression": "SET "
                        + ", ".join(f"#f{i} = :f{i}" for i in range(len(values)))
                        + " REMOVE "
                        + ", ".join(removed),
                        "ConditionExpression": "#status = :starting AND instance_id = :node "
                        "AND attribute_not_exists(ecs_task_arn)",
                        "ExpressionAttributeNames": {**names, **removed, "#status": "status"},
                        "ExpressionAttributeValues": {
                            **{f":f{i}": v for i, v in enumerate(values.values())},
                            ":starting": str(TaskStatus.STARTING),
                            ":node": task.instance_id,
                        },
                    }
                },
                _give_back(task.instance_id, task.gpus),
            ],
        )
        if reasons is not None:
            return None
        merged = {k: v for k, v in task.model_dump().items() if k not in cleared}
        merged.update(fields, status=TaskStatus.PENDING)
        return DeploymentTask.model_validate(merged)

    def end_task(
        self, task: DeploymentTask, status: TaskStatus, fields: dict[str, Any], *, now: float, expires_at: int
    ) -> DeploymentTask | None:
        """Move the task to stopped or failed (with `fields`), giving its GPUs back to its node when it held any, in
        one transaction: the condition (its status is still the one read) makes the give-back happen once however
        many runs and events see the task stop. None when that race was lost."""
        if not status.ended:
            raise ValueError(f"end_task moves a task to an ended status, not {status}")
        values = _values({**fields, "status": status, "stopped_at": now, "expires_at": expires_at})
        names = {f"#f{i}": name for i, name in enumerate(values)}
        items: list[dict[str, Any]] = [
            {
                "Update": {
                    "Key": task_key(task.deployment_id, task.task_id),
                    "UpdateExpression": "SET " + ", ".join(f"#f{i} = :f{i}" for i in range(len(values))),
                    "ConditionExpression": "#status = :was",
                    "ExpressionAttributeNames": {**names, "#status": "status"},
                    "ExpressionAttributeValues": {
                        **{f":f{i}": v for i, v in enumerate(values.values())},
                        ":was": str(task.status),
                    },
                }
            }
        ]
        if task.status.placed and task.instance_id:
            items.append(_give_back(task.instance_id, task.gpus))
        if self._transact("end the task", items) is not None:
            return None
        merged = {**task.model_dump(), **{k: v for k, v in fields.items()}}
        merged.update(status=status, stopped_at=now, expires_at=expires_at)
        return DeploymentTask.model_validate(merged)

    # --- nodes ----------------------------------------------------------------------------------------------

    def add_node(self, node: GpuNode) -> bool:
        """Record a node seen for the first time; False when it is known (another run recorded it)."""
        response = conditional_write(
            "record the node",
            self._table.put_item,
            Item=_item(node_key(node.instance_id), node),
            ConditionExpression=f"attribute_not_exists({PARTITION_KEY})",
        )
        return response is not None

    def get_node(self, instance_id: str) -> GpuNode | None:
        item = call("read the node", self._table.get_item, Key=node_key(instance_id), ConsistentRead=True).get("Item")
        return GpuNode.model_validate(plain_item(item)) if item else None

    def nodes(self) -> list[GpuNode]:
        """Every node (gone ones until they expire)."""
        items = query_all(
            self._table, "list the nodes", KeyConditionExpression=Key(PARTITION_KEY).eq(NODE_PK), ConsistentRead=True
        )
        return [GpuNode.model_validate(plain_item(item)) for item in items]

    def update_node(
        self, instance_id: str, fields: dict[str, Any], *, expect: Iterable[NodeStatus] | None = None
    ) -> GpuNode | None:
        """SET fields (never gpus_allocated: place_task and end_task move it); with `expect`, only from those
        statuses (the race of an uncordon with a drain or an interruption: a node going stays going)."""
        if "gpus_allocated" in fields:
            raise ValueError("GPUs are allocated and given back by place_task and end_task only")
        item = self._update_existing(node_key(instance_id), fields, expect, what="update the node")
        return None if item is None else GpuNode.model_validate(item)

    # --- node group asks ------------------------------------------------------------------------------------

    def asks(self) -> list[NodeGroupAsk]:
        items = query_all(
            self._table,
            "list the node group asks",
            KeyConditionExpression=Key(PARTITION_KEY).eq(NODEGROUP_PK),
            ConsistentRead=True,
        )
        return [NodeGroupAsk.model_validate(plain_item(item)) for item in items]

    def put_ask(self, ask: NodeGroupAsk) -> None:
        """The controller's latest ask of a node group (one controller run at a time: the lease)."""
        call("record the node group ask", self._table.put_item, Item=_item(ask_key(ask.region, ask.node_class), ask))

    # --- scaling events -------------------------------------------------------------------------------------

    def add_event(self, event: ScalingEvent) -> None:
        from spothub_core.models.api import iso_utc  # noqa: PLC0415 (the one ISO format of the API)

        key = {PARTITION_KEY: SCALING_PK, SORT_KEY: f"{iso_utc(event.at)}#{event.event_id}"}
        conditional_write(
            "record the scaling event",
            self._table.put_item,
            Item=_item(key, event),
            ConditionExpression=f"attribute_not_exists({PARTITION_KEY})",
        )

    def events(self, *, deployment_id: str | None = None, limit: int = 100) -> list[ScalingEvent]:
        """Newest first, `limit` at most, of one deployment or all."""
        query: dict[str, Any] = {"KeyConditionExpression": Key(PARTITION_KEY).eq(SCALING_PK), "ScanIndexForward": False}
        if deployment_id:
            query["FilterExpression"] = Attr("deployment_id").eq(deployment_id)
        found: list[ScalingEvent] = []
        while len(found) < limit:
            page = call("list the scaling events", self._table.query, **query)
            found.extend(ScalingEvent.model_validate(plain_item(item)) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    # --- the controller's lease -----------------------------------------------------------------------------

    def acquire_lease(self, holder: str, *, now: float, until: float) -> bool:
        """Take the lease when free or expired; else mark it `again` (its holder runs once more) and say False.
        The condition serializes controller runs: two events at once never reconcile side by side."""
        taken = conditional_write(
            "take the controller lease",
            self._table.put_item,
            Item={**LEASE_KEY, "holder": holder, "until": to_item_value(until), "again": False},
            ConditionExpression="attribute_not_exists(holder) OR #until < :now",
            ExpressionAttributeNames={"#until": "until"},
            ExpressionAttributeValues={":now": to_item_value(now)},
        )
        if taken is not None:
            return True
        update_fields(self._table, LEASE_KEY, {"again": True}, what="ask the lease holder to run again")
        return False

    def release_lease(self, holder: str) -> bool:
        """Let go of the lease; True (the lease kept, `again` cleared) when another run asked for one more pass
        meanwhile. The condition (no one asked) closes the race with a run marking it just now."""
        released = conditional_write(
            "release the controller lease",
            self._table.delete_item,
            Key=LEASE_KEY,
            ConditionExpression="holder = :me AND again = :no",
            ExpressionAttributeValues={":me": holder, ":no": False},
        )
        if released is not None:
            return False
        item = update_fields(
            self._table,
            LEASE_KEY,
            {"again": False},
            what="take the controller's next pass",
            condition="holder = :me",
            values={":me": holder},
        )
        return item is not None

    def lease(self) -> ControllerLease:
        item = call("read the controller lease", self._table.get_item, Key=LEASE_KEY, ConsistentRead=True).get("Item")
        return ControllerLease.model_validate(plain_item(item)) if item else ControllerLease()


def encode_token(deployment_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": deployment_id}).encode()).decode()


def decode_token(token: str) -> str:
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ValueError("next_token is not one this API returned") from exc
    if not isinstance(after, str):
        raise ValueError("next_token is not one this API returned")
    return after
