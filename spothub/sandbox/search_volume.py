"""The search index's EBS volume in the sandbox: the volume in the emulator (with the id the deployment names), its
data as a directory under the sandbox's state dir, and how an instance sees it.

- The volume: created in the emulator's EC2 in `<search region>a` before the stacks are deployed, under the id the
  context gives (`searchVolumeId`; EC2 picks random ids, so the sandbox gives the created volume that id, as it does
  for the hosted zone). Its directory `<state dir>/volumes/<volume id>/` holds the corpus as `documents.jsonl`.
- Attached (AttachVolume, see emulator_patches), the volume appears in the instance's block-device directory as AWS
  names it on a Nitro instance: `nvme-Amazon_Elastic_Block_Store_vol<id without the dash>`, a symlink to its
  directory; detached (DetachVolume, or the instance terminated), the entry goes.
- Mounting: the agent runs SPOTHUB_AGENT_MOUNT_COMMAND / SPOTHUB_AGENT_UNMOUNT_COMMAND; in the sandbox they are this
  module as a script (`mount DEVICE PATH`, `unmount PATH`): the mount point (SPOTHUB_AGENT_MOUNT_PATH, under the
  instance's own directory) becomes a symlink to the directory the device names. Exit codes as mount(8): 32 for a
  failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).with_name("search_corpus.jsonl")
DOCUMENTS = "documents.jsonl"
DEVICE_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
VOLUME_SIZE_GIB = 100
VOLUME_TYPE = "gp3"
MOUNT_FAILURE = 32  # mount(8)'s "mount failure"


def device_name(volume_id: str) -> str:
    """The by-id name a Nitro instance gives an attached EBS volume: nvme-Amazon_Elastic_Block_Store_vol0123..."""
    return DEVICE_PREFIX + volume_id.replace("-", "")


def volumes_root(state_dir: Path) -> Path:
    return state_dir / "volumes"


def volume_directory(state_dir: Path, volume_id: str) -> Path:
    return volumes_root(state_dir) / volume_id


def fill(directory: Path, corpus: Path = CORPUS) -> int:
    """The volume holds the corpus and nothing else (what a test wrote there goes); returns the documents' count."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    shutil.copyfile(corpus, directory / DOCUMENTS)
    return sum(1 for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip())


def ensure_volume(account: str, region: str, zone: str, volume_id: str, tags: dict[str, str] | None = None) -> bool:
    """The volume exists in the emulator with this id, in `zone` (created unless it does; a volume of that id in
    another zone is a broken state: raised). Returns whether it was created."""
    from moto.ec2.models import ec2_backends  # noqa: PLC0415

    backend = ec2_backends[account][region]
    existing = backend.volumes.get(volume_id)
    if existing is not None:
        if existing.zone.name != zone:
            raise RuntimeError(f"{volume_id} exists in {existing.zone.name}, not in {zone}")
        return False
    volume = backend.create_volume(size=VOLUME_SIZE_GIB, zone_name=zone, volume_type=VOLUME_TYPE)
    # EC2 chooses a volume's id; the deployment named one before the volume existed, so the volume takes it.
    backend.volumes.pop(volume.id)
    volume.id = volume_id
    backend.volumes[volume_id] = volume
    if tags:
        volume.add_tags(tags)
    return True


def volume_of(account: str, region: str, volume_id: str) -> Any:
    from moto.ec2.models import ec2_backends  # noqa: PLC0415

    return ec2_backends[account][region].volumes.get(volume_id)


# --- the mount helper the agent runs on a simulated instance ------------------------------------------------------


def mount(device: str, path: str) -> int:
    source = Path(device)
    if not source.exists():
        print(f"mount: {path}: special device {device} does not exist.", file=sys.stderr)
        return MOUNT_FAILURE
    target = Path(path)
    if target.is_symlink():
        print(f"mount: {path}: {device} already mounted or mount point busy.", file=sys.stderr)
        return MOUNT_FAILURE
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # an empty mount point directory
    if target.exists():
        print(f"mount: {path}: mount point is not empty.", file=sys.stderr)
        return MOUNT_FAILURE
    # The filesystem the device holds, bound now: what the device entry later becomes does not change the mount.
    target.symlink_to(os.path.realpath(source), target_is_directory=True)
    return 0


def unmount(path: str) -> int:
    target = Path(path)
    if not target.is_symlink():
        print(f"umount: {path}: not mounted.", file=sys.stderr)
        return MOUNT_FAILURE
    target.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mount and unmount a simulated EBS volume")
    commands = parser.add_subparsers(dest="command", required=True)
    mounting = commands.add_parser("mount")
    mounting.add_argument("device")
    mounting.add_argument("path")
    unmounting = commands.add_parser("unmount")
    unmounting.add_argument("path")
    options = parser.parse_args(argv)
    if options.command == "mount":
        return mount(options.device, options.path)
    return unmount(options.path)


if __name__ == "__main__":
    sys.exit(main())
