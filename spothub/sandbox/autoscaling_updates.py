"""UpdateAutoScalingGroup with part of a mixed instances policy, as AWS takes it: the sandbox's addition to moto.

AWS's API reference: the policy's LaunchTemplate "is required when creating an Auto Scaling group with a mixed
instances policy, but is not required when updating the group", and an update leaves what it does not name as
it was. So an update naming only InstancesDistribution (the deployment controller's on-demand switch) changes
the distribution and keeps the launch template and its overrides; and, naming no launch template, it needs no
launch template permissions of its caller. moto 5.2 replaces the whole policy and fails with a KeyError on one
without LaunchTemplate. Here a partial policy is merged into the group's before moto's update runs.

`tests/sandbox/test_emulator_patches.py` checks the patch against the pinned moto.
"""

from __future__ import annotations

from typing import Any

_original_update: Any = None


def merged_policy(current: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """The policy after an update naming `update`'s parts only: each part it names replaces (the distribution's
    fields one by one), the others stay."""
    merged = dict(current or {})
    for part, value in update.items():
        if part == "InstancesDistribution" and isinstance(merged.get(part), dict):
            merged[part] = {**merged[part], **value}
        else:
            merged[part] = value
    return merged


def _as_requested(policy: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored policy as a request names it: moto keeps the template by id and by name, and refuses both."""
    if not policy or "LaunchTemplate" not in policy:
        return policy
    template = policy["LaunchTemplate"]
    spec = dict(template.get("LaunchTemplateSpecification") or {})
    if spec.get("LaunchTemplateId"):
        spec.pop("LaunchTemplateName", None)
    return {**policy, "LaunchTemplate": {**template, "LaunchTemplateSpecification": spec}}


def _update(self: Any, *args: Any, mixed_instances_policy: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    if mixed_instances_policy is not None and "LaunchTemplate" not in mixed_instances_policy:
        mixed_instances_policy = merged_policy(_as_requested(self.mixed_instances_policy), mixed_instances_policy)
    elif mixed_instances_policy is None:
        # An update that names no policy keeps the group's (moto would set it to None).
        mixed_instances_policy = _as_requested(self.mixed_instances_policy)
    return _original_update(self, *args, mixed_instances_policy=mixed_instances_policy, **kwargs)


def apply() -> None:
    global _original_update  # noqa: PLW0603
    from moto.autoscaling.models import FakeAutoScalingGroup  # noqa: PLC0415

    if _original_update is None:
        _original_update = FakeAutoScalingGroup.update
        FakeAutoScalingGroup.update = _update  # type: ignore[method-assign]


def undo() -> None:
    global _original_update  # noqa: PLW0603
    from moto.autoscaling.models import FakeAutoScalingGroup  # noqa: PLC0415

    if _original_update is not None:
        FakeAutoScalingGroup.update = _original_update  # type: ignore[method-assign]
        _original_update = None
