"""Search mode's index volume: its device, the wait for it, mounting and unmounting it, and the environment's
overrides of how (the sandbox's, where there is no block device and no root).

The launcher attaches the volume (device name /dev/sdf) once the instance runs; on a Nitro instance it appears as
an NVMe device that udev links under its volume id: `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<hex>`
(the id without its dash). The agent waits for that link, then mounts it with the mount command, a JSON argv
template whose `{device}` and `{path}` are replaced by the link and the mount point. With the default command
(`mount`) the agent creates the mount point first; a command of the environment is given `{path}` as it is (its
parent directory exists) and makes of it what it needs: the sandbox's links the volume's directory there.
A volume mounted already (an agent restarted) is not mounted again: a mount point, or a link to the device's target
(the sandbox's mount).

Environment (the defaults are an instance's):
  SPOTHUB_AGENT_BLOCK_DEVICE_DIR    where the device link appears (/dev/disk/by-id)
  SPOTHUB_AGENT_MOUNT_COMMAND       JSON list with {device} {path} (["mount", "{device}", "{path}"])
  SPOTHUB_AGENT_UNMOUNT_COMMAND     JSON list with {path} (["umount", "{path}"])
  SPOTHUB_AGENT_SEARCH_COMMAND      JSON list with {port} {data}: the service as a local process instead of
                                    `docker run` (search.py)
  SPOTHUB_AGENT_MOUNT_PATH          the mount point instead of search-config's mount_path (where /mnt is not
                                    writable: a sandbox run by a user)
  SPOTHUB_AGENT_HEALTH_URL          where the agent sees the service answer (http://127.0.0.1:<port><health_path>
                                    from search-config): only logged, the hub's router does the checks that count
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spothub_agent.logs import log_event, warn
from spothub_agent.settings import SettingsError

DEFAULT_BLOCK_DEVICE_DIR = Path("/dev/disk/by-id")
DEVICE_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
DEFAULT_MOUNT_COMMAND = ("mount", "{device}", "{path}")
DEFAULT_UNMOUNT_COMMAND = ("umount", "{path}")
# A mount or unmount that hangs (a device gone bad) must not hold up the agent's stop for ever.
MOUNT_COMMAND_SECONDS = 60
UNMOUNT_ATTEMPTS = 3
UNMOUNT_RETRY_SECONDS = 1.0
# While the device is awaited, a reminder this often (the launcher attaches within minutes, or gives up).
DEVICE_WAIT_LOG_SECONDS = 60
MAX_OUTPUT_CHARS = 500

ENVIRONMENT = {
    "SPOTHUB_AGENT_BLOCK_DEVICE_DIR": "block_device_dir",
    "SPOTHUB_AGENT_MOUNT_COMMAND": "mount_command",
    "SPOTHUB_AGENT_UNMOUNT_COMMAND": "unmount_command",
    "SPOTHUB_AGENT_SEARCH_COMMAND": "search_command",
    "SPOTHUB_AGENT_MOUNT_PATH": "mount_path",
    "SPOTHUB_AGENT_HEALTH_URL": "health_url",
}


class MountError(RuntimeError):
    pass


@dataclass(frozen=True)
class SearchOptions:
    block_device_dir: Path = DEFAULT_BLOCK_DEVICE_DIR
    mount_command: tuple[str, ...] = DEFAULT_MOUNT_COMMAND
    unmount_command: tuple[str, ...] = DEFAULT_UNMOUNT_COMMAND
    search_command: tuple[str, ...] = ()  # empty: `docker run` of the configured image
    mount_path: Path | None = None  # None: search-config's mount_path
    health_url: str = ""  # "": http://127.0.0.1:<port><health_path> of search-config

    def describe(self) -> dict[str, Any]:
        return {
            "block_device_dir": str(self.block_device_dir),
            "mount_command": list(self.mount_command),
            "unmount_command": list(self.unmount_command),
            "search_command": list(self.search_command),
            "mount_path": str(self.mount_path) if self.mount_path else None,
            "health_url": self.health_url,
        }


def load_search_options(environ: Mapping[str, str]) -> SearchOptions:
    """Search mode's settings from the environment; SettingsError names a value that is not valid."""
    changes: dict[str, Any] = {}
    for variable, key in ENVIRONMENT.items():
        value = environ.get(variable, "")
        if value == "":
            continue
        if key in ("block_device_dir", "mount_path"):
            changes[key] = Path(value)
        elif key == "health_url":
            if not value.startswith(("http://", "https://")):
                raise SettingsError(f"{variable} must be an http(s) URL, got {value[:200]!r}")
            changes[key] = value
        else:
            changes[key] = _argv(variable, value)
    return SearchOptions(**changes)


