"""Provisioning state in DynamoDB (moto): the switch, replicas and requests change only under their conditions."""

from __future__ import annotations

from typing import Any

import pytest

from spothub_core.dal.provisioning import LAUNCH, TEARDOWN, ProvisioningStore
from spothub_core.models.records import (
    LaunchRecord,
    ProvisioningConfig,
    ProvisioningStatus,
    RequestStatus,
    TeardownRecord,
)

NOW = 1_700_000_000.0
ENABLED = ProvisioningConfig.model_validate(
    {"status": "enabled", "generation": 1, "replicas": 1, "instance_types": ["g5.xlarge"]}
)


@pytest.fixture
def store(table: Any) -> ProvisioningStore:
    return ProvisioningStore(table)


def launch(launch_id: str, **fields: Any) -> LaunchRecord:
    return LaunchRecord(launch_id=launch_id, **fields)


def serving(store: ProvisioningStore, replica_id: str = "replica-0", instance_id: str = "i-1") -> None:
    assert store.start_placing(replica_id, generation=1, execution=f"{replica_id}-g1", now=NOW)
    assert store.replica_serving(replica_id, generation=1, fields={"instance_id": instance_id, "region": "us-west-2"})


# --- the switch ------------------------------------------------------------------------------------


def test_the_switch_is_disabled_at_generation_0_before_anything_is_written(store: ProvisioningStore) -> None:
    config = store.config()
    assert (config.status, config.generation) == ("disabled", 0)
    assert config == ProvisioningConfig()


def test_a_written_switch_reads_back_with_plain_numbers(store: ProvisioningStore) -> None:
    assert store.write_config(ENABLED, expected_generation=0)
    config = store.config()
    assert config == ENABLED
    assert type(config.generation) is int
    assert "pk" not in config.model_dump() and "sk" not in config.model_dump()


def test_a_second_writer_with_a_stale_generation_is_refused(store: ProvisioningStore) -> None:
    assert store.write_config(ENABLED, expected_generation=0)
    # Both toggles read generation 1; the first to write moves it to 2.
    assert store.write_config(
        ENABLED.model_copy(update={"status": ProvisioningStatus.DISABLED, "generation": 2}), expected_generation=1
    )
    assert not store.write_config(ENABLED.model_copy(update={"replicas": 2, "generation": 2}), expected_generation=1)
    assert store.config().status == "disabled"
    assert store.config().replicas == 1


def test_a_writer_that_read_the_current_generation_replaces_the_switch(store: ProvisioningStore) -> None:
    assert store.write_config(ENABLED, expected_generation=0)
    disabled = ProvisioningConfig.model_validate({"status": "disabled", "generation": 2})
    assert store.write_config(disabled, expected_generation=1)
    assert store.config() == disabled


# --- replicas --------------------------------------------------------------------------------------


def test_a_replica_is_claimed_for_placing_once_per_generation(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    assert not store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW + 1)
    replica = store.replica("replica-0")
    assert replica is not None
    assert (replica.status, replica.generation, replica.execution) == ("placing", 1, "replica-0-g1")


def test_a_stopped_replica_can_be_claimed_again_in_the_same_generation(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    stopped = store.stop_replicas(NOW + 1)
    assert [r.replica_id for r in stopped] == ["replica-0"]
    assert store.replica("replica-0").status == "stopped"  # type: ignore[union-attr]
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW + 2)


def test_a_new_generation_claims_a_replica_that_is_placed(store: ProvisioningStore) -> None:
    serving(store)
    assert store.start_placing("replica-0", generation=2, execution="replica-0-g2", now=NOW)
    assert store.replica("replica-0").execution == "replica-0-g2"  # type: ignore[union-attr]


