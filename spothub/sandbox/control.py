"""The control surface under `/_sandbox/` on the API port: the same operations as the Python API.

Routes (JSON bodies; README "Driving the sandbox by hand" lists them with examples):
GET state, GET timeline?since=S, POST clock/advance {"seconds"}, POST clock/speed {"speed"},
POST schedules/fire {"rule"} (every scheduled rule whose name contains it, now),
GET market, POST market/zone {"zone", "instance_type", "capacity"?, "spot_price"?, "placement_score"?},
POST market/regions/{region} {"capacity"?, "spot_price"?, "placement_score"?, "instance_type"?} (every pool of the
region: {"capacity": 0} takes the region's spot capacity away, interrupting the spot instances there),
GET instances, POST instances/{id}/rebalance | interrupt | agent/kill | agent/restart,
POST instances/{id}/search/health {"healthy": false|true} (the search instance's service fails or passes its health
checks), GET openapi.json (the API's document, its server this sandbox), GET docs (Swagger UI over it) and
GET docs/<file> (the page's files): api_docs.py.
Model deployments' tasks on the nodes (deployment_tasks.py): GET deployment-tasks?deployment_id=D&running=true,
POST deployment-tasks/kill {"task_arn"} or {"deployment_id", "slot"} (optional "signal": "KILL" or "TERM"),
POST deployment-tasks/utilization {"utilization_pct", "task_arn" | "deployment_id"+"slot" | "instance_id",
"gpu_index"?}, POST deployment-tasks/reach {"url"} (the local URL an endpoint reaches).
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from spothub.sandbox import api_docs
from spothub.sandbox.deployment_tasks import TaskNotFound

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
        except TaskNotFound as error:
            return 404, {"message": str(error.args[0]) if error.args else "no such task"}
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
        if method == "POST" and parts[:2] == ["market", "regions"] and len(parts) == 3 and market is not None:  # noqa: PLR2004
            try:
                pools = market.set_region(
                    parts[2],
                    capacity=body.get("capacity"),
                    spot_price=body.get("spot_price"),
                    placement_score=body.get("placement_score"),
                    instance_type=body.get("instance_type"),
                )
            except KeyError as error:
                raise ControlError(404, str(error.args[0])) from None
            return {"region": parts[2], "pools": pools}
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
        if parts[0] == "deployment-tasks":
            return self._deployment_tasks(method, "/".join(parts[1:]), query, body)
        raise ControlError(404, f"no control {method} /_sandbox/{path}")

    def _deployment_tasks(self, method: str, action: str, query: dict[str, list[str]], body: dict[str, Any]) -> Any:
        from spothub.sandbox.sandbox import SandboxError  # noqa: PLC0415

        sandbox = self._sandbox
        slot = int(body["slot"]) if body.get("slot") is not None else None
        try:
            if (method, action) == ("GET", ""):
                deployment_id = query.get("deployment_id", [None])[-1]
                running = query.get("running", ["false"])[-1].lower() == "true"
                return sandbox.deployment_tasks(deployment_id, running=running)
            if (method, action) == ("POST", "kill"):
                signals = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}
                sig = signals.get(str(body.get("signal", "KILL")).upper().removeprefix("SIG"))
                if sig is None:
                    raise ControlError(400, "signal must be KILL or TERM")
                return sandbox.kill_deployment_task(
                    body.get("task_arn"), deployment_id=body.get("deployment_id"), slot=slot, sig=sig
                )
            if (method, action) == ("POST", "utilization"):
                gpu_index = body.get("gpu_index")
                gpu_ids = sandbox.set_gpu_utilization(
                    float(body["utilization_pct"]),
                    task_arn=body.get("task_arn"),
                    deployment_id=body.get("deployment_id"),
                    slot=slot,
                    instance_id=body.get("instance_id"),
                    gpu_index=int(gpu_index) if gpu_index is not None else None,
                )
                return {"gpu_ids": gpu_ids, "utilization_pct": float(body["utilization_pct"])}
            if (method, action) == ("POST", "reach"):
                return {"url": sandbox.reach(str(body["url"]))}
        except SandboxError as error:
            raise ControlError(404, str(error)) from None
        raise ControlError(404, f"no control {method} /_sandbox/deployment-tasks/{action}")

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