def _argv(variable: str, value: str) -> tuple[str, ...]:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise SettingsError(f"{variable} must be a JSON list of strings: {exc}") from exc
    if not isinstance(parsed, list) or not parsed or not all(isinstance(part, str) for part in parsed):
        raise SettingsError(f"{variable} must be a non-empty JSON list of strings, got {value[:200]!r}")
    return tuple(parsed)


def fill(template: tuple[str, ...], **values: str) -> list[str]:
    """The template with each `{name}` replaced (plain replacement: other braces, in a script, stay as they are)."""
    argv = []
    for part in template:
        filled = part
        for name, value in values.items():
            filled = filled.replace("{" + name + "}", value)
        argv.append(filled)
    return argv


def device_link(block_device_dir: Path, volume_id: str) -> Path:
    """Where the volume appears once attached: udev's by-id link names it by its id, without the dash."""
    return block_device_dir / (DEVICE_PREFIX + volume_id.replace("-", ""))


class SearchVolume:
    def __init__(self, volume_id: str, mount_path: Path, options: SearchOptions, poll_s: float) -> None:
        self.volume_id = volume_id
        self.mount_path = mount_path
        self.device = device_link(options.block_device_dir, volume_id)
        self.options = options
        self.mounted = False
        self._poll_s = poll_s

    def wait_for_device(self, stop: threading.Event) -> bool:
        """Until the device appears (True), or the stop (False)."""
        started = time.monotonic()
        reminded = started
        if not self.device.exists():
            log_event("search_device_waiting", volume_id=self.volume_id, device=str(self.device))
        while not self.device.exists():
            if stop.wait(self._poll_s):
                return False
            if time.monotonic() - reminded >= DEVICE_WAIT_LOG_SECONDS:
                reminded = time.monotonic()
                log_event("search_device_waiting", volume_id=self.volume_id, waited_s=round(reminded - started))
        log_event(
            "search_device_found",
            volume_id=self.volume_id,
            device=str(self.device),
            resolved=os.path.realpath(self.device),
            waited_s=round(time.monotonic() - started, 1),
        )
        return True

    def mount(self) -> None:
        """Mount the device at the mount point, unless it is mounted there already; MountError when it fails."""
        if self._mounted_already():
            self.mounted = True
            log_event("search_volume_mounted_already", path=str(self.mount_path))
            return
        try:
            self.mount_path.parent.mkdir(parents=True, exist_ok=True)
            if self.options.mount_command == DEFAULT_MOUNT_COMMAND:
                self.mount_path.mkdir(exist_ok=True)
        except OSError as exc:
            raise MountError(f"cannot create the mount point {self.mount_path}: {exc}") from exc
        argv = fill(self.options.mount_command, device=str(self.device), path=str(self.mount_path))
        self._run(argv, MountError)
        self.mounted = True
        log_event("search_volume_mounted", device=str(self.device), path=str(self.mount_path), command=argv)

    def _mounted_already(self) -> bool:
        if os.path.ismount(self.mount_path):
            return True
        return self.mount_path.is_symlink() and os.path.realpath(self.mount_path) == os.path.realpath(self.device)

    def unmount(self) -> bool:
        """Unmount what mount() mounted, retried a few times (the service's files may take a moment to close)."""
        if not self.mounted:
            return True
        argv = fill(self.options.unmount_command, path=str(self.mount_path), device=str(self.device))
        for attempt in range(1, UNMOUNT_ATTEMPTS + 1):
            try:
                self._run(argv, MountError)
            except MountError as exc:
                warn("search_unmount_failed", path=str(self.mount_path), attempt=attempt, reason=str(exc))
                if attempt < UNMOUNT_ATTEMPTS:
                    time.sleep(UNMOUNT_RETRY_SECONDS)
                continue
            self.mounted = False
            log_event("search_volume_unmounted", path=str(self.mount_path), command=argv)
            return True
        return False

    @staticmethod
    def _run(argv: list[str], error: type[Exception]) -> None:
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=MOUNT_COMMAND_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise error(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            output = (done.stderr or done.stdout or b"").decode(errors="replace").strip()
            raise error(f"{argv[0]} exited {done.returncode}: {output[:MAX_OUTPUT_CHARS]}")
