"""`spothub dashboard` in a real browser (Debian's Chromium, driven by Playwright) against the sandbox's API: the
page loads without console errors, shows the serving replica after enable, and the failover after an interruption.

With SPOTHUB_DASHBOARD_SCREENSHOT=<file.png> the test also saves the page as the README shows it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from spothub.api_client import ApiClient, Target
from spothub.dashboard import DashboardServer, serve
from spothub.sandbox.sandbox import Sandbox
from tests.sandbox.test_spot_provisioning import serving, stop_running_executions, toggle

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a machine with no network beyond the package registries: no background traffic, no sandboxing
# (the tests run as root), no GPU.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_WAIT_MS = 90_000


@pytest.fixture
def dashboard(spot: Sandbox) -> Iterator[DashboardServer]:
    given = spot.credentials()
    credentials = Credentials(given["aws_access_key_id"], given["aws_secret_access_key"])
    target = Target(url=spot.api_url, region=spot.hub.region, credentials=credentials, source="the test's sandbox")
    server = serve(lambda: ApiClient(target), api_url=spot.api_url)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(dashboard: DashboardServer) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 1100})
        tab.console_errors = []  # type: ignore[attr-defined]
        tab.on("console", lambda m: tab.console_errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: tab.console_errors.append(str(e)))
        tab.goto(dashboard.url + "?refresh=1")
        yield tab
        browser.close()


def panel_text(page: Any, panel: str) -> str:
    return str(page.inner_text(f"#{panel} .body"))


def wait_for_panel(page: Any, panel: str, text: str) -> None:
    page.wait_for_function(
        "([panel, text]) => document.querySelector(`#${panel} .body`).innerText.includes(text)",
        arg=[panel, text],
        timeout=PAGE_WAIT_MS,
    )


def test_the_page_loads_and_shows_every_panel_without_console_errors(page: Any) -> None:
    page.wait_for_function("() => Number(document.body.dataset.refreshes || 0) >= 2", timeout=PAGE_WAIT_MS)
    assert page.console_errors == []
    assert "no replicas: provisioning is off" in panel_text(page, "serving")
    assert "us-west-2" in panel_text(page, "regions")  # the finder's ranking of the worker regions
    for panel in ("timeline", "jobs", "search", "deployments", "nodes"):
        body = panel_text(page, panel)
        assert body.strip(), panel
        assert "unreachable" not in body.lower(), (panel, body)
    assert "disabled" in str(page.inner_text("#switch"))


def test_the_page_shows_the_replica_after_enable_and_the_failover_after_an_interruption(
    spot: Sandbox,
    page: Any,
) -> None:
    toggle(spot, action="enable", replicas=1)
    first = serving(spot)
    (instance,) = first["instances"]
    wait_for_panel(page, "serving", "serving")
    wait_for_panel(page, "instances", instance["instance_id"])
    wait_for_panel(page, "timeline", "launched")

    market = spot.market
    assert market is not None
    market.set_zone(instance["availability_zone"], instance["instance_type"], capacity=0)
    moved = serving(
        spot,
        lambda d: any(i["instance_id"] != instance["instance_id"] and i["status"] == "serving" for i in d["instances"]),
        "the replica fails over to another instance",
    )
    (replacement,) = [i for i in moved["instances"] if i["status"] == "serving"]
    wait_for_panel(page, "instances", replacement["instance_id"])
    wait_for_panel(page, "timeline", "notice")
    assert page.console_errors == []
    screenshot = os.environ.get("SPOTHUB_DASHBOARD_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    toggle(spot, action="disable")
    stop_running_executions(spot)
