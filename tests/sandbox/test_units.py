"""The sandbox's parts on their own, without a running sandbox: SigV4 verification, the clock and
schedule expressions, the spot market and trace replay, and the API server's routing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spothub.sandbox import sigv4
from spothub.sandbox.api_server import ApiRoute, ApiServer, _pattern, rest_proxy_event
from spothub.sandbox.clock import SandboxClock, ScheduleError, next_fire
from spothub.sandbox.lambda_runtime import LambdaRuntime
from spothub.sandbox.market import Pool, SpotMarket, derived_score, load_traces

KEY_ID = "AKIASPOTHUBTEST00000"
SECRET = "spothub-test-secret"
URL = "http://127.0.0.1:8080/v1/spot-instances/i-0abc?state=running&zone=us-west-2a"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a Wednesday


# --- sigv4 -------------------------------------------------------------------------------------------


def signed(
    *,
    method: str = "POST",
    url: str = URL,
    body: bytes = b'{"capacity": 2}',
    key_id: str = KEY_ID,
    secret: str = SECRET,
    service: str = "execute-api",
    region: str = "us-east-1",
) -> dict[str, str]:
    """The headers of a request botocore's signer signed, as a client sends them (with Host)."""
    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key_id, secret), service, region).add_auth(request)
    return {**dict(request.headers.items()), "Host": urlsplit(url).netloc}


def verify(
    headers: dict[str, str], *, method: str = "POST", url: str = URL, body: bytes = b'{"capacity": 2}', **kw: Any
) -> sigv4.Caller:
    return sigv4.verify(
        method=method,
        url=url,
        headers=headers,
        body=body,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        **{"region": "us-east-1", **kw},
    )


def test_a_request_signed_by_botocore_is_accepted() -> None:
    caller = verify(signed(region="eu-west-1"), region="eu-west-1")
    assert caller == sigv4.Caller(access_key_id=KEY_ID, region="eu-west-1")


def test_a_signature_scoped_to_another_region_is_refused() -> None:
    with pytest.raises(sigv4.SignatureError, match="region"):
        verify(signed(region="eu-west-1"))


def test_a_signed_payload_hash_must_be_the_bodys() -> None:
    for declared in ("UNSIGNED-PAYLOAD", hashlib.sha256(b"another body").hexdigest()):
        request = AWSRequest(
            method="POST", url=URL, data=b'{"capacity": 2}', headers={"X-Amz-Content-SHA256": declared}
        )
        SigV4Auth(Credentials(KEY_ID, SECRET), "execute-api", "us-east-1").add_auth(request)
        headers = {**dict(request.headers.items()), "Host": urlsplit(URL).netloc}
        with pytest.raises(sigv4.SignatureError, match="x-amz-content-sha256"):
            verify(headers)


def test_header_names_are_matched_case_insensitively() -> None:
    headers = {key.upper(): value for key, value in signed().items()}
    assert verify(headers).access_key_id == KEY_ID


def test_a_get_without_body_or_query_is_accepted() -> None:
    url = "http://127.0.0.1:8080/v1/status"
    assert verify(signed(method="GET", url=url, body=b""), method="GET", url=url, body=b"").region == "us-east-1"


def test_a_signature_within_the_allowed_skew_is_accepted() -> None:
    assert verify(signed(), now=datetime.now(UTC) + timedelta(minutes=14))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: {k: v for k, v in h.items() if k != "Authorization"}, "Missing Authentication Token"),
        (lambda h: {**h, "Authorization": "Bearer token"}, "requires 'Credential', 'SignedHeaders' and 'Signature'"),
        (lambda h: {k: v for k, v in h.items() if k != "X-Amz-Date"}, "Missing or malformed X-Amz-Date"),
        (lambda h: {**h, "X-Amz-Date": "yesterday"}, "Missing or malformed X-Amz-Date"),
        (lambda h: {k: v for k, v in h.items() if k != "Content-Type"}, "missing from the request: content-type"),
        (lambda h: {**h, "Content-Type": "text/plain"}, "signature we calculated does not match"),
    ],
    ids=["no-authorization", "not-sigv4", "no-date", "bad-date", "signed-header-missing", "signed-header-changed"],
)
def test_a_malformed_or_altered_request_is_refused(change: Any, message: str) -> None:
    with pytest.raises(sigv4.SignatureError, match=message):
        verify(change(signed()))


