"""POST /spot-provisioning's logic against DynamoDB (moto): what enable and disable start, stop and refuse."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from spothub_core.dal.provisioning import ProvisioningStore
from spothub_core.errors import DependencyUnavailable, InvalidRequest
from spothub_core.logic.provisioning import Orchestration, toggle
from spothub_core.models.api import ToggleRequest, ToggleResponse
from spothub_core.models.orchestrator_tasks import OrchestratorInput
from spothub_core.models.records import InstanceStatus, ProvisioningConfig, ProvisioningStatus

NOW = 1_700_000_000.0
WORKER_REGIONS = ["us-west-2", "eu-west-1"]
DEFAULT_TYPES = ["g5.xlarge"]


class FakeOrchestration:
    """Records what the toggle starts, stops and puts; start_execution can be made to fail."""

    def __init__(self) -> None:
        self.started: list[tuple[str, OrchestratorInput]] = []
        self.stopped: list[tuple[str, str]] = []
        self.commands: list[tuple[str, str, dict[str, Any]]] = []
        self.start_error: Exception | None = None

    def start_execution(self, name: str, state: OrchestratorInput) -> bool:
        if self.start_error is not None:
            raise self.start_error
        self.started.append((name, state))
        return True

    def stop_execution(self, name: str, cause: str) -> None:
        self.stopped.append((name, cause))

    def put_command(self, detail_type: str, source: str, detail: dict[str, Any]) -> None:
        self.commands.append((detail_type, source, detail))

    def as_orchestration(self) -> Orchestration:
        return Orchestration(
            start_execution=self.start_execution, stop_execution=self.stop_execution, put_command=self.put_command
        )


@pytest.fixture
def store(table: Any) -> ProvisioningStore:
    return ProvisioningStore(table)


@pytest.fixture
def fake() -> FakeOrchestration:
    return FakeOrchestration()


def run(store: ProvisioningStore, fake: FakeOrchestration, **body: Any) -> ToggleResponse:
    return toggle(
        ToggleRequest(**body),
        store=store,
        orchestration=fake.as_orchestration(),
        worker_regions=WORKER_REGIONS,
        default_instance_types=DEFAULT_TYPES,
        now=NOW,
    )


# --- enable ----------------------------------------------------------------------------------------


def test_enable_starts_one_execution_for_the_first_replica(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    answer = run(store, fake, action="enable")
    assert answer == ToggleResponse(message="Spot provisioning enabled successfully")
    assert fake.started == [("replica-0-g1", OrchestratorInput(replica_id="replica-0", generation=1))]


def test_enable_writes_the_switch_with_the_defaults(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable")
    config = store.config()
    assert (config.status, config.generation, config.replicas) == ("enabled", 1, 1)
    assert config.instance_types == DEFAULT_TYPES
    assert store.replica("replica-0").status == "placing"  # type: ignore[union-attr]


def test_enabling_twice_starts_nothing_new(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable")
    run(store, fake, action="enable")
    assert [name for name, _ in fake.started] == ["replica-0-g1"]
    assert store.config().generation == 1


def test_enable_with_two_replicas_starts_two_executions(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable", replicas=2)
    assert [name for name, _ in fake.started] == ["replica-0-g1", "replica-1-g1"]


def test_more_replicas_than_worker_regions_is_invalid(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    with pytest.raises(InvalidRequest, match="at most one replica per region"):
        run(store, fake, action="enable", replicas=3)
    assert fake.started == []
    assert store.config().status == "disabled"


def test_more_replicas_than_allowed_regions_is_invalid(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    with pytest.raises(InvalidRequest):
        run(store, fake, action="enable", replicas=2, allowed_regions=["us-west-2"])


def test_allowing_a_region_that_is_not_a_worker_region_is_invalid(
    store: ProvisioningStore, fake: FakeOrchestration
) -> None:
    with pytest.raises(InvalidRequest, match="not worker regions of this deployment: ap-south-1"):
        run(store, fake, action="enable", allowed_regions=["us-west-2", "ap-south-1"])
    assert fake.started == []
    assert store.config() == ProvisioningConfig(status=ProvisioningStatus.DISABLED, generation=0)


def test_a_failed_start_leaves_the_replica_stopped_so_enabling_again_retries(
    store: ProvisioningStore, fake: FakeOrchestration
) -> None:
    fake.start_error = DependencyUnavailable("Step Functions did not answer")
    with pytest.raises(DependencyUnavailable):
        run(store, fake, action="enable")
    assert store.replica("replica-0").status == "stopped"  # type: ignore[union-attr]

    fake.start_error = None
    run(store, fake, action="enable")
    assert [name for name, _ in fake.started] == ["replica-0-g1"]
    assert store.replica("replica-0").status == "placing"  # type: ignore[union-attr]


# --- disable ---------------------------------------------------------------------------------------


def test_disable_stops_the_running_execution(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable")
    answer = run(store, fake, action="disable", teardown=False)
    assert answer.message.startswith("Spot provisioning disabled")
    assert fake.stopped == [("replica-0-g1", "spot provisioning disabled")]
    config = store.config()
    assert (config.status, config.generation) == ("disabled", 2)
    assert store.replica("replica-0").status == "stopped"  # type: ignore[union-attr]
    assert fake.commands == []


def test_disable_tears_down_by_default(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable")
    answer = run(store, fake, action="disable")
    assert answer == ToggleResponse(message="Spot provisioning disabled successfully")
    assert answer.model_dump(mode="json") == {"message": "Spot provisioning disabled successfully"}
    assert sorted(detail["region"] for _, _, detail in fake.commands) == sorted(WORKER_REGIONS)
    assert {detail_type for detail_type, _, _ in fake.commands} == {"Spothub Teardown Requested"}


def test_disable_without_teardown_says_what_keeps_running_and_billing(
    store: ProvisioningStore, fake: FakeOrchestration
) -> None:
    run(store, fake, action="enable", replicas=2)
    store.put_instance("i-0aaa", {"region": "us-west-2", "replica_id": "replica-0", "status": InstanceStatus.SERVING})
    store.put_instance("i-0bbb", {"region": "eu-west-1", "replica_id": "replica-1", "status": InstanceStatus.AT_RISK})
    store.put_instance("i-0ccc", {"region": "eu-west-1", "status": InstanceStatus.TERMINATING})
    store.put_instance("i-0ddd", {"region": "eu-west-1", "status": InstanceStatus.TERMINATED})
    answer = run(store, fake, action="disable", teardown=False)
    assert answer.instances_running == 2, "a terminating instance stops on its own; a terminated one bills no more"
    assert answer.message == "Spot provisioning disabled; 2 instances keep running, serving and billing"
    assert answer.hint is not None
    assert '{"action": "disable"}' in answer.hint
    assert "teardown defaults to true" in answer.hint
    assert fake.commands == []


def test_disable_without_teardown_with_nothing_running_says_so(
    store: ProvisioningStore, fake: FakeOrchestration
) -> None:
    run(store, fake, action="enable")
    answer = run(store, fake, action="disable", teardown=False)
    assert (answer.instances_running, answer.message) == (0, "Spot provisioning disabled; no instance is running")


def test_disabling_while_disabled_without_teardown_does_nothing(
    store: ProvisioningStore, fake: FakeOrchestration
) -> None:
    run(store, fake, action="disable", teardown=False)
    assert (fake.started, fake.stopped, fake.commands) == ([], [], [])
    assert store.config() == ProvisioningConfig(status=ProvisioningStatus.DISABLED, generation=0)


def test_disabling_while_disabled_tears_down_what_a_disable_without_teardown_left(
    store: ProvisioningStore, fake: FakeOrchestration
) -> None:
    run(store, fake, action="enable")
    run(store, fake, action="disable", teardown=False)
    assert fake.commands == []
    run(store, fake, action="disable")
    assert sorted(detail["region"] for _, _, detail in fake.commands) == sorted(WORKER_REGIONS)
    assert store.config().generation == 2, "the switch is not written again"


def test_disabling_twice_stops_the_execution_once(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable")
    run(store, fake, action="disable")
    run(store, fake, action="disable")
    assert len(fake.stopped) == 1
    assert store.config().generation == 2


def test_disable_with_teardown_asks_every_worker_region_once(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable")
    run(store, fake, action="disable", teardown=True)
    assert [detail_type for detail_type, _, _ in fake.commands] == ["Spothub Teardown Requested"] * 2
    assert sorted(detail["region"] for _, _, detail in fake.commands) == sorted(WORKER_REGIONS)
    assert {source for _, source, _ in fake.commands} == {"spothub.hub"}
    assert all(detail["teardown_id"].startswith(f"teardown-{detail['region']}-") for _, _, detail in fake.commands)


def test_enable_after_disable_starts_a_new_generation(store: ProvisioningStore, fake: FakeOrchestration) -> None:
    run(store, fake, action="enable")
    run(store, fake, action="disable")
    run(store, fake, action="enable")
    assert [name for name, _ in fake.started] == ["replica-0-g1", "replica-0-g3"]


# --- the request body ------------------------------------------------------------------------------


def test_an_unknown_action_names_the_valid_ones() -> None:
    with pytest.raises(ValidationError) as caught:
        ToggleRequest(action="restart")  # type: ignore[arg-type]
    assert "'enable'" in str(caught.value)
    assert "'disable'" in str(caught.value)


def test_an_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ToggleRequest.model_validate({"action": "enable", "regions": ["us-west-2"]})


def test_teardown_with_enable_is_rejected() -> None:
    with pytest.raises(ValidationError, match="teardown applies to disable only"):
        ToggleRequest(action="enable", teardown=True)


def test_teardown_with_disable_is_accepted() -> None:
    assert ToggleRequest(action="disable", teardown=True).teardown is True


def test_teardown_defaults_to_true_and_its_default_is_no_error_with_enable() -> None:
    assert ToggleRequest(action="disable").teardown is True
    assert ToggleRequest.model_validate({"action": "enable"}).action == "enable"
    assert ToggleRequest.model_validate({"action": "enable", "teardown": False}).action == "enable"
    assert ToggleRequest.model_json_schema()["properties"]["teardown"]["default"] is True
