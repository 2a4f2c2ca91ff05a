"""The control surface under `/_sandbox/` on the API port: the same operations as the Python API.

Routes (JSON bodies; README "Driving the sandbox by hand" lists them with examples):
GET state, GET timeline?since=S, POST clock/advance {"seconds"}, POST clock/speed {"speed"},
POST schedules/fire {"rule"} (every scheduled rule whose name contains it, now),
GET market, POST market/zone {"zone", "instance_type", "capacity"?, "spot_price"?, "placement_score"?},
GET instances, POST instances/{id}/rebalance | interrupt | agent/kill | agent/restart,
POST instances/{id}/search/health {"healthy": false|true} (the search instance's service fails or passes its health
checks), GET openapi.json (the API's document, its server this sandbox), GET docs (Swagger UI over it) and
GET docs/<file> (the page's files): api_docs.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spothub.sandbox import api_docs

if TYPE_CHECKING:
    from spothub.sandbox.sandbox import Sandbox


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlSurface:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        try:
            return 200, self._route(method, path.strip("/"), query, body if isinstance(body, dict) else {})
        except ControlError as error:
            return error.status, {"message": str(error)}
        except (KeyError, ValueError, TypeError) as error:
            return 400, {"message": f"bad request: {error}"}

    def _route(  # noqa: PLR0911, PLR0912 (one branch per route keeps the surface readable in one place)
        self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> Any:
        sandbox = self._sandbox
        parts = path.split("/")
        if (method, path) == ("GET", "state"):
            return sandbox.state()
        if method == "GET" and parts[0] in {"openapi.json", "docs"}:
            return self._docs(path)
        if (method, path) == ("GET", "timeline"):
            since = float(query.get("since", ["0"])[-1])
            return [
                {"t": round(e.at - sandbox.origin, 3), "kind": e.kind, "summary": e.summary, "details": e.details}
                for e in list(sandbox.timeline)
                if round(e.at - sandbox.origin, 3) >= since
            ]
        if (method, path) == ("POST", "clock/advance"):
            sandbox.clock.advance(float(body["seconds"]))
            return {"now": sandbox.clock.now() - sandbox.origin}
        if (method, path) == ("POST", "clock/speed"):
            sandbox.clock.set_speed(float(body["speed"]))
            return {"speed": sandbox.clock.speed}
        if (method, path) == ("POST", "schedules/fire"):
            return {"fired": sandbox.fire_schedule(str(body["rule"]))}
        market = getattr(sandbox, "market", None)
        fleet = getattr(sandbox, "fleet", None)
        if (method, path) == ("GET", "market") and market is not None:
            return market.describe()
        if (method, path) == ("POST", "market/zone") and market is not None:
            return market.set_zone(
                body["zone"],
                body["instance_type"],
                capacity=body.get("capacity"),
                spot_price=body.get("spot_price"),
                placement_score=body.get("placement_score"),
            )
        if (method, path) == ("GET", "instances") and fleet is not None:
            return fleet.describe()
        if method == "POST" and parts[0] == "instances" and len(parts) >= 3 and fleet is not None:  # noqa: PLR2004
            instance_id, action = parts[1], "/".join(parts[2:])
            if action == "search/health":
                if not isinstance(body.get("healthy"), bool):
                    raise ControlError(400, 'the body must be {"healthy": true|false}')
                return fleet.search_health(instance_id, healthy=body["healthy"])
            actions = {
                "rebalance": fleet.send_rebalance_recommendation,
                "interrupt": fleet.send_interruption_warning,
                "agent/kill": fleet.kill_agent,
                "agent/restart": fleet.restart_agent,
            }
            if action not in actions:
                raise ControlError(404, f"no action {action}; one of {', '.join(actions)}")
            return actions[action](instance_id)
        raise ControlError(404, f"no control {method} /_sandbox/{path}")

    def _docs(self, path: str) -> Any:
        sandbox = self._sandbox
        try:
            if path == "openapi.json":
                return api_docs.document(sandbox.api_url, sandbox.hub.region)
            if path == "docs":
                return api_docs.RawAnswer(api_docs.page(sandbox.api_url).encode(), "text/html; charset=utf-8")
            return api_docs.asset(path.removeprefix("docs/"))
        except api_docs.DocsError as error:
            raise ControlError(error.status, str(error)) from None
