#!/usr/bin/env bash
# Installs the spothub agent as a systemd service. Run by the launch template's user data from
# the unpacked agent bundle (/opt/spothub-agent); safe to run again.
# Configuration is not passed here: the agent reads instance tags (IMDS), IMDS and SSM at start.
set -euo pipefail

AGENT_HOME="${AGENT_HOME:-/opt/spothub-agent}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

python=""
for candidate in python3.12 python3.11; do
  if command -v "$candidate" >/dev/null 2>&1; then python="$candidate"; break; fi
done
if [ -z "$python" ]; then
  dnf install -y python3.11 python3.11-pip
  python=python3.11
fi

mkdir -p "$AGENT_HOME"
if [ "$here" != "$AGENT_HOME" ]; then
  cp -r "$here/spothub_agent" "$here/requirements.txt" "$here/spothub-agent.service" "$AGENT_HOME/"
fi
"$python" -m venv "$AGENT_HOME/venv"
"$AGENT_HOME/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$AGENT_HOME/requirements.txt"
if lspci 2>/dev/null | grep -qi nvidia; then
  "$AGENT_HOME/venv/bin/python" -m pip install --quiet --disable-pip-version-check nvidia-ml-py || true
fi

install -m 0644 "$AGENT_HOME/spothub-agent.service" /etc/systemd/system/spothub-agent.service
systemctl daemon-reload
systemctl enable spothub-agent.service
# --no-block: user data runs inside cloud-init's final stage, which ecs.service (and so this unit,
# ordered after it) waits for; a blocking start would wait for itself until the launch hook expires.
systemctl start --no-block spothub-agent.service
