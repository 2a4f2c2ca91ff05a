"""Where the sandbox's IAM meets the emulator: every request moto serves is authorized first (moto itself
authorizes nothing by default), and moto's Step Functions interpreter signs with the state machine's role.
`attach` lends a running sandbox's Enforcer; with none attached, everything passes as in plain moto."""

from __future__ import annotations

import threading
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
    _s3_authorizes_first()
    _state_machines_call_as_their_role()
    _applied = True


def _s3_authorizes_first() -> None:
    """moto's S3 answers outside call_action: each of its operations names its action and asks
    `_authenticate_and_authorize_s3_action` first (bucket, key), which is where the sandbox decides."""
    from moto.s3.exceptions import S3ClientError  # noqa: PLC0415
    from moto.s3.responses import S3Response  # noqa: PLC0415

    class S3AccessDenied(S3ClientError):
        code = "AccessDenied"

        def __init__(self, message: str) -> None:
            super().__init__("AccessDenied", message)

    original = S3Response._authenticate_and_authorize_s3_action

    def authorize(self: Any, bucket_name: str | None = None, key_name: str | None = None) -> None:
        original(self, bucket_name=bucket_name, key_name=key_name)
        enforcer = _enforcer
        if enforcer is None:
            return
        refusal = enforcer.check_s3(
            authorization_header=str(self.headers.get("Authorization", "") or ""),
            action=str(self.data.get("Action", "")),
            bucket=bucket_name,
            key=key_name,
            query=dict(self.querystring or {}),
        )
        if refusal is not None:
            raise S3AccessDenied(refusal)

    S3Response._authenticate_and_authorize_s3_action = authorize  # type: ignore[method-assign]


def _state_machines_call_as_their_role() -> None:
    """moto's Step Functions interpreter signs every service integration with one fixed key; on AWS a
    task calls with the state machine's role (or the task's Credentials.RoleArn). Each module of the
    interpreter imported `boto_client_for` by name, so each one's reference is replaced."""
    import sys  # noqa: PLC0415

    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415
    from moto.settings import moto_server_port  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.utils import boto_client  # noqa: PLC0415

    original = boto_client.boto_client_for
    # The interpreter's own client settings (no retries: Retry states retry), from one session made now: a
    # client built from boto3's default session in this thread could pick up a Lambda function's session
    # or read an environment being swapped for an invocation (see lambda_runtime).
    session = boto3.session.Session()
    lock = threading.Lock()
    settings = Config(
        parameter_validation=False,
        retries={"max_attempts": 0, "total_max_attempts": 1},
        connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
        read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
    )

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        enforcer = _enforcer
        role_arn = getattr(state_credentials, "role_arn", None)
        if enforcer is None or not role_arn:
            return original(region=region, service=service, state_credentials=state_credentials)
        variables = enforcer.principals.credentials_for(role_arn, "states-execution")
        with lock:  # a botocore session is not safe to build clients from in several threads at once
            return session.client(
                service,
                region_name=region,
                endpoint_url=f"http://localhost:{moto_server_port()}",
                aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
                config=settings,
            )

    import importlib  # noqa: PLC0415
    import pkgutil  # noqa: PLC0415

    from moto.stepfunctions.parser.asl.component.state import exec as state_exec  # noqa: PLC0415

    for found in pkgutil.walk_packages(state_exec.__path__, state_exec.__name__ + "."):
        importlib.import_module(found.name)
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        importer = name.startswith("moto.stepfunctions.parser") and name != boto_client.__name__
        if importer and getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]
