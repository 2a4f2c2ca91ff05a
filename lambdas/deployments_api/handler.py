"""The deployments API: model deployments on the GPU nodes, the nodes themselves, GPUs and utilization, scaling
events and the infrastructure's health.

POST   /deployments                         -> 202 {"deployment_id", "status": "creating"}; 400 too many GPUs per
                                               replica for any node class, 409 over the tenant's quota
GET    /deployments?tenant=&status=&model=&limit=&next_token=  -> newest first
GET    /deployments/{deployment_id}/status  -> replicas, tasks, endpoints
DELETE /deployments/{deployment_id}         -> deleting (asked again: as it is)
POST   /deployments/{deployment_id}/restart -> a rolling restart; 409 while deleting
POST   /deployments/{deployment_id}/scale   -> {"replicas"}; 400 outside min..max, 409 over quota or while deleting
GET    /resources/available                 -> GPUs per region and instance type
GET    /nodes, GET /nodes/{instance_id}
POST   /nodes/{instance_id}/cordon|uncordon|drain  {"reason"} (optional) -> the node; 409 from a status it does not
                                               apply to
GET    /gpu-utilization, GET /scaling/events?deployment_id=&limit=, GET /health

The decisions: logic/deployment_api.py. The API writes the deployments table and nudges the controller on the hub
bus; the controller places, starts and stops the tasks.
"""

# No `from __future__ import annotations` here: powertools reads the route's parameter and return types at
# runtime.
import time
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from spothub_core import aws_clients
from spothub_core.dal.deployment_alarms import AlarmStates
from spothub_core.dal.deployment_store import DeploymentStore
from spothub_core.http import build_resolver, error_answers
from spothub_core.logic import deployment_api
from spothub_core.models.agent import INSTANCE_ID_PATTERN
from spothub_core.models.deployment_api import (
    DEPLOYMENT_ID_PATTERN,
    DeploymentAccepted,
    DeploymentRequest,
    DeploymentsPage,
    DeploymentView,
    InfrastructureHealth,
    NodeOperation,
    NodesView,
    NodeView,
    ResourcesView,
    ScaleRequest,
    ScalingEventsPage,
    UtilizationView,
)
from spothub_core.models.deployment_records import DeploymentStatus
from spothub_core.observability import logger, tracer
from spothub_core.settings import DeploymentSettings, load_settings

settings = load_settings(DeploymentSettings)
cloudwatch = aws_clients.client("cloudwatch", region_name=settings.hub_region)
api = deployment_api.DeploymentsApi(
    store=DeploymentStore(aws_clients.table(settings.deployments_table_name)),
    settings=settings,
    events=aws_clients.client("events"),
    alarms=AlarmStates(cloudwatch),
)
app = build_resolver()
DeploymentId = Annotated[str, Path(pattern=DEPLOYMENT_ID_PATTERN)]
InstanceId = Annotated[str, Path(pattern=INSTANCE_ID_PATTERN)]
NO_DEPLOYMENT = "no deployment with this id"
NO_NODE = "no GPU node with this instance id"
DELETING = "the deployment is being deleted (or deleted)"


def _caller() -> str:
    return app.current_event.request_context.identity.user_arn or "an unknown caller"


@app.post(
    "/deployments",
    responses=error_answers(
        {
            400: "more GPUs per replica than any node class offers (the answer names the largest), or a bad body",
            409: "over the tenant's GPU quota (the answer says the quota, what the tenant holds and what was asked)",
        },
        status=HTTPStatus.ACCEPTED,
    ),
)
@tracer.capture_method
def post_deployment(request: Annotated[DeploymentRequest, Body()]) -> Response[DeploymentAccepted]:
    accepted = deployment_api.create(api, request, now=time.time())
    logger.info(
        "deployment created",
        extra={
            "deployment_id": accepted.deployment_id,
            "request": request.model_dump(exclude={"env"}),
            "caller": _caller(),
        },
    )
    return Response(status_code=HTTPStatus.ACCEPTED.value, content_type=content_types.APPLICATION_JSON, body=accepted)


@app.get("/deployments", responses=error_answers({400: "a next_token this API did not return"}))
@tracer.capture_method
def get_deployments(
    tenant: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")] = None,
    status: Annotated[DeploymentStatus | None, Query()] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=deployment_api.MAX_PAGE_SIZE)] = deployment_api.DEFAULT_PAGE_SIZE,
    next_token: Annotated[str | None, Query(min_length=1, max_length=4096)] = None,
) -> DeploymentsPage:
    return deployment_api.list_deployments(
        api, tenant=tenant, status=status, model=model, limit=limit, next_token=next_token
    )


