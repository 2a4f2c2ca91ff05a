"""The one place where domain errors become HTTP answers for every API function.

Nothing leaves an API function as a 500 with a traceback: validation problems are 400s that
say what was wrong, domain errors map to their status, and anything unexpected is logged with
its stack and answered with a 500 that carries only the request id.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from spothub_core.errors import Conflict, DependencyUnavailable, Forbidden, InvalidRequest, NotFound, SpothubError
from spothub_core.models.base import Model
from spothub_core.observability import logger

STATUS_BY_ERROR: dict[type[SpothubError], HTTPStatus] = {
    InvalidRequest: HTTPStatus.BAD_REQUEST,
    NotFound: HTTPStatus.NOT_FOUND,
    Forbidden: HTTPStatus.FORBIDDEN,
    Conflict: HTTPStatus.CONFLICT,
    DependencyUnavailable: HTTPStatus.SERVICE_UNAVAILABLE,
}


class ErrorDetail(Model):
    field: str = Field(description='where: "body.<field>", "path.<name>", "query.<name>", or "request"')
    problem: str


def _absent_not_null(schema: dict[str, Any]) -> None:
    """An optional field is left out of the answer, never null: no `default: null` in the schema."""
    for field in schema.get("properties", {}).values():
        if "default" in field and field["default"] is None:
            del field["default"]


class ErrorAnswer(Model):
    """Every error answer, the API's own {"error", "message"[, "details"]} and API Gateway's {"error",
    "request_id"} (its gateway responses): the OpenAPI document describes the error statuses with it."""

    model_config = ConfigDict(json_schema_extra=_absent_not_null)

    error: str = Field(description="the status's phrase; in API Gateway's own answers, its message")
    message: str | SkipJsonSchema[None] = Field(None, description="what was wrong")
    details: list[ErrorDetail] | SkipJsonSchema[None] = Field(None, description="each field at fault")
    request_id: str | SkipJsonSchema[None] = Field(None, description="API Gateway's request id")


def error_answers(errors: dict[int, str], *, status: int = HTTPStatus.OK) -> dict[int, OpenAPIResponse]:
    """A route's `responses` for the OpenAPI document: its answer (the route's return type) and the errors the
    domain refuses it with (`errors`: status -> when), in the one error shape. What every route may answer (400,
    403, 500, 503, and 415 with a body) the document generator adds (spothub/openapi.py)."""
    answer = "Successful Response" if status == HTTPStatus.OK else HTTPStatus(status).phrase
    responses: dict[int, OpenAPIResponse] = {status: {"description": answer}}
    for code, description in errors.items():
        responses[code] = {
            "description": description,
            "content": {content_types.APPLICATION_JSON: {"model": ErrorAnswer}},
        }
    return responses


def error_response(status: HTTPStatus, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    body = ErrorAnswer(error=status.phrase, message=message, details=details or None)
    return Response(
        status_code=status.value, content_type=content_types.APPLICATION_JSON, body=body.model_dump(exclude_none=True)
    )


def build_resolver() -> APIGatewayRestResolver:
    """An API Gateway REST proxy resolver with pydantic validation and spothub's error mapping."""
    # An answer that breaks its own response model is our bug, not the caller's: a 500, never a 400.
    app = APIGatewayRestResolver(
        enable_validation=True, response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR
    )
    app.use(middlewares=[_json_object_body])

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        details = [_describe_validation_error(error) for error in exc.errors()]
        return error_response(HTTPStatus.BAD_REQUEST, "the request is not valid", details)

    @app.exception_handler(RequestUnsupportedContentType)
    def _not_json(_exc: RequestUnsupportedContentType) -> Response:
        return _unsupported_media_type(app)

    @app.exception_handler(ResponseValidationError)
    def _invalid_answer(exc: ResponseValidationError) -> Response:
        logger.error("answer breaks its response model", extra={"errors": exc.errors()})
        request_id = app.lambda_context.aws_request_id if app.lambda_context else "unknown"
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error, request id {request_id}")

    @app.exception_handler(SpothubError)
    def _domain(exc: SpothubError) -> Response:
        status = next(
            (code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind)),
            HTTPStatus.INTERNAL_SERVER_ERROR,
        )
        logger.info("request refused", extra={"status": status.value, "reason": str(exc)})
        return error_response(status, str(exc))

    @app.exception_handler(UnicodeDecodeError)
    def _not_utf8(exc: UnicodeDecodeError) -> Response:
        # Raised where the validation decodes the body, before any middleware of ours could look at it.
        if not _body_is_utf8(app):
            return error_response(HTTPStatus.BAD_REQUEST, "the request body is not valid UTF-8 text")
        return _unexpected(exc)

    @app.not_found
    def _no_route(_exc: Exception) -> Response:
        return error_response(
            HTTPStatus.NOT_FOUND, f"no route {app.current_event.http_method} {app.current_event.path}"
        )

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if _body_is_not_json(app):
            # The validation could not read a body of another media type (a multipart body without its boundary):
            # the caller's mistake, not ours.
            return _unsupported_media_type(app)
        logger.exception("unhandled error")
        request_id = app.lambda_context.aws_request_id if app.lambda_context else "unknown"
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error, request id {request_id}")

    return app


def _json_object_body(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
    """A body, when there is one, must be a JSON object: powertools would validate an array's first
    element as if it were the body."""
    body = app.current_event.body
    if body:
        try:
            parsed = json.loads(app.current_event.decoded_body)
        except ValueError:
            parsed = {}  # malformed JSON: the validation's own 400 says so
        if not isinstance(parsed, dict):
            return error_response(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
    return next_middleware(app)


def _body_is_not_json(app: APIGatewayRestResolver) -> bool:
    content_type = (app.current_event.headers.get("content-type") or "").strip().lower()
    return bool(app.current_event.body) and bool(content_type) and not content_type.startswith("application/json")


def _unsupported_media_type(app: APIGatewayRestResolver) -> Response:
    content_type = app.current_event.headers.get("content-type") or "(none)"
    return error_response(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        f"the request body must be JSON (Content-Type: application/json), not {content_type}",
    )


def _body_is_utf8(app: APIGatewayRestResolver) -> bool:
    try:
        app.current_event.decoded_body  # noqa: B018 (decoding is the check)
    except UnicodeDecodeError:
        return False
    return True


def _describe_validation_error(error: dict[str, Any]) -> dict[str, Any]:
    # powertools prefixes body locations with "body"; keep the field path an API user wrote.
    location = [str(part) for part in error.get("loc", ())]
    return {"field": ".".join(location) or "request", "problem": error.get("msg", "invalid")}
