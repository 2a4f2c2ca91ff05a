"""`spothub search` against the stand-in API: queries (with the 503 of a launch from zero followed by --wait),
status, up (both 409s), down and terminate; tables for people, JSON with --json, one error line on stderr."""

from __future__ import annotations

import json
from typing import Any

from tests.unit.fake_spothub_api import FakeApi
from tests.unit.test_cli_api import one_line, run

INSTANCE = "i-0123456789abcdef0"


def view(status: str = "ready", **fields: Any) -> dict[str, Any]:
    return {
        "instance_id": INSTANCE,
        "launch_id": "s-20261127220000-0a1b2c3d",
        "public_ip": "203.0.113.7",
        "private_ip": "10.64.0.12",
        "status": status,
        "created_at": "2026-11-27T22:00:00Z",
        "last_used": None,
        "current_requests": 0,
        "capacity_type": "spot",
        "instance_type": "g5.xlarge",
        "availability_zone": "us-west-2a",
        **fields,
    }


def status_of(*instances: dict[str, Any]) -> dict[str, Any]:
    return {
        "total_instances": len(instances),
        "ready_instances": sum(i["status"] in {"ready", "busy", "idle"} for i in instances),
        "busy_instances": sum(i["status"] == "busy" for i in instances),
        "launching_instances": sum(i["status"] in {"launching", "starting"} for i in instances),
        "instances": list(instances),
    }


ANSWER = {
    "query": "spot interruption",
    "results": [{"id": "doc-7", "score": 7.25, "title": "Spot interruptions", "snippet": "two minutes"}],
    "total_documents": 60,
    "instance_id": INSTANCE,
    "timings": {"service_ms": 2.5, "routing_ms": 9.0, "total_ms": 31.0},
}


def test_query_shows_ranked_results(api: FakeApi, capsys) -> None:
    api.on("POST", "/search/query", (200, ANSWER))
    code, out, err = run(capsys, "search", "query", "spot interruption", "--top-k", "3", "--url", api.url)
    assert (code, err) == (0, "")
    assert "doc-7" in out and "7.250" in out and "Spot interruptions" in out and "total 31.0 ms" in out
    assert api.seen[-1].body == {"query": "spot interruption", "top_k": 3}


def test_query_from_zero_is_a_503_line_or_asked_again_with_wait(api: FakeApi, capsys) -> None:
    unavailable = (503, {"error": "No search instance is ready; one is launching", "status": "launching"})
    api.on("POST", "/search/query", unavailable)
    code, out, err = run(capsys, "search", "query", "gpu", "--url", api.url)
    assert (code, out) == (1, "")
    assert (
        one_line(err) == "spothub search query: 503 Service Unavailable: No search instance is ready; one is launching"
    )

    api.on("POST", "/search/query", unavailable, (200, ANSWER))
    code, out, err = run(capsys, "search", "query", "gpu", "--wait", "--interval", "0", "--json", "--url", api.url)
    assert code == 0 and json.loads(out)["instance_id"] == INSTANCE
    assert "launching; asking again" in err
    assert "wait_s" not in api.seen[-1].body  # asked again, not held open


def test_status_table_and_json(api: FakeApi, capsys) -> None:
    api.on("GET", "/search/status", (200, status_of(view("busy", current_requests=2))))
    code, out, _ = run(capsys, "search", "status", "--url", api.url)
    assert code == 0 and INSTANCE in out and "busy" in out and "us-west-2a" in out
    code, out, _ = run(capsys, "search", "status", "--url", api.url, "--json")
    assert json.loads(out)["busy_instances"] == 1
    api.on("GET", "/search/status", (200, status_of()))
    code, out, _ = run(capsys, "search", "status", "--url", api.url)
    assert "no instance" in out


def test_up_launches_and_waits_until_ready(api: FakeApi, capsys) -> None:
    launching = view("launching", instance_id=None)
    api.on(
        "POST",
        "/search/scale-up",
        (200, {"message": "Instance launched successfully", "launched_instances": [launching], "total_instances": 1}),
    )
    api.on(
        "GET",
        "/search/status",
        (200, status_of(launching)),
        (200, status_of(view("starting"))),
        (200, status_of(view("ready"))),
    )
    code, out, err = run(capsys, "search", "up", "--wait", "--interval", "0", "--url", api.url)
    assert code == 0, err
    assert "Instance launched successfully" in out and "ready" in out
    assert api.seen[0].query == {"count": ["1"]}


def test_up_with_an_instance_there_says_so_and_succeeds(api: FakeApi, capsys) -> None:
    api.on(
        "POST",
        "/search/scale-up",
        (
            409,
            {
                "error": "Cannot scale up: already have an instance",
                "existing_instances": [view()],
                "total_instances": 1,
            },
        ),
    )
    code, out, err = run(capsys, "search", "up", "--url", api.url)
    assert (code, out) == (0, "")
    assert one_line(err) == "spothub search up: Cannot scale up: already have an instance"


def test_down_and_a_busy_refusal(api: FakeApi, capsys) -> None:
    api.on(
        "POST",
        "/search/scale-down",
        (200, {"message": "Service shut down", "terminated_instances": [INSTANCE], "total_instances": 0}),
    )
    assert run(capsys, "search", "down", "--url", api.url) == (0, f"Service shut down: {INSTANCE}\n", "")
    api.on("POST", "/search/scale-down", (409, {"error": "Cannot terminate: instance is busy", "total_instances": 1}))
    code, _, err = run(capsys, "search", "down", "--url", api.url)
    assert code == 1 and one_line(err) == "spothub search down: 409 Conflict: Cannot terminate: instance is busy"


def test_terminate_one_and_an_unknown_one(api: FakeApi, capsys) -> None:
    api.on(
        "DELETE",
        f"/search/instances/{INSTANCE}",
        (200, {"message": "Instance termination started", "instance_id": INSTANCE, "status": "terminating"}),
    )
    code, out, _ = run(capsys, "search", "terminate", INSTANCE, "--url", api.url)
    assert code == 0 and "termination started (terminating)" in out
    api.on(
        "DELETE",
        "/search/instances/i-0000000000000000f",
        (404, {"error": "Not Found", "message": "no search instance i-0000000000000000f"}),
    )
    code, _, err = run(capsys, "search", "terminate", "i-0000000000000000f", "--url", api.url)
    assert code == 1 and "404 Not Found: no search instance" in err
