"""The sandbox says no where AWS would: every call a principal makes is authorized (hooks.py) before the
emulator runs it.

Calls reach the emulator signed with the caller's own access key (`principals`). Each is turned into
the IAM actions AWS authorizes (`actions`), evaluated against the caller role's policies as the
deployed templates wrote them (read from the emulator's IAM) and the resource's policy
(`evaluator`), and refused with the service's own AccessDenied error when not allowed. Calls that
AWS services make on a deployment's behalf (EventBridge delivering to a target or a dead-letter queue,
API Gateway invoking a function) are checked by `authorize_service` / `authorize_role` where the sandbox
delivers them. Every decision is kept: `usage()` lists per principal the actions it
used, `denials` what was refused, so least privilege can be read off a run.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from spothub.sandbox.iam.actions import (
    ApiRequest,
    Authorization,
    ResourceFacts,
    UnresolvedAction,
    authorizations_for,
    s3_authorizations,
)
from spothub.sandbox.iam.evaluator import (
    Caller,
    ContextValue,
    Decision,
    NamedPolicy,
    UnsupportedCondition,
    evaluate,
    wildcard_match,
)
from spothub.sandbox.iam.principals import Principals, RoleSession
from spothub.sandbox.iam.reference import context_for

# Signing names that differ from the IAM service prefix.
_IAM_PREFIX = {"monitoring": "cloudwatch", "email": "ses", "execute-api": "execute-api"}
# The error code each service answers a refused call with (its API reference).
_DENIED_CODE = {
    "ec2": "UnauthorizedOperation",
    "autoscaling": "AccessDenied",
    "cloudwatch": "AccessDenied",
    "sns": "AuthorizationError",
    "sqs": "AccessDenied",
    "route53": "AccessDenied",
    "sts": "AccessDenied",
    "iam": "AccessDenied",
}
ARN_PARTS = 6
# When the service's call to KMS on the caller's behalf is refused (SNS and SQS API references).
_KMS_DENIED_CODE = {"sns": "KMSAccessDenied", "sqs": "KmsAccessDenied"}
_CREDENTIAL = re.compile(r"Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[^/]+)/(?P<service>[^/]+)/")


@dataclass
class Denial:
    principal: str
    action: str
    resource: str
    reason: str

    def line(self) -> str:
        return f"{self.principal}: {self.action} on {self.resource}: {self.reason}"


def _policies_of_role(role_arn: str) -> list[NamedPolicy]:
    from moto.iam.models import iam_backends  # noqa: PLC0415

    account, partition = role_arn.split(":")[4], role_arn.split(":")[1]
    backend = iam_backends[account][partition]
    try:
        role = backend.get_role_by_arn(role_arn)
    except Exception:
        return []
    policies = [NamedPolicy(name, _document(doc)) for name, doc in role.policies.items()]
    for managed in role.managed_policies.values():
        version = next((v for v in managed.versions if v.is_default), managed.versions[-1])
        policies.append(NamedPolicy(managed.name, _document(version.document)))
    return policies


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _document(document: Any) -> dict[str, Any]:
    return json.loads(document) if isinstance(document, str) else dict(document)


def _topic_policy(account: str, region: str, resource: str) -> NamedPolicy | None:
    from moto.sns.models import sns_backends  # noqa: PLC0415

    topic = sns_backends[account][region].topics.get(resource)
    return NamedPolicy("topic policy", _document(topic.policy)) if topic else None


def _queue_policy(account: str, region: str, resource: str) -> NamedPolicy | None:
    from moto.sqs.models import sqs_backends  # noqa: PLC0415

    queue = sqs_backends[account][region].queues.get(resource.split(":")[5])
    return NamedPolicy("queue policy", _document(queue.policy)) if queue and queue.policy else None


def _key_policy(account: str, region: str, resource: str) -> NamedPolicy | None:
    from moto.kms.models import kms_backends  # noqa: PLC0415

    try:
        key = kms_backends[account][region].describe_key(resource)
    except Exception:
        return None
    return NamedPolicy("key policy", _document(key.policy))


def _function_policy(account: str, region: str, resource: str) -> NamedPolicy | None:
    from moto.awslambda.models import lambda_backends  # noqa: PLC0415

    try:
        function = lambda_backends[account][region].get_function(resource.split(":")[6])
    except Exception:
        return None
    statements = function.policy.statements if function.policy else []
    return NamedPolicy("function policy", {"Statement": statements}) if statements else None


def _bucket_policy(account: str, _region: str, resource: str) -> NamedPolicy | None:
    """The policy of the bucket an S3 ARN (bucket or object) names; S3 ARNs carry no account: the caller's."""
    from moto.s3.models import s3_backends  # noqa: PLC0415

    bucket_name = resource.split(":", 5)[5].split("/", 1)[0]
    bucket = s3_backends[account]["aws"].buckets.get(bucket_name) if account else None
    policy = getattr(bucket, "policy", None) if bucket else None
    if not policy:
        return None
    return NamedPolicy("bucket policy", _document(policy.decode() if isinstance(policy, bytes) else policy))