def test_a_wrong_access_key_id_is_refused() -> None:
    with pytest.raises(sigv4.SignatureError, match="security token included in the request is invalid"):
        verify(signed(key_id="AKIASOMEONEELSE00000"))


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(sigv4.SignatureError, match="signature we calculated does not match"):
        verify(signed(secret="not-the-secret"))


@pytest.mark.parametrize("skew", [timedelta(minutes=16), timedelta(minutes=-16), timedelta(days=1)])
def test_an_expired_or_future_signature_is_refused(skew: timedelta) -> None:
    with pytest.raises(sigv4.SignatureError, match="Signature expired"):
        verify(signed(), now=datetime.now(UTC) + skew)


def test_a_signature_for_another_service_is_refused() -> None:
    with pytest.raises(sigv4.SignatureError, match="scoped to correct service: 'execute-api', not 's3'"):
        verify(signed(service="s3"))


@pytest.mark.parametrize(
    ("part", "sent"),
    [
        ("body", {"body": b'{"capacity": 20}'}),
        ("method", {"method": "PUT"}),
        ("path", {"url": URL.replace("i-0abc", "i-0def")}),
        ("query", {"url": URL.replace("state=running", "state=stopped")}),
    ],
)
def test_a_request_changed_after_signing_is_refused(part: str, sent: dict[str, Any]) -> None:
    with pytest.raises(sigv4.SignatureError, match="signature we calculated does not match"):
        verify(signed(), **sent)


def test_a_request_sent_to_another_host_is_refused() -> None:
    headers = {**signed(), "Host": "localhost:8080"}
    with pytest.raises(sigv4.SignatureError, match="signature we calculated does not match"):
        verify(headers, url=URL.replace("127.0.0.1", "localhost"))


def test_the_host_must_be_signed() -> None:
    headers = signed()
    authorization = headers["Authorization"].replace("SignedHeaders=content-type;host;", "SignedHeaders=content-type;")
    assert authorization != headers["Authorization"]
    with pytest.raises(sigv4.SignatureError, match="'Host' must be a signed header"):
        verify({**headers, "Authorization": authorization})


# --- clock: schedule expressions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(2 hours)", 7200), ("rate(1 day)", 86400)],
)
def test_a_rate_fires_its_period_after(expression: str, seconds: int) -> None:
    assert next_fire(expression, T0) == T0 + timedelta(seconds=seconds)
    later = T0 + timedelta(seconds=17.5)
    assert next_fire(expression, later) == later + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # Noon every day; strictly after, so at noon itself the next is tomorrow's.
        ("cron(0 12 * * ? *)", datetime(2024, 5, 1, 11, 59, 30, tzinfo=UTC), datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        ("cron(0 12 * * ? *)", T0, datetime(2024, 5, 2, 12, 0, tzinfo=UTC)),
        # Every quarter hour.
        ("cron(0/15 * * * ? *)", datetime(2024, 5, 1, 10, 7, tzinfo=UTC), datetime(2024, 5, 1, 10, 15, tzinfo=UTC)),
        ("cron(0/15 * * * ? *)", datetime(2024, 5, 1, 10, 45, tzinfo=UTC), datetime(2024, 5, 1, 11, 0, tzinfo=UTC)),
        ("cron(*/20 * * * ? *)", datetime(2024, 5, 1, 10, 41, tzinfo=UTC), datetime(2024, 5, 1, 11, 0, tzinfo=UTC)),
        # Day of week 2 is Monday (AWS counts 1 = Sunday): from Wednesday to the next Monday.
        ("cron(0 8 ? * 2 *)", T0, datetime(2024, 5, 6, 8, 0, tzinfo=UTC)),
        ("cron(0 8 ? * 1 *)", T0, datetime(2024, 5, 5, 8, 0, tzinfo=UTC)),
        ("cron(30 9 ? * 2-6 *)", datetime(2024, 5, 3, 10, 0, tzinfo=UTC), datetime(2024, 5, 6, 9, 30, tzinfo=UTC)),
        # Lists, a day of the month, a month and a year.
        ("cron(0 6,18 * * ? *)", datetime(2024, 5, 1, 7, 0, tzinfo=UTC), datetime(2024, 5, 1, 18, 0, tzinfo=UTC)),
        ("cron(0 0 15 6 ? 2024)", T0, datetime(2024, 6, 15, 0, 0, tzinfo=UTC)),
    ],
)
def test_a_cron_fires_at_its_next_matching_minute(expression: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expression, after) == expected


