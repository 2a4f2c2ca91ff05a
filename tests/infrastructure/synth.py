"""Synthesize the app in-process, as `cdk synth` would, for template assertions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App
from aws_cdk.assertions import Template

from stacks.app_builder import build_stacks
from stacks.config import SpothubConfig, cdk_json_context

# The reference deployment: a hub and two worker regions.
REFERENCE_CONTEXT = {"hubRegion": "us-east-1", "workerRegions": "us-west-2,eu-west-1"}


@dataclass
class Synthesized:
    config: SpothubConfig
    outdir: Path
    templates: dict[str, dict[str, Any]]  # by stack name

    def template(self, stack_name: str) -> Template:
        return Template.from_json(self.templates[stack_name])

    @property
    def hub(self) -> Template:
        return self.template(self.config.hub_stack_name())

    def worker(self, region: str) -> Template:
        return self.template(self.config.worker_stack_name(region))

    def resources(self, stack_name: str, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.templates[stack_name]["Resources"].items()
            if resource["Type"] == resource_type
        }


def synthesize(outdir: Path, context: dict[str, Any]) -> Synthesized:
    full_context = {**cdk_json_context(), **context}
    app = App(outdir=str(outdir), context=full_context)
    config = SpothubConfig.from_context(context)
    stacks = build_stacks(app, config)
    assembly = app.synth()
    templates = {
        stack.stack_name: assembly.get_stack_by_name(stack.stack_name).template
        for stack in [stacks.hub, *stacks.workers.values()]
    }
    return Synthesized(config=config, outdir=outdir, templates=templates)
