"""What the sandbox adds to the pinned emulator (moto), in one place.

Each addition names the moto behaviour it changes. `tests/sandbox/test_emulator_patches.py`
checks, against the pinned version, that every gap still exists and that the addition closes it,
so an upgrade of moto that changes what was patched fails loudly instead of silently.
"""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
import types
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from spothub.sandbox import hops
from spothub.sandbox.iam import hooks as iam_hooks
from spothub.sandbox.iam.actions import Authorization
from spothub.sandbox.lambda_runtime import LambdaRuntime

MOTO_VERSION = "5.2.5"
# A group's Status while a ForceDelete terminates its instances (the fleet deletes it once they powered off).
DELETE_IN_PROGRESS = "Delete in progress"

PropertyAdapter = Callable[[dict[str, Any]], dict[str, Any]]

_applied = False
_lock = threading.Lock()


@dataclass
class Hooks:
    """What the running sandbox lends the patched emulator."""

    lambda_runtime: LambdaRuntime
    # Asynchronous work (Event invocations, rule targets) runs here, never on the caller's thread.
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "sandbox-async"))
    # Called with (bus ARN, event) for every event put on any bus: the sandbox's timeline.
    on_event: Callable[[str, dict[str, Any]], None] = lambda _bus, _event: None
    # Called with (what, details) for deliveries that failed and went to a dead-letter queue.
    on_failure: Callable[[str, dict[str, Any]], None] = lambda _what, _details: None
    # Called with (topic ARN, {"message_id", "subject", "message", "attributes"}) for every SNS publish.
    on_notification: Callable[[str, dict[str, Any]], None] = lambda _topic, _details: None
    # The simulated spot market and fleet (spothub.sandbox.market / .fleet), when the sandbox runs one.
    market: Any = None
    fleet: Any = None
    # The sandbox clock (spothub.sandbox.clock.SandboxClock): Wait states wait on it.
    clock: Any = None
    _async_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _async_in_flight: int = 0

    def async_started(self) -> None:
        with self._async_lock:
            self._async_in_flight += 1

    def async_ended(self) -> None:
        with self._async_lock:
            self._async_in_flight -= 1

    def async_in_flight(self) -> int:
        """Asynchronous invocations queued or running."""
        with self._async_lock:
            return self._async_in_flight


_hooks: Hooks | None = None


def attach(hooks: Hooks | None) -> None:
    """Lend (or, with None, take back) the running sandbox's services to the patched emulator."""
    global _hooks  # noqa: PLW0603
    _hooks = hooks


def _require_hooks() -> Hooks:
    if _hooks is None:
        raise RuntimeError("the sandbox is not running: no Lambda runtime is attached to the emulator")
    return _hooks


def _kms_key_tags(properties: dict[str, Any]) -> dict[str, Any]:
    # moto's KMS tagger expects TagKey/TagValue; CloudFormation gives Key/Value.
    tags = properties.get("Tags")
    if not tags:
        return properties
    return {**properties, "Tags": [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in tags]}


def _archive_event_pattern(properties: dict[str, Any]) -> dict[str, Any]:
    # moto parses EventPattern with json.loads; CloudFormation gives an object.
    pattern = properties.get("EventPattern")
    if isinstance(pattern, dict):
        return {**properties, "EventPattern": json.dumps(pattern)}
    return properties


