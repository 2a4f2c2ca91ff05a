"""The data that ships in the repository's data/ folder (see data/README.md): the spot capacity traces of the public
spot-traces data set and the prices file, the defaults of the replay, `make bench` and the sandbox's market."""

from __future__ import annotations

from stacks.paths import REPO_ROOT

DATA_DIR = REPO_ROOT / "data"
# A folder of trace folders, each a set of `<zone>_<shape>.json` files (format: data/traces/README.md).
TRACES_DIR = DATA_DIR / "traces"
# Hourly on-demand and spot prices per instance type and region, and the trace shapes' instance types.
PRICES_FILE = DATA_DIR / "prices.json"
