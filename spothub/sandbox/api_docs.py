"""The API's OpenAPI document and a Swagger UI page for it, on the sandbox's control surface.

GET /_sandbox/openapi.json   the checked-in openapi.json (`make openapi`), its `servers` this sandbox's API
GET /_sandbox/docs           Swagger UI over it
GET /_sandbox/docs/<asset>   the page's script and styles

Swagger UI is the copy the pinned flask-swagger-ui package ships (5.x: 4.x, as swagger-ui-bundle ships it, cannot
render an OpenAPI 3.1 document), served from here: the page needs no network. Its "Try it out" requests are not
signed, so the API answers them 403 as API Gateway answers any unsigned request; the page says so, and how to
sign. Nothing about the API's IAM auth changes for the page.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from spothub.openapi import DOCUMENT

# The Swagger UI files the page loads, by name: their media types.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
SWAGGER_UI_PACKAGE = "flask_swagger_ui"


@dataclass(frozen=True)
class RawAnswer:
    """An answer of the control surface that is not JSON: sent as it is, with its media type."""

    body: bytes
    content_type: str


class DocsError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def signing_note(api_url: str, region: str) -> str:
    return (
        "**This sandbox** serves the API at "
        f"`{api_url}`. Every route uses AWS_IAM authorization, so the requests this page sends "
        '("Try it out") are answered **403**: a browser does not sign them with SigV4, and the sandbox refuses '
        "unsigned requests as API Gateway does. Call the API signed instead, with the sandbox's credentials "
        "(`spothub sandbox up` prints them; `.spothub/sandbox.json` holds them): `spothub --sandbox status`, or "
        f'`curl --aws-sigv4 "aws:amz:{region}:execute-api" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" '
        f"{api_url}status`."
    )


def document(api_url: str, region: str, source: Path = DOCUMENT) -> dict[str, Any]:
    """openapi.json as checked in, served from this sandbox: its `servers` the sandbox's API URL (the stage's
    root: paths start with /), its description with what a reader of the page needs to know about signing."""
    try:
        spec: dict[str, Any] = json.loads(source.read_text())
    except FileNotFoundError:
        raise DocsError(404, f"no OpenAPI document at {source}: `make openapi` writes it") from None
    spec["servers"] = [{"url": api_url.rstrip("/"), "description": "this sandbox (requests must be SigV4-signed)"}]
    info = spec.setdefault("info", {})
    info["description"] = f"{info.get('description', '')}\n\n{signing_note(api_url, region)}".strip()
    return spec


def page(api_url: str) -> str:
    """Swagger UI over /_sandbox/openapi.json, its files from /_sandbox/docs/."""
    title = f"spothub API: sandbox at {escape(api_url)}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="/_sandbox/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/_sandbox/docs/favicon-32x32.png">
</head>
<body>
  <noscript>Swagger UI needs JavaScript; the document itself is at /_sandbox/openapi.json.</noscript>
  <div id="swagger-ui"></div>
  <script src="/_sandbox/docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "/_sandbox/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    }});
  </script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """Where the pinned package keeps Swagger UI's files (found without importing the package: it imports Flask)."""
    spec = importlib.util.find_spec(SWAGGER_UI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DocsError(404, f"Swagger UI is not installed (the {SWAGGER_UI_PACKAGE} package): `make install`")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


def asset(name: str) -> RawAnswer:
    if name not in ASSETS:
        raise DocsError(404, f"no file {name} in the docs; one of {', '.join(ASSETS)}")
    path = swagger_ui_dir() / name
    try:
        return RawAnswer(path.read_bytes(), ASSETS[name])
    except FileNotFoundError:
        raise DocsError(404, f"Swagger UI's {name} is missing from {path.parent}") from None