def _ssm_parameter_tags(properties: dict[str, Any]) -> dict[str, Any]:
    # AWS::SSM::Parameter Tags is a map in CloudFormation; moto expects a list of Key/Value.
    tags = properties.get("Tags")
    if isinstance(tags, dict):
        return {**properties, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    return properties


# resource type -> (moto model class path, adapter of the template's properties)
PROPERTY_ADAPTERS: dict[str, tuple[str, str, PropertyAdapter]] = {
    "AWS::KMS::Key": ("moto.kms.models", "Key", _kms_key_tags),
    "AWS::Events::Archive": ("moto.events.models", "Archive", _archive_event_pattern),
    "AWS::SSM::Parameter": ("moto.ssm.models", "Parameter", _ssm_parameter_tags),
}


def _security_group_egress(group: Any, properties: dict[str, Any]) -> None:
    # moto ignores a group's inline SecurityGroupEgress and keeps the default allow-all rule; on EC2 the rules given
    # replace it (CDK's allowAllOutbound false gives one rule that matches nothing: no traffic out).
    from spothub.sandbox.cfn_resources import egress_rule  # noqa: PLC0415

    if "SecurityGroupEgress" not in properties:
        return
    group.egress_rules = []
    for rule in properties["SecurityGroupEgress"]:
        group.ec2_backend.authorize_security_group_egress(
            group_name_or_id=group.id, vpc_id=group.vpc_id, **egress_rule(rule)
        )


# moto model -> Fn::GetAtt attributes it lacks
MISSING_ATTRIBUTES: dict[tuple[str, str], dict[str, Callable[[Any], str]]] = {
    ("moto.efs.models", "FileSystem"): {
        "Arn": lambda fs: fs.file_system_arn,
        "FileSystemId": lambda fs: fs.file_system_id,
    },
}


def _wrap_create(
    model: type,
    *,
    adapter: PropertyAdapter | None = None,
    finish: Callable[[Any, dict[str, Any]], None] | None = None,
) -> None:
    """Wrap a moto model's CloudFormation create: `adapter` changes the template's properties before it,
    `finish` the created model (with the template's properties) after it."""
    original = model.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create(cls: type, resource_name: str, cloudformation_json: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        properties = dict(cloudformation_json.get("Properties", {}))
        if adapter is not None:
            cloudformation_json = {**cloudformation_json, "Properties": adapter(properties)}
        created = original(cls, resource_name, cloudformation_json, *args, **kwargs)
        if finish is not None:
            finish(created, properties)
        return created

    model.create_from_cloudformation_json = classmethod(create)  # type: ignore[assignment]


def _add_attributes(model: type, attributes: dict[str, Callable[[Any], str]]) -> None:
    original = getattr(model, "get_cfn_attribute", None)

    def get_cfn_attribute(self: Any, attribute_name: str) -> str:
        if attribute_name in attributes:
            return attributes[attribute_name](self)
        if original is None:
            from moto.cloudformation.exceptions import UnformattedGetAttTemplateException  # noqa: PLC0415

            raise UnformattedGetAttTemplateException()
        return original(self, attribute_name)

    model.get_cfn_attribute = get_cfn_attribute  # type: ignore[attr-defined]
    model.has_cfn_attr = classmethod(lambda cls, name: name in attributes)  # type: ignore[assignment]


# --- CloudFormation: Fn::GetAZs of the stack's own region -----------------------------------------


def _clean_json(resource_json: Any, resources_map: Any) -> Any:
    # moto answers Fn::GetAZs "" (the stack's region) with us-east-1's zones, whatever the region.
    if isinstance(resource_json, dict) and resource_json.get("Fn::GetAZs", None) in ("", {"Ref": "AWS::Region"}):
        resource_json = {"Fn::GetAZs": resources_map._region_name}
    return _original_clean_json(resource_json, resources_map)


_original_clean_json: Any = None


# --- Lambda: run the real handler in-process (moto would start a Docker container) -----------------


def _lambda_function_invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> bytes:
    event = json.loads(body) if body else {}
    invocation_type = request_headers.get("x-amz-invocation-type", "RequestResponse")
    if invocation_type == "Event":
        invoke_async(self, event)
        return b""
    if invocation_type == "DryRun":
        return b""
    runtime = _require_hooks().lambda_runtime
    caller = _calling_session(request_headers)
    if caller is not None and runtime.is_running(caller):
        # A function that invokes another one synchronously waits for it: the callee runs inside the caller's turn.
        payload, function_error = runtime.invoke(self, event, on_behalf_of=caller)
    else:
        payload, function_error = runtime.invoke(self, event)
    if function_error:
        response_headers["x-amz-function-error"] = function_error
    return payload


_CREDENTIAL = re.compile(r"Credential=(?P<key>[^/]+)/")


def _calling_session(request_headers: Any) -> str | None:
    """The session name of the role session that signed the request (a function's name), if any."""
    match = _CREDENTIAL.search(str(request_headers.get("Authorization", "") or ""))
    enforcer = iam_hooks.current()
    session = enforcer.principals.session(match["key"]) if match and enforcer else None
    return session.session_name if session else None


def invoke_async(function: Any, event: Any) -> None:
    """Queue an asynchronous invocation, as Lambda does for events and InvocationType=Event."""
    hooks = _require_hooks()
    hooks.async_started()
    try:
        hooks.executor.submit(hops.carry(_invoke_async), hooks, function, event)
    except BaseException:
        hooks.async_ended()
        raise


def _invoke_async(hooks: Hooks, function: Any, event: Any) -> None:
    """Lambda's asynchronous invocation: retries (EventInvokeConfig, default 2), then the DLQ."""
    try:
        _invoke_with_retries(function, event)
    except Exception as exc:
        hooks.on_failure("lambda-async", {"function": function.function_name, "error": repr(exc), "event": event})
    finally:
        hooks.async_ended()


def _invoke_with_retries(function: Any, event: Any) -> None:
    hooks = _require_hooks()
    config = function.event_invoke_config[0].config if function.event_invoke_config else {}
    attempts = 1 + int(config.get("MaximumRetryAttempts", 2))
    payload, error = b"", None
    for _attempt in range(attempts):
        payload, error = hooks.lambda_runtime.invoke(function, event)
        if not error:
            return
    target = getattr(function, "spothub_dead_letter_arn", None)
    details = {"function": function.function_name, "error": json.loads(payload or b"{}"), "event": event}
    if target:
        _send_to_sqs(target, json.dumps(event), {"ErrorCode": "200", "ErrorMessage": payload.decode()[:256]})
    hooks.on_failure("lambda-async", {**details, "dead_letter_queue": target})


def _keep_dead_letter_target(function: Any, properties: dict[str, Any]) -> None:
    # moto drops DeadLetterConfig from the CloudFormation properties; keep it on the function.
    function.spothub_dead_letter_arn = properties.get("DeadLetterConfig", {}).get("TargetArn")


def _send_to_sqs(
    queue_arn: str,
    body: str,
    attributes: dict[str, str] | None = None,
    *,
    group_id: str | None = None,
    deduplication_id: str | None = None,
) -> None:
    from moto.sqs.models import sqs_backends  # noqa: PLC0415

    _, _, _, region, account, name = queue_arn.split(":", 5)
    message_attributes = {k: {"DataType": "String", "StringValue": v} for k, v in (attributes or {}).items()}
    sqs_backends[account][region].send_message(
        name, body, message_attributes=message_attributes, group_id=group_id, deduplication_id=deduplication_id
    )


# --- EventBridge: Lambda and Step Functions targets, full cross-bus forwarding, a timeline -----------


def _iso_time(value: Any) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def target_input(target: dict[str, Any], event: dict[str, Any]) -> Any:
    """What a rule target receives: Input, InputPath or InputTransformer, else the whole event."""
    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        from jsonpath_ng.ext import parse  # noqa: PLC0415

        matches = [match.value for match in parse(target["InputPath"]).find(event)]
        return matches[0] if matches else None
    if "InputTransformer" in target:
        transformer = target["InputTransformer"]
        return input_transformer(transformer.get("InputTemplate", ""), transformer.get("InputPathsMap", {}), event)
    return event


_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.-]+)>")


def input_transformer(template: str, paths: dict[str, str], event: dict[str, Any]) -> Any:
    """EventBridge's InputTransformer: a placeholder inside quotes takes the raw text, one outside
    quotes the JSON value (strings quoted). moto's parser inserts raw text everywhere, which turns
    `{"id": <id>}` into invalid JSON."""
    from jsonpath_ng.ext import parse  # noqa: PLC0415

    values: dict[str, Any] = {}
    for name, path in paths.items():
        matches = parse(path).find(event)
        values[name] = matches[0].value if matches else None
    values.setdefault("aws.events.event.json", {k: v for k, v in event.items() if k != "ingestion-time"})

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        value = values[name]
        quoted = (
            match.start() > 0 and template[match.start() - 1] == '"' and template[match.end() : match.end() + 1] == '"'
        )
        if quoted:
            return value if isinstance(value, str) else json.dumps(value)
        return json.dumps(value)

    text = _PLACEHOLDER.sub(substitute, template)
    try:
        return json.loads(text)
    except ValueError:
        return text  # a plain-text template


def _rule_matches(rule: Any, event: dict[str, Any]) -> bool:
    """Whether EventBridge gives the rule this event. A scheduled rule (no event pattern) gets only its own
    Scheduled Event; moto matches a rule without a pattern to every event put on its bus."""
    if not getattr(rule.event_pattern, "_pattern", None) and getattr(rule, "scheduled_expression", None):
        return (event.get("source"), event.get("detail-type")) == ("aws.events", "Scheduled Event") and rule.arn in (
            event.get("resources") or []
        )
    return bool(rule.event_pattern.matches_event(event))


