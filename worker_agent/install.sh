#!/usr/bin/env bash
# Installs the spothub agent as a systemd service. Run by the launch template's user data from
# the unpacked agent bundle (/opt/spothub-agent); safe to run again.
# Configuration is not passed here: the agent reads instance tags (IMDS), IMDS and SSM at start.
set -euo pipefail

AGENT_HOME="${AGENT_HOME:-/opt/spothub-agent}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The agent needs Python 3.11 or later (it uses the standard library of 3.11: enum.StrEnum, datetime.UTC).
python=""
for candidate in python3.12 python3.11; do
  if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
  dnf install -y python3.11 python3.11-pip
  python=python3.11
fi
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "spothub-agent: $python is older than 3.11" >&2; exit 1; }

mkdir -p "$AGENT_HOME"
if [ "$here" != "$AGENT_HOME" ]; then
  cp -r "$here/spothub_agent" "$here/requirements.txt" "$here/spothub-agent.service" "$AGENT_HOME/"
  # The control plane's modules the agent shares (spothub_core/: contracts.py, timings.py, models/agent.py,
  # models/batch_workers.py, models/search_records.py) ship beside it; they need pydantic, which requirements.txt
  # pins as the Lambdas do.
  if [ -d "$here/spothub_core" ]; then cp -r "$here/spothub_core" "$AGENT_HOME/"; fi
  if [ -f "$here/requirements-gpu.txt" ]; then cp "$here/requirements-gpu.txt" "$AGENT_HOME/"; fi
fi
"$python" -m venv "$AGENT_HOME/venv"
# boto3 and pydantic (pydantic-core is a binary wheel, published for x86_64 and arm64 Linux).
"$AGENT_HOME/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$AGENT_HOME/requirements.txt"
if lspci 2>/dev/null | grep -qi nvidia && [ -f "$AGENT_HOME/requirements-gpu.txt" ]; then
  # Optional: without it the agent reports GPU health as unavailable, with the reason.
  "$AGENT_HOME/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$AGENT_HOME/requirements-gpu.txt" || true
fi
# Fail the install, not the service at its first start, when the bundle is incomplete (the agent, spothub_core/,
# or a dependency missing from the venv).
PYTHONPATH="$AGENT_HOME" "$AGENT_HOME/venv/bin/python" -c 'import spothub_agent.agent'

install -m 0644 "$AGENT_HOME/spothub-agent.service" /etc/systemd/system/spothub-agent.service
systemctl daemon-reload
systemctl enable spothub-agent.service
# --no-block: user data runs inside cloud-init's final stage, which ecs.service (and so this unit,
# ordered after it) waits for; a blocking start would wait for itself until the launch hook expires.
systemctl start --no-block spothub-agent.service
