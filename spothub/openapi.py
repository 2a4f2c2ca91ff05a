"""One OpenAPI 3 document for the whole API, generated from the route definitions and models of every API
function (powertools' resolvers), never written by hand.

    spothub openapi [--output openapi.json]     (`make openapi` writes the checked-in copy)

Each API function is its own resolver (one Lambda per concern); their documents are merged: the paths side by
side (a path served by two functions is an error), the component schemas by name (one name, one schema); every
operation's error answers are then described by the API's one error model (spothub_core.http.ErrorAnswer). The
handlers are imported in a fresh interpreter with the deployment's environment shape (placeholders), as the
cold import benchmark does, so nothing of the caller's environment leaks in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from spothub import __version__
from spothub.handler_environment import PLACEHOLDER_ENVIRONMENT

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDAS = REPO_ROOT / "lambdas"
DOCUMENT = REPO_ROOT / "openapi.json"
TITLE = "spothub control plane API"
DESCRIPTION = (
    "Every route uses AWS_IAM authorization (SigV4, service execute-api). Errors are "
    '{"error", "message"[, "details"]}; times are ISO 8601 UTC.'
)

# Run in the fresh interpreter: import each handler, keep the API resolvers' documents, and the schema of the one
# error answer (spothub_core.http.ErrorAnswer) under the key ERROR_KEY (as the script spells it).
ERROR_KEY = "__error_answer__"
_COLLECT = """
import importlib, json, sys
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from spothub_core.http import ErrorAnswer
documents = {}
for concern in sys.argv[1:]:
    module = importlib.import_module(f"{concern}.handler")
    app = getattr(module, "app", None)
    if isinstance(app, APIGatewayRestResolver):
        documents[concern] = json.loads(app.get_openapi_json_schema())
documents["__error_answer__"] = ErrorAnswer.model_json_schema(ref_template="#/components/schemas/{model}")
print(json.dumps(documents))
"""
# What every route may answer besides its own answers, all in the one error shape. Powertools describes a request
# that breaks its model as a 422 with its own body, and an answer that breaks its model with another: the API
# answers both in its own shape (spothub_core.http), the first as a 400.
COMMON_ERRORS: dict[str, str] = {
    "400": (
        "the request is not valid: a parameter or the body breaks its model (`details` names each field at fault), "
        "or the body is not a JSON object of UTF-8 text"
    ),
    "403": (
        "refused by API Gateway: the request is not signed with SigV4 (service execute-api, the hub region), or "
        "its signer may not execute-api:Invoke the route ({error, request_id}); or refused by the API: an "
        "instance speaking for another"
    ),
    "500": "an internal error: logged with its stack, answered with the request id only",
    "503": "an AWS service the API depends on did not answer: try again later",
}
# ... and every route that takes a body.
BODY_ERRORS: dict[str, str] = {
    "415": "the body is not JSON (Content-Type: application/json), nor a form the API could read"
}
POWERTOOLS_ERRORS = {"422": "HTTPValidationError", "500": "ResponseValidationError"}


class OpenApiError(RuntimeError):
    pass


def concerns() -> list[str]:
    return sorted(p.parent.name for p in LAMBDAS.glob("*/handler.py"))


def collect() -> dict[str, dict[str, Any]]:
    """Each API function's own document, by concern; and the error answer's schema, under ERROR_KEY."""
    environment = {"PATH": os.environ.get("PATH", ""), **PLACEHOLDER_ENVIRONMENT, "PYTHONPATH": str(LAMBDAS)}
    done = subprocess.run(
        [sys.executable, "-c", _COLLECT, *concerns()],
        cwd=LAMBDAS,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise OpenApiError(f"importing the handlers failed: {done.stderr.strip()[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def merge(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for concern, document in sorted(documents.items()):
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                if method in paths.get(path, {}):
                    raise OpenApiError(f"{method.upper()} {path} is served by two functions")
                paths.setdefault(path, {})[method] = {**operation, "x-spothub-function": concern}
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            if name in schemas and schemas[name] != schema:
                raise OpenApiError(f"two different schemas are named {name}: rename one of the models")
            schemas[name] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": __version__, "description": DESCRIPTION},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "sigv4": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "description": "AWS Signature Version 4, service execute-api",
                }
            },
        },
        "security": [{"sigv4": []}],
    }


def with_error_answers(spec: dict[str, Any], error_schema: dict[str, Any]) -> dict[str, Any]:
    """Every operation's error answers in the API's error shape: powertools' 422 and 500 (bodies the API never
    sends) replaced, COMMON_ERRORS (and BODY_ERRORS where it takes a body) added where the route does not describe
    the status itself."""
    schemas = spec["components"]["schemas"]
    name = error_schema.get("title", "ErrorAnswer")
    for nested, found in {**error_schema.get("$defs", {}), name: error_schema}.items():
        schema = {key: value for key, value in found.items() if key != "$defs"}
        if nested in schemas and schemas[nested] != schema:
            raise OpenApiError(f"two different schemas are named {nested}: rename one of the models")
        schemas[nested] = schema
    answer = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
    for operations in spec["paths"].values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, powertools_schema in POWERTOOLS_ERRORS.items():
                content = responses.get(status, {}).get("content", {}).get("application/json", {})
                if content.get("schema") == {"$ref": f"#/components/schemas/{powertools_schema}"}:
                    del responses[status]
            common = {**COMMON_ERRORS, **(BODY_ERRORS if "requestBody" in operation else {})}
            for status, description in common.items():
                own = responses.get(status)
                if own is None:
                    responses[status] = {"description": description, "content": answer}
                    continue
                # The route's own answer of that status, or the common error: either shape.
                schema = own.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and schema != answer["application/json"]["schema"]:
                    own["description"] = f"{own.get('description', '')}; or {description}"
                    own["content"]["application/json"]["schema"] = {
                        "anyOf": [schema, answer["application/json"]["schema"]]
                    }
            operation["responses"] = dict(sorted(responses.items()))
    # Powertools' error schemas, once nothing refers to them (ValidationError is HTTPValidationError's items).
    for unused in ("HTTPValidationError", "ResponseValidationError", "ValidationError"):
        others = {key: value for key, value in schemas.items() if key != unused}
        if f'"#/components/schemas/{unused}"' not in json.dumps([spec["paths"], others]):
            schemas.pop(unused, None)
    spec["components"]["schemas"] = dict(sorted(schemas.items()))
    return spec


def document() -> dict[str, Any]:
    documents = collect()
    error_schema = documents.pop(ERROR_KEY)
    return with_error_answers(merge(documents), error_schema)


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=False) + "\n"
