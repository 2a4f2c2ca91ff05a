"""One sandbox for the whole test session (it is a process-wide emulator), reset cheaply per test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from spothub.sandbox.sandbox import Sandbox, SandboxOptions, free_port


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    options = SandboxOptions(port=free_port(), state_dir=tmp_path_factory.mktemp("sandbox"), write_state_file=False)
    with Sandbox(options) as running:
        yield running


@pytest.fixture
def fresh_sandbox(sandbox: Sandbox) -> Sandbox:
    """The session's sandbox, as just deployed: no instances, default market, empty tables and queues.

    Execution names carry the provisioning generation (`replica-0-g<N>`, launches `replica-0-g<N>-<attempt>`)
    and are idempotency keys, while a reset empties the state table (back to generation 0). So each test
    starts from a generation no earlier test of the session used, as a deployment enabled and disabled
    before would: a leftover of an earlier test can never answer for this test's launch.
    """
    sandbox.reset()
    table = sandbox.client("dynamodb", sandbox.hub.region)
    generation = time.time_ns() // 1_000_000  # milliseconds: tests are seconds apart
    table.put_item(
        TableName=sandbox.hub.outputs["StateTableName"],
        Item={
            "pk": {"S": "PROVISIONING"},
            "sk": {"S": "CONFIG"},
            "status": {"S": "disabled"},
            "generation": {"N": str(generation)},
        },
    )
    return sandbox


@pytest.fixture(autouse=True)
def _no_call_aws_would_refuse(request: pytest.FixtureRequest) -> Iterator[None]:
    """A sandbox test fails when any principal made a call its IAM policies (or the resource's policy) do not
    allow, unless it is marked `access_denied_expected` (a test of the refusal itself)."""
    if "sandbox" not in request.fixturenames:
        yield
        return
    running: Sandbox = request.getfixturevalue("sandbox")
    running.iam.forget()
    yield
    denials = list(running.iam.denials)
    running.iam.forget()
    if request.node.get_closest_marker("access_denied_expected") is None:
        assert not denials, "calls AWS would refuse:\n" + "\n".join(d.line() for d in denials[:20])


@pytest.fixture
def spot(fresh_sandbox: Sandbox) -> Iterator[Sandbox]:
    """A fresh sandbox (a generation no earlier test used, see fresh_sandbox) with no execution running,
    provisioning disabled, the clock at test_spot_provisioning's SPEED."""
    from tests.sandbox.test_spot_provisioning import SPEED, stop_running_executions  # noqa: PLC0415

    stop_running_executions(fresh_sandbox)
    fresh_sandbox.clock.set_speed(SPEED)
    yield fresh_sandbox
    # Nothing of this test may go on in the next one (a launch claiming its instance, a retry).
    stop_running_executions(fresh_sandbox)
