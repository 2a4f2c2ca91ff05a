"""The agent's memory across restarts of itself: one small JSON file, replaced atomically on each change.

What it holds is what a restarted agent must neither lose nor repeat: the control plane's current
assignment, whether the launch lifecycle action was completed (and how), which capacity notices
were published, how far a drain got, and the workload process the agent started (to adopt it).
In batch mode: the batch in hand (to clean up after it and process it again) and whether the worker left.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spothub_agent.logs import warn

STATE_FILE = "state.json"
STATE_VERSION = 1


class AgentState:
    def __init__(self, directory: Path, instance_id: str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(directory) / STATE_FILE
        self._instance_id = instance_id
        self._clock = clock
        self._lock = threading.RLock()
        self._data = self._read()

    # --- what is remembered ------------------------------------------------------------------

    @property
    def assignment(self) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._data["assignment"])

    def set_assignment(self, assignment: dict[str, Any] | None) -> None:
        with self._lock:
            if assignment != self._data["assignment"]:
                self._data["assignment"] = assignment
                self._write()

    @property
    def lifecycle(self) -> dict[str, Any] | None:
        """How the launch lifecycle action ended ({"result", "reason", "at"}), or None while it is open."""
        with self._lock:
            return copy.deepcopy(self._data["lifecycle"])

    def record_lifecycle(self, result: str, reason: str) -> None:
        with self._lock:
            self._data["lifecycle"] = {"result": result, "reason": reason, "at": self._clock()}
            self._write()

    def lifecycle_wait_started(self) -> float:
        """When the agent began waiting for the workload (wall clock): a restart does not reset the wait."""
        with self._lock:
            if self._data["waiting_since"] is None:
                self._data["waiting_since"] = self._clock()
                self._write()
            return float(self._data["waiting_since"])

    def notice_published(self, notice_id: str) -> bool:
        with self._lock:
            return notice_id in self._data["notices"]

    def record_notice(self, notice_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._data["notices"][notice_id] = {**record, "published_at": self._clock()}
            self._write()

    @property
    def drain(self) -> dict[str, Any] | None:
        """The drain in progress or done: notice_id, steps done, outcome, whether it was reported."""
        with self._lock:
            return copy.deepcopy(self._data["drain"])

    def begin_drain(self, notice_id: str, deadline: float) -> bool:
        """Start a drain for this notice; False when one was started already (one drain per instance)."""
        with self._lock:
            if self._data["drain"] is not None:
                return False
            self._data["drain"] = {"notice_id": notice_id, "started_at": self._clock(), "deadline": deadline}
            self._write()
            return True

    def update_drain(self, **fields: Any) -> None:
        with self._lock:
            if self._data["drain"] is None:
                raise RuntimeError("no drain to update")
            self._data["drain"].update(fields)
            self._write()

    @property
    def drained(self) -> bool:
        """The workload was stopped for an interruption: it must not be started again."""
        with self._lock:
            drain = self._data["drain"]
            return bool(drain and drain.get("stopped"))

    @property
    def workload(self) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._data["workload"])

    def set_workload(self, workload: dict[str, Any] | None) -> None:
        with self._lock:
            self._data["workload"] = workload
            self._write()

    @property
    def batch(self) -> dict[str, Any] | None:
        """Batch mode: the batch in hand ({"assignment", "worker_id", "run": the container or process}), or
        {"left": ...} once the worker left its group; None between batches."""
        with self._lock:
            return copy.deepcopy(self._data["batch"])

    def set_batch(self, batch: dict[str, Any] | None) -> None:
        with self._lock:
            if batch != self._data["batch"]:
                self._data["batch"] = batch
                self._write()

    def update_batch(self, **fields: Any) -> None:
        with self._lock:
            self._data["batch"] = {**(self._data["batch"] or {}), **fields}
            self._write()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._data)

    # --- the file ------------------------------------------------------------------------------

    def _fresh(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "instance_id": self._instance_id,
            "assignment": None,
            "lifecycle": None,
            "waiting_since": None,
            "notices": {},
            "drain": None,
            "workload": None,
            "batch": None,
        }

    def _read(self) -> dict[str, Any]:
        fresh = self._fresh()
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError) as exc:
            # Writes are atomic, so this is damage from outside: keep the file for a human, start afresh.
            warn("state_unreadable", path=str(self.path), reason=str(exc))
            self.path.replace(self.path.with_name(STATE_FILE + ".unreadable"))
            return fresh
        if not isinstance(data, dict) or data.get("instance_id") != self._instance_id:
            # A state file of another instance (an image baked from a running instance): not ours.
            warn("state_of_another_instance", path=str(self.path), found=str(data.get("instance_id", "")))
            return fresh
        return {**fresh, **{key: data[key] for key in fresh if key in data}}

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(descriptor, "w") as handle:
                json.dump(self._data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
