"""cdk-nag (AwsSolutions pack) over the whole app, and the one way to acknowledge a finding.

cdk-nag v3 reports through CDK's policy validation: an unacknowledged error stops synthesis.
Every acknowledgment carries its reason, which is also written into the template's metadata.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_nag_checks(app: App) -> None:
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True))


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Accept finding `rule` (e.g. `AwsSolutions-IAM5[Resource::*]`) on `scope` and below, for `reason`."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def nag_resource(stack: Stack, arn: str) -> str:
    """`arn` as cdk-nag writes it in a finding id: references become `<Name>`, e.g. `<AWS::AccountId>`."""
    resolved = stack.resolve(arn)
    if isinstance(resolved, str):
        return resolved
    if isinstance(resolved, dict) and "Fn::Join" in resolved:
        separator, parts = resolved["Fn::Join"]
        return separator.join(_render_part(part) for part in parts)
    raise ValueError(f"cannot render {resolved!r} as a cdk-nag resource")


def _render_part(part: object) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and "Ref" in part:
        return f"<{part['Ref']}>"
    raise ValueError(f"cannot render {part!r} as part of a cdk-nag resource")


def invoke_versions_rule(function: IConstruct) -> str:
    """The finding `grant_invoke` raises: `<function ARN>:*` covers the function's versions and aliases."""
    child = function.node.default_child
    return f"AwsSolutions-IAM5[Resource::<{Stack.of(function).get_logical_id(child)}.Arn>:*]"  # type: ignore[arg-type]


STATE_MACHINE_REASON = (
    "Resource::* is X-Ray (PutTraceSegments, GetSampling*) and CloudWatch Logs delivery (CreateLogDelivery and "
    "friends), which support no resource-level permissions."
)
