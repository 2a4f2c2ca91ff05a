"""Turn a validated configuration into the app's stacks, with cdk-nag checking every one."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Tags

from spothub import __version__
from stacks.config import SpothubConfig
from stacks.hub_stack import HubStack
from stacks.nag import add_nag_checks
from stacks.worker_stack import WorkerStack


@dataclass
class SpothubStacks:
    hub: HubStack
    workers: dict[str, WorkerStack]


def build_stacks(app: App, config: SpothubConfig) -> SpothubStacks:
    hub = HubStack(
        app,
        "Hub",
        config=config,
        stack_name=config.hub_stack_name(),
        env=Environment(account=config.account, region=config.hub_region),
        description=f"spothub {__version__} hub: API, decisions and state",
    )
    workers = {}
    for region in config.deployed_worker_regions:
        worker = WorkerStack(
            app,
            f"Worker-{region}",
            config=config,
            stack_name=config.worker_stack_name(region),
            env=Environment(account=config.account, region=region),
            description=f"spothub {__version__} worker in {region}: GPU capacity and region-local automation",
        )
        # Deploy order only (no values cross regions): the hub bus exists before rules target it.
        worker.add_stack_dependency(hub)
        workers[region] = worker
    Tags.of(app).add("spothub:prefix", config.prefix)
    add_nag_checks(app)
    return SpothubStacks(hub=hub, workers=workers)
