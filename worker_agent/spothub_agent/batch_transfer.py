"""Batch mode's files: a batch's inputs from S3 into the local Inputs directory, what the job wrote under
Outputs back to S3, and both directories cleared between batches.

Each file name of a batch is a key under the job's input prefix (input_prefix + name); it lands at
Inputs/<name>, its sub-path kept ("a/b.txt" is Inputs/a/b.txt). A name that would land outside Inputs
("../x", an absolute path) is refused before anything is downloaded: the batch fails with the reason.
Every regular file under Outputs goes to output_prefix + its path relative to Outputs, so the same batch
run again writes the same keys: a re-run overwrites, never duplicates. Symbolic links under Outputs are
skipped, never followed: the job must not make the agent upload the host's files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from spothub_agent.aws import error_code
from spothub_agent.logs import log_event, warn
from spothub_core.models.batch_workers import BatchAssignment


class TransferError(RuntimeError):
    """A file could not be moved (S3 refused, the object is gone, the disk is full) or a name is unsafe:
    the batch fails with this message; the worker goes on with the next one."""


class TransferHalted(Exception):
    """Not an error: the agent was asked to stop (an interruption) between two files."""


def input_path(directory: Path, name: str) -> Path:
    """Where the input `name` lands under `directory`; TransferError when it would land outside it."""
    parts = PurePosixPath(name).parts
    if not name or "\0" in name or PurePosixPath(name).is_absolute() or ".." in parts:
        raise TransferError(f"refusing the file name {name!r}: it would be written outside the input directory")
    path = directory.joinpath(*parts)
    if not path.resolve().is_relative_to(directory.resolve()):
        raise TransferError(f"refusing the file name {name!r}: it would be written outside the input directory")
    return path


def output_files(directory: Path) -> list[Path]:
    """The regular files under `directory`, sorted; symbolic links are neither followed nor listed."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                warn("batch_output_skipped", path=str(path), reason="not a regular file")
                continue
            found.append(path)
    return found


def clear(directory: Path) -> None:
    """Empty `directory` (made when missing); what the job left there, links included, is removed, not followed."""
    directory.mkdir(parents=True, exist_ok=True)
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


class BatchTransfer:
    def __init__(self, s3: Callable[[], Any]) -> None:
        self._s3 = s3

    def download(self, batch: BatchAssignment, directory: Path, halted: Callable[[], bool] = lambda: False) -> int:
        """Every file of the batch into `directory`; returns how many. Raises TransferError, or TransferHalted
        when `halted()` turns true between two files."""
        wanted = [(name, input_path(directory, name)) for name in batch.file_names if not name.endswith("/")]
        for name, path in wanted:
            if halted():
                raise TransferHalted
            key = batch.input_prefix + name
            path.parent.mkdir(parents=True, exist_ok=True)
            with _transfer("downloading", batch.input_bucket, key):
                self._s3().download_file(batch.input_bucket, key, str(path))
        log_event("batch_downloaded", batch_id=batch.batch_id, files=len(wanted), bucket=batch.input_bucket)
        return len(wanted)

    def upload(self, batch: BatchAssignment, directory: Path, halted: Callable[[], bool] = lambda: False) -> int:
        """Every regular file under `directory` to output_prefix + its relative path; returns how many."""
        files = output_files(directory)
        for path in files:
            if halted():
                raise TransferHalted
            key = batch.output_prefix + path.relative_to(directory).as_posix()
            with _transfer("uploading", batch.output_bucket, key):
                self._s3().upload_file(str(path), batch.output_bucket, key)
        log_event("batch_uploaded", batch_id=batch.batch_id, files=len(files), bucket=batch.output_bucket)
        return len(files)


@contextlib.contextmanager
def _transfer(doing: str, bucket: str, key: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError, Boto3Error, OSError) as exc:
        raise TransferError(f"{error_code(exc)}: {str(exc)[:500]} ({doing} s3://{bucket}/{key})") from exc
