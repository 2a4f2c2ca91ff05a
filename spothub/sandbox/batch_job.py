"""The sandbox's stand-in for a batch job's container: a real transformation of each input file.

The agent's process runner (SPOTHUB_AGENT_BATCH_RUNNER=process) starts this where an instance would
`docker run` the job's image with Inputs and Outputs mounted at /app/Inputs and /app/Outputs. It is told
the batch by its environment: SPOTHUB_BATCH_INPUT_DIR, SPOTHUB_BATCH_OUTPUT_DIR, SPOTHUB_BATCH_IMAGE and
SPOTHUB_BATCH_JOB_COMMAND (the job's command, a JSON list).

Each input file `<name>` (sub-paths kept) becomes `<name>.out`: its text upper-cased, then a line
`sha256 <hex digest of the input>` (`expected_output`), so every output can be checked against its input.

Images: only IMAGE ("spothub/batch-transform:latest", or without the tag) exists; any other exits 125 with
`docker run`'s own "pull access denied for <image>" (the agent treats that as the image failing: fatal).
The job's command may be empty (the image's default: transform) or `["transform", options...]`:
  --seconds-per-file S   sleep S seconds per file (a batch that takes a while, to be interrupted mid-way)
  --fail-on TEXT         exit 1 when an input contains TEXT (a batch that fails every time)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

IMAGE = "spothub/batch-transform:latest"
KNOWN_IMAGES = (IMAGE, IMAGE.removesuffix(":latest"))
OUTPUT_SUFFIX = ".out"
DOCKER_RUN_FAILED = 125  # what `docker run` exits with when the container cannot be created
USAGE_ERROR = 2


def expected_output(data: bytes) -> bytes:
    """What the stand-in writes for an input file's bytes."""
    text = data.decode("utf-8", errors="replace").upper()
    if text and not text.endswith("\n"):
        text += "\n"
    return (text + f"sha256 {hashlib.sha256(data).hexdigest()}\n").encode()


def output_name(name: str) -> str:
    """The output's name (relative to the output directory or prefix) for an input's."""
    return name + OUTPUT_SUFFIX


def _options(command: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="transform", exit_on_error=False)
    parser.add_argument("--seconds-per-file", type=float, default=0.0)
    parser.add_argument("--fail-on", default=None)
    if command and command[0] == "transform":
        command = command[1:]
    return parser.parse_args(command)


def main() -> int:
    image = os.environ.get("SPOTHUB_BATCH_IMAGE", "")
    if image not in KNOWN_IMAGES:
        print(
            f"docker: Error response from daemon: pull access denied for {image.split(':', 1)[0]}, repository does "
            "not exist or may require 'docker login': denied: requested access to the resource is denied.",
            flush=True,
        )
        return DOCKER_RUN_FAILED
    try:
        options = _options(json.loads(os.environ.get("SPOTHUB_BATCH_JOB_COMMAND") or "[]") or [])
    except (argparse.ArgumentError, ValueError, SystemExit) as exc:
        print(f"transform: bad command: {exc}", flush=True)
        return USAGE_ERROR
    inputs = Path(os.environ["SPOTHUB_BATCH_INPUT_DIR"])
    outputs = Path(os.environ["SPOTHUB_BATCH_OUTPUT_DIR"])
    files = sorted(path for path in inputs.rglob("*") if path.is_file())
    print(f"transform: {len(files)} file(s) with {image}", flush=True)
    for path in files:
        name = path.relative_to(inputs).as_posix()
        data = path.read_bytes()
        if options.fail_on is not None and options.fail_on.encode() in data:
            print(f"transform: {name} holds {options.fail_on!r}: failing", flush=True)
            return 1
        if options.seconds_per_file:
            time.sleep(options.seconds_per_file)
        target = outputs / output_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(expected_output(data))
        print(f"transform: {name} -> {output_name(name)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
