"""The search API: queries to the volume's search instance, and the instance's scaling.

POST   /search/query                   {"query", "top_k", "wait_s"} -> the service's results with timings; no ready
                                       instance: a launch is started and 503 {"error", "status"} with Retry-After
                                       (with wait_s, the query waits for readiness first)
GET    /search/status                  -> counts and the instances
POST   /search/scale-up?count=1        -> the launched instance; 409 when one is there or a launch is in progress
POST   /search/scale-down?count=1      -> the terminated instances; 409 while queries are in flight
DELETE /search/instances/{instance_id} -> termination started; 404 for an instance that is not the volume's

One instance per volume (the search table's slot); the decisions: logic/search_api.py. The router (a function in
the search region's VPC) is the only way to the instance's private address.
"""

# No `from __future__ import annotations` here: powertools reads the route's parameter and return types at
# runtime.
import time
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from spothub_core import aws_clients
from spothub_core.dal.search_instances import SearchInstances
from spothub_core.dal.search_router import SearchRouter
from spothub_core.dal.search_store import SearchStore
from spothub_core.http import ErrorAnswer, build_resolver
from spothub_core.logic import search_api
from spothub_core.logic.search_launches import Launcher
from spothub_core.models.search_api import (
    INSTANCE_ID_PATTERN,
    BusyConflict,
    QueryAnswer,
    ScaleDownAnswer,
    ScaleUpAnswer,
    ScaleUpConflict,
    SearchQuery,
    SearchStatusView,
    SearchUnavailable,
    TerminateAnswer,
)
from spothub_core.observability import logger, tracer
from spothub_core.settings import SearchSettings, load_settings
from spothub_core.timings import SEARCH_RETRY_AFTER_SECONDS

settings = load_settings(SearchSettings)
store = SearchStore(aws_clients.table(settings.search_table_name))
api = search_api.SearchApi(
    store=store,
    launcher=Launcher(
        store=store,
        sfn=aws_clients.client("stepfunctions"),
        state_machine_arn=settings.launcher_arn,
        volume_id=settings.volume_id,
        use_spot=settings.use_spot,
    ),
    router=SearchRouter(aws_clients.client("lambda", region_name=settings.search_region), settings.router_arn),
    instances=SearchInstances(aws_clients.client("ec2", region_name=settings.search_region)),
    port=settings.port,
)
app = build_resolver()
InstanceId = Annotated[str, Path(pattern=INSTANCE_ID_PATTERN)]
Count = Annotated[int, Query(description="instances to add or remove: one instance per volume, so 1")]


def _answers(**shapes: tuple[int, str, Any]) -> dict[int, OpenAPIResponse]:
    """The route's answer (its return type) and its answers in shapes of their own, for the OpenAPI document."""
    responses: dict[int, OpenAPIResponse] = {200: {"description": "Successful Response"}}
    for code, description, model in shapes.values():
        responses[code] = {"description": description, "content": {content_types.APPLICATION_JSON: {"model": model}}}
    return responses


RETRY_AFTER: OpenAPIResponse = {
    "description": (
        "no instance is ready (a launch from zero is started): come back after Retry-After seconds "
        f"({SEARCH_RETRY_AFTER_SECONDS})"
    ),
    "headers": {"Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "integer"}}},
    "content": {content_types.APPLICATION_JSON: {"model": SearchUnavailable}},
}
BUSY = (409, "queries are in flight", BusyConflict)


@app.exception_handler(search_api.SearchRefusal)
def _refused(refusal: search_api.SearchRefusal) -> Response:
    body = refusal.payload()
    logger.info(
        "search request refused",
        extra={"status": refusal.status.value, "answer": body, "launch_id": refusal.launched},
    )
    return Response(
        status_code=refusal.status.value,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=refusal.headers,
    )


SERVICE_REFUSALS = {
    f"status_{code}": (code, f"the search service refused the query itself ({HTTPStatus(code).phrase})", ErrorAnswer)
    for code in (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, HTTPStatus.UNPROCESSABLE_ENTITY)
}
BAD_GATEWAY = (502, "the search service answered no search results, or refused the API itself", ErrorAnswer)


@app.post("/search/query", responses={**_answers(**SERVICE_REFUSALS, bad_gateway=BAD_GATEWAY), 503: RETRY_AFTER})
@tracer.capture_method
def post_query(request: Annotated[SearchQuery, Body()]) -> QueryAnswer:
    answer = search_api.query(api, request)
    logger.info(
        "search query answered",
        extra={
            "instance_id": answer.instance_id,
            "results": len(answer.results),
            "top_k": request.top_k,
            "timings": answer.timings.model_dump(),
        },
    )
    return answer


@app.get("/search/status")
@tracer.capture_method
def get_status() -> SearchStatusView:
    return search_api.status(api)


@app.post(
    "/search/scale-up",
    responses=_answers(conflict=(409, "an instance is there already, or a launch is in progress", ScaleUpConflict)),
)
@tracer.capture_method
def post_scale_up(count: Count = 1) -> ScaleUpAnswer:
    answer = search_api.scale_up(api, count, now=time.time())
    logger.info("search instance launch started", extra={"launch_id": answer.launched_instances[0].launch_id})
    return answer


@app.post("/search/scale-down", responses=_answers(busy=BUSY))
@tracer.capture_method
def post_scale_down(count: Count = 1) -> ScaleDownAnswer:
    answer = search_api.scale_down(api, count, now=time.time())
    logger.info("search service shut down", extra={"terminated": answer.terminated_instances})
    return answer


@app.delete(
    "/search/instances/<instance_id>",
    responses=_answers(busy=BUSY, missing=(404, "not an instance of the volume", ErrorAnswer)),
)
@tracer.capture_method
def delete_instance(instance_id: InstanceId) -> TerminateAnswer:
    caller = app.current_event.request_context.identity.user_arn or "an unknown caller"
    answer = search_api.terminate_instance(api, instance_id, now=time.time())
    logger.info("search instance termination asked", extra={"instance_id": instance_id, "caller": caller})
    return answer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
