"""Entry point of the systemd service: read configuration, then run until stopped.

The watchers (interruption notices, lifecycle completion, heartbeat) are added by the agent
issue; until then the service proves the install path: it starts, reads its identity and
tags, logs them, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading

from spothub_agent import __version__
from spothub_agent.config import ConfigError, describe, load_config
from spothub_agent.imds import Imds, ImdsError

log = logging.getLogger("spothub_agent")


def main() -> int:
    logging.basicConfig(level=os.environ.get("SPOTHUB_AGENT_LOG_LEVEL", "INFO"), format="%(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    imds = Imds(os.environ.get("SPOTHUB_IMDS_ENDPOINT", "http://169.254.169.254"))
    try:
        config = load_config(imds)
    except (ConfigError, ImdsError) as exc:
        log.error(json.dumps({"event": "config_failed", "reason": str(exc)}))
        return 1
    log.info(json.dumps({"event": "started", "version": __version__, **describe(config)}))
    stop.wait()
    log.info(json.dumps({"event": "stopped", "instance_id": config.instance_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
