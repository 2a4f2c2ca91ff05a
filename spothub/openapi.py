"""One OpenAPI 3 document for the whole API, generated from the route definitions and models of every API
function (powertools' resolvers), never written by hand.

    spothub openapi [--output openapi.json]     (`make openapi` writes the checked-in copy)

Each API function is its own resolver (one Lambda per concern); their documents are merged: the paths side by
side (a path served by two functions is an error), the component schemas by name (one name, one schema). The
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

# Run in the fresh interpreter: import each handler, keep the API resolvers' documents.
_COLLECT = """
import importlib, json, sys
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
documents = {}
for concern in sys.argv[1:]:
    module = importlib.import_module(f"{concern}.handler")
    app = getattr(module, "app", None)
    if isinstance(app, APIGatewayRestResolver):
        documents[concern] = json.loads(app.get_openapi_json_schema())
print(json.dumps(documents))
"""


class OpenApiError(RuntimeError):
    pass


def concerns() -> list[str]:
    return sorted(p.parent.name for p in LAMBDAS.glob("*/handler.py"))


def collect() -> dict[str, dict[str, Any]]:
    """Each API function's own document, by concern."""
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


def document() -> dict[str, Any]:
    return merge(collect())


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=False) + "\n"
