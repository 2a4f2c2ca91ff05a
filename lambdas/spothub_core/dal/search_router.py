"""The search region's router function, called synchronously across regions: the only way from the hub's
functions to the search instance's private address (the router runs in the search VPC, in the one security group
the instance's service port lets in)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable
from spothub_core.models.search_tasks import RouterAction, RouterRequest, RouterResponse


class SearchRouter:
    def __init__(self, lambda_client: Any, function_arn: str) -> None:
        self._lambda = lambda_client
        self._function_arn = function_arn

    def query(self, address: str, port: int, body: dict[str, Any], timeout_s: float) -> RouterResponse:
        return self._call(
            RouterRequest(
                action=RouterAction.QUERY, address=address, port=port, path="/search", body=body, timeout_s=timeout_s
            )
        )

    def health(self, address: str, port: int, path: str, timeout_s: float) -> RouterResponse:
        return self._call(
            RouterRequest(action=RouterAction.HEALTH, address=address, port=port, path=path, timeout_s=timeout_s)
        )

    def _call(self, request: RouterRequest) -> RouterResponse:
        """Raises DependencyUnavailable when the router itself cannot be invoked or fails; a service that does
        not answer is a RouterResponse with ok False."""
        try:
            response = self._lambda.invoke(
                FunctionName=self._function_arn,
                InvocationType="RequestResponse",
                Payload=json.dumps(request.model_dump(mode="json")).encode(),
            )
        except (ClientError, BotoCoreError) as exc:
            raise DependencyUnavailable(f"could not reach the search router: {reason_of(exc)}") from exc
        payload = response["Payload"].read()
        if response.get("FunctionError"):
            raise DependencyUnavailable(f"the search router failed: {payload[:300].decode(errors='replace')}")
        return RouterResponse.model_validate_json(payload)