def test_stop_replicas_skips_those_already_stopped(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    assert store.start_placing("replica-1", generation=1, execution="replica-1-g1", now=NOW)
    assert len(store.stop_replicas(NOW)) == 2
    assert store.stop_replicas(NOW) == []


def test_replacing_starts_only_for_a_replica_serving_on_that_instance(store: ProvisioningStore) -> None:
    serving(store, instance_id="i-1")
    assert not store.start_replacing("replica-0", instance_id="i-other", execution="replica-0-r-i-other", now=NOW)
    assert store.start_replacing("replica-0", instance_id="i-1", execution="replica-0-r-i-1", now=NOW)
    replica = store.replica("replica-0")
    assert replica is not None
    assert (replica.status, replica.execution) == ("replacing", "replica-0-r-i-1")


def test_a_second_notice_for_the_same_instance_does_not_replace_again(store: ProvisioningStore) -> None:
    serving(store, instance_id="i-1")
    assert store.start_replacing("replica-0", instance_id="i-1", execution="replica-0-r-i-1", now=NOW)
    assert not store.start_replacing("replica-0", instance_id="i-1", execution="replica-0-r-i-1", now=NOW + 1)


def test_a_replica_still_placing_is_not_replaced(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    assert not store.start_replacing("replica-0", instance_id="i-1", execution="replica-0-r-i-1", now=NOW)


def test_replacing_an_unknown_replica_changes_nothing(store: ProvisioningStore) -> None:
    assert not store.start_replacing("replica-9", instance_id="i-1", execution="replica-9-r-i-1", now=NOW)
    assert store.replica("replica-9") is None


def test_a_replica_serves_when_its_generation_still_holds(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    assert store.replica_serving("replica-0", generation=1, fields={"instance_id": "i-1", "region": "us-west-2"})
    replica = store.replica("replica-0")
    assert replica is not None
    assert (replica.status, replica.instance_id, replica.region) == ("serving", "i-1", "us-west-2")


def test_a_success_from_an_older_generation_does_not_make_the_replica_serve(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=2, execution="replica-0-g2", now=NOW)
    assert not store.replica_serving("replica-0", generation=1, fields={"instance_id": "i-old"})
    replica = store.replica("replica-0")
    assert replica is not None
    assert replica.status == "placing"
    assert replica.instance_id is None


def test_an_unknown_replica_does_not_serve(store: ProvisioningStore) -> None:
    assert not store.replica_serving("replica-9", generation=1, fields={"instance_id": "i-1"})
    assert store.replica("replica-9") is None


def test_a_stopped_replica_is_not_made_serving_by_a_late_success(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    store.stop_replicas(NOW + 1)  # what disable does
    assert not store.replica_serving("replica-0", generation=1, fields={"instance_id": "i-late"})
    assert store.replica("replica-0").status == "stopped"  # type: ignore[union-attr]


# --- launch and teardown requests ------------------------------------------------------------------


def test_the_first_resolve_returns_the_request_with_its_token(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, launch("launch-1", region="us-west-2"), token="token-1", now=NOW)
    resolved = store.resolve_request(LAUNCH, "launch-1", RequestStatus.SUCCEEDED, instance_id="i-1")
    assert resolved is not None
    assert resolved.task_token == "token-1"
    assert (resolved.status, resolved.instance_id, resolved.region) == ("succeeded", "i-1", "us-west-2")


def test_a_second_resolve_is_a_duplicate_and_changes_nothing(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, launch("launch-1"), token="token-1", now=NOW)
    assert store.resolve_request(LAUNCH, "launch-1", RequestStatus.SUCCEEDED, instance_id="i-1") is not None
    assert store.resolve_request(LAUNCH, "launch-1", RequestStatus.FAILED, error="late") is None
    request = store.request(LAUNCH, "launch-1")
    assert request is not None
    assert request.status == "succeeded"
    assert request.error is None


def test_resolving_an_unknown_request_returns_none_and_creates_nothing(store: ProvisioningStore) -> None:
    assert store.resolve_request(LAUNCH, "launch-unknown", RequestStatus.SUCCEEDED) is None
    assert store.request(LAUNCH, "launch-unknown") is None


def test_a_resolved_request_is_not_reopened_by_a_late_dispatch(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, launch("launch-1"), token="token-1", now=NOW)
    assert store.resolve_request(LAUNCH, "launch-1", RequestStatus.FAILED) is not None
    assert not store.put_request(LAUNCH, launch("launch-1"), token="token-2", now=NOW + 5)
    request = store.request(LAUNCH, "launch-1")
    assert request is not None
    assert (request.status, request.task_token) == ("failed", "token-1")


def test_a_retried_dispatch_of_a_pending_request_refreshes_its_token(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, launch("launch-1"), token="token-1", now=NOW)
    assert store.put_request(LAUNCH, launch("launch-1"), token="token-2", now=NOW + 5)
    resolved = store.resolve_request(LAUNCH, "launch-1", RequestStatus.SUCCEEDED)
    assert resolved is not None
    assert resolved.task_token == "token-2"


def test_a_request_expires_a_week_after_it_was_made(store: ProvisioningStore, table: Any) -> None:
    teardown = TeardownRecord(teardown_id="teardown-1", region="us-west-2")
    assert store.put_request(TEARDOWN, teardown, token="t", now=NOW)
    request = store.request(TEARDOWN, "teardown-1")
    assert request is not None
    item = table.get_item(Key={"pk": "TEARDOWN", "sk": "teardown-1"})["Item"]
    assert item["expires_at"] == int(NOW) + 7 * 86400


def test_pending_lists_only_unresolved_requests_of_a_kind(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, launch("launch-1"), token="t1", now=NOW)
    assert store.put_request(LAUNCH, launch("launch-2"), token="t2", now=NOW)
    assert store.put_request(TEARDOWN, TeardownRecord(teardown_id="teardown-1"), token="t3", now=NOW)
    assert store.resolve_request(LAUNCH, "launch-1", RequestStatus.SUCCEEDED) is not None
    assert [p.launch_id for p in store.pending(LAUNCH)] == ["launch-2"]
