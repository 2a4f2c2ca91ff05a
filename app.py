#!/usr/bin/env python3
"""CDK app: context -> one HubStack in the hub region and one WorkerStack per worker region."""

from __future__ import annotations

import sys

from stacks.app_builder import build_stacks
from stacks.config import ConfigError, SpothubConfig


def main() -> int:
    # Imported after stacks/__init__.py quieted jsii's Node warning (the first stacks import above ran it).
    from aws_cdk import App  # noqa: PLC0415

    app = App()
    try:
        config = SpothubConfig.from_context(app.node.get_all_context())
    except ConfigError as exc:
        print(f"spothub: bad CDK context: {exc}", file=sys.stderr)
        return 2
    build_stacks(app, config)
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
