"""The REST API on localhost, served from the API Gateway resources and methods the emulator holds.

Each request is matched to a method, checked as API Gateway checks AWS_IAM routes (SigV4 with the
sandbox credentials, 403 otherwise), turned into a REST proxy (v1) event for the integration's
function, and the function's answer turned back into HTTP. A function error is a 502, as on AWS.
Paths under `/_sandbox/` go to the sandbox's control surface instead (local, unauthenticated).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from spothub.sandbox import sigv4
from spothub.sandbox.api_docs import RawAnswer
from spothub.sandbox.iam.actions import Authorization
from spothub.sandbox.iam.enforcer import Enforcer
from spothub.sandbox.iam.principals import SECRET_ACCESS_KEY

LAMBDA_URI = re.compile(r"arn:[^:]+:apigateway:[^:]+:lambda:path/[^/]+/functions/(?P<function>arn:[^/]+)/invocations")
CONTROL_PREFIX = "/_sandbox/"

ControlHandler = Callable[[str, str, dict[str, list[str]], Any], tuple[int, Any]]
Invoker = Callable[[str, dict[str, Any]], tuple[bytes, str | None]]


@dataclass(frozen=True)
class ApiRoute:
    method: str
    resource: str  # e.g. /spot-instances/{id}
    authorization: str
    function_arn: str
    pattern: re.Pattern[str]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else {k.replace("__plus", ""): v for k, v in found.groupdict().items()}


def _pattern(resource: str) -> re.Pattern[str]:
    parts = []
    for segment in resource.strip("/").split("/"):
        if not segment:
            continue
        if segment.startswith("{") and segment.endswith("+}"):
            parts.append(f"(?P<{segment[1:-2]}__plus>.+)")
        elif segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("/" + "/".join(parts))


def routes_from_emulator(account: str, region: str, rest_api_id: str) -> list[ApiRoute]:
    from moto.apigateway.models import apigateway_backends  # noqa: PLC0415

    api = apigateway_backends[account][region].get_rest_api(rest_api_id)
    routes = []
    for resource in api.resources.values():
        path = resource.get_path()
        for method_name, method in resource.resource_methods.items():
            integration = method.method_integration
            found = LAMBDA_URI.match(integration.uri or "") if integration else None
            if not found:
                continue
            routes.append(
                ApiRoute(
                    method=method_name,
                    resource=path,
                    authorization=method.authorization_type or "NONE",
                    function_arn=found["function"],
                    pattern=_pattern(path),
                )
            )
    # Literal segments win over parameters, as in API Gateway.
    return sorted(routes, key=lambda r: (r.resource.count("{"), -len(r.resource)))


def rest_proxy_event(
    *,
    route: ApiRoute,
    method: str,
    path: str,
    path_parameters: dict[str, str],
    query: dict[str, list[str]],
    headers: dict[str, str],
    body: bytes,
    stage: str,
    account: str,
    api_id: str,
    caller: sigv4.Caller | None,
    source_ip: str,
    caller_arn: str | None = None,
) -> dict[str, Any]:
    try:
        text_body: str | None = body.decode() if body else None
        is_base64 = False
    except UnicodeDecodeError:
        text_body, is_base64 = base64.b64encode(body).decode(), True
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": account,
            "apiId": api_id,
            "resourcePath": route.resource,
            "httpMethod": method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {
                "sourceIp": source_ip,
                "accessKey": caller.access_key_id if caller else None,
                "userArn": caller_arn,
                "caller": caller.access_key_id if caller else None,
            },
        },
        "body": text_body,
        "isBase64Encoded": is_base64,
    }


class _Listener(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of concurrent callers (twenty clients scaling up at once)
    # overflows it and the kernel resets some of their connections, where API Gateway would answer them all.
    request_queue_size = 128


class ApiServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        stage: str,
        account: str,
        api_id: str,
        routes: list[ApiRoute],
        invoke: Invoker,
        control: ControlHandler,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        gateway_responses: dict[str, str] | None = None,
        iam: Enforcer | None = None,
    ) -> None:
        self.stage = stage
        self._region = region
        self._gateway_responses = gateway_responses or {}
        self.routes = routes
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _respond(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {"Content-Type": "application/json"}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    # The caller went away before its answer (an agent killed mid-request): nobody to tell, and no
                    # traceback for the terminal.
                    self.close_connection = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = parse_qs(split.query, keep_blank_values=True)
                if split.path.startswith(CONTROL_PREFIX):
                    try:
                        payload = json.loads(body) if body else None
                    except json.JSONDecodeError:
                        self._respond(400, json.dumps({"message": "body is not JSON"}).encode())
                        return
                    status, answer = control(self.command, split.path[len(CONTROL_PREFIX) :], query, payload)
                    if isinstance(answer, RawAnswer):  # the API's docs page and its files
                        self._respond(status, answer.body, {"Content-Type": answer.content_type})
                    else:
                        self._respond(status, json.dumps(answer, default=str).encode())
                    return
                status, response_body, response_headers = server.dispatch(
                    method=self.command,
                    path=split.path,
                    query=query,
                    headers={k: v for k, v in self.headers.items()},
                    body=body,
                    url=f"http://{self.headers.get('Host', '')}{self.path}",
                    source_ip=self.client_address[0],
                )
                self._respond(status, response_body, response_headers)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

            def __getattr__(self, name: str) -> Any:
                # Any other method (TRACE, QUERY, ...): no API method has it, so API Gateway's 403, not http.server's
                # 501.
                if name.startswith("do_"):
                    return self._handle
                raise AttributeError(name)

        self._invoke = invoke
        self._account = account
        self._api_id = api_id
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        # Role sessions (an instance's agent) sign with keys of their own and are authorized per route.
        self._iam = iam
        self._http = _Listener((host, port), Handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever, name="sandbox-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def dispatch(  # noqa: PLR0911 (each early answer is one of API Gateway's own refusals)
        self,
        *,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        url: str,
        source_ip: str,
    ) -> tuple[int, bytes, dict[str, str]]:
        stage_prefix = f"/{self.stage}"
        if not (path == stage_prefix or path.startswith(stage_prefix + "/")):
            return self._gateway_error("MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token")
        path = path[len(stage_prefix) :] or "/"
        candidates = [(route, params) for route in self.routes if (params := route.match(path)) is not None]
        if not candidates:
            return self._gateway_error("MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token")
        chosen = next(((route, params) for route, params in candidates if route.method == method), None) or next(
            ((route, params) for route, params in candidates if route.method == "ANY"), None
        )
        if chosen is None:
            return self._gateway_error("MISSING_AUTHENTICATION_TOKEN", 403, "Missing Authentication Token")
        route, params = chosen
        caller = None
        if route.authorization == "AWS_IAM":
            try:
                caller = sigv4.verify(
                    method=method,
                    url=url,
                    headers=headers,
                    body=body,
                    access_key_id=self._access_key_id,
                    secret_access_key=self._secret_access_key,
                    region=self._region,
                    other_secrets=self._role_secret,
                )
            except sigv4.SignatureError as refused:
                return self._gateway_error("INVALID_SIGNATURE", 403, str(refused))
        source_arn = f"arn:aws:execute-api:{self._region}:{self._account}:{self._api_id}/{self.stage}/{method}{path}"
        refusal = self._authorize(caller, source_arn, route.function_arn)
        if refusal is not None:
            return self._gateway_error(*refusal)
        event = rest_proxy_event(
            route=route,
            method=method,
            path=path,
            path_parameters=params,
            query=query,
            headers=headers,
            body=body,
            stage=self.stage,
            account=self._account,
            api_id=self._api_id,
            caller=caller,
            source_ip=source_ip,
            caller_arn=self._caller_arn(caller),
        )
        payload, function_error = self._invoke(route.function_arn, event)
        if function_error:
            return self._gateway_error("DEFAULT_5XX", 502, "Internal server error")
        try:
            answer = json.loads(payload)
            status = int(answer["statusCode"])
        except (ValueError, KeyError, TypeError):
            return self._gateway_error("DEFAULT_5XX", 502, "Malformed Lambda proxy response")
        response_headers = {k: str(v) for k, v in (answer.get("headers") or {}).items()}
        for key, values in (answer.get("multiValueHeaders") or {}).items():
            response_headers[key] = ",".join(str(v) for v in values)
        raw = answer.get("body") or ""
        data = base64.b64decode(raw) if answer.get("isBase64Encoded") else str(raw).encode()
        response_headers.setdefault("Content-Type", "application/json")
        return status, data, response_headers

    def _role_secret(self, access_key_id: str) -> str | None:
        if self._iam is None or self._iam.principals.session(access_key_id) is None:
            return None
        return SECRET_ACCESS_KEY

    def _caller_arn(self, caller: sigv4.Caller | None) -> str | None:
        if caller is None:
            return None
        session = self._iam.principals.session(caller.access_key_id) if self._iam else None
        return session.caller.arn if session else f"arn:aws:iam::{self._account}:user/sandbox"

    def _authorize(
        self, caller: sigv4.Caller | None, source_arn: str, function_arn: str
    ) -> tuple[str, int, str] | None:
        """The caller's execute-api:Invoke (role sessions; the sandbox's own key is the administrator), then
        API Gateway's lambda:InvokeFunction, which the function's resource policy must allow.
        None when allowed, else the gateway error (response type, status, message) API Gateway answers."""
        if self._iam is None:
            return None
        session = self._iam.principals.session(caller.access_key_id) if caller else None
        if session is not None:
            decision = self._iam.authorize_role(
                session.role_arn, session.session_name, Authorization("execute-api:Invoke", [source_arn])
            )
            if not decision.allowed:
                message = f"User: {session.caller.arn} is not authorized to perform: execute-api:Invoke on resource: "
                return "ACCESS_DENIED", 403, message + source_arn
        context = {"aws:SourceArn": source_arn, "aws:SourceAccount": self._account}
        decision = self._iam.authorize_service(
            "apigateway.amazonaws.com", Authorization("lambda:InvokeFunction", [function_arn], context)
        )
        # API Gateway answers a function it may not invoke with a 500 and writes the reason to its logs.
        return None if decision.allowed else ("DEFAULT_5XX", 500, "Internal server error")

    def _gateway_error(self, response_type: str, status: int, message: str) -> tuple[int, bytes, dict[str, str]]:
        """API Gateway's own error answer: the API's gateway response for the type (or its DEFAULT_4XX /
        DEFAULT_5XX), rendered as API Gateway renders its $context variables; else its built-in body."""
        fallback = "DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX"  # noqa: PLR2004
        template = self._gateway_responses.get(response_type) or self._gateway_responses.get(fallback)
        if template is None:
            return status, json.dumps({"message": message}).encode(), {"Content-Type": "application/json"}
        body = template.replace("$context.error.messageString", json.dumps(message)).replace(
            "$context.requestId", str(uuid.uuid4())
        )
        return status, body.encode(), {"Content-Type": "application/json"}


def gateway_responses_from_emulator(account: str, region: str, rest_api_id: str) -> dict[str, str]:
    """response type -> application/json template, as the API defines them."""
    from moto.apigateway.models import apigateway_backends  # noqa: PLC0415

    api = apigateway_backends[account][region].get_rest_api(rest_api_id)
    return {
        response_type: response.response_templates["application/json"]
        for response_type, response in api.gateway_responses.items()
        if (response.response_templates or {}).get("application/json")
    }
