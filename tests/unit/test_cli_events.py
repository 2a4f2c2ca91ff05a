"""`spothub events` against the stand-in API: the timeline oldest first as a table, one JSON object per event with
--json, `--follow` asking for what is newer than the newest shown and showing each event once, errors as one line."""

from __future__ import annotations

import json

import pytest

from spothub import cli_events
from tests.unit.fake_spothub_api import FakeApi
from tests.unit.test_cli_api import one_line, run


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def event(at: str, kind: str, summary: str, **fields: str) -> dict[str, str | None]:
    return {
        "at": at,
        "kind": kind,
        "region": fields.get("region"),
        "replica_id": None,
        "instance_id": fields.get("instance_id"),
        "summary": summary,
    }


FAILED = event(
    "2026-11-28T01:00:30Z",
    "launch-failed",
    "launch of replica-0 in us-west-2 (spot) failed: capacity",
    region="us-west-2",
)
REQUESTED = event(
    "2026-11-28T01:00:00Z", "launch-requested", "launch of replica-0 in us-west-2 (spot)", region="us-west-2"
)
LAUNCHED = event(
    "2026-11-28T01:03:00Z",
    "launched",
    "replica-0 in eu-west-1 (spot) serving on i-0abc",
    region="eu-west-1",
    instance_id="i-0abc",
)


def test_events_oldest_first_as_a_table(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/events", (200, {"events": [FAILED, REQUESTED]}))
    code, out, err = run(capsys, "events", "--url", api.url)
    assert (code, err) == (0, "")
    lines = [line for line in out.splitlines() if "2026-11-28" in line]
    assert [line.split()[1] for line in lines] == ["launch-requested", "launch-failed"]
    assert "failed: capacity" in lines[1]
    assert api.seen[0].query == {"limit": ["50"]}


def test_events_as_json_lines(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/events", (200, {"events": [FAILED, REQUESTED]}))
    code, out, _ = run(capsys, "--json", "events", "--url", api.url, "--since", "2026-11-28T00:00:00Z")
    assert code == 0
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["launch-requested", "launch-failed"]
    assert api.seen[0].query["since"] == ["2026-11-28T00:00:00Z"]


def test_follow_asks_for_what_is_newer_and_shows_each_event_once(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    api.on(
        "GET",
        "/events",
        (200, {"events": [FAILED, REQUESTED]}),
        (200, {"events": [LAUNCHED, FAILED]}),  # the newest shown comes again at the boundary
        (200, {"events": [LAUNCHED]}),
    )
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_events.time, "sleep", sleep)
    code, out, err = run(capsys, "--json", "events", "--url", api.url, "--follow", "--interval", "1")
    assert code != 0 and "stopped watching" in err
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["launch-requested", "launch-failed", "launched"]
    assert [s.query.get("since") for s in api.seen] == [None, ["2026-11-28T01:00:30Z"], ["2026-11-28T01:03:00Z"]]


def test_no_events(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/events", (200, {"events": []}))
    code, out, _ = run(capsys, "events", "--url", api.url)
    assert code == 0 and "no events kept" in out


def test_an_api_error_is_one_line(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/events", (400, {"message": "since: 'yesterday' is not an ISO 8601 time"}))
    code, out, err = run(capsys, "events", "--url", api.url, "--since", "yesterday")
    assert code == 1 and out == ""
    assert "yesterday" in one_line(err)
