"""The model endpoint as a client sees it in the sandbox: the stand-in model server behind the API key, the
security group's ingress, the Route 53 record that follows the replica through a failover, and the key
kept out of the template, the task definition's plain environment and the logs."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from spothub.sandbox.model_client import RecordWatch
from spothub.sandbox.model_server import INSTANCE_HEADER
from spothub.sandbox.sandbox import CLIENT_ADDRESS, ENDPOINT_NAME, OUTSIDE_ADDRESS, Sandbox, SandboxError
from spothub.sandbox.serving_container import ContainerStartError, prepare, serving_task_definition

DOCUMENTATION_RANGES = [ipaddress.ip_network(b) for b in ("203.0.113.0/24", "198.51.100.0/24")]


def _serving(sandbox: Sandbox, extra: Any = lambda _d: True, timeout_s: float = 90) -> dict:
    def check() -> dict | None:
        details = sandbox.request("GET", "spot-instances").json()
        return details if details.get("state") == "serving" and extra(details) else None

    return sandbox.wait_for(check, timeout_s=timeout_s, interval_s=0.3)


def _endpoint(sandbox: Sandbox, details: dict) -> str:
    return details.get("endpoint") or f"http://{ENDPOINT_NAME}:{sandbox.serving_port()}"


def _record_values(sandbox: Sandbox) -> list[str]:
    return sorted(sandbox.resolve(ENDPOINT_NAME))


def test_the_endpoint_answers_with_the_key_refuses_without_and_drops_outsiders(
    fresh_sandbox: Sandbox, capfd: pytest.CaptureFixture[str]
) -> None:
    sandbox = fresh_sandbox
    assert sandbox.request("POST", "spot-provisioning", {"action": "enable"}).status_code == 200
    details = _serving(sandbox)
    instance_id = details["instances"][0]["instance_id"]
    instance = sandbox.fleet.instances[instance_id]  # type: ignore[union-attr]
    endpoint = _endpoint(sandbox, details)
    assert endpoint == f"http://{ENDPOINT_NAME}:{sandbox.serving_port()}"

    # A public address from a documentation range, in EC2's answer and the instance's metadata.
    described = sandbox.client("ec2", instance.region).describe_instances(InstanceIds=[instance_id])
    public_ip = described["Reservations"][0]["Instances"][0]["PublicIpAddress"]
    assert public_ip == instance.public_ip
    assert any(ipaddress.ip_address(public_ip) in block for block in DOCUMENTATION_RANGES)
    assert instance.imds.metadata["public-ipv4"] == public_ip
    assert _record_values(sandbox) == [public_ip]

    key = sandbox.api_key()
    answer = sandbox.model_request(
        endpoint,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "Hello?"}]},
        key=key,
        source_ip=CLIENT_ADDRESS,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["model"] == instance.container.model  # type: ignore[union-attr]
    assert answer.headers[INSTANCE_HEADER] == instance_id
    models = sandbox.model_request(endpoint, "/v1/models", key=key)
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == [body["model"]]
    completion = sandbox.model_request(endpoint, "/v1/completions", {"prompt": "Say hi"}, key=key)
    assert completion.json()["object"] == "text_completion"

    refused = sandbox.model_request(endpoint, "/v1/completions", {"prompt": "Say hi"})
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "invalid_request_error"
    assert sandbox.model_request(endpoint, "/v1/models", key="not-the-key").status_code == 401

    with pytest.raises(requests.exceptions.ConnectTimeout, match="security groups"):
        sandbox.model_request(endpoint, "/v1/models", key=key, source_ip=OUTSIDE_ADDRESS)
    # Only the serving port is open, even to the client the ingress lets in.
    with pytest.raises(requests.exceptions.ConnectTimeout):
        sandbox.model_request(f"http://{public_ip}:22", "/", key=key)

    # The key: in the container's environment as a secret, nowhere in plain sight.
    assert instance.container.environment["SPOTHUB_API_KEY"] == key  # type: ignore[union-attr]
    assert "SPOTHUB_API_KEY" in instance.container.secret_names  # type: ignore[union-attr]
    for template in (sandbox.options.state_dir / "cdk.out").glob("*.template.json"):
        assert key not in template.read_text(), template
    for worker in sandbox.workers:
        definition = serving_task_definition("123456789012", worker.region)
        container = definition.container_definitions[0]
        assert key not in json.dumps(container.get("environment"))
        assert key not in json.dumps(container.get("command"))
        assert {"SPOTHUB_API_KEY", "VLLM_API_KEY"} <= {s["name"] for s in container.get("secrets", [])}
    logs = capfd.readouterr()
    assert key not in logs.out + logs.err, "a function or the sandbox wrote the key to its output"
    for log in (sandbox.options.state_dir / "work" / "instances").rglob("*.log*"):
        assert key not in log.read_text(errors="replace"), log
    assert key not in json.dumps([e.details for e in sandbox.timeline], default=str)


def test_the_key_is_the_same_in_every_worker_region(sandbox: Sandbox) -> None:
    key = sandbox.api_key()
    name = sandbox.client("ssm").get_parameter(Name=f"/spothub/{sandbox.prefix}/model-api-key-secret")["Parameter"][
        "Value"
    ]
    for worker in sandbox.workers:
        replica = sandbox.client("secretsmanager", worker.region).get_secret_value(SecretId=name)
        assert replica["SecretString"] == key, worker.region
    assert len(key) == 40
    assert key.isalnum()


@pytest.mark.access_denied_expected
def test_an_execution_role_without_the_grant_cannot_start_the_container(sandbox: Sandbox) -> None:
    region = sandbox.workers[0].region
    definition = serving_task_definition("123456789012", region)
    role = definition.execution_role_arn.rsplit("/", 1)[-1]
    iam = sandbox.client("iam")
    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}],
    }
    iam.put_role_policy(RoleName=role, PolicyName="test-deny-secrets", PolicyDocument=json.dumps(deny))
    try:
        with pytest.raises(ContainerStartError, match=r"ResourceInitializationError.*AccessDeniedException"):
            prepare(
                account="123456789012",
                region=region,
                session_name="i-test",
                endpoint_url=sandbox.aws_endpoint_url,
                admin_credentials={},
                iam=sandbox.iam,
            )
    finally:
        iam.delete_role_policy(RoleName=role, PolicyName="test-deny-secrets")
    assert any("secretsmanager:GetSecretValue" in d.line() for d in sandbox.iam.denials)


def test_the_record_follows_the_replica_through_a_failover(fresh_sandbox: Sandbox) -> None:
    sandbox = fresh_sandbox
    sandbox.clock.set_speed(4.0)  # a replacement's boot and load fit in the two minutes of a warning
    assert sandbox.request("POST", "spot-provisioning", {"action": "enable"}).status_code == 200
    first = _serving(sandbox)
    old_id, old_region = first["instances"][0]["instance_id"], first["region"]
    old = sandbox.fleet.instances[old_id]  # type: ignore[union-attr]
    endpoint, key = _endpoint(sandbox, first), sandbox.api_key()
    assert sandbox.model_request(endpoint, "/v1/models", key=key).headers[INSTANCE_HEADER] == old_id

    with RecordWatch(sandbox, ENDPOINT_NAME) as watch:
        for pool in sandbox.market.pools(old_region):  # type: ignore[union-attr]
            sandbox.market.set_zone(pool.zone, pool.instance_type, capacity=0)  # type: ignore[union-attr]
        moved = _serving(sandbox, lambda d: d["instances"][0]["instance_id"] != old_id)
        new_id = moved["instances"][0]["instance_id"]
        new = sandbox.fleet.instances[new_id]  # type: ignore[union-attr]
        sandbox.wait_for(lambda: old.state == "terminated", timeout_s=60)
        sandbox.wait_for(lambda: _record_values(sandbox) == [new.public_ip], timeout_s=30)
    gone = next(e.at for e in sandbox.timeline if e.kind == "terminated" and e.details.get("instance_id") == old_id)
    named = watch.first_naming(new.public_ip or "")
    history = watch.history(sandbox.origin)
    assert named is not None, history
    assert named <= gone, f"the record named {new_id} only after {old_id} was gone: {history}"
    assert watch.seen[0][1] == [old.public_ip], history

    answer = sandbox.model_request(endpoint, "/v1/chat/completions", {"messages": []}, key=key)
    assert answer.status_code == 200
    assert answer.headers[INSTANCE_HEADER] == new_id


def test_a_name_no_zone_holds_cannot_be_reached(sandbox: Sandbox) -> None:
    with pytest.raises(requests.exceptions.ConnectionError, match="could not resolve"):
        sandbox.model_request("http://nowhere.spothub.test:8000", "/v1/models")


def test_the_state_names_the_endpoint_and_the_client(sandbox: Sandbox, tmp_path: Path) -> None:
    state = sandbox.state()
    assert state["endpoint_name"] == ENDPOINT_NAME
    assert state["client_address"] == CLIENT_ADDRESS
    assert state["prefix"] == sandbox.prefix
    try:
        sandbox.serving_port()
    except SandboxError as exc:  # pragma: no cover (the hub publishes the port)
        pytest.fail(str(exc))
