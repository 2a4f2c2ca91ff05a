"""SigV4 verification for the sandbox's API, the check API Gateway makes for AWS_IAM routes.

The expected signature is computed with botocore's own signer from the request as received
(method, path, query, the signed headers, body) and the sandbox's credentials, and compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spothub.sandbox.shared_clock import real_time

AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
MAX_CLOCK_SKEW = timedelta(minutes=15)


class SignatureError(Exception):
    """Why a request is refused; the message is what API Gateway would say."""


@dataclass(frozen=True)
class Caller:
    access_key_id: str
    region: str


def verify(
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    now: datetime | None = None,
    other_secrets: Callable[[str], str | None] | None = None,
) -> Caller:
    """Check a request's SigV4 signature. Signed by `access_key_id`, or by another key whose secret
    `other_secrets` knows (a role session's)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    authorization = lowered.get("authorization")
    if not authorization:
        raise SignatureError("Missing Authentication Token")
    match = AUTHORIZATION.match(authorization.strip())
    if not match:
        raise SignatureError("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'")
    if match["service"] != "execute-api":
        raise SignatureError(f"Credential should be scoped to correct service: 'execute-api', not '{match['service']}'")
    if match["region"] != region:
        raise SignatureError(f"Credential should be scoped to a valid region, not '{match['region']}'")
    if match["key"] != access_key_id:
        other = other_secrets(match["key"]) if other_secrets else None
        if other is None:
            raise SignatureError("The security token included in the request is invalid.")
        secret_access_key = other
    amz_date = lowered.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("Missing or malformed X-Amz-Date") from None
    # The server's time is the sandbox clock (shared_clock.py), hours ahead of the real time once advanced; callers
    # outside the sandbox (the CLI, curl, a browser) sign with the real time: either is on time.
    server_times = [now] if now else [datetime.now(UTC), datetime.fromtimestamp(real_time(), UTC)]
    if all(abs(current - signed_at) > MAX_CLOCK_SKEW for current in server_times):
        raise SignatureError("Signature expired: the request time is more than 15 minutes from the server time")
    signed_headers = match["signed"].split(";")
    if "host" not in signed_headers:
        raise SignatureError("'Host' must be a signed header")
    missing = [h for h in signed_headers if h not in lowered]
    if missing:
        raise SignatureError(f"Signed headers are missing from the request: {', '.join(missing)}")

    # botocore trusts a signed x-amz-content-sha256 instead of hashing the body: check it is the body's.
    declared_hash = lowered.get("x-amz-content-sha256")
    if declared_hash is not None and declared_hash != hashlib.sha256(body).hexdigest():
        raise SignatureError("The provided x-amz-content-sha256 header does not match what was computed.")
    request = AWSRequest(method=method, url=url, data=body, headers={h: lowered[h] for h in signed_headers})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(access_key_id, secret_access_key, lowered.get("x-amz-security-token")),
        "execute-api",
        match["region"],
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise SignatureError(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return Caller(access_key_id=match["key"], region=match["region"])
