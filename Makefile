# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CDK := node_modules/.bin/cdk
# jsii warns on every start that the Node.js of this machine is past its end of life.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION := 1
export JSII_DEPRECATED := quiet
DEMO_CONTEXT := -c hubRegion=us-east-1 -c workerRegions=us-west-2,eu-west-1
# The spot capacity traces the replay benchmark reads: the repository's own (data/traces, see its README), or any
# trace folder or folder of trace folders given as `make bench TRACES=...`.
TRACES ?= data/traces

.PHONY: install browser demo test lint format synth sandbox bench openapi clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt lambdas/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	# The Lambda dependency layer, downloaded now so that synthesis needs no network.
	$(BIN)/python -c "from stacks.constructs.dependency_layer import prefetch; prefetch()"
	touch $@

# Debian's Chromium for the web dashboard's browser test (Playwright drives it; it downloads no browser of its own).
browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the dashboard's browser test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# The main job on the embedded default: the synthesized stacks running in the sandbox, narrated.
demo: install
	$(BIN)/spothub sandbox demo

# The sandbox in the foreground, for driving by hand (Ctrl-C stops it).
sandbox: install
	$(BIN)/spothub sandbox up

# In parallel processes, one sandbox each: first everything but the sandbox tests, then those (moto's
# `mock_aws()` in a unit or integration test resets the process-wide backends a running sandbox lives in).
# The sandbox tests mostly wait on the sandbox's clock and processes: three of them kept about one core of this
# 2-core machine busy (7 min 53 s, against 9 min 32 s for two), so they run one process more than there are cores.
TEST_PROCESSES ?= auto
SANDBOX_TEST_PROCESSES ?= 3
PYTEST_PARALLEL := --maxprocesses 4 --dist loadfile
test: install browser lint
	$(BIN)/pytest -n $(TEST_PROCESSES) $(PYTEST_PARALLEL) --ignore=tests/sandbox
	$(BIN)/pytest -n $(SANDBOX_TEST_PROCESSES) $(PYTEST_PARALLEL) tests/sandbox

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The templates for the reference deployment (a hub and two workers), with a readable summary.
synth: install
	rm -rf cdk.out
	$(CDK) synth --quiet $(DEMO_CONTEXT)
	$(BIN)/spothub summary --cdk-out cdk.out

# The sandbox figures, what an enable and a failover cost the control plane, the batch queue's, every handler's cold
# import, the hops from an interruption warning to the replacement's launch call (listed and counted; the test fails
# past three Lambda invocations), then the replay: a table per folder of $(TRACES) with the Pareto check against
# hedge (one replica, 300 s cold start: drawn into docs/replay.png, the README's picture), again with two replicas
# and with a 120 s cold start, and the speed benchmark.
bench: install
	$(BIN)/python benchmarks/sandbox_bench.py
	$(BIN)/python benchmarks/failover_cost_bench.py
	$(BIN)/python benchmarks/batch_bench.py
	$(BIN)/python benchmarks/cold_import_bench.py
	@echo
	$(BIN)/pytest -q -s -p no:randomly tests/sandbox/test_failover_hops.py
	@echo
	$(BIN)/spothub replay --traces $(TRACES) --plot docs/replay.png
	@echo
	$(BIN)/spothub replay --traces $(TRACES) --replicas 2
	@echo
	$(BIN)/spothub replay --traces $(TRACES) --cold-start 120
	@echo
	$(BIN)/python benchmarks/replay_bench.py

# The API's OpenAPI document (openapi.json), generated from the API functions' routes and models; a test checks
# the checked-in copy is up to date.
openapi: $(VENV)/.installed
	$(BIN)/spothub openapi --output openapi.json

clean:
	rm -rf $(VENV) node_modules cdk.out .build .spothub .pytest_cache .ruff_cache
