"""Where the sandbox's IAM meets the emulator: every request moto serves is authorized first (moto itself
authorizes nothing by default), and moto's Step Functions interpreter signs with the state machine's role.
`attach` lends a running sandbox's Enforcer; with none attached, everything passes as in plain moto."""

from __future__ import annotations

import warnings
from typing import Any

from spothub.sandbox.iam.enforcer import Enforcer

_enforcer: Enforcer | None = None
_applied = False


def attach(enforcer: Enforcer | None) -> None:
    global _enforcer  # noqa: PLW0603
    _enforcer = enforcer


def current() -> Enforcer | None:
    return _enforcer


def apply() -> None:
    """Authorize every emulator request before moto runs it (moto itself authorizes nothing by default)."""
    global _applied  # noqa: PLW0603
    if _applied:
        return
    from moto.core.exceptions import ServiceException  # noqa: PLC0415
    from moto.core.responses import ActionResult, BaseResponse  # noqa: PLC0415

    class AccessDenied(ServiceException):
        """Serialized in the calling service's protocol (JSON, query, EC2, CBOR) by moto's serializer. Defined
        here, outside moto's packages, so moto looks the code up in the calling service's model only."""

    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        enforcer = _enforcer
        refusal = enforcer.check_request(self) if enforcer is not None else None
        if refusal is None:
            return original(self)
        code, message = refusal
        with warnings.catch_warnings():  # moto warns when a service's model lists no shape for the code
            warnings.simplefilter("ignore", UserWarning)
            status, headers, body = self.serialized(ActionResult(AccessDenied(code, message)))
        headers["status"] = str(status if status >= 400 else 400)  # noqa: PLR2004
        return int(headers["status"]), headers, body

    BaseResponse.call_action = call_action  # type: ignore[method-assign]
    _state_machines_call_as_their_role()
    _applied = True


def _state_machines_call_as_their_role() -> None:
    """moto's Step Functions interpreter signs every service integration with one fixed key; on AWS a
    task calls with the state machine's role (or the task's Credentials.RoleArn). Each module of the
    interpreter imported `boto_client_for` by name, so each one's reference is replaced."""
    import sys  # noqa: PLC0415

    from moto.stepfunctions.parser.asl.utils import boto_client  # noqa: PLC0415

    original = boto_client.boto_client_for

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        client = original(region=region, service=service, state_credentials=state_credentials)
        enforcer = _enforcer
        if enforcer is None or state_credentials is None or not getattr(state_credentials, "role_arn", None):
            return client
        variables = enforcer.principals.credentials_for(state_credentials.role_arn, "states-execution")
        import boto3  # noqa: PLC0415

        return boto3.client(
            service,
            region_name=region,
            endpoint_url=client.meta.endpoint_url,
            aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
            config=client.meta.config,
        )

    import importlib  # noqa: PLC0415
    import pkgutil  # noqa: PLC0415

    from moto.stepfunctions.parser.asl.component.state import exec as state_exec  # noqa: PLC0415

    for found in pkgutil.walk_packages(state_exec.__path__, state_exec.__name__ + "."):
        importlib.import_module(found.name)
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if name.startswith("moto.stepfunctions.parser") and getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]