def _rule_send_to_targets(self: Any, original_event: dict[str, Any], transform_input: bool = True) -> None:
    """Deliver to each target once, with its input; moto's own loop delivers to all targets at once."""
    if getattr(self, "state", "ENABLED") != "ENABLED" or not _rule_matches(self, original_event):
        return
    # moto's template parser reads ingestion-time; targets receive the event without it, time as ISO-8601.
    full = {
        **original_event,
        "time": _iso_time(original_event.get("time", time.time())),
        "ingestion-time": original_event.get("ingestion-time", time.time()),
    }
    event = {key: value for key, value in full.items() if key != "ingestion-time"}
    for target in self.targets:
        arn = target["Arn"]
        service = arn.split(":")[2]
        try:
            _authorize_target(self.arn, target)
            with hops.delivery(self.arn, arn, event):
                if service == "events" and ":event-bus/" in arn:
                    _deliver_to_bus(arn, event)
                    continue
                has_input = any(key in target for key in ("Input", "InputPath", "InputTransformer"))
                payload = target_input(target, full) if has_input else event
                if service == "lambda":
                    _deliver_to_lambda(arn, payload)
                elif service == "states":
                    _deliver_to_state_machine(arn, payload)
                elif service == "sqs":
                    fifo = arn.endswith(".fifo")
                    _send_to_sqs(
                        arn,
                        payload if isinstance(payload, str) else json.dumps(payload),
                        group_id=target.get("SqsParameters", {}).get("MessageGroupId"),
                        deduplication_id=event.get("id") if fifo else None,
                    )
                else:
                    single = copy.copy(self)
                    single.targets = [target]
                    _original_send_to_targets(single, original_event, transform_input)
        except Exception as exc:
            _delivery_failed(self.arn, target, event, exc)


class TargetAccessDenied(PermissionError):
    """EventBridge may not deliver to this target: the target's role or the resource's policy says no."""


# What EventBridge does with a target: the IAM action, and whether it acts through the target's role
# (RoleArn) or as the service principal the resource's policy must name.
_TARGET_ACTIONS = {
    "events": ("events:PutEvents", True),
    "states": ("states:StartExecution", True),
    "lambda": ("lambda:InvokeFunction", False),
    "sqs": ("sqs:SendMessage", False),
}


def _authorize_target(rule_arn: str, target: dict[str, Any], resource: str | None = None) -> None:
    enforcer = iam_hooks.current()
    resource = resource or target["Arn"]
    if enforcer is None or not resource.split(":")[4]:  # moto's archives are rules with an account-less target
        return
    service = resource.split(":")[2]
    action, through_role = _TARGET_ACTIONS.get(service, (f"{service}:*", False))
    context = {"aws:SourceArn": rule_arn, "aws:SourceAccount": rule_arn.split(":")[4]}
    authorization = Authorization(action, [resource], context)
    if through_role and target.get("RoleArn"):
        decision = enforcer.authorize_role(target["RoleArn"], "events-target", authorization)
    else:
        decision = enforcer.authorize_service("events.amazonaws.com", authorization)
    if not decision.allowed:
        raise TargetAccessDenied(f"EventBridge may not {action} on {resource}: {decision.reason}")


def _delivery_failed(rule_arn: str, target: dict[str, Any], event: dict[str, Any], exc: Exception) -> None:
    dead_letter = target.get("DeadLetterConfig", {}).get("Arn")
    if dead_letter:
        try:
            _authorize_target(rule_arn, target, dead_letter)
            _send_to_sqs(
                dead_letter,
                json.dumps(event),
                {"ERROR_CODE": type(exc).__name__, "ERROR_MESSAGE": str(exc)[:256], "RULE_ARN": rule_arn},
            )
        except TargetAccessDenied as denied:  # the event is lost, as on AWS: say so
            dead_letter, exc = None, denied
    if _hooks:
        _hooks.on_failure(
            "rule-target",
            {"rule": rule_arn, "target": target["Arn"], "error": repr(exc), "dead_letter_queue": dead_letter},
        )


def _deliver_to_lambda(arn: str, payload: Any) -> None:
    from moto.awslambda.models import lambda_backends  # noqa: PLC0415

    _, _, _, region, account, _, name = arn.split(":")[:7]
    function = lambda_backends[account][region].get_function(name, None)
    invoke_async(function, payload)


def _deliver_to_state_machine(arn: str, payload: Any) -> None:
    from moto.stepfunctions.responses import get_backend  # noqa: PLC0415

    _, _, _, region, account = arn.split(":")[:5]
    # EventBridge names each execution it starts; moto would name them all "None".
    get_backend(account, region).start_execution(arn, str(uuid.uuid4()), json.dumps(payload))


