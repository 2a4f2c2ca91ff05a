"""Provisioning state in DynamoDB (moto): the switch, replicas and requests change only under their conditions."""

from __future__ import annotations

from typing import Any

import pytest

from spothub_core.dal.provisioning import LAUNCH, TEARDOWN, ProvisioningStore

NOW = 1_700_000_000.0
ENABLED = {"status": "enabled", "generation": 1, "replicas": 1, "instance_types": ["g5.xlarge"]}


@pytest.fixture
def store(table: Any) -> ProvisioningStore:
    return ProvisioningStore(table)


def serving(store: ProvisioningStore, replica_id: str = "replica-0", instance_id: str = "i-1") -> None:
    assert store.start_placing(replica_id, generation=1, execution=f"{replica_id}-g1", now=NOW)
    assert store.replica_serving(replica_id, generation=1, fields={"instance_id": instance_id, "region": "us-west-2"})


# --- the switch ------------------------------------------------------------------------------------


def test_the_switch_is_disabled_at_generation_0_before_anything_is_written(store: ProvisioningStore) -> None:
    assert store.config() == {"status": "disabled", "generation": 0}


def test_a_written_switch_reads_back_with_plain_numbers(store: ProvisioningStore) -> None:
    assert store.write_config(ENABLED, expected_generation=0)
    config = store.config()
    assert config == ENABLED
    assert type(config["generation"]) is int
    assert "pk" not in config and "sk" not in config


def test_a_second_writer_with_a_stale_generation_is_refused(store: ProvisioningStore) -> None:
    assert store.write_config(ENABLED, expected_generation=0)
    # Both toggles read generation 1; the first to write moves it to 2.
    assert store.write_config({**ENABLED, "status": "disabled", "generation": 2}, expected_generation=1)
    assert not store.write_config({**ENABLED, "replicas": 2, "generation": 2}, expected_generation=1)
    assert store.config()["status"] == "disabled"
    assert store.config()["replicas"] == 1


def test_a_writer_that_read_the_current_generation_replaces_the_switch(store: ProvisioningStore) -> None:
    assert store.write_config(ENABLED, expected_generation=0)
    assert store.write_config({"status": "disabled", "generation": 2}, expected_generation=1)
    assert store.config() == {"status": "disabled", "generation": 2}


# --- replicas --------------------------------------------------------------------------------------


def test_a_replica_is_claimed_for_placing_once_per_generation(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    assert not store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW + 1)
    replica = store.replica("replica-0")
    assert replica is not None
    assert (replica["status"], replica["generation"], replica["execution"]) == ("placing", 1, "replica-0-g1")


def test_a_stopped_replica_can_be_claimed_again_in_the_same_generation(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    stopped = store.stop_replicas(NOW + 1)
    assert [r["replica_id"] for r in stopped] == ["replica-0"]
    assert store.replica("replica-0")["status"] == "stopped"  # type: ignore[index]
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW + 2)


def test_a_new_generation_claims_a_replica_that_is_placed(store: ProvisioningStore) -> None:
    serving(store)
    assert store.start_placing("replica-0", generation=2, execution="replica-0-g2", now=NOW)
    assert store.replica("replica-0")["execution"] == "replica-0-g2"  # type: ignore[index]


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
    assert (replica["status"], replica["execution"]) == ("replacing", "replica-0-r-i-1")


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
    assert (replica["status"], replica["instance_id"], replica["region"]) == ("serving", "i-1", "us-west-2")


def test_a_success_from_an_older_generation_does_not_make_the_replica_serve(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=2, execution="replica-0-g2", now=NOW)
    assert not store.replica_serving("replica-0", generation=1, fields={"instance_id": "i-old"})
    replica = store.replica("replica-0")
    assert replica is not None
    assert replica["status"] == "placing"
    assert "instance_id" not in replica


def test_an_unknown_replica_does_not_serve(store: ProvisioningStore) -> None:
    assert not store.replica_serving("replica-9", generation=1, fields={"instance_id": "i-1"})
    assert store.replica("replica-9") is None


def test_a_stopped_replica_is_not_made_serving_by_a_late_success(store: ProvisioningStore) -> None:
    assert store.start_placing("replica-0", generation=1, execution="replica-0-g1", now=NOW)
    store.stop_replicas(NOW + 1)  # what disable does
    assert not store.replica_serving("replica-0", generation=1, fields={"instance_id": "i-late"})
    assert store.replica("replica-0")["status"] == "stopped"  # type: ignore[index]


# --- launch and teardown requests ------------------------------------------------------------------


def test_the_first_resolve_returns_the_request_with_its_token(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, "launch-1", {"region": "us-west-2"}, token="token-1", now=NOW)
    resolved = store.resolve_request(LAUNCH, "launch-1", "succeeded", {"instance_id": "i-1"})
    assert resolved is not None
    assert resolved["task_token"] == "token-1"
    assert (resolved["status"], resolved["instance_id"], resolved["region"]) == ("succeeded", "i-1", "us-west-2")


def test_a_second_resolve_is_a_duplicate_and_changes_nothing(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, "launch-1", {}, token="token-1", now=NOW)
    assert store.resolve_request(LAUNCH, "launch-1", "succeeded", {"instance_id": "i-1"}) is not None
    assert store.resolve_request(LAUNCH, "launch-1", "failed", {"error": "late"}) is None
    request = store.request(LAUNCH, "launch-1")
    assert request is not None
    assert request["status"] == "succeeded"
    assert "error" not in request


def test_resolving_an_unknown_request_returns_none_and_creates_nothing(store: ProvisioningStore) -> None:
    assert store.resolve_request(LAUNCH, "launch-unknown", "succeeded", {}) is None
    assert store.request(LAUNCH, "launch-unknown") is None


def test_a_resolved_request_is_not_reopened_by_a_late_dispatch(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, "launch-1", {}, token="token-1", now=NOW)
    assert store.resolve_request(LAUNCH, "launch-1", "failed", {}) is not None
    assert not store.put_request(LAUNCH, "launch-1", {}, token="token-2", now=NOW + 5)
    request = store.request(LAUNCH, "launch-1")
    assert request is not None
    assert (request["status"], request["task_token"]) == ("failed", "token-1")


def test_a_retried_dispatch_of_a_pending_request_refreshes_its_token(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, "launch-1", {}, token="token-1", now=NOW)
    assert store.put_request(LAUNCH, "launch-1", {}, token="token-2", now=NOW + 5)
    resolved = store.resolve_request(LAUNCH, "launch-1", "succeeded", {})
    assert resolved is not None
    assert resolved["task_token"] == "token-2"


def test_a_request_expires_a_week_after_it_was_made(store: ProvisioningStore) -> None:
    assert store.put_request(TEARDOWN, "teardown-1", {"region": "us-west-2"}, token="t", now=NOW)
    request = store.request(TEARDOWN, "teardown-1")
    assert request is not None
    assert request["expires_at"] == int(NOW) + 7 * 86400


def test_pending_lists_only_unresolved_requests_of_a_kind(store: ProvisioningStore) -> None:
    assert store.put_request(LAUNCH, "launch-1", {}, token="t1", now=NOW)
    assert store.put_request(LAUNCH, "launch-2", {}, token="t2", now=NOW)
    assert store.put_request(TEARDOWN, "teardown-1", {}, token="t3", now=NOW)
    assert store.resolve_request(LAUNCH, "launch-1", "succeeded", {}) is not None
    assert [p["id"] for p in store.pending(LAUNCH)] == ["launch-2"]