_RESOURCE_POLICIES = {
    "sns": _topic_policy,
    "sqs": _queue_policy,
    "kms": _key_policy,
    "lambda": _function_policy,
    "s3": _bucket_policy,
}


def resource_policy(resource: str, caller_account: str = "") -> NamedPolicy | None:
    """The resource-based policy AWS evaluates with a call on `resource`, where the sandbox knows one."""
    parts = resource.split(":")
    reader = _RESOURCE_POLICIES.get(parts[2]) if len(parts) >= ARN_PARTS else None
    return reader(parts[4] or caller_account, parts[3], resource) if reader else None


def _evaluate_on_key(
    caller: Caller, action: str, key_arn: str, context: dict[str, ContextValue], identity: list[NamedPolicy]
) -> Decision:
    """KMS asks the key policy first: it allows the caller itself, or it allows the account (the root
    principal) and so lets the caller's IAM policies decide. Without either, no IAM policy helps."""
    key_policy = resource_policy(key_arn)
    if key_policy is None:
        return Decision(False, f"the key {key_arn} has no key policy the sandbox can read")
    direct = evaluate(caller, action, key_arn, context, [], key_policy)
    if direct.allowed or direct.reason.startswith("explicit deny"):
        return direct
    partition, account = key_arn.split(":")[1], key_arn.split(":")[4]
    root = f"arn:{partition}:iam::{account}:root"
    if not evaluate(Caller(arn=root, role_arn=root), action, key_arn, context, [], key_policy).allowed:
        return Decision(False, f"the key policy of {key_arn} neither allows the caller nor its account {action}")
    return evaluate(caller, action, key_arn, context, identity)