def test_cron_day_of_week_two_is_always_a_monday() -> None:
    fire = T0
    for _ in range(5):
        fire = next_fire("cron(0 8 ? * 2 *)", fire)
        assert fire.weekday() == 0
        assert (fire.hour, fire.minute) == (8, 0)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(0 minutes)",
        "rate(5 weeks)",
        "rate(-1 minutes)",
        "rate(five minutes)",
        "every 5 minutes",
        "cron(0 12 * * ?)",  # five fields
        "cron(0 12 * * ? * *)",  # seven fields
        "cron(60 * * * ? *)",
        "cron(0 24 * * ? *)",
        "cron(0 0 32 * ? *)",
        "cron(0 0 ? 13 * *)",
        "cron(0 0 ? * 8 *)",
        "cron(0 8 L * ? *)",
        "cron(0 12-6 * * ? *)",
    ],
)
def test_a_bad_schedule_expression_raises_schedule_error(expression: str) -> None:
    with pytest.raises(ScheduleError):
        next_fire(expression, T0)


# --- clock: simulated time -------------------------------------------------------------------------------


def test_the_clock_starts_where_told_and_advances() -> None:
    clock = SandboxClock(start=T0.timestamp())
    assert clock.now() == pytest.approx(T0.timestamp(), abs=0.5)
    clock.advance(300)
    assert clock.now() == pytest.approx(T0.timestamp() + 300, abs=0.5)
    assert clock.datetime().tzinfo is UTC
    assert clock.datetime() - T0 == pytest.approx(timedelta(seconds=300), abs=timedelta(seconds=0.5))


def test_advancing_calls_the_listeners_and_never_goes_backwards() -> None:
    clock = SandboxClock(start=0.0)
    seen: list[float] = []
    clock.on_advance(lambda: seen.append(clock.now()))
    clock.advance(60)
    clock.advance(0)
    assert seen == [pytest.approx(60, abs=0.5), pytest.approx(60, abs=0.5)]
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    assert len(seen) == 2


def test_the_clock_runs_at_its_speed() -> None:
    clock = SandboxClock(speed=1.0, start=0.0)
    clock.set_speed(100.0)
    assert clock.speed == 100.0
    before, real_before = clock.now(), time.monotonic()
    time.sleep(0.2)
    elapsed_sim, elapsed_real = clock.now() - before, time.monotonic() - real_before
    assert elapsed_sim == pytest.approx(elapsed_real * 100, rel=0.05)
    assert clock.real_seconds(120) == pytest.approx(1.2)


def test_changing_speed_keeps_the_time_reached() -> None:
    clock = SandboxClock(speed=1000.0, start=0.0)
    time.sleep(0.05)
    reached = clock.now()
    clock.set_speed(1.0)
    assert clock.now() == pytest.approx(reached, abs=0.5)
    assert reached >= 50


@pytest.mark.parametrize("speed", [0.0, -1.0])
def test_a_speed_must_be_positive(speed: float) -> None:
    clock = SandboxClock()
    with pytest.raises(ValueError, match="positive"):
        clock.set_speed(speed)
    assert clock.speed == 1.0


# --- market ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "target", "score"),
    [(0, 1, 1), (-3, 1, 1), (1, 1, 4), (2, 1, 7), (3, 1, 10), (30, 1, 10), (3, 3, 4), (9, 3, 10), (1, 0, 4)],
)
def test_derived_score(free: int, target: int, score: int) -> None:
    assert derived_score(free, target) == score


def market(clock: SandboxClock | None = None) -> SpotMarket:
    """Two regions: us-west-2 with two zones of g5 (one cheaper), eu-west-1 with one zone."""
    spot = SpotMarket(clock or SandboxClock(start=T0.timestamp()))
    spot.add_pool("us-west-2a", "g5.xlarge", capacity=5, spot_price=0.40, on_demand_price=1.0)
    spot.add_pool("us-west-2b", "g5.xlarge", capacity=5, spot_price=0.30, on_demand_price=1.0)
    spot.add_pool("us-west-2a", "g6.xlarge", capacity=1, spot_price=0.20, on_demand_price=0.8)
    spot.add_pool("eu-west-1a", "g5.xlarge", capacity=1, spot_price=0.50, on_demand_price=1.1)
    return spot


