"""A readable summary of a synthesized cloud assembly (`cdk.out`): stacks, regions, resources, routes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StackSummary:
    name: str
    stack_name: str
    region: str
    resources: Counter[str] = field(default_factory=Counter)
    routes: list[tuple[str, str, str]] = field(default_factory=list)
    acknowledged_rules: set[str] = field(default_factory=set)

    @property
    def resource_count(self) -> int:
        return sum(self.resources.values())


def summarize(cdk_out: Path) -> list[StackSummary]:
    manifest_path = cdk_out / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{cdk_out} holds no cloud assembly (no manifest.json): run the synth first")
    manifest = json.loads(manifest_path.read_text())
    summaries = []
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        properties = artifact.get("properties", {})
        template = json.loads((cdk_out / properties["templateFile"]).read_text())
        resources = template.get("Resources", {})
        summary = StackSummary(
            name=artifact_id,
            stack_name=properties.get("stackName", artifact_id),
            region=artifact.get("environment", "").rsplit("/", 1)[-1],
            resources=Counter(resource["Type"] for resource in resources.values()),
            routes=api_routes(resources),
            acknowledged_rules={
                rule["id"]
                for r in resources.values()
                for rule in r.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
                if rule["id"].startswith("AwsSolutions")
            },
        )
        summaries.append(summary)
    return summaries


def api_routes(resources: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path, authorization) of every API Gateway method, rebuilt from the resource tree."""

    def path_of(reference: Any) -> str:
        if isinstance(reference, dict) and "Ref" in reference:
            node = resources[reference["Ref"]]["Properties"]
            return f"{path_of(node['ParentId']).rstrip('/')}/{node['PathPart']}"
        return "/"  # Fn::GetAtt RootResourceId

    routes = [
        (
            r["Properties"]["HttpMethod"],
            path_of(r["Properties"]["ResourceId"]),
            r["Properties"].get("AuthorizationType", "NONE"),
        )
        for r in resources.values()
        if r["Type"] == "AWS::ApiGateway::Method"
    ]
    return sorted(routes, key=lambda route: (route[1], route[0]))


def render(summaries: list[StackSummary]) -> str:
    lines = [f"{len(summaries)} stacks in {len({s.region for s in summaries})} regions", ""]
    for summary in summaries:
        lines.append(
            f"{summary.stack_name}  ({summary.region}, {summary.resource_count} resources, "
            f"{len(summary.acknowledged_rules)} cdk-nag findings acknowledged with reasons)"
        )
        for resource_type, count in sorted(summary.resources.items()):
            lines.append(f"    {count:3d}  {resource_type}")
        if summary.routes:
            lines.append("  API routes:")
            lines.extend(f"    {method:6s} {path:30s} {auth}" for method, path, auth in summary.routes)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
