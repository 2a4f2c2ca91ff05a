"""The spot finder function, invoked by another function (RequestResponse) with its request model."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable
from spothub_core.models.orchestrator_tasks import FindAnswer, FindRequest


def invoke_spot_finder(lambda_client: Any, function_name: str, request: FindRequest) -> FindAnswer:
    """The finder's ranking; DependencyUnavailable when it cannot be invoked or fails (EC2 not answering)."""
    try:
        response = lambda_client.invoke(
            FunctionName=function_name,
            InvocationType="RequestResponse",
            Payload=json.dumps(request.model_dump(mode="json", exclude_none=True)).encode(),
        )
    except (ClientError, BotoCoreError) as exc:
        raise DependencyUnavailable(f"could not invoke the spot finder: {reason_of(exc)}") from exc
    payload = response["Payload"].read()
    if response.get("FunctionError"):
        raise DependencyUnavailable(f"the spot finder failed: {payload[:500]!r}")
    return FindAnswer.model_validate_json(payload)