def test_placement_scores_are_derived_from_free_capacity_per_region() -> None:
    scores = market().placement_scores(["g5.xlarge"], 1, ["us-west-2", "eu-west-1", "ap-south-1"], single_az=False)
    # us-west-2: 10 free of g5 -> 10; eu-west-1: 1 free -> 4; ap-south-1 has no pools and no score.
    assert scores == [{"Region": "us-west-2", "Score": 10}, {"Region": "eu-west-1", "Score": 4}]


def test_placement_scores_per_zone_and_for_a_larger_target() -> None:
    scores = market().placement_scores(["g5.xlarge"], 5, ["us-west-2"], single_az=True)
    assert scores == [
        {"Region": "us-west-2", "AvailabilityZoneId": "us-west-2a", "Score": 4},
        {"Region": "us-west-2", "AvailabilityZoneId": "us-west-2b", "Score": 4},
    ]


def test_an_explicit_placement_score_wins_over_the_derived_one() -> None:
    spot = market()
    spot.set_zone("eu-west-1a", "g5.xlarge", placement_score=9)
    spot.set_zone("us-west-2b", "g5.xlarge", placement_score=2)
    regional = spot.placement_scores(["g5.xlarge"], 1, ["us-west-2", "eu-west-1"], single_az=False)
    assert regional == [{"Region": "eu-west-1", "Score": 9}, {"Region": "us-west-2", "Score": 2}]
    zonal = spot.placement_scores(["g5.xlarge"], 1, ["us-west-2"], single_az=True)
    assert {s["AvailabilityZoneId"]: s["Score"] for s in zonal} == {"us-west-2a": 10, "us-west-2b": 2}


def test_take_spot_prefers_free_capacity_then_price() -> None:
    spot = market()
    candidates = [("us-west-2a", "g5.xlarge"), ("us-west-2b", "g5.xlarge"), ("us-west-2a", "g6.xlarge")]
    # Both g5 pools have 3 or more free: the cheaper zone wins over the cheapest (but nearly full) g6.
    first = spot.take_spot(candidates)
    assert first is not None
    assert (first.zone, first.instance_type, first.in_use) == ("us-west-2b", "g5.xlarge", 1)
    spot.set_zone("us-west-2b", "g5.xlarge", capacity=2)
    second = spot.take_spot(candidates)
    assert second is not None
    assert (second.zone, second.instance_type) == ("us-west-2a", "g5.xlarge")


def test_take_spot_returns_none_when_every_candidate_is_full() -> None:
    spot = market()
    candidates = [("eu-west-1a", "g5.xlarge"), ("eu-west-1b", "g5.xlarge")]  # the second has no pool
    taken = spot.take_spot(candidates)
    assert taken is not None
    assert taken.free == 0
    assert spot.take_spot(candidates) is None
    assert spot.take_spot([]) is None
    spot.release("eu-west-1a", "g5.xlarge")
    assert spot.take_spot(candidates) is taken


def test_release_and_over_capacity() -> None:
    spot = market()
    for _ in range(3):
        spot.take_spot([("us-west-2a", "g5.xlarge")])
    spot.set_zone("us-west-2a", "g5.xlarge", capacity=1)
    assert spot.over_capacity("us-west-2a", "g5.xlarge") == 2
    spot.release("us-west-2a", "g5.xlarge")
    assert spot.over_capacity("us-west-2a", "g5.xlarge") == 1
    for _ in range(5):
        spot.release("us-west-2a", "g5.xlarge")
    (pool,) = spot.pools("us-west-2", ["g5.xlarge"])[:1]
    assert pool.in_use == 0
    spot.release("nowhere-1a", "g5.xlarge")  # an unknown pool is ignored
    assert spot.over_capacity("nowhere-1a", "g5.xlarge") == 0


def test_pools_filter_by_region_and_type() -> None:
    spot = market()
    assert {(p.zone, p.instance_type) for p in spot.pools("us-west-2", ["g5.xlarge"])} == {
        ("us-west-2a", "g5.xlarge"),
        ("us-west-2b", "g5.xlarge"),
    }
    assert len(spot.pools()) == 4
    assert [p.zone for p in spot.pools("eu-west-1")] == ["eu-west-1a"]


