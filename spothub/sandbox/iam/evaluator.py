"""IAM policy evaluation as AWS documents it, for the sandbox's principals (one account).

What it answers: may this principal perform this action on this resource, given the request's
condition keys, its identity-based policies and the resource's policy? An explicit Deny anywhere
wins; otherwise an Allow in an identity policy, or a resource policy Allow that names the
principal, grants (within one account either is enough, as AWS evaluates it). Evaluated:
Action/NotAction, Resource/NotResource, Principal/NotPrincipal, the condition operators below
with `...IfExists` and the `ForAnyValue:`/`ForAllValues:` set qualifiers. Not evaluated (the
README lists them): SCPs, permission boundaries, session policies, policy variables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

ContextValue = str | list[str]


@dataclass(frozen=True)
class Caller:
    """Who calls: an IAM role session (`arn`, `role_arn`) or an AWS service principal (`service`)."""

    arn: str
    role_arn: str | None = None
    service: str | None = None


@dataclass
class Decision:
    allowed: bool
    reason: str
    # The statements that decided it, as "<policy name>#<Sid or index>".
    matched: list[str] = field(default_factory=list)


@dataclass
class NamedPolicy:
    name: str
    document: dict[str, Any]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@cache
def _glob(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    # IAM wildcards: * any run of characters (colons included), ? one character; nothing else is special.
    regex = "".join(
        "." if part == "?" else ".*" if part == "*" else re.escape(part) for part in re.split(r"(\*|\?)", pattern)
    )
    return re.compile(f"^{regex}$", 0 if case_sensitive else re.IGNORECASE)


def wildcard_match(pattern: str, value: str, *, case_sensitive: bool = True) -> bool:
    return bool(_glob(pattern, case_sensitive).match(value))


def _action_matches(patterns: Iterable[str], action: str) -> bool:
    return any(wildcard_match(p, action, case_sensitive=False) for p in patterns)


def _resource_matches(patterns: Iterable[str], resource: str) -> bool:
    return any(p == "*" or wildcard_match(p, resource) for p in patterns)


def _principal_matches(principal: Any, caller: Caller) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    if caller.service:
        return caller.service in _as_list(principal.get("Service"))
    # An account's root stands for the account: it delegates to the caller's identity policies, it does
    # not grant to every role by itself.
    return any(aws == "*" or aws in (caller.arn, caller.role_arn) for aws in _as_list(principal.get("AWS")))


def _to_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _to_bool(value: str) -> str:
    return str(value).lower()


_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "NumericEquals": lambda a, b: a == b,
    "NumericNotEquals": lambda a, b: a != b,
    "NumericLessThan": lambda a, b: a < b,
    "NumericLessThanEquals": lambda a, b: a <= b,
    "NumericGreaterThan": lambda a, b: a > b,
    "NumericGreaterThanEquals": lambda a, b: a >= b,
}


def _single_match(operator: str, policy_value: str, actual: str) -> bool:
    """One policy value against one request value, for the positive form of `operator`."""
    if operator in ("StringEquals", "ArnEquals"):
        return actual == policy_value if operator == "StringEquals" else wildcard_match(policy_value, actual)
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() == str(policy_value).lower()
    if operator in ("StringLike", "ArnLike"):
        return wildcard_match(str(policy_value), actual)
    if operator == "Bool":
        return _to_bool(actual) == _to_bool(policy_value)
    if operator in _NUMERIC:
        a, b = _to_float(actual), _to_float(str(policy_value))
        return a is not None and b is not None and _NUMERIC[operator](a, b)
    raise UnsupportedCondition(f"condition operator {operator} is not evaluated by the sandbox")


class UnsupportedCondition(ValueError):
    """A policy uses a condition operator the sandbox cannot evaluate: a sandbox gap, never a silent allow."""


_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def _lookup(context: dict[str, ContextValue], key: str) -> ContextValue | None:
    lowered = key.lower()
    for name, value in context.items():
        if name.lower() == lowered:
            return value
    return None


def condition_holds(operator_expression: str, key: str, policy_values: Any, context: dict[str, ContextValue]) -> bool:
    qualifier, _, operator = operator_expression.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    values = [str(v) for v in _as_list(policy_values)]
    actual = _lookup(context, key)
    if operator == "Null":
        wants_absent = _to_bool(values[0]) == "true"
        return (actual is None or actual == []) == wants_absent
    if actual is None:
        # Absent key: ...IfExists and the negated operators hold, the others do not.
        return if_exists or operator in _NEGATED or qualifier == "ForAllValues"
    negated = operator in _NEGATED
    positive = _NEGATED.get(operator, operator)
    actual_values = [str(a) for a in _as_list(actual)]

    def any_policy_value(request_value: str) -> bool:
        return any(_single_match(positive, v, request_value) for v in values)

    if qualifier == "ForAllValues":
        return all(any_policy_value(a) != negated for a in actual_values)
    matched = any(any_policy_value(a) for a in actual_values)
    return not matched if negated else matched


def _conditions_hold(conditions: dict[str, Any] | None, context: dict[str, ContextValue]) -> bool:
    for operator, pairs in (conditions or {}).items():
        for key, values in pairs.items():
            if not condition_holds(operator, key, values, context):
                return False
    return True


def _statement_applies(
    statement: dict[str, Any],
    action: str,
    resource: str,
    context: dict[str, ContextValue],
    caller: Caller | None,
) -> bool:
    if not _action_and_resource_apply(statement, action, resource):
        return False
    if caller is not None:  # a resource policy: the statement must name the caller
        if "Principal" in statement and not _principal_matches(statement["Principal"], caller):
            return False
        if "NotPrincipal" in statement and _principal_matches(statement["NotPrincipal"], caller):
            return False
    return _conditions_hold(statement.get("Condition"), context)


def _action_and_resource_apply(statement: dict[str, Any], action: str, resource: str) -> bool:
    if "Action" in statement and not _action_matches(_as_list(statement["Action"]), action):
        return False
    if "NotAction" in statement and _action_matches(_as_list(statement["NotAction"]), action):
        return False
    if "Resource" in statement and not _resource_matches(_as_list(statement["Resource"]), resource):
        return False
    return not ("NotResource" in statement and _resource_matches(_as_list(statement["NotResource"]), resource))


def _statements(policy: NamedPolicy) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{policy.name}#{statement.get('Sid') or index}", statement)
        for index, statement in enumerate(_as_list(policy.document.get("Statement")))
    ]


def evaluate(  # noqa: PLR0917 - the request's parts, as IAM's documentation names them
    caller: Caller,
    action: str,
    resource: str,
    context: dict[str, ContextValue],
    identity_policies: list[NamedPolicy],
    resource_policy: NamedPolicy | None = None,
) -> Decision:
    allows: list[str] = []
    for policy in identity_policies:
        for name, statement in _statements(policy):
            if _statement_applies(statement, action, resource, context, None):
                if statement.get("Effect") == "Deny":
                    return Decision(False, f"explicit deny in {name}", [name])
                allows.append(name)
    if resource_policy is not None:
        for name, statement in _statements(resource_policy):
            if _statement_applies(statement, action, resource, context, caller):
                if statement.get("Effect") == "Deny":
                    return Decision(False, f"explicit deny in the resource policy ({name})", [name])
                allows.append(name)
    if allows:
        return Decision(True, "allowed", allows)
    where = "no identity-based policy" + (" and no resource-based policy" if resource_policy else "")
    return Decision(False, f"{where} allows {action} on {resource}")
