"""An EC2 instance metadata (IMDSv2) client: session token, refreshed before it expires."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from spothub_core.timings import AGENT_IMDS_TIMEOUT_SECONDS, IMDS_TOKEN_RENEW_MARGIN_SECONDS, IMDS_TOKEN_TTL_SECONDS

DEFAULT_ENDPOINT = "http://169.254.169.254"


class ImdsError(RuntimeError):
    pass


class Imds:
    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = AGENT_IMDS_TIMEOUT_SECONDS,
        token_ttl: int = IMDS_TOKEN_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ImdsError(f"IMDS endpoint must be an http(s) URL, got {endpoint!r}")
        self._endpoint = endpoint.rstrip("/")
        self._timeout = timeout
        self._token_ttl = token_ttl
        self._clock = clock
        self._token: str | None = None
        self._token_expires_at = 0.0

    def token(self) -> str:
        now = self._clock()
        if self._token is None or now >= self._token_expires_at - IMDS_TOKEN_RENEW_MARGIN_SECONDS:
            request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
                f"{self._endpoint}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self._token_ttl)},
            )
            self._token = self._open(request)
            self._token_expires_at = now + self._token_ttl
        return self._token

    def get(self, path: str) -> str | None:
        """The value at `latest/meta-data/<path>`, or None where IMDS has nothing (404)."""
        return self._get(f"latest/meta-data/{path}")

    def identity(self) -> dict[str, str]:
        document = self._get("latest/dynamic/instance-identity/document")
        if document is None:
            raise ImdsError("IMDS has no instance identity document")
        return json.loads(document)

    def tags(self) -> dict[str, str]:
        """Instance tags, when the launch template enables tags in metadata."""
        listing = self.get("tags/instance")
        if not listing:
            return {}
        return {key: self.get(f"tags/instance/{key}") or "" for key in listing.split("\n") if key}

    def _get(self, path: str) -> str | None:
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            f"{self._endpoint}/{path}", headers={"X-aws-ec2-metadata-token": self.token()}
        )
        try:
            return self._open(request)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # noqa: PLR2004
                return None
            if exc.code == 401:  # noqa: PLR2004  the token expired early (e.g. IMDS restarted): renew once
                self._token = None
                request.headers["X-aws-ec2-metadata-token"] = self.token()
                return self._open(request)
            raise

    def _open(self, request: urllib.request.Request) -> str:
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310 (fixed IMDS URL)
                return response.read().decode()
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as exc:
            raise ImdsError(f"IMDS at {self._endpoint} did not answer: {exc}") from exc