def test_set_zone_changes_a_pool_and_tells_on_capacity_changes() -> None:
    spot = market()
    changed: list[Pool] = []
    spot.on_change = changed.append
    described = spot.set_zone("us-west-2a", "g5.xlarge", spot_price=0.9)
    assert described["spot_price"] == 0.9
    assert changed == []
    described = spot.set_zone("us-west-2a", "g5.xlarge", capacity=0)
    assert described["capacity"] == 0
    assert [(p.zone, p.capacity) for p in changed] == [("us-west-2a", 0)]
    history = spot.spot_price_history("us-west-2", ["g5.xlarge"], ["us-west-2a"])
    assert [(h["AvailabilityZone"], h["SpotPrice"]) for h in history] == [("us-west-2a", "0.900000")]


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (
            {"zone": "us-west-2c", "instance_type": "g5.xlarge", "capacity": 1},
            KeyError,
            "no pool g5.xlarge in us-west-2c",
        ),
        ({"zone": "us-west-2a", "instance_type": "p5.48xlarge", "capacity": 1}, KeyError, "no pool"),
        ({"zone": "us-west-2a", "instance_type": "g5.xlarge", "capacity": -1}, ValueError, "negative"),
        ({"zone": "us-west-2a", "instance_type": "g5.xlarge", "placement_score": 0}, ValueError, "1 to 10"),
        ({"zone": "us-west-2a", "instance_type": "g5.xlarge", "placement_score": 11}, ValueError, "1 to 10"),
    ],
)
def test_set_zone_validation(change: dict[str, Any], error: type[Exception], message: str) -> None:
    spot = market()
    zone, instance_type = change.pop("zone"), change.pop("instance_type")
    with pytest.raises(error, match=message):
        spot.set_zone(zone, instance_type, **change)
    assert spot.pools("us-west-2", ["g5.xlarge"])[0].capacity == 5


def test_restore_returns_pools_to_their_configuration_keeping_in_use() -> None:
    spot = market()
    spot.take_spot([("us-west-2a", "g6.xlarge")])
    spot.set_zone("us-west-2a", "g6.xlarge", capacity=0, spot_price=9.0, placement_score=3)
    spot.restore()
    (pool,) = spot.pools("us-west-2", ["g6.xlarge"])
    assert (pool.capacity, pool.spot_price, pool.placement_score, pool.in_use) == (1, 0.20, None, 1)


def test_populate_prices_known_types_from_the_prices_file() -> None:
    spot = SpotMarket(SandboxClock())
    prices = {"p3.2xlarge": {"on_demand": 3.06, "spot": {"us-west-2": 0.975}}}
    spot.populate(["us-west-2", "eu-west-1"], ["p3.2xlarge", "g5.xlarge"], prices)
    pools = {(p.zone, p.instance_type): p for p in spot.pools()}
    assert len(pools) == 2 * 3 * 2
    assert pools[("us-west-2b", "p3.2xlarge")].spot_price == 0.975
    assert pools[("eu-west-1c", "p3.2xlarge")].spot_price == pytest.approx(3.06 * 0.35, abs=1e-4)
    assert pools[("eu-west-1a", "g5.xlarge")].on_demand_price == 1.0
    assert {p.capacity for p in pools.values()} == {10}


# --- market: trace replay -----------------------------------------------------------------------------------


def write_trace(directory: Path, name: str, data: list[int], gap_seconds: float = 60) -> None:
    (directory / name).write_text(json.dumps({"metadata": {"gap_seconds": gap_seconds}, "data": data}))


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    write_trace(tmp_path, "us-west-2a_a10g_1.json", [3, 2, 1])
    write_trace(tmp_path, "us-west-2b_a10g_1.json", [5])
    write_trace(tmp_path, "us-west-2a_l4_1.json", [7, 7])
    (tmp_path / "README.json").write_text("{}")  # not a trace file name: skipped
    return tmp_path


SHAPES = {"a10g_1": "g5.xlarge", "l4_1": "g6.xlarge"}


def test_load_traces_reads_zone_shape_and_data(trace_dir: Path) -> None:
    traces = load_traces(trace_dir, SHAPES)
    assert [(t.zone, t.instance_type, t.gap_seconds, t.data) for t in traces] == [
        ("us-west-2a", "g5.xlarge", 60.0, [3, 2, 1]),
        ("us-west-2a", "g6.xlarge", 60.0, [7, 7]),
        ("us-west-2b", "g5.xlarge", 60.0, [5]),
    ]
    assert {t.instance_type for t in load_traces(trace_dir, SHAPES, shape="l4_1")} == {"g6.xlarge"}


