"""The search region's EC2 and SSM as the launcher needs them (called across regions from the hub): what the
region publishes for the hub (the SearchHost parameter), the volume and where it lives, the subnets' zones, the
launch's instances, RunInstances and AttachVolume.

AWS errors become the classes the launcher's state machine catches (dal/task_errors.py): capacity, quota,
transient, fatal.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ConfigDict, ValidationError

from spothub_core.contracts import InstanceFacts, InstanceTag
from spothub_core.dal.ec2_instances import tags_of
from spothub_core.dal.search_instances import ALIVE_STATES, facts_of
from spothub_core.dal.state_table import reason_of
from spothub_core.dal.task_errors import aws_call, classified
from spothub_core.errors import FatalError, TransientError
from spothub_core.models.base import Model
from spothub_core.models.search_records import SearchHost

# AttachVolume refusals that no wait can cure: the volume and the instance are in different zones, or the
# volume is gone.
_ATTACH_FATAL_CODES = frozenset({"InvalidVolume.ZoneMismatch", "InvalidVolume.NotFound"})


class _Facts(Model):
    model_config = ConfigDict(extra="ignore", frozen=True)


class VolumeAttachment(_Facts):
    instance_id: str
    device: str = ""
    state: str  # attaching, attached, detaching, detached, busy


class VolumeFacts(_Facts):
    volume_id: str
    availability_zone: str
    state: str  # creating, available, in-use, deleting, deleted, error
    attachments: tuple[VolumeAttachment, ...] = ()


class InstanceView(_Facts):
    """An instance as EC2 describes it: its facts, its state and its tags."""

    facts: InstanceFacts
    state: str
    tags: dict[str, str]

    @property
    def instance_id(self) -> str:
        return self.facts.instance_id


def _view(instance: dict[str, Any]) -> InstanceView:
    return InstanceView(facts=facts_of(instance), state=instance["State"]["Name"], tags=tags_of(instance))


class SearchPlacement:
    def __init__(self, ec2: Any, ssm: Any, host_parameter: str) -> None:
        self._ec2 = ec2
        self._ssm = ssm
        self._host_parameter = host_parameter
        self._host: SearchHost | None = None

    @property
    def region(self) -> str:
        return str(self._ec2.meta.region_name)

    def host(self) -> SearchHost:
        """What the search region's worker stack published. Read once per container: it changes only with a
        deployment of that stack, which also replaces the hub's functions' containers soon enough."""
        if self._host is None:
            try:
                value = self._ssm.get_parameter(Name=self._host_parameter)["Parameter"]["Value"]
            except ClientError as exc:
                if exc.response["Error"].get("Code") == "ParameterNotFound":
                    raise FatalError(
                        f"the search host parameter {self._host_parameter} does not exist in {self.region}: "
                        "is the search region's worker stack deployed?"
                    ) from exc
                raise TransientError(f"read {self._host_parameter}: {reason_of(exc)}") from exc
            except BotoCoreError as exc:
                raise TransientError(f"read {self._host_parameter}: {reason_of(exc)}") from exc
            try:
                self._host = SearchHost.model_validate_json(value)
            except ValidationError as exc:
                raise FatalError(
                    f"the search host parameter {self._host_parameter} is not a SearchHost: {exc}"
                ) from exc
        return self._host

    def volume(self, volume_id: str) -> VolumeFacts | None:
        """The volume, None when the region has no such volume."""
        try:
            volumes = self._ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
        except ClientError as exc:
            if exc.response["Error"].get("Code") == "InvalidVolume.NotFound":
                return None
            raise classified(f"describe the volume {volume_id}", exc) from exc
        except BotoCoreError as exc:
            raise TransientError(f"describe the volume {volume_id}: {reason_of(exc)}") from exc
        if not volumes:
            return None
        volume = volumes[0]
        return VolumeFacts(
            volume_id=volume["VolumeId"],
            availability_zone=volume["AvailabilityZone"],
            state=volume["State"],
            attachments=tuple(
                VolumeAttachment(instance_id=a["InstanceId"], device=a.get("Device", ""), state=a.get("State", ""))
                for a in volume.get("Attachments", [])
                if a.get("InstanceId")
            ),
        )

    def subnet_zones(self, subnet_ids: list[str]) -> dict[str, str]:
        """Each subnet's availability zone, by subnet id."""
        subnets = aws_call("describe the search subnets", self._ec2.describe_subnets, SubnetIds=subnet_ids)["Subnets"]
        return {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}

    def instance(self, instance_id: str) -> InstanceView | None:
        """The instance, None when EC2 does not know it (never launched, or terminated long ago)."""
        try:
            reservations = self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as exc:
            if "InvalidInstanceID" in exc.response["Error"].get("Code", ""):
                return None
            raise classified(f"describe {instance_id}", exc) from exc
        except BotoCoreError as exc:
            raise TransientError(f"describe {instance_id}: {reason_of(exc)}") from exc
        found = [i for r in reservations for i in r["Instances"]]
        return _view(found[0]) if found else None

    def launched_by(self, launch_id: str) -> list[InstanceView]:
        """The alive instances a launch started (tagged with its launch id): what a retried launch finds instead of
        launching again, and what a failed launch terminates."""
        filters = [
            {"Name": f"tag:{InstanceTag.LAUNCH}", "Values": [launch_id]},
            {"Name": "instance-state-name", "Values": list(ALIVE_STATES)},
        ]
        try:
            pages = self._ec2.get_paginator("describe_instances").paginate(Filters=filters)
            instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        except ClientError as exc:
            raise classified(f"list the instances of {launch_id}", exc) from exc
        except BotoCoreError as exc:
            raise TransientError(f"list the instances of {launch_id}: {reason_of(exc)}") from exc
        return [_view(i) for i in instances]

    def run(self, request: dict[str, Any]) -> InstanceView:
        """RunInstances with `request` (one instance); refusals raised by class (capacity, quota, fatal, transient)."""
        reservation = aws_call("launch the search instance", self._ec2.run_instances, **request)
        return _view(reservation["Instances"][0])

    def attach(self, volume_id: str, instance_id: str, device: str) -> str:
        """AttachVolume; the device it is attached as. A volume still held elsewhere (VolumeInUse, IncorrectState)
        is a TransientError: the launcher's next try looks at who holds it."""
        try:
            answer = self._ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)
        except ClientError as exc:
            if exc.response["Error"].get("Code") in _ATTACH_FATAL_CODES:
                raise FatalError(f"attach {volume_id} to {instance_id}: {reason_of(exc)}") from exc
            raise classified(f"attach {volume_id} to {instance_id}", exc) from exc
        except BotoCoreError as exc:
            raise TransientError(f"attach {volume_id} to {instance_id}: {reason_of(exc)}") from exc
        return str(answer.get("Device") or device)
