"""The API's docs in the sandbox: /_sandbox/openapi.json (the checked-in document, served from this sandbox) and
/_sandbox/docs (Swagger UI, its files served by the sandbox itself)."""

from __future__ import annotations

import json
import re

import requests

from spothub.openapi import DOCUMENT
from spothub.sandbox.sandbox import Sandbox


def test_the_document_is_the_checked_in_one_served_from_the_sandbox(sandbox: Sandbox) -> None:
    answer = requests.get(sandbox.control_url + "openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    served = answer.json()
    checked_in = json.loads(DOCUMENT.read_text())
    assert served["servers"] == [
        {"url": sandbox.api_url.rstrip("/"), "description": "this sandbox (requests must be SigV4-signed)"}
    ]
    assert served["paths"] == checked_in["paths"]
    assert served["components"] == checked_in["components"]
    # What a reader of the page must know: its own requests are not signed, so 403, and how to sign.
    description = served["info"]["description"]
    assert description.startswith(checked_in["info"]["description"])
    assert "403" in description
    assert f'--aws-sigv4 "aws:amz:{sandbox.hub.region}:execute-api"' in description


def test_the_page_is_swagger_ui_with_every_file_from_the_sandbox(sandbox: Sandbox) -> None:
    page = requests.get(sandbox.control_url + "docs", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'url: "/_sandbox/openapi.json"' in page.text
    files = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert files and all(f.startswith("/_sandbox/docs/") for f in files), files  # no CDN
    base = sandbox.control_url.removesuffix("/_sandbox/")
    for path in files:
        asset = requests.get(base + path, timeout=10)
        assert asset.status_code == 200, path
        assert asset.content
    script = requests.get(sandbox.control_url + "docs/swagger-ui-bundle.js", timeout=10)
    assert script.headers["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.text
    assert requests.get(sandbox.control_url + "docs/flask_swagger_ui.py", timeout=10).status_code == 404


def test_what_the_page_would_send_is_refused_unsigned(sandbox: Sandbox) -> None:
    """As the page says: the API takes no unsigned request, the page's included."""
    answer = requests.get(sandbox.api_url + "status", headers={"Referer": sandbox.control_url + "docs"}, timeout=10)
    assert answer.status_code == 403