def test_load_traces_refuses_unknown_shapes_and_empty_directories(
    trace_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with pytest.raises(ValueError, match="shape l4_1 is not in the prices file"):
        load_traces(trace_dir, {"a10g_1": "g5.xlarge"})
    with pytest.raises(ValueError, match="no trace files"):
        load_traces(tmp_path_factory.mktemp("empty"), SHAPES)
    with pytest.raises(ValueError, match="for shape v100_8"):
        load_traces(trace_dir, SHAPES, shape="v100_8")


def test_replay_sets_capacity_per_tick_and_none_past_the_end(trace_dir: Path) -> None:
    clock = SandboxClock(start=T0.timestamp())
    spot = market(clock)
    changes: list[tuple[str, str, int]] = []
    spot.on_change = lambda pool: changes.append((pool.zone, pool.instance_type, pool.capacity))
    spot.replay(load_traces(trace_dir, SHAPES, shape="a10g_1"))

    def capacities() -> dict[str, int]:
        return {p.zone: p.capacity for p in spot.pools("us-west-2", ["g5.xlarge"])}

    assert capacities() == {"us-west-2a": 3, "us-west-2b": 5}
    clock.advance(59)
    spot.apply_replay()
    assert capacities() == {"us-west-2a": 3, "us-west-2b": 5}
    clock.advance(1)
    spot.apply_replay()
    assert capacities() == {"us-west-2a": 2, "us-west-2b": 0}  # the shorter trace has ended
    clock.advance(60)
    spot.apply_replay()
    assert capacities() == {"us-west-2a": 1, "us-west-2b": 0}
    clock.advance(600)
    spot.apply_replay()
    assert capacities() == {"us-west-2a": 0, "us-west-2b": 0}
    # Only changes are told: us-west-2b's configured 5 is the trace's first value.
    assert changes == [
        ("us-west-2a", "g5.xlarge", 3),
        ("us-west-2a", "g5.xlarge", 2),
        ("us-west-2b", "g5.xlarge", 0),
        ("us-west-2a", "g5.xlarge", 1),
        ("us-west-2a", "g5.xlarge", 0),
    ]
    # Pools the traces do not mention keep their configuration.
    assert spot.pools("us-west-2", ["g6.xlarge"])[0].capacity == 1


def test_replay_adds_pools_for_zones_the_market_did_not_have(trace_dir: Path) -> None:
    spot = SpotMarket(SandboxClock(start=0.0))
    spot.replay(load_traces(trace_dir, SHAPES))
    assert {(p.zone, p.instance_type, p.capacity) for p in spot.pools()} == {
        ("us-west-2a", "g5.xlarge", 3),
        ("us-west-2a", "g6.xlarge", 7),
        ("us-west-2b", "g5.xlarge", 5),
    }


# --- api_server: routing -----------------------------------------------------------------------------------


def route(method: str, resource: str, authorization: str = "NONE") -> ApiRoute:
    return ApiRoute(
        method=method,
        resource=resource,
        authorization=authorization,
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:probe",
        pattern=_pattern(resource),
    )


@pytest.mark.parametrize(
    ("resource", "path", "parameters"),
    [
        ("/status", "/status", {}),
        ("/status", "/status/", None),
        ("/status", "/statuses", None),
        ("/", "/", {}),
        ("/spot-instances/{id}", "/spot-instances/i-0abc", {"id": "i-0abc"}),
        ("/spot-instances/{id}", "/spot-instances/i-0abc/extra", None),
        ("/spot-instances/{id}", "/spot-instances/", None),
        (
            "/regions/{region}/zones/{zone}",
            "/regions/us-west-2/zones/us-west-2a",
            {"region": "us-west-2", "zone": "us-west-2a"},
        ),
        ("/files/{proxy+}", "/files/a/b/c.txt", {"proxy": "a/b/c.txt"}),
        ("/files/{proxy+}", "/files/", None),
        ("/{proxy+}", "/anything/at/all", {"proxy": "anything/at/all"}),
        ("/a.b/{id}", "/aXb/1", None),  # literal segments are escaped, not regular expressions
    ],
)
def test_a_route_matches_its_resource_path(resource: str, path: str, parameters: dict[str, str] | None) -> None:
    assert route("GET", resource).match(path) == parameters


def make_server(**overrides: Any) -> ApiServer:
    """An API server for stage v1 of api abc123, SigV4 with the test credentials for us-east-1."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "stage": "v1",
        "account": "123456789012",
        "api_id": "abc123",
        "control": lambda *_args: (404, {}),
        "access_key_id": KEY_ID,
        "secret_access_key": SECRET,
        "region": "us-east-1",
    }
    return ApiServer(**{**settings, **overrides})


@pytest.fixture
def api() -> Any:
    calls: list[tuple[str, dict[str, Any]]] = []
    answers: dict[str, tuple[bytes, str | None]] = {}

    def invoke(function_arn: str, event: dict[str, Any]) -> tuple[bytes, str | None]:
        calls.append((function_arn, event))
        return answers.get(event["resource"], (json.dumps({"statusCode": 200, "body": "{}"}).encode(), None))

    server = make_server(
        routes=[
            route("GET", "/status", "AWS_IAM"),
            route("GET", "/spot-instances/{id}", "AWS_IAM"),
            route("ANY", "/open/{proxy+}"),
        ],
        invoke=invoke,
    )
    server.calls = calls  # type: ignore[attr-defined]
    server.answers = answers  # type: ignore[attr-defined]
    server.start()  # stop() waits for the serving loop, so it must have started
    yield server
    server.stop()


def dispatch(
    api: ApiServer, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes = b"", query: str = ""
) -> tuple[int, Any, dict[str, str]]:
    url = f"http://127.0.0.1:8080{path}" + (f"?{query}" if query else "")
    parsed_query: dict[str, list[str]] = {}
    for pair in filter(None, query.split("&")):
        key, _, value = pair.partition("=")
        parsed_query.setdefault(key, []).append(value)
    status, data, response_headers = api.dispatch(
        method=method, path=path, query=parsed_query, headers=headers or {}, body=body, url=url, source_ip="127.0.0.1"
    )
    return status, data, response_headers


def test_dispatch_refuses_unknown_paths_and_methods_as_api_gateway_does(api: Any) -> None:
    for method, path in [("GET", "/v1/nothing"), ("DELETE", "/v1/status"), ("GET", "/v2/status")]:
        status, data, _ = dispatch(api, method, path)
        assert (status, json.loads(data)) == (403, {"message": "Missing Authentication Token"})
    assert api.calls == []


def test_dispatch_checks_sigv4_on_aws_iam_routes(api: Any) -> None:
    status, data, _ = dispatch(api, "GET", "/v1/status")
    assert (status, json.loads(data)["message"]) == (403, "Missing Authentication Token")
    headers = signed(method="GET", url="http://127.0.0.1:8080/v1/status", body=b"")
    status, _data, _ = dispatch(api, "GET", "/v1/status", headers=headers)
    assert status == 200
    ((function_arn, event),) = api.calls
    assert function_arn.endswith(":function:probe")
    assert event["requestContext"]["identity"]["accessKey"] == KEY_ID
    assert event["requestContext"]["path"] == "/v1/status"
    assert event["path"] == "/status"


def test_dispatch_builds_the_rest_proxy_event(api: Any) -> None:
    status, _data, _ = dispatch(api, "POST", "/v1/open/a/b", body=b'{"x": 1}', query="tag=a&tag=b&one=1")
    assert status == 200
    ((_arn, event),) = api.calls
    assert event["resource"] == "/open/{proxy+}"
    # An ANY method passes the request's own method, as API Gateway does.
    assert event["httpMethod"] == event["requestContext"]["httpMethod"] == "POST"
    assert event["pathParameters"] == {"proxy": "a/b"}
    assert event["queryStringParameters"] == {"tag": "b", "one": "1"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "one": ["1"]}
    assert event["body"] == '{"x": 1}'
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["identity"]["accessKey"] is None


def test_dispatch_turns_the_function_answer_into_http(api: Any) -> None:
    api.answers["/open/{proxy+}"] = (
        json.dumps(
            {
                "statusCode": 201,
                "headers": {"X-One": 1},
                "multiValueHeaders": {"X-Many": ["a", "b"]},
                "body": base64.b64encode(b"\x00\x01").decode(),
                "isBase64Encoded": True,
            }
        ).encode(),
        None,
    )
    status, data, headers = dispatch(api, "GET", "/v1/open/x")
    assert (status, data) == (201, b"\x00\x01")
    assert headers == {"X-One": "1", "X-Many": "a,b", "Content-Type": "application/json"}


def test_gateway_responses_of_the_api_shape_its_own_errors() -> None:
    server = make_server(
        routes=[route("GET", "/status", "AWS_IAM")],
        invoke=lambda _arn, _event: (b"{}", "Unhandled"),
        gateway_responses={
            "DEFAULT_4XX": '{"error": $context.error.messageString, "request_id": "$context.requestId"}',
            "DEFAULT_5XX": '{"failure": $context.error.messageString}',
        },
    )
    status, data, _ = server.dispatch(
        method="GET", path="/v1/status", query={}, headers={}, body=b"", url=URL, source_ip="127.0.0.1"
    )
    body = json.loads(data)
    assert (status, body["error"]) == (403, "Missing Authentication Token")
    assert body["request_id"]
    status, data, _ = server.dispatch(
        method="GET", path="/status", query={}, headers={}, body=b"", url=URL, source_ip="127.0.0.1"
    )
    assert status == 403, "a path without the stage is refused, as API Gateway does"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((b'{"errorMessage": "boom"}', "Unhandled"), "Internal server error"),
        ((b'{"body": "no status"}', None), "Malformed Lambda proxy response"),
        ((b"not json", None), "Malformed Lambda proxy response"),
        ((b"null", None), "Malformed Lambda proxy response"),
    ],
)
def test_dispatch_answers_502_for_function_errors_and_malformed_answers(
    api: Any, answer: tuple[bytes, str | None], message: str
) -> None:
    api.answers["/open/{proxy+}"] = answer
    status, data, _ = dispatch(api, "GET", "/v1/open/x")
    assert (status, json.loads(data)) == (502, {"message": message})


def test_a_binary_body_reaches_the_function_base64_encoded() -> None:
    event = rest_proxy_event(
        route=route("POST", "/upload"),
        method="POST",
        path="/upload",
        path_parameters={},
        query={},
        headers={},
        body=b"\xff\xfe",
        stage="v1",
        account="123456789012",
        api_id="abc123",
        caller=None,
        source_ip="127.0.0.1",
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"
    assert event["pathParameters"] is None
    assert event["headers"] is None


# --- lambda_runtime: concurrent invocations ---------------------------------------------------------------


@dataclass
class DeployedFunction:
    """What LambdaRuntime reads of a deployed function (moto's LambdaFunction)."""

    function_name: str
    code_bytes: bytes
    handler: str = "probe.handler"
    region: str = "us-east-1"
    memory_size: int = 128
    timeout: int = 30
    environment_vars: dict[str, str] = field(default_factory=dict)

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:123456789012:function:{self.function_name}"


def function_code(tag: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "probe.py", f"# {tag}\ndef handler(event, context):\n    return {{'ok': context.function_name}}\n"
        )
        for index in range(50):  # some bulk, as real code has: unpacking takes a moment
            archive.writestr(f"assets/{index}.txt", "x" * 1000)
    return buffer.getvalue()


def test_invocations_run_the_handler_with_the_function_name(tmp_path: Path) -> None:
    runtime = LambdaRuntime(tmp_path, {})
    function = DeployedFunction("probe-1", function_code("one"))
    assert runtime.invoke(function, {}) == (b'{"ok": "probe-1"}', None)
    assert runtime.invoke(function, {}) == (b'{"ok": "probe-1"}', None)
    assert [i.function_name for i in runtime.invocations] == ["probe-1", "probe-1"]


def test_concurrent_first_invocations_of_the_same_code_all_run(tmp_path: Path) -> None:
    failures: list[str] = []
    for round_number in range(3):
        runtime = LambdaRuntime(tmp_path / str(round_number), {})
        code = function_code(f"round {round_number}")
        functions = [DeployedFunction(f"probe-{round_number}-{i}", code) for i in range(4)]
        barrier = threading.Barrier(len(functions))

        def invoke(
            function: DeployedFunction, runtime: LambdaRuntime = runtime, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            try:
                payload, error = runtime.invoke(function, {})
            except Exception as exc:  # what an executor thread would swallow
                failures.append(f"{function.function_name}: {exc!r}")
                return
            if error or json.loads(payload) != {"ok": function.function_name}:
                failures.append(f"{function.function_name}: {payload!r}")

        threads = [threading.Thread(target=invoke, args=(function,)) for function in functions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
