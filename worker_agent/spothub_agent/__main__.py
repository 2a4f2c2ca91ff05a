"""Entry point of the systemd service: identity and tags from IMDS, settings from SSM and the
environment, then the agent's loops until SIGTERM; on an instance tagged spothub:job-id, the batch worker
instead (batch.py), until it leaves its group; on the search instance (Service=semantic-search), the search
service (search.py), with settings from the environment only (its role reads the search region's parameters, not
the hub's agent-config); on a deployment node (Service=model-node), node mode (node.py): registration, heartbeats
with the GPUs' figures and capacity notices, no workload and no lifecycle hook. Exits non-zero only when it cannot
tell which instance it is on (systemd restarts it); a control plane that does not answer never stops it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

from spothub_agent import __version__
from spothub_agent.agent import Agent
from spothub_agent.aws import AwsClients, read_parameter
from spothub_agent.batch import BatchWorker
from spothub_agent.config import ConfigError, describe, load_config
from spothub_agent.imds import DEFAULT_ENDPOINT, Imds, ImdsError
from spothub_agent.settings import SettingsError, build_settings, load_settings

log = logging.getLogger("spothub_agent")


def main() -> int:
    logging.basicConfig(level=os.environ.get("SPOTHUB_AGENT_LOG_LEVEL", "INFO"), format="%(message)s")
    for library in ("botocore", "boto3", "urllib3"):  # their INFO lines would break the one-JSON-per-line log
        logging.getLogger(library).setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    imds = Imds(os.environ.get("SPOTHUB_IMDS_ENDPOINT", DEFAULT_ENDPOINT))
    try:
        config = load_config(imds)
    except (ConfigError, ImdsError) as exc:
        log.error(json.dumps({"event": "config_failed", "reason": str(exc)}))
        return 1
    log.info(json.dumps({"event": "started", "version": __version__, **describe(config)}))
    aws = AwsClients(config.region, config.hub_region)
    try:
        if config.search_mode:
            from spothub_agent.search_volume import load_search_options  # noqa: PLC0415 (search mode's only)

            settings = build_settings(None, os.environ)
            search_options = load_search_options(os.environ)
        else:
            settings = load_settings(
                lambda: read_parameter(aws.ssm, f"{config.ssm_prefix}/agent-config"), os.environ, stop
            )
    except SettingsError as exc:
        log.error(json.dumps({"event": "config_failed", "reason": str(exc)}))
        return 1
    log.info(json.dumps({"event": "configured", **settings.describe()}, default=str))
    if config.batch_mode:
        BatchWorker(config, settings, imds, aws).run(stop)
    elif config.search_mode:
        from spothub_agent.search import SearchService  # noqa: PLC0415 (search mode's only)

        SearchService(config, settings, aws, options=search_options).run(stop)
    elif config.node_mode:
        from spothub_agent.node import NodeAgent  # noqa: PLC0415 (node mode's only)

        NodeAgent(config, settings, imds, aws).run(stop)
    else:
        Agent(config, settings, imds, aws).run(stop)
    log.info(json.dumps({"event": "stopped", "instance_id": config.instance_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
