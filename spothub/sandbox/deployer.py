"""Deploy a synthesized cloud assembly into the emulator: assets as cdk-assets would, then every
stack through the emulator's CloudFormation, in dependency order."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from spothub.sandbox import cfn_resources

CDK_BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
CDK_BOOTSTRAP_VERSION = "30"
# Public parameters AWS publishes in every region that the stacks resolve at deploy time.
PUBLIC_PARAMETERS = {
    "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id": "ami-0a5c3558529277641",
}


class DeployError(RuntimeError):
    pass


@dataclass
class StackDeployment:
    artifact_id: str
    stack_name: str
    region: str
    outputs: dict[str, str]
    resources: Counter[str]
    by_sandbox: Counter[str] = field(default_factory=Counter)
    not_emulated: dict[str, str] = field(default_factory=dict)

    def report(self) -> str:
        native = sum(self.resources.values()) - sum(self.by_sandbox.values()) - len(self.not_emulated)
        lines = [
            f"{self.stack_name} ({self.region}): {sum(self.resources.values())} resources, "
            f"{native} by the emulator, {sum(self.by_sandbox.values())} by the sandbox, "
            f"{len(self.not_emulated)} not emulated"
        ]
        if self.by_sandbox:
            lines.append("  by the sandbox: " + ", ".join(f"{t} x{n}" for t, n in sorted(self.by_sandbox.items())))
        lines.extend(f"  not emulated: {t}: {reason}" for t, reason in sorted(self.not_emulated.items()))
        return "\n".join(lines)


class Deployer:
    def __init__(self, cdk_out: Path, endpoint_url: str, account: str, credentials: dict[str, str]) -> None:
        self._cdk_out = cdk_out
        self._endpoint_url = endpoint_url
        self._account = account
        self._credentials = credentials

    def client(self, service: str, region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self._endpoint_url,
            config=Config(retries={"max_attempts": 1}),
            **self._credentials,
        )

    def stacks(self) -> list[tuple[str, dict[str, Any]]]:
        """Stack artifacts of the assembly, each after the stacks it depends on."""
        manifest_path = self._cdk_out / "manifest.json"
        if not manifest_path.is_file():
            raise DeployError(f"{self._cdk_out} holds no cloud assembly (manifest.json)")
        artifacts = json.loads(manifest_path.read_text())["artifacts"]
        stacks = {k: v for k, v in artifacts.items() if v["type"] == "aws:cloudformation:stack"}
        ordered: list[str] = []

        def visit(artifact_id: str, path: tuple[str, ...]) -> None:
            if artifact_id in ordered:
                return
            if artifact_id in path:
                raise DeployError(f"stack dependencies form a cycle: {' -> '.join((*path, artifact_id))}")
            for dependency in stacks[artifact_id].get("dependencies", []):
                if dependency in stacks:
                    visit(dependency, (*path, artifact_id))
            ordered.append(artifact_id)

        for artifact_id in stacks:
            visit(artifact_id, ())
        return [(artifact_id, stacks[artifact_id]) for artifact_id in ordered]

    def deploy_all(self) -> list[StackDeployment]:
        return [self.deploy(artifact_id, artifact) for artifact_id, artifact in self.stacks()]

    def deploy(self, artifact_id: str, artifact: dict[str, Any]) -> StackDeployment:
        region = artifact["environment"].rsplit("/", 1)[-1]
        self._prepare_region(region)
        self._publish_assets(artifact_id, region)
        properties = artifact["properties"]
        template_text = (self._cdk_out / properties["templateFile"]).read_text()
        template = json.loads(template_text)
        cloudformation = self.client("cloudformation", region)
        before = len(cfn_resources.CREATED)
        cloudformation.create_stack(
            StackName=properties["stackName"],
            TemplateBody=template_text,
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
        stack = cloudformation.describe_stacks(StackName=properties["stackName"])["Stacks"][0]
        if stack["StackStatus"] != "CREATE_COMPLETE":
            raise DeployError(f"{properties['stackName']}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
        created = {
            r["LogicalResourceId"]
            for r in cloudformation.list_stack_resources(StackName=properties["stackName"])["StackResourceSummaries"]
        }
        missing = sorted(set(template["Resources"]) - created)
        if missing:
            raise DeployError(f"{properties['stackName']}: the emulator did not create {', '.join(missing)}")
        by_sandbox = Counter(t for t, _ in cfn_resources.CREATED[before:] if t not in cfn_resources.NOT_EMULATED)
        types = Counter(r["Type"] for r in template["Resources"].values())
        return StackDeployment(
            artifact_id=artifact_id,
            stack_name=properties["stackName"],
            region=region,
            outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
            resources=types,
            by_sandbox=by_sandbox,
            not_emulated={t: reason for t, reason in cfn_resources.NOT_EMULATED.items() if t in types},
        )

    def _prepare_region(self, region: str) -> None:
        from moto.core.utils import utcnow  # noqa: PLC0415
        from moto.ssm.models import Parameter, ssm_backends  # noqa: PLC0415

        self.client("ssm", region).put_parameter(
            Name=CDK_BOOTSTRAP_VERSION_PARAMETER, Value=CDK_BOOTSTRAP_VERSION, Type="String", Overwrite=True
        )
        # Names under /aws/ are reserved: the emulator refuses PutParameter for them, as AWS does.
        parameters = ssm_backends[self._account][region]._parameters
        for name, value in PUBLIC_PARAMETERS.items():
            if name not in parameters or not parameters[name]:
                parameters[name].append(
                    Parameter(
                        account_id=self._account,
                        name=name,
                        value=value,
                        parameter_type="String",
                        description=None,
                        allowed_pattern=None,
                        keyid=None,
                        last_modified_date=utcnow(),
                        version=1,
                        data_type="aws:ec2:image",
                    )
                )

    def _publish_assets(self, artifact_id: str, region: str) -> None:
        manifest_path = self._cdk_out / f"{artifact_id}.assets.json"
        if not manifest_path.is_file():
            return
        manifest = json.loads(manifest_path.read_text())
        s3 = self.client("s3", region)
        if manifest.get("dockerImages"):
            raise DeployError(f"{artifact_id}: container image assets are not emulated")
        for asset in manifest.get("files", {}).values():
            body = self._package(asset["source"])
            for destination in asset["destinations"].values():
                bucket = self._substitute(destination["bucketName"], region)
                bucket_region = destination.get("region", region)
                self._ensure_bucket(s3, bucket, bucket_region)
                s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)

    def _package(self, source: dict[str, Any]) -> bytes:
        path = self._cdk_out / source["path"]
        if source.get("packaging") == "zip" or path.is_dir():
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(path.rglob("*")):
                    if file.is_file():
                        archive.write(file, file.relative_to(path))
            return buffer.getvalue()
        return path.read_bytes()

    def _substitute(self, value: str, region: str) -> str:
        return value.replace("${AWS::AccountId}", self._account).replace("${AWS::Region}", region)

    @staticmethod
    def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if bucket in existing:
            return
        if region == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
