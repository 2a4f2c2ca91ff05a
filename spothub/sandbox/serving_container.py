"""The serving container as ECS would create it on a simulated instance: the task definition the worker's
launch starts (the family in the worker function's SPOTHUB_TASK_DEFINITION, its latest revision, read
from the emulator), its container's plain environment, and each container secret resolved from Secrets
Manager (or SSM Parameter Store) as the task execution role. The calls go through the emulator with the
execution role's credentials, so the sandbox's IAM decides them: a role without the grant fails as ECS
fails the task (`ResourceInitializationError: unable to pull secrets or registry auth: ...`), and the
container never starts.

What the stand-in model server takes from the container definition: the model it serves (the command's
`--served-model-name`, `--model` or `--model-path`, also inside `sh -c '...'`), the serving port
(`portMappings`, else the health check's URL, else `--port`) and the health check's path.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from spothub.sandbox.iam.enforcer import Enforcer

TASK_DEFINITION_VARIABLE = "SPOTHUB_TASK_DEFINITION"
DEFAULT_HEALTH_PATH = "/health"
_HEALTH_URL = re.compile(r"https?://(?:localhost|127\.0\.0\.1|0\.0\.0\.0)(?::(?P<port>\d+))?(?P<path>/[^\s'\"|;&]*)?")
_MODEL_FLAGS = ("--served-model-name", "--model", "--model-path")
# A secret ARN: arn:aws:secretsmanager:region:account:secret:name[:json-key[:version-stage[:version-id]]]
SECRET_ARN_PARTS = 7


class ContainerStartError(RuntimeError):
    """ECS could not create the container; the message is the task's stoppedReason."""


@dataclass
class ServingContainer:
    task_definition_arn: str
    environment: dict[str, str]  # the plain environment and the resolved secrets
    secret_names: list[str] = field(default_factory=list)  # which variables are secrets
    model: str | None = None
    port: int | None = None
    health_path: str = DEFAULT_HEALTH_PATH


def serving_task_definition(account: str, region: str) -> Any:
    """The task definition the region's worker launch starts (its latest revision); None when no worker
    function names one (a region without spothub's worker stack)."""
    from moto.awslambda.models import lambda_backends  # noqa: PLC0415
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    families = {
        str(function.environment_vars[TASK_DEFINITION_VARIABLE])
        for function in lambda_backends[account][region]._lambdas.all()
        if TASK_DEFINITION_VARIABLE in (function.environment_vars or {})
    }
    backend = ecs_backends[account][region]
    for family in sorted(families):
        name, _, revision = family.rsplit("/", 1)[-1].partition(":")
        revisions = backend.task_definitions.get(name) or {}
        if revisions:
            return revisions[int(revision)] if revision else revisions[max(revisions)]
    return None


def model_of(command: list[str]) -> str | None:
    words = list(command)
    for index, word in enumerate(command):
        if word in ("-c", "-lc") and index + 1 < len(command):
            words += shlex.split(command[index + 1])
    found: dict[str, str] = {}
    for index, word in enumerate(words):
        flag, _, inline = word.partition("=")
        if flag in _MODEL_FLAGS:
            value = inline or (words[index + 1] if index + 1 < len(words) else "")
            found.setdefault(flag, value)
    if "serve" in words[:3]:  # `vllm serve MODEL ...`
        after = words[words.index("serve") + 1 :]
        if after and not after[0].startswith("-"):
            found.setdefault("--model", after[0])
    return next((found[flag] for flag in _MODEL_FLAGS if found.get(flag)), None)


def port_and_health_path(container: dict[str, Any]) -> tuple[int | None, str]:
    health = " ".join(str(part) for part in (container.get("healthCheck") or {}).get("command", []))
    match = _HEALTH_URL.search(health)
    path = (match["path"] if match and match["path"] else DEFAULT_HEALTH_PATH) or DEFAULT_HEALTH_PATH
    mappings = container.get("portMappings") or []
    port = mappings[0].get("containerPort") or mappings[0].get("hostPort") if mappings else None
    if port is None and match and match["port"]:
        port = match["port"]
    command = [str(part) for part in container.get("command") or []]
    if port is None and "--port" in command[:-1]:
        port = command[command.index("--port") + 1]
    return (int(port) if port is not None and str(port).isdigit() else None), path


