"""One JSON object per log line on stderr (journald keeps them; the sandbox writes them to a file)."""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("spothub_agent")


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    log.log(level, json.dumps({"event": event, **fields}, default=str))


def warn(event: str, **fields: Any) -> None:
    log_event(event, logging.WARNING, **fields)