def _deliver_to_bus(arn: str, event: dict[str, Any]) -> None:
    """Hand the event, as it is (id, region, account, time), to the rules of another bus."""
    from moto.events.models import events_backends  # noqa: PLC0415

    _, _, _, region, account = arn.split(":")[:5]
    backend = events_backends[account][region]
    bus = backend.describe_event_bus(arn.rsplit("/", 1)[-1])
    if _hooks:
        _hooks.on_event(
            arn, {key: event[key] for key in ("id", "source", "detail-type", "detail", "resources", "region")}
        )
    forwarded = {**event, "time": _epoch(event["time"]), "ingestion-time": time.time()}
    # Synchronous, as moto does it, so the timeline keeps cause before effect.
    for rule in list(bus.rules.values()):
        rule.send_to_targets(forwarded)


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _events_put_events(self: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Recorded before delivery, so the timeline shows an event before what its rules cause.
    recorded = []
    if _hooks:
        for event in events:
            bus = self._normalize_event_bus_arn(event.get("EventBusName"))
            try:
                detail = json.loads(event.get("Detail") or "{}")
            except ValueError:
                continue
            summary = {
                "source": event.get("Source"),
                "detail-type": event.get("DetailType"),
                "detail": detail,
                "resources": event.get("Resources", []),
                "region": self.region_name,
            }
            recorded.append((summary, f"arn:aws:events:{self.region_name}:{self.account_id}:event-bus/{bus}"))
            _hooks.on_event(recorded[-1][1], summary)
    with hops.put(self._normalize_event_bus_arn(events[0].get("EventBusName")) if events else "", events):
        entries = _original_put_events(self, events)
    for (summary, _bus), entry in zip(recorded, entries, strict=False):
        summary["id"] = entry.get("EventId") or f"rejected: {entry.get('ErrorCode')}"
    return entries


# --- EC2 and Auto Scaling: the spot market decides launches, prices and placement scores -------------


def _group_replace_instances(self: Any, count_needed: int, propagated_tags: dict[str, str]) -> None:
    if _hooks and _hooks.fleet is not None:
        _hooks.fleet.launch_for_group(self, count_needed, propagated_tags)
    else:
        _original_replace_instances(self, count_needed, propagated_tags)


def _terminate_instances(self: Any, instance_ids: list[str]) -> Any:
    terminated = _original_terminate_instances(self, instance_ids)
    if _hooks and _hooks.fleet is not None:
        _hooks.fleet.on_terminated(list(instance_ids))
    return terminated


# --- EC2: RunInstances outside a group (the search launcher) and EBS attachments, as EC2 answers them ---------

SPOT_CAPACITY_MESSAGE = (
    "There is no Spot capacity available that matches your request. We currently do not have sufficient {type} "
    "capacity in the Availability Zone you requested ({zone}). Our system will be working on provisioning additional "
    "capacity. You can currently get {type} capacity by not specifying an Availability Zone in your request or "
    "choosing {others}."
)
# What an instance may have a volume attached in (AWS attaches to running and stopped instances only).
ATTACHABLE_STATES = ("running", "stopped")


def _ec2_error(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError  # noqa: PLC0415

    return EC2ClientError(code, message)


def _run_instances(self: Any) -> Any:
    """moto launches whatever is asked, ignores ClientToken and starts nothing. EC2: the same ClientToken answers
    the instances the first request launched; a spot request takes capacity from the market (the zone's pool of the
    type; InsufficientInstanceCapacity, or SpotMaxPriceTooLow under the zone's price, when it cannot); the
    instances boot in the fleet (IMDS with their tags, the agent)."""
    from moto.core.responses import ActionResult  # noqa: PLC0415

    fleet = _hooks.fleet if _hooks else None
    if fleet is None or self._get_param("DryRun"):
        return _original_run_instances(self)
    # One at a time: two requests with one client token launch once.
    with _run_instances_lock:
        backend = self.ec2_backend
        token = self._get_param("ClientToken")
        if token:
            for reservation in list(backend.reservations.values()):
                if any(getattr(i, "client_token", None) == token for i in reservation.instances):
                    return ActionResult(reservation)
        return _launch_direct(self, fleet)


def _launch_direct(self: Any, fleet: Any) -> Any:
    backend = self.ec2_backend
    template = _requested_template(backend, self._get_param("LaunchTemplate", {}) or {})
    market_type = self._get_param("InstanceMarketOptions.MarketType") or (
        (template.get("InstanceMarketOptions") or {}).get("MarketType")
    )
    count = int(self._get_param("MinCount", if_none="1"))
    interfaces = self._get_param("NetworkInterfaces", []) or []
    network = next((dict(i) for i in interfaces if int(i.get("DeviceIndex", 0)) == 0), {})
    instance_type = self._get_param("InstanceType") or template.get("InstanceType") or "m1.small"
    zone = _requested_zone(backend, self, network)
    taken = None
    if market_type == "spot":
        taken = fleet.check_spot_capacity(zone, instance_type, count)
        if taken is None:
            others = ", ".join(f"{backend.region_name}{z}" for z in "abc" if f"{backend.region_name}{z}" != zone)
            raise _ec2_error(
                "InsufficientInstanceCapacity",
                SPOT_CAPACITY_MESSAGE.format(type=instance_type, zone=zone, others=others),
            )
        max_price = self._get_param("InstanceMarketOptions.SpotOptions.MaxPrice") or (
            ((template.get("InstanceMarketOptions") or {}).get("SpotOptions") or {}).get("MaxPrice")
        )
        if max_price and float(max_price) < taken[0].spot_price:
            for pool in taken:
                fleet.release_spot(pool)
            raise _ec2_error(
                "SpotMaxPriceTooLow",
                f"Your Spot request price of {max_price} is lower than the minimum required Spot request fulfillment "
                f"price of {taken[0].spot_price}.",
            )
    try:
        result = _original_run_instances(self)
    except Exception:
        for pool in taken or []:
            fleet.release_spot(pool)
        raise
    from spothub.sandbox.fleet import metadata_tags_enabled, profile_role  # noqa: PLC0415

    reservation = result.result
    profile = template.get("IamInstanceProfile") or {}
    if self._get_param("IamInstanceProfile.Arn") or self._get_param("IamInstanceProfile.Name"):
        profile = {k: v for k in ("Arn", "Name") if (v := self._get_param(f"IamInstanceProfile.{k}"))}
    fleet.launch_direct(
        list(reservation.instances),
        capacity_type="spot" if market_type == "spot" else "on-demand",
        network=network,
        role_arn=profile_role(backend.account_id, profile),
        metadata_tags=metadata_tags_enabled(template, self._get_param("MetadataOptions", {}) or {}),
    )
    return result


def _requested_template(backend: Any, specification: dict[str, Any]) -> dict[str, Any]:
    """The data of the launch template version a request names ({} without one)."""
    if not specification:
        return {}
    try:
        return dict(backend._get_template_from_args(specification).data or {})
    except Exception:  # an unknown template: RunInstances itself answers the error
        return {}


def _requested_zone(backend: Any, response: Any, network: dict[str, Any]) -> str:
    """Where EC2 places the instance: its subnet's zone (the network interface's or the request's), else the
    requested zone, else the region's first."""
    subnet_id = network.get("SubnetId") or response._get_param("SubnetId")
    if subnet_id:
        return str(backend.get_subnet(subnet_id).availability_zone)
    return str(response._get_param("Placement.AvailabilityZone") or f"{backend.region_name}a")


def _attach_volume(
    self: Any, volume_id: str, instance_id: str, device_path: str, delete_on_termination: bool = False
) -> Any:
    """moto attaches any volume to any instance, even one attached elsewhere, in another zone, or to a terminated
    instance. EC2 refuses those (IncorrectState, InvalidVolume.ZoneMismatch, VolumeInUse, a device in use); an
    attached volume appears on the simulated instance (fleet.on_attached)."""
    volume = self.get_volume(volume_id)
    instance = self.get_instance(instance_id)
    if instance.state not in ATTACHABLE_STATES:
        raise _ec2_error("IncorrectState", f"Instance '{instance_id}' is not 'running'.")
    if volume.attachment is not None:
        raise _ec2_error("VolumeInUse", f"{volume_id} is already attached to an instance")
    if volume.zone.name != instance.placement.zone:
        raise _ec2_error(
            "InvalidVolume.ZoneMismatch",
            f"The volume '{volume_id}' is not in the same availability zone as instance '{instance_id}'",
        )
    if device_path in instance.block_device_mapping:
        raise _ec2_error(
            "InvalidParameterValue",
            f"Invalid value '{device_path}' for unixDevice. Attachment point {device_path} is already in use",
        )
    attachment = _original_attach_volume(self, volume_id, instance_id, device_path, delete_on_termination)
    if _hooks and _hooks.fleet is not None:
        _hooks.fleet.on_attached(volume_id, instance_id, device_path)
    return attachment


def _detach_volume(self: Any, volume_id: str, instance_id: str, device_path: str) -> Any:
    # DetachVolume, or the instance's termination (moto detaches its volumes): the device leaves the instance.
    attachment = _original_detach_volume(self, volume_id, instance_id, device_path)
    if _hooks and _hooks.fleet is not None:
        _hooks.fleet.on_detached(volume_id, attachment.instance.id)
    return attachment


_original_run_instances: Any = None
_run_instances_lock = threading.Lock()
_original_attach_volume: Any = None
_original_detach_volume: Any = None


# Auto Scaling counts pending instances (Pending:Wait on a launch hook included) toward the desired
# capacity; moto counts InService only, so a group held by its hook would launch again and again.
COUNTED_LIFECYCLE_STATES = ("Pending", "Pending:Wait", "Pending:Proceed", "InService")


def _active_instances(self: Any) -> list[Any]:
    return [s for s in self.instance_states if s.lifecycle_state in COUNTED_LIFECYCLE_STATES]


def _complete_lifecycle_action(self: Any) -> Any:
    # moto has no CompleteLifecycleAction; the fleet holds launch lifecycle actions.
    from moto.autoscaling.exceptions import ValidationError  # noqa: PLC0415
    from moto.core.responses import EmptyResult  # noqa: PLC0415

    from spothub.sandbox.fleet import LifecycleActionError  # noqa: PLC0415

    try:
        _require_fleet().complete_lifecycle_action(
            self._get_param("AutoScalingGroupName"),
            self._get_param("LifecycleHookName"),
            self._get_param("InstanceId"),
            self._get_param("LifecycleActionResult"),
        )
    except LifecycleActionError as exc:
        raise ValidationError(str(exc)) from exc
    return EmptyResult()


def _record_lifecycle_action_heartbeat(self: Any) -> Any:
    from moto.autoscaling.exceptions import ValidationError  # noqa: PLC0415
    from moto.core.responses import EmptyResult  # noqa: PLC0415

    from spothub.sandbox.fleet import LifecycleActionError  # noqa: PLC0415

    try:
        _require_fleet().record_lifecycle_action_heartbeat(
            self._get_param("AutoScalingGroupName"), self._get_param("LifecycleHookName"), self._get_param("InstanceId")
        )
    except LifecycleActionError as exc:
        raise ValidationError(str(exc)) from exc
    return EmptyResult()


def _describe_scaling_activities(self: Any) -> Any:
    # moto answers no activity at all; the fleet keeps each group's launches (failed ones with their reason)
    # and terminations.
    from moto.core.responses import ActionResult  # noqa: PLC0415

    fleet = _hooks.fleet if _hooks else None
    if fleet is None:
        return _original_describe_scaling_activities(self)
    group_name = self._get_param("AutoScalingGroupName")
    wanted = set(self._get_param("ActivityIds", []) or [])
    activities = [
        a for a in fleet.scaling_activities(self.region, group_name) if not wanted or a["ActivityId"] in wanted
    ]
    start = int(self._get_param("NextToken") or 0)
    size = int(self._get_param("MaxRecords") or 100)
    page = [{**a, "StartTime": _datetime(a["StartTime"]), "EndTime": _datetime(a["EndTime"])} for a in activities]
    result: dict[str, Any] = {"Activities": page[start : start + size]}
    if start + size < len(page):
        result["NextToken"] = str(start + size)
    return ActionResult(result)


def _datetime(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _delete_auto_scaling_group(self: Any) -> Any:
    # moto deletes a group with instances, ForceDelete or not, and leaves its Standby instances running. AWS
    # refuses without ForceDelete while instances remain; with it, every instance of the group is terminated.
    from moto.autoscaling.exceptions import AutoscalingClientError  # noqa: PLC0415
    from moto.core.responses import EmptyResult  # noqa: PLC0415

    backend = self.autoscaling_backend
    group = backend.autoscaling_groups.get(self._get_param("AutoScalingGroupName"))
    if group is None:
        return _original_delete_auto_scaling_group(self)  # moto's ValidationError, as AWS answers
    if group.instance_states and not self._get_bool_param("ForceDelete", False):
        raise AutoscalingClientError(
            "ResourceInUse",
            "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance "
            "request(s) still in the group.",
        )
    force_delete_group(backend, group)
    return EmptyResult()


def force_delete_group(backend: Any, group: Any) -> None:
    """Delete `group` as a ForceDelete does: every instance terminated. With the sandbox's fleet running, the group
    stays "Delete in progress" until they have powered off (the fleet deletes it then); a delete of a group being
    deleted changes nothing."""
    if getattr(group, "status", None) == DELETE_IN_PROGRESS:
        return
    instance_ids = [state.instance.id for state in group.instance_states]
    group.instance_states = []
    group.desired_capacity = 0
    if instance_ids:
        backend.ec2_backend.terminate_instances(instance_ids)
        if _hooks and _hooks.fleet is not None:
            _hooks.fleet.delete_group_once_stopped(backend.region_name, group.name, instance_ids)
            return
    backend.autoscaling_groups.pop(group.name, None)


def _terminate_instance_in_auto_scaling_group(self: Any) -> Any:
    # moto fails with an internal error (StopIteration) for an instance in no group; AWS answers ValidationError.
    from moto.autoscaling.exceptions import ValidationError  # noqa: PLC0415

    instance_id = self._get_param("InstanceId")
    known = any(
        state.instance.id == instance_id
        for group in list(self.autoscaling_backend.autoscaling_groups.values())
        for state in group.instance_states
    )
    if not known:
        raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")
    return _original_terminate_instance_in_auto_scaling_group(self)


def _topic_publish(self: Any, message: str, subject: str | None = None, **kwargs: Any) -> str:
    # Recorded on the timeline: email and SMS subscriptions deliver nothing in the emulator.
    message_id = _original_topic_publish(self, message, subject=subject, **kwargs)
    if _hooks:
        attributes = {k: (v or {}).get("Value") for k, v in (kwargs.get("message_attributes") or {}).items()}
        details = {"message_id": message_id, "subject": subject, "message": message, "attributes": attributes}
        _hooks.on_notification(self.arn, details)
    return message_id


def _require_fleet() -> Any:
    fleet = _require_hooks().fleet
    if fleet is None:
        raise RuntimeError("the sandbox runs no fleet: lifecycle actions need one")
    return fleet


# --- CloudWatch: datapoints arrive at simulated time, so alarms evaluate by the sandbox clock ---------


def _put_metric_data(self: Any, namespace: str, metric_data: list[dict[str, Any]]) -> None:
    clock = _hooks.clock if _hooks else None
    if clock is not None:
        metric_data = [{**metric, "Timestamp": clock.datetime()} for metric in metric_data]
    _original_put_metric_data(self, namespace, metric_data)


def _get_spot_placement_scores(self: Any) -> Any:
    # moto has no GetSpotPlacementScores; the market answers it.
    from moto.core.responses import ActionResult  # noqa: PLC0415

    market = _require_hooks().market
    instance_types = self._get_param("InstanceTypes", [])
    requirements = self._get_param("InstanceRequirementsWithMetadata")
    if requirements or not instance_types:
        raise NotImplementedError("the sandbox market answers GetSpotPlacementScores for InstanceTypes only")
    scores = market.placement_scores(
        instance_types=instance_types,
        target_capacity=int(self._get_param("TargetCapacity", 1)),
        regions=self._get_param("RegionNames", []) or [self.region],
        single_az=str(self._get_param("SingleAvailabilityZone", "false")).lower() == "true",
    )
    return ActionResult({"SpotPlacementScores": scores})


def _describe_spot_price_history(self: Any) -> Any:
    # moto answers a fixed price of 0.00001; the market answers the configured or replayed prices.
    from moto.core.responses import ActionResult  # noqa: PLC0415

    if not (_hooks and _hooks.market is not None):
        return _original_describe_spot_price_history(self)
    filters = self._filters_from_querystring()
    history = _hooks.market.spot_price_history(
        self.region, self._get_param("InstanceTypes", []), filters.get("availability-zone", [])
    )
    return ActionResult({"SpotPriceHistory": history})


# --- Step Functions: every wait and timeout by the sandbox clock (moto counts real seconds) ---------
# Wait states (Seconds, SecondsPath, Timestamp, TimestampPath), a task's TimeoutSeconds (the execution's own
# too) and HeartbeatSeconds, and a Retry's interval (IntervalSeconds, BackoffRate, MaxDelaySeconds, jitter).


def _clock() -> Any:
    return _hooks.clock if _hooks else None


def _wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
    clock = _clock()
    if clock is None:
        return _original_wait_interval(self, env, wait_seconds)

    # Woken early when the execution stops (program_state_event is set then, and stays set).
    def stopped(real_seconds: float) -> bool:
        env.program_state_event.wait(real_seconds)
        return not env.is_running()

    clock.wait(wait_seconds, stopped)
    return None


def _timestamp_wait_seconds(self: Any, env: Any) -> int:
    """Seconds from the sandbox clock's now to the Timestamp (moto: datetime.now(), the local time, against a
    UTC timestamp)."""
    clock = _clock()
    if clock is None:
        return int(_original_timestamp_wait_seconds(self, env))
    self.string.eval(env=env)
    text = env.stack.pop()
    timestamp = self._from_timestamp_string(timestamp=text)
    if timestamp is None:
        from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (  # noqa: PLC0415
            FailureEventException,
        )

        raise FailureEventException(self._create_failure_event(env, text))
    # Whole seconds, rounded up: the state never ends before its timestamp.
    return max(0, math.ceil(timestamp.replace(tzinfo=UTC).timestamp() - clock.now()))


class _ClockEvent(threading.Event):
    """moto's Event for a task's timeout and heartbeat: `wait(timeout)` counts the timeout on the sandbox clock."""

    def wait(self, timeout: float | None = None) -> bool:
        clock = _clock()
        if timeout is None or clock is None:
            return super().wait(timeout)
        return clock.wait(timeout, super().wait) or self.is_set()


class _ClockThread(threading.Thread):
    """moto's Thread for an execution: `join(timeout)` (its TimeoutSeconds) counts on the sandbox clock."""

    def join(self, timeout: float | None = None) -> None:
        clock = _clock()
        if timeout is None or clock is None:
            return super().join(timeout)

        def ended(real_seconds: float) -> bool:
            super(_ClockThread, self).join(real_seconds)
            return not self.is_alive()

        clock.wait(timeout, ended)
        return None


def _callback_task_from_error(self: Any, env: Any, ex: Exception) -> Any:
    """A task that waited for its token past HeartbeatSeconds fails with States.HeartbeatTimeout, as on AWS (moto
    names every timeout States.Timeout)."""
    from moto.stepfunctions.parser.api import HistoryEventType, TaskTimedOutEventDetails  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEvent  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (  # noqa: PLC0415
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (  # noqa: PLC0415
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval.callback.callback import HeartbeatTimeoutError  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails  # noqa: PLC0415

    if not isinstance(ex, HeartbeatTimeoutError):
        return _original_callback_task_from_error(self, env, ex)
    heartbeat = StatesErrorNameType.StatesHeartbeatTimeout
    return FailureEvent(
        env=env,
        error_name=StatesErrorName(typ=heartbeat),
        event_type=HistoryEventType.TaskTimedOut,
        event_details=EventDetails(taskTimedOutEventDetails=TaskTimedOutEventDetails(error=heartbeat.to_name())),
    )


def _retry_sleep(seconds: float) -> None:
    clock = _clock()
    if clock is None:
        time.sleep(seconds)
    else:
        clock.wait(seconds)


def _patch_step_functions_waits() -> None:
    """Each wait of moto's interpreter by the sandbox clock: the methods that wait, or the name a module waits
    through (its `threading.Event`, `threading.Thread`, `time.sleep`), swapped for one that counts the clock."""
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.component.program import program  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.component.state.exec import execute_state  # noqa: PLC0415
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (  # noqa: PLC0415
        state_task_service_callback,
    )
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function import (  # noqa: PLC0415
        timestamp,
        wait_function,
    )
    from moto.stepfunctions.parser.asl.eval.callback import callback  # noqa: PLC0415
    from moto.stepfunctions.parser.backend import execution_worker  # noqa: PLC0415

    global _original_wait_interval, _original_timestamp_wait_seconds, _original_callback_task_from_error  # noqa: PLW0603
    _original_wait_interval = wait_function.WaitFunction._wait_interval
    wait_function.WaitFunction._wait_interval = _wait_interval  # type: ignore[method-assign]
    _original_timestamp_wait_seconds = timestamp.Timestamp._get_wait_seconds
    timestamp.Timestamp._get_wait_seconds = _timestamp_wait_seconds  # type: ignore[method-assign]
    # HeartbeatEndpoint, CallbackEndpoint and ActivityTaskStartEndpoint make their events from this name.
    callback.Event = _ClockEvent  # type: ignore[misc]
    # ExecutionState._evaluate_with_timeout: threading.Event().wait(TimeoutSeconds).
    execute_state.threading = types.SimpleNamespace(Event=_ClockEvent)  # type: ignore[assignment]
    # Program.eval: threading.Thread(...).join(TimeoutSeconds of the state machine).
    program.threading = types.SimpleNamespace(Thread=_ClockThread)  # type: ignore[assignment]
    # RetrierDecl._eval_body: time.sleep(the interval, after backoff, cap and jitter).
    retrier_decl.time = types.SimpleNamespace(sleep=_retry_sleep)  # type: ignore[assignment]
    callback_task = state_task_service_callback.StateTaskServiceCallback
    _original_callback_task_from_error = callback_task._from_error
    callback_task._from_error = _callback_task_from_error  # type: ignore[method-assign]
    execution_worker.ExecutionWorker.stop = _stop_execution_worker  # type: ignore[method-assign]


# How long a StopExecution waits for an execution that is just starting to have something to stop.
EXECUTION_START_WAIT_S = 5.0


def _stop_execution_worker(self: Any, stop_date: Any, error: str | None, cause: str | None) -> None:
    # moto's worker makes its environment in the execution's own thread, and the program marks it running only
    # as it begins: a StopExecution right after the start found no environment (an AttributeError, a 500) or one
    # not running yet (the stop was dropped and the execution ran on). AWS stops an execution at any time.
    deadline = time.monotonic() + EXECUTION_START_WAIT_S
    while (self.env is None or self.env._program_state is None) and time.monotonic() < deadline:
        time.sleep(0.01)
    if self.env is None or self.env._program_state is None:
        raise RuntimeError("the execution did not start within the wait: nothing to stop yet")
    self.env.set_stop(stop_date=stop_date, cause=cause, error=error)


_original_wait_interval: Any = None
_original_timestamp_wait_seconds: Any = None
_original_callback_task_from_error: Any = None
_original_send_to_targets: Any = None
_original_put_events: Any = None
_original_replace_instances: Any = None
_original_terminate_instances: Any = None
_original_describe_spot_price_history: Any = None
_original_put_metric_data: Any = None
_original_describe_scaling_activities: Any = None
_original_topic_publish: Any = None
_original_delete_auto_scaling_group: Any = None
_original_terminate_instance_in_auto_scaling_group: Any = None


def _secret_by_partial_arn(store: Any, key: str) -> Any:
    """The secret a partial ARN (arn:...:secret:<name>, without the random suffix) names in this region:
    moto finds a replica only by its name or full ARN, since it keeps replicas under their ARN."""
    from moto.secretsmanager.utils import get_secret_name_from_partial_arn  # noqa: PLC0415

    name = get_secret_name_from_partial_arn(key)
    region = key.split(":")[3] if key.startswith("arn:") else None
    return next(
        (s for s in dict.values(store) if s.name == name and (region is None or s.arn.split(":")[3] == region)),
        None,
    )


def _patch_secrets_store() -> None:
    """ECS names a secret of another stack by its partial ARN; a replica must answer to it as on AWS."""
    from moto.secretsmanager.models import SecretsStore  # noqa: PLC0415

    global _original_store_getitem, _original_store_contains, _original_store_get  # noqa: PLW0603
    _original_store_getitem, _original_store_contains = SecretsStore.__getitem__, SecretsStore.__contains__
    _original_store_get = SecretsStore.get

    def getitem(self: Any, key: str) -> Any:
        found = _secret_by_partial_arn(self, key) if not _original_store_contains(self, key) else None
        return found if found is not None else _original_store_getitem(self, key)

    def contains(self: Any, key: str) -> bool:
        return bool(_original_store_contains(self, key) or _secret_by_partial_arn(self, key) is not None)

    def get(self: Any, key: str) -> Any:
        found = _original_store_get(self, key)
        return found if found is not None else _secret_by_partial_arn(self, key)

    SecretsStore.__getitem__ = getitem  # type: ignore[method-assign,assignment]
    SecretsStore.__contains__ = contains  # type: ignore[method-assign,assignment]
    SecretsStore.get = get  # type: ignore[method-assign,assignment]


_original_store_getitem: Any = None
_original_store_contains: Any = None
_original_store_get: Any = None


def apply() -> None:
    """Install every addition; idempotent."""
    global _applied  # noqa: PLW0603
    with _lock:
        if _applied:
            return
        import importlib  # noqa: PLC0415

        for module_name, class_name, adapter in PROPERTY_ADAPTERS.values():
            model = getattr(importlib.import_module(module_name), class_name)
            _wrap_create(model, adapter=adapter)
        for (module_name, class_name), attributes in MISSING_ATTRIBUTES.items():
            _add_attributes(getattr(importlib.import_module(module_name), class_name), attributes)
        from moto.ec2.models.security_groups import SecurityGroup  # noqa: PLC0415

        _wrap_create(SecurityGroup, finish=_security_group_egress)
        from spothub.sandbox import cfn_resources  # noqa: PLC0415

        cfn_resources.register()

        from moto.cloudformation import parsing  # noqa: PLC0415

        global _original_clean_json  # noqa: PLW0603
        _original_clean_json = parsing.clean_json
        parsing.clean_json = _clean_json

        from moto.awslambda import models as lambda_models  # noqa: PLC0415
        from moto.core.config import default_user_config  # noqa: PLC0415
        from moto.events import models as events_models  # noqa: PLC0415

        global _original_send_to_targets, _original_put_events  # noqa: PLW0603
        lambda_models.LambdaFunction.invoke = _lambda_function_invoke  # type: ignore[method-assign]
        _wrap_create(lambda_models.LambdaFunction, finish=_keep_dead_letter_target)
        # moto's EventBus has no physical id, so {"Ref": bus} resolved to the model object; AWS gives the name.
        events_models.EventBus.physical_resource_id = property(lambda bus: bus.name)  # type: ignore[attr-defined]
        _original_send_to_targets = events_models.Rule.send_to_targets
        events_models.Rule.send_to_targets = _rule_send_to_targets  # type: ignore[method-assign]
        _original_put_events = events_models.EventsBackend.put_events
        events_models.EventsBackend.put_events = _events_put_events  # type: ignore[method-assign]
        _patch_capacity_apis()
        _patch_secrets_store()
        _serialize_dynamodb_items()
        from moto.sns.models import Topic  # noqa: PLC0415

        global _original_topic_publish  # noqa: PLW0603
        _original_topic_publish = Topic.publish
        Topic.publish = _topic_publish  # type: ignore[method-assign]
        from spothub.sandbox import autoscaling_updates, ecs_placement  # noqa: PLC0415

        ecs_placement.apply()  # ECS placement against registered CPU, memory and GPUs
        autoscaling_updates.apply()  # an update naming part of a mixed instances policy, as AWS takes it
        _patch_step_functions_waits()
        from moto.dynamodb.models.table import Table  # noqa: PLC0415

        from spothub.sandbox.ttl_sweeper import time_to_live_from_template  # noqa: PLC0415

        _wrap_create(Table, finish=time_to_live_from_template)  # TimeToLiveSpecification (the TTL sweeper reads it)
        # moto walks a RUNNING ECS task to STOPPED, one step per describe; a serving task runs until stopped.
        from moto.moto_api import state_manager  # noqa: PLC0415

        state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})
        # Run state machine definitions in moto's Step Functions interpreter instead of recording them.
        default_user_config["stepfunctions"]["execute_state_machine"] = True
        _applied = True


# moto's DynamoDB operations that read or write items (each is one request to DynamoDB).
DYNAMODB_ITEM_OPERATIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "query",
    "scan",
    "batch_write_item",
    "batch_get_item",
    "transact_write_items",
    "transact_get_items",
)
_dynamodb_items = threading.RLock()


def dynamodb_items_lock() -> threading.RLock:
    """The lock every DynamoDB item operation runs under (the TTL sweeper's deletions too)."""
    return _dynamodb_items


def serialized(operation: Callable[..., Any], lock: Any) -> Callable[..., Any]:
    def run(*arguments: Any, **keywords: Any) -> Any:
        with lock:
            return operation(*arguments, **keywords)

    run.__wrapped__ = operation  # type: ignore[attr-defined]
    return run


def _serialize_dynamodb_items() -> None:
    """One DynamoDB item operation at a time: moto checks a condition and then writes, with no lock, so two
    threads (two workers claiming the same batch) could both pass a condition only one passes on DynamoDB,
    where each item write with its condition is atomic."""
    from moto.dynamodb.models import DynamoDBBackend  # noqa: PLC0415

    for name in DYNAMODB_ITEM_OPERATIONS:
        setattr(DynamoDBBackend, name, serialized(getattr(DynamoDBBackend, name), _dynamodb_items))


def _patch_capacity_apis() -> None:
    """Auto Scaling, EC2 and CloudWatch: launches through the market and fleet, lifecycle actions,
    placement scores and prices, metrics by the sandbox clock."""
    from moto.autoscaling import models as autoscaling_models  # noqa: PLC0415
    from moto.ec2.models import instances as instance_models  # noqa: PLC0415
    from moto.ec2.responses import EC2Response  # noqa: PLC0415

    global _original_replace_instances, _original_terminate_instances  # noqa: PLW0603
    global _original_describe_spot_price_history  # noqa: PLW0603
    group_model = autoscaling_models.FakeAutoScalingGroup
    _original_replace_instances = group_model.replace_autoscaling_group_instances
    group_model.replace_autoscaling_group_instances = _group_replace_instances  # type: ignore[method-assign]
    _original_terminate_instances = instance_models.InstanceBackend.terminate_instances
    instance_models.InstanceBackend.terminate_instances = _terminate_instances  # type: ignore[method-assign]
    EC2Response.get_spot_placement_scores = _get_spot_placement_scores  # type: ignore[attr-defined]
    from moto.ec2.models.elastic_block_store import EBSBackend  # noqa: PLC0415

    global _original_run_instances, _original_attach_volume, _original_detach_volume  # noqa: PLW0603
    _original_run_instances = EC2Response.run_instances
    EC2Response.run_instances = _run_instances  # type: ignore[method-assign]
    _original_attach_volume = EBSBackend.attach_volume
    EBSBackend.attach_volume = _attach_volume  # type: ignore[method-assign]
    _original_detach_volume = EBSBackend.detach_volume
    EBSBackend.detach_volume = _detach_volume  # type: ignore[method-assign]
    group_model.active_instances = _active_instances  # type: ignore[method-assign]
    from moto.autoscaling.responses import AutoScalingResponse  # noqa: PLC0415

    AutoScalingResponse.complete_lifecycle_action = _complete_lifecycle_action  # type: ignore[attr-defined]
    global _original_describe_scaling_activities, _original_delete_auto_scaling_group  # noqa: PLW0603
    global _original_terminate_instance_in_auto_scaling_group  # noqa: PLW0603
    _original_describe_scaling_activities = AutoScalingResponse.describe_scaling_activities
    AutoScalingResponse.describe_scaling_activities = _describe_scaling_activities  # type: ignore[method-assign]
    _original_delete_auto_scaling_group = AutoScalingResponse.delete_auto_scaling_group
    AutoScalingResponse.delete_auto_scaling_group = _delete_auto_scaling_group  # type: ignore[method-assign]
    _original_terminate_instance_in_auto_scaling_group = AutoScalingResponse.terminate_instance_in_auto_scaling_group
    AutoScalingResponse.terminate_instance_in_auto_scaling_group = (  # type: ignore[method-assign]
        _terminate_instance_in_auto_scaling_group
    )
    AutoScalingResponse.record_lifecycle_action_heartbeat = (  # type: ignore[attr-defined]
        _record_lifecycle_action_heartbeat
    )
    _original_describe_spot_price_history = EC2Response.describe_spot_price_history
    EC2Response.describe_spot_price_history = _describe_spot_price_history  # type: ignore[method-assign]
    from moto.cloudwatch.models import CloudWatchBackend  # noqa: PLC0415

    global _original_put_metric_data  # noqa: PLW0603
    _original_put_metric_data = CloudWatchBackend.put_metric_data
    CloudWatchBackend.put_metric_data = _put_metric_data  # type: ignore[method-assign]