def _client(service: str, region: str, endpoint_url: str, credentials: dict[str, str]) -> Any:
    return boto3.session.Session().client(
        service,
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}),
    )


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}"
    return f"{type(exc).__name__}: {exc}"


def resolve_secret(value_from: str, region: str, endpoint_url: str, credentials: dict[str, str]) -> str:
    """One container secret's value, fetched as ECS's agent does with the execution role's credentials."""
    parts = value_from.split(":")
    if value_from.startswith("arn:") and parts[2] == "secretsmanager":
        secret_id = ":".join(parts[:SECRET_ARN_PARTS])
        json_key, stage, version = [*parts[SECRET_ARN_PARTS:], "", "", ""][:3]
        query: dict[str, str] = {"SecretId": secret_id}
        if stage:
            query["VersionStage"] = stage
        if version:
            query["VersionId"] = version
        try:
            answer = _client("secretsmanager", parts[3], endpoint_url, credentials).get_secret_value(**query)
        except (ClientError, BotoCoreError) as exc:
            raise ContainerStartError(
                "ResourceInitializationError: unable to pull secrets or registry auth: execution resource "
                "retrieval failed: unable to retrieve secret from asm: service call has been retried 1 time(s): "
                f"failed to fetch secret {secret_id} from secrets manager: {_error_text(exc)}"
            ) from exc
        value = str(answer.get("SecretString", ""))
        if json_key:
            try:
                value = str(json.loads(value)[json_key])
            except (ValueError, KeyError, TypeError) as exc:
                raise ContainerStartError(
                    f"ResourceInitializationError: unable to pull secrets or registry auth: secret {secret_id}: "
                    f"no JSON key {json_key!r}"
                ) from exc
        return value
    name = value_from.split(":parameter", 1)[1] if value_from.startswith("arn:") else value_from
    parameter_region = parts[3] if value_from.startswith("arn:") else region
    try:
        answer = _client("ssm", parameter_region, endpoint_url, credentials).get_parameters(
            Names=[name], WithDecryption=True
        )
    except (ClientError, BotoCoreError) as exc:
        raise ContainerStartError(
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval "
            f"failed: unable to retrieve secrets from ssm: service call has been retried 1 time(s): {_error_text(exc)}"
        ) from exc
    if answer.get("InvalidParameters"):
        raise ContainerStartError(
            "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval "
            f"failed: unable to retrieve secrets from ssm: invalid parameters: {answer['InvalidParameters']}"
        )
    return str(answer["Parameters"][0]["Value"])


def prepare(
    *,
    account: str,
    region: str,
    session_name: str,
    endpoint_url: str,
    admin_credentials: dict[str, str],
    iam: Enforcer | None,
) -> ServingContainer | None:
    """The serving container of the region's task definition, secrets resolved; None when the region has no
    serving task definition. Raises ContainerStartError with the reason ECS would stop the task with."""
    task_definition = serving_task_definition(account, region)
    if task_definition is None or not task_definition.container_definitions:
        return None
    container = task_definition.container_definitions[0]
    environment = {str(e["name"]): str(e.get("value", "")) for e in container.get("environment") or []}
    secrets = container.get("secrets") or []
    execution_role = getattr(task_definition, "execution_role_arn", None)
    if secrets and not execution_role:
        raise ContainerStartError(
            f"ClientException: {task_definition.arn} has container secrets and no task execution role to fetch them"
        )
    credentials = admin_credentials
    if iam is not None and execution_role:
        credentials = iam.principals.credentials_for(execution_role, session_name)
    for secret in secrets:
        environment[str(secret["name"])] = resolve_secret(str(secret["valueFrom"]), region, endpoint_url, credentials)
    port, health_path = port_and_health_path(container)
    return ServingContainer(
        task_definition_arn=task_definition.arn,
        environment=environment,
        secret_names=[str(s["name"]) for s in secrets],
        model=model_of([str(part) for part in container.get("command") or []]),
        port=port,
        health_path=health_path,
    )
