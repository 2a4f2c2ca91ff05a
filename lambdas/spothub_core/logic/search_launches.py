"""Starting a search launch: the one place that claims (or hands over) the volume's slot, writes the launch record
and starts the launcher state machine. The search API (a scale-up, a query from zero) and the search monitor (a
replacement after a failure or an interruption) both start launches through `start_launch`."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from spothub_core.dal.executions import execution_arn, start_named
from spothub_core.dal.search_store import SearchStore
from spothub_core.models.search_records import SearchInstance, SearchStatus
from spothub_core.models.search_tasks import LauncherInput


@dataclass(frozen=True)
class Launcher:
    store: SearchStore
    sfn: Any
    state_machine_arn: str
    volume_id: str
    use_spot: bool = True


def new_launch_id(now: float) -> str:
    """`s-<UTC yyyymmddHHMMSS>-<8 hex>`: sorts by time (the records list oldest first), unique, and a valid
    execution name."""
    return f"s-{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}-{secrets.token_hex(4)}"


def start_launch(launcher: Launcher, now: float, *, replaces: str | None = None) -> SearchInstance | None:
    """Claim the slot (or take it over from `replaces`, the launch being replaced), record the launch and start its
    execution. None when the slot is held by another launch (or `replaces` no longer holds it): someone else's
    launch is the one that runs."""
    launch_id = new_launch_id(now)
    claimed = (
        launcher.store.transfer_slot(replaces, launch_id, now)
        if replaces
        else launcher.store.claim_slot(launch_id, now)
    )
    if not claimed:
        return None
    record = SearchInstance(
        launch_id=launch_id,
        status=SearchStatus.LAUNCHING,
        volume_id=launcher.volume_id,
        created_at=now,
        replaces=replaces,
        execution_arn=execution_arn(launcher.state_machine_arn, launch_id),
    )
    launcher.store.create(record)
    try:
        start_named(
            launcher.sfn,
            launcher.state_machine_arn,
            launch_id,
            LauncherInput(launch_id=launch_id, use_spot=launcher.use_spot).model_dump(mode="json"),
        )
    except Exception:
        # Nothing runs for this launch: give the slot back, so the next query or scale-up can try again.
        launcher.store.release_slot(launch_id)
        launcher.store.update(launch_id, {"status": SearchStatus.TERMINATED, "error": "the launcher did not start"})
        raise
    return record