@app.get("/deployments/<deployment_id>/status", responses=error_answers({404: NO_DEPLOYMENT}))
@tracer.capture_method
def get_deployment(deployment_id: DeploymentId) -> DeploymentView:
    return deployment_api.view(api, deployment_id)


@app.delete("/deployments/<deployment_id>", responses=error_answers({404: NO_DEPLOYMENT}))
@tracer.capture_method
def delete_deployment(deployment_id: DeploymentId) -> DeploymentView:
    answer = deployment_api.delete(api, deployment_id, now=time.time())
    logger.info("deployment delete asked", extra={"deployment_id": deployment_id, "caller": _caller()})
    return answer


@app.post("/deployments/<deployment_id>/restart", responses=error_answers({404: NO_DEPLOYMENT, 409: DELETING}))
@tracer.capture_method
def post_restart(deployment_id: DeploymentId) -> DeploymentView:
    answer = deployment_api.restart(api, deployment_id, now=time.time())
    logger.info("deployment restart asked", extra={"deployment_id": deployment_id, "caller": _caller()})
    return answer


@app.post(
    "/deployments/<deployment_id>/scale",
    responses=error_answers(
        {
            400: "replicas outside min_replicas..max_replicas of an autoscaled deployment, or a bad body",
            404: NO_DEPLOYMENT,
            409: f"over the tenant's GPU quota, or {DELETING}",
        }
    ),
)
@tracer.capture_method
def post_scale(deployment_id: DeploymentId, request: Annotated[ScaleRequest, Body()]) -> DeploymentView:
    answer = deployment_api.scale(api, deployment_id, request, now=time.time())
    logger.info(
        "deployment scaled", extra={"deployment_id": deployment_id, "replicas": request.replicas, "caller": _caller()}
    )
    return answer


@app.get("/resources/available")
@tracer.capture_method
def get_resources() -> ResourcesView:
    return deployment_api.resources(api)


@app.get("/nodes")
@tracer.capture_method
def get_nodes() -> NodesView:
    return deployment_api.list_nodes(api)


@app.get("/nodes/<instance_id>", responses=error_answers({404: NO_NODE}))
@tracer.capture_method
def get_node(instance_id: InstanceId) -> NodeView:
    return deployment_api.show_node(api, instance_id)


NODE_REFUSALS = error_answers(
    {404: NO_NODE, 409: "the node is in a status the operation does not apply to (interrupted or gone: going)"}
)
OptionalOperation = Annotated[NodeOperation | None, Body()]


@app.post("/nodes/<instance_id>/cordon", responses=NODE_REFUSALS)
@tracer.capture_method
def post_cordon(instance_id: InstanceId, request: OptionalOperation = None) -> NodeView:
    return deployment_api.operate_node(api, instance_id, deployment_api.CORDON.name, request, caller=_caller())


@app.post("/nodes/<instance_id>/uncordon", responses=NODE_REFUSALS)
@tracer.capture_method
def post_uncordon(instance_id: InstanceId, request: OptionalOperation = None) -> NodeView:
    return deployment_api.operate_node(api, instance_id, deployment_api.UNCORDON.name, request, caller=_caller())


@app.post("/nodes/<instance_id>/drain", responses=NODE_REFUSALS)
@tracer.capture_method
def post_drain(instance_id: InstanceId, request: OptionalOperation = None) -> NodeView:
    return deployment_api.operate_node(api, instance_id, deployment_api.DRAIN.name, request, caller=_caller())


@app.get("/gpu-utilization")
@tracer.capture_method
def get_utilization() -> UtilizationView:
    return deployment_api.utilization(api)


@app.get("/scaling/events")
@tracer.capture_method
def get_scaling_events(
    deployment_id: Annotated[str | None, Query(pattern=DEPLOYMENT_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=deployment_api.MAX_EVENTS)] = deployment_api.DEFAULT_EVENTS,
) -> ScalingEventsPage:
    return deployment_api.scaling_events(api, deployment_id=deployment_id, limit=limit)


@app.get("/health")
@tracer.capture_method
def get_health() -> InfrastructureHealth:
    return deployment_api.health(api, now=time.time())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