class Enforcer:
    def __init__(self, principals: Principals, *, enforce: bool = True, facts: ResourceFacts | None = None) -> None:
        self.principals = principals
        self.enforce = enforce
        self.facts = facts or ResourceFacts()
        self.denials: list[Denial] = []
        self._usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._lock = threading.Lock()

    # --- what a run shows ---------------------------------------------------------------------

    def usage(self) -> dict[str, list[str]]:
        """Per principal (role name, or service principal), the actions it was allowed, sorted."""
        with self._lock:
            return {who: sorted(actions) for who, actions in sorted(self._usage.items())}

    def unused(self, role_arns: list[str]) -> dict[str, list[str]]:
        """Per role, the actions its policies allow that no call of the run used: a permission a run shows
        unused is either for a path the run did not walk or one to remove."""
        usage = self.usage()
        unused: dict[str, list[str]] = {}
        for role_arn in role_arns:
            role_name = role_arn.rsplit("/", 1)[-1]
            used = usage.get(role_name, [])
            granted = {
                action
                for policy in _policies_of_role(role_arn)
                for statement in _listed(policy.document.get("Statement"))
                if statement.get("Effect") == "Allow"
                for action in _listed(statement.get("Action"))
            }
            idle = sorted(a for a in granted if not any(wildcard_match(a, u, case_sensitive=False) for u in used))
            if idle:
                unused[role_name] = idle
        return unused

    def report(self, role_arns: list[str] | None = None) -> str:
        """The run's IAM, for people: per principal the actions it used, the permissions of `role_arns` no
        call used, then every refusal."""
        lines = ["IAM: the actions each principal used (evaluated against the deployed policies)"]
        for who, actions in self.usage().items():
            lines.append(f"  {who}")
            lines.extend(f"      {action}" for action in actions)
        idle = self.unused(role_arns or [])
        if idle:
            lines.append("IAM: allowed by a role's policies, used by no call of this run")
            for who, actions in idle.items():
                lines.append(f"  {who}: {', '.join(actions)}")
        with self._lock:
            denials = list(self.denials)
        lines.append(f"IAM: {len(denials)} call(s) refused" + (":" if denials else ""))
        lines.extend(f"  {denial.line()}" for denial in denials)
        return "\n".join(lines)

    def forget(self) -> None:
        with self._lock:
            self.denials.clear()
            self._usage.clear()

    def _record(self, who: str, action: str, resource: str, decision: Decision) -> None:
        with self._lock:
            if decision.allowed:
                self._usage[who][action] += 1
            else:
                self.denials.append(Denial(who, action, resource, decision.reason))

    # --- decisions ----------------------------------------------------------------------------

    def authorize_role(
        self, role_arn: str, session_name: str, authorization: Authorization, *, label: str | None = None
    ) -> Decision:
        caller = RoleSession(role_arn, session_name).caller
        return self._decide(caller, label or role_arn.rsplit("/", 1)[-1], authorization, _policies_of_role(role_arn))

    def authorize_service(self, service: str, authorization: Authorization) -> Decision:
        """An AWS service principal (events.amazonaws.com, ...) acting on a resource: only the resource's
        policy can allow it."""
        return self._decide(Caller(arn=service, service=service), service, authorization, [])

    def _decide(self, caller: Caller, who: str, authorization: Authorization, identity: list[NamedPolicy]) -> Decision:
        given: dict[str, ContextValue] = {"aws:PrincipalArn": caller.role_arn or caller.arn, **authorization.context}
        decision = Decision(True, "no resources")
        for resource in authorization.resources:
            context = context_for(authorization.action, resource, given)
            try:
                if authorization.action.startswith("kms:"):
                    decision = _evaluate_on_key(caller, authorization.action, resource, context, identity)
                else:
                    account = (caller.role_arn or caller.arn).split(":")[4] if caller.role_arn else ""
                    decision = evaluate(
                        caller, authorization.action, resource, context, identity, resource_policy(resource, account)
                    )
            except UnsupportedCondition as exc:
                decision = Decision(False, f"sandbox gap: {exc}")
            self._record(who, authorization.action, resource, decision)
            if not decision.allowed:
                break
        if not self.enforce:
            return Decision(True, f"not enforced ({decision.reason})")
        return decision

    # --- the emulator's requests --------------------------------------------------------------

    def check_request(self, response: Any) -> tuple[str, str] | None:
        """For a moto BaseResponse about to run: None when allowed, else (error code, message)."""
        match = _CREDENTIAL.search(response.headers.get("Authorization", "") or "")
        if match is None or self.principals.is_admin(match["key"]):
            return None
        session = self.principals.session(match["key"])
        service = _IAM_PREFIX.get(match["service"], match["service"])
        operation = response._get_action()
        if session is None:
            reason = "The security token included in the request is invalid."
            self._record(f"unknown key {match['key']}", f"{service}:{operation}", "*", Decision(False, reason))
            return ("InvalidClientTokenId", reason) if self.enforce else None
        request = ApiRequest(
            service=service,
            operation=operation,
            region=match["region"],
            account=session.role_arn.split(":")[4],
            params=_parameters(response),
            path=response.path,
            partition=session.role_arn.split(":")[1],
            body=_raw_body(response),
        )
        who = session.role_arn.rsplit("/", 1)[-1]
        try:
            authorizations = authorizations_for(request, self.facts)
        except (UnresolvedAction, KeyError) as exc:
            reason = f"sandbox gap: the resources of {service}:{operation} are not modelled ({exc})"
            self._record(who, f"{service}:{operation}", "?", Decision(False, reason))
            return (_DENIED_CODE.get(service, "AccessDeniedException"), reason) if self.enforce else None
        for authorization in authorizations:
            decision = self.authorize_role(session.role_arn, session.session_name, authorization, label=who)
            if not decision.allowed:
                resource = authorization.resources[0] if authorization.resources else "*"
                message = (
                    f"User: {session.caller.arn} is not authorized to perform: {authorization.action} "
                    f"on resource: {resource} because {decision.reason}"
                )
                code = _DENIED_CODE.get(service, "AccessDeniedException")
                if authorization.action.startswith("kms:"):  # the service's own error for its call to KMS
                    code = _KMS_DENIED_CODE.get(service, code)
                return code, message
        return None

    def check_s3(
        self, *, authorization_header: str, action: str, bucket: str | None, key: str | None, query: dict[str, Any]
    ) -> str | None:
        """For an S3 request about to run (moto's S3 does not go through call_action): None when allowed, else
        the AccessDenied message."""
        match = _CREDENTIAL.search(authorization_header or "")
        if match is None or self.principals.is_admin(match["key"]):
            return None
        session = self.principals.session(match["key"])
        if session is None:
            reason = "The AWS Access Key Id you provided does not exist in our records."
            self._record(f"unknown key {match['key']}", f"s3:{action}", "*", Decision(False, reason))
            return reason if self.enforce else None
        who = session.role_arn.rsplit("/", 1)[-1]
        try:
            authorizations = s3_authorizations(action, bucket, key, query, partition=session.role_arn.split(":")[1])
        except UnresolvedAction as exc:
            reason = f"sandbox gap: the resources of s3:{action} are not modelled ({exc})"
            self._record(who, f"s3:{action}", "?", Decision(False, reason))
            return reason if self.enforce else None
        for authorization in authorizations:
            decision = self.authorize_role(session.role_arn, session.session_name, authorization, label=who)
            if not decision.allowed:
                resource = authorization.resources[0] if authorization.resources else "*"
                return (
                    f"User: {session.caller.arn} is not authorized to perform: {authorization.action} "
                    f'on resource: "{resource}" because {decision.reason}'
                )
        return None


def _raw_body(response: Any) -> str:
    body = response.body
    if isinstance(body, bytes):
        return body.decode(errors="replace")
    return body if isinstance(body, str) else ""


def _parameters(response: Any) -> dict[str, Any]:
    body = response.body
    if isinstance(body, dict):  # some services' responses parse the body before the action runs
        return body
    if isinstance(body, bytes):
        try:
            body = body.decode()
        except UnicodeDecodeError:
            body = ""
    if body and body.lstrip().startswith("{"):
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            pass
    return {
        key: values[0] if isinstance(values, list) and values else values
        for key, values in response.querystring.items()
    }
