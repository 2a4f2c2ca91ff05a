"""Where clients reach the model: the address an instance serves at, and the URL built from it."""

from __future__ import annotations

import pytest

from spothub_core.logic.endpoints import endpoint_url, serving_address
from spothub_core.models.api import ToggleResponse


@pytest.mark.parametrize(
    ("public_ip", "private_ip", "public", "address"),
    [
        pytest.param("203.0.113.7", "10.0.0.7", True, "203.0.113.7", id="public"),
        pytest.param("203.0.113.7", "10.0.0.7", False, "10.0.0.7", id="private"),
        # Never the other kind: a private address is not reachable by clients the operator meant to be outside.
        pytest.param(None, "10.0.0.7", True, None, id="public-wanted-none-yet"),
        pytest.param("203.0.113.7", None, False, None, id="private-wanted-none-yet"),
    ],
)
def test_the_serving_address_is_the_kind_the_operator_chose(
    public_ip: str | None, private_ip: str | None, public: bool, address: str | None
) -> None:
    assert serving_address(public_ip, private_ip, public=public) == address


def test_an_endpoint_is_plain_http_to_the_host_and_port() -> None:
    assert endpoint_url("203.0.113.7", 8000) == "http://203.0.113.7:8000"
    assert endpoint_url("gpu.example.com", 30000) == "http://gpu.example.com:30000"
    assert endpoint_url(None, 8000) is None


def test_a_toggle_answer_leaves_out_what_a_disable_without_teardown_alone_adds() -> None:
    assert ToggleResponse(message="enabled").model_dump(mode="json") == {"message": "enabled"}
    answer = ToggleResponse(message="disabled", instances_running=0, hint="disable with teardown")
    assert answer.model_dump(mode="json") == {
        "message": "disabled",
        "instances_running": 0,
        "hint": "disable with teardown",
    }
