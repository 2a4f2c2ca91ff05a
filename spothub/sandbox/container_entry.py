"""What the container runtime does for the sandbox's serving "container": start its command with exactly
the container's environment (the task definition's environment and resolved secrets, as ECS hands them
to Docker), not the agent's (which holds the instance role's credentials).

`python container_entry.py SPEC.json`: SPEC holds {"environment": {...}, "command": [...]} or
{"error": "..."}: a container that could not be created (ECS's reason), which prints it and exits 1.
The fleet writes SPEC (mode 0600, it holds the secrets) and removes it when the instance goes.
Standard library only.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: container_entry.py SPEC.json", file=sys.stderr)
        return 2
    with open(argv[0]) as spec_file:
        spec = json.load(spec_file)
    if spec.get("error"):
        print(f"the container did not start: {spec['error']}", file=sys.stderr, flush=True)
        return 1
    command = [str(part) for part in spec["command"]]
    os.execve(command[0], command, {str(k): str(v) for k, v in spec["environment"].items()})  # noqa: S606
    return 1  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
