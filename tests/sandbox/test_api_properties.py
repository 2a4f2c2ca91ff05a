"""Property-based tests of the API (schemathesis) against the sandbox: every operation of openapi.json (the
document the sandbox serves at /_sandbox/openapi.json), with requests generated from the document and signed with
SigV4 by the sandbox's credentials, as a caller of the deployed API signs them. The document is loaded from the
file when the module is collected (schemathesis' `from_fixture` reads a node attribute pytest 9 no longer has), and
the requests go to the session sandbox's API.

Every answer must be no 5xx, of a status the document lists for the operation, of the media type it lists, with
a body (and headers) its schema allows; a request that breaks the document must be refused with a 4xx.

Two sets of requests, so that the run starts nothing (no replica, job, search instance or agent record):
- valid and invalid requests ("all") for the operations that only read, or that write nothing for the requests
  generated here (a job's buckets are the deployment's, so a generated job is refused before anything is
  written; a generated job, worker or instance id names nothing there is; a scale-down with no instance stops
  nothing);
- invalid requests only ("negative": each breaks the document, so the API refuses it before acting) for those
  that would start simulated work or write records: enabling provisioning, a search query (starts the search
  instance's launch), a search scale-up, and an agent's registration (a health record the monitor then
  watches; as the sandbox's administrator, not an instance role, the API lets it through).
The teardown checks that nothing was started. Bounded: 20 examples per operation and phase, one fixed seed and
derandomized (the same requests every run, on CI too), no shrinking, no example database: about 1,000 requests,
some 15 s on top of the sandbox's start.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from spothub.openapi import DOCUMENT
from spothub.sandbox.sandbox import Sandbox

# State-changing operations whose valid requests would start simulated work or write a record: invalid requests only.
NEGATIVE_ONLY = [
    "POST /spot-provisioning",
    "POST /search/query",
    "POST /search/scale-up",
    "POST /agents/{instance_id}/register",
]
CONFIG = {
    "seed": 20261127,
    "generation": {
        "mode": "all",
        "max-examples": 20,
        "deterministic": True,
        "no-shrink": True,
        "database": "none",
        # The document's security scheme (the Authorization header) is the signature, made by SandboxSigV4.
        "with-security-parameters": False,
        # A query parameter the document does not name is ignored, as API Gateway and the functions ignore it:
        # not a request to refuse.
        "allow-extra-parameters": False,
    },
    "phases": {"stateful": {"enabled": False}},
    "operations": [{"include-name": NEGATIVE_ONLY, "generation": {"mode": "negative"}}],
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


class SandboxSigV4(requests.auth.AuthBase):
    """Sign a request as a caller of the API does (SigV4, service execute-api, the hub region): the host, the
    time, the media type and the body's hash."""

    def __init__(self, access_key_id: str, secret_access_key: str, region: str) -> None:
        self._signer = SigV4Auth(Credentials(access_key_id, secret_access_key), "execute-api", region)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body.encode() if isinstance(request.body, str) else (request.body or b"")
        request.body = body or None
        content_type = request.headers.get("Content-Type")
        signable = AWSRequest(
            method=request.method,
            url=request.url,
            data=body,
            headers={"Content-Type": content_type} if content_type is not None else {},
        )
        self._signer.add_auth(signable)
        for name in ("Authorization", "X-Amz-Date"):
            request.headers[name] = signable.headers[name]
        return request


# The checked-in document (tests/unit/test_openapi.py keeps it the generated one; test_api_docs.py checks that the
# sandbox serves it): one test per operation.
schema = schemathesis.openapi.from_path(DOCUMENT, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> Iterator[tuple[str, SandboxSigV4]]:
    """The sandbox as just deployed, its API's URL and the signer; afterwards, a check that nothing was started:
    no replica or instance, no job, no search instance."""
    sandbox.reset()
    # The instances of earlier tests of the session stay listed, terminated.
    before = {instance["instance_id"] for instance in sandbox.fleet.describe()}
    credentials = sandbox.credentials()
    yield (
        sandbox.api_url.rstrip("/"),
        SandboxSigV4(credentials["aws_access_key_id"], credentials["aws_secret_access_key"], sandbox.hub.region),
    )
    try:
        launched = [i for i in sandbox.fleet.describe() if i["instance_id"] not in before]
        assert launched == [], "the run launched instances"
        assert sandbox.request("GET", "jobs").json()["jobs"] == [], "the run submitted a job"
        assert sandbox.request("GET", "search/status").json()["total_instances"] == 0, "the run started a search"
        assert sandbox.request("GET", "spot-instances").json()["provisioning"] == "disabled"
    finally:
        sandbox.reset()  # should it have started something, nothing of it reaches the next tests


@schema.parametrize()
def test_the_api_answers_as_its_document_says(case: schemathesis.Case, api: tuple[str, SandboxSigV4]) -> None:
    base_url, auth = api
    case.call_and_validate(base_url=base_url, auth=auth, checks=CHECKS, timeout=30)
